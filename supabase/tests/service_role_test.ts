/**
 * What the functions do as service role (and an operator does with the secret key), done as
 * service role through the product's own code: each grant the migrations give
 * `service_role`, and the function grants of `authenticated`, is used here the way the code
 * uses it. `deno task test:mutations` revokes each grant in turn; one of these tests must
 * then fail.
 */
import assert from "node:assert/strict";
import {
  heartbeatConnections,
  registerConnection,
  unregisterConnection,
} from "../functions/_shared/agent/connections.ts";
import { rememberAlways } from "../functions/_shared/agent/approvals.ts";
import {
  interruptStaleTurns,
  startTurn,
  type TurnStart,
} from "../functions/_shared/agent/turn_store.ts";
import { asServiceRole, queryAsUser, type Sql } from "../functions/_shared/db/client.ts";
import { inlineSql } from "../functions/_shared/db/inline_sql.ts";
import { loadGrants } from "../functions/_shared/permissions.ts";
import { recordUsage } from "../functions/_shared/usage.ts";
import { as, connectTestDatabase, createUser, type TestUser } from "./support/database.ts";

async function withUser(
  label: string,
  work: (sql: Sql, user: TestUser) => Promise<void>,
): Promise<void> {
  const sql = connectTestDatabase(2);
  try {
    await work(sql, await createUser(sql, label));
  } finally {
    await sql.end();
  }
}

Deno.test("the agent registers, heartbeats and unregisters connections as service role", async () => {
  await withUser("connections", async (sql, user) => {
    const id = crypto.randomUUID();
    const registration = await asServiceRole(
      sql,
      (tx) =>
        registerConnection(tx, {
          id,
          userId: user.id,
          isolateId: "isolate-a",
          staleAfterMs: 60_000,
        }),
    );
    assert.deepEqual(registration.evicted, []);
    const beat = await asServiceRole(
      sql,
      (tx) => heartbeatConnections(tx, "isolate-a", [{ id, userId: user.id }]),
    );
    assert.deepEqual(beat, { evicted: [], revoked: new Map() });
    const seen = await as(sql, user, (tx) => tx`select id from public.agent_connections`);
    assert.deepEqual(seen.map((row) => row.id), [id]);

    await unregisterConnection(sql, id);
    const left = await as(sql, user, (tx) => tx`select id from public.agent_connections`);
    assert.equal(left.length, 0);
  });
});

Deno.test("the agent starts, flushes and interrupts turns as service role", async () => {
  await withUser("turns", async (sql, user) => {
    const turnId = crypto.randomUUID();
    const start: TurnStart = {
      turnId,
      sessionId: crypto.randomUUID(),
      title: "privileges",
      messages: [
        { id: crypto.randomUUID(), role: "user", content: "hello", turn_id: turnId },
        {
          id: crypto.randomUUID(),
          role: "assistant",
          content: "",
          status: "streaming",
          turn_id: turnId,
        },
      ],
      owner: "isolate-a",
      model: "openai/gpt-4o-mini",
      promptTokens: 0,
      completionTokens: 100,
    };
    const started = await startTurn(sql, user.claims, start);
    assert.equal(started.kind, "started");
    if (started.kind !== "started") return;

    const owned = await asServiceRole(sql, (tx) =>
      tx`select id from public.agent_flush('isolate-a',
        ${tx.json([{ id: turnId, epoch: 0, steps: 1, model: "m", state: null, error: null }])},
        ${
        tx.json([{
          turn_id: turnId,
          id: started.assistantRowId,
          from_chars: 0,
          text: "Hi",
          tool_calls: null,
          status: null,
          model: "m",
        }])
      },
        ${tx.json([{ turn_id: turnId, user_id: user.id, seq: 1, last_seq: 1, frames: ["Hi"] }])})`);
    assert.deepEqual(owned.map((row) => row.id), [turnId]);

    await new Promise((resolve) => setTimeout(resolve, 20));
    const interrupted = await asServiceRole(sql, (tx) => interruptStaleTurns(tx, user.id, 10));
    assert.deepEqual(interrupted, [turnId]);

    const [turn] = await as(
      sql,
      user,
      (tx) =>
        tx`select t.state, h.content, (select count(*)::int from public.agent_turn_events e
        where e.turn_id = t.id) as batches
      from public.agent_turns t join public.chat_history h on h.id = ${started.assistantRowId}
      where t.id = ${turnId}`,
    );
    assert.deepEqual({ ...turn }, { state: "interrupted", content: "Hi", batches: 2 });
  });
});

Deno.test("usage is metered as service role and read by its user", async () => {
  await withUser("usage", async (sql, user) => {
    await recordUsage(sql, {
      user_id: user.id,
      kind: "tool",
      name: "calculator",
      source: "mcp",
      status: "ok",
      latency_ms: 3.4,
    });
    const rows = await as(sql, user, (tx) => tx`select name, latency_ms from public.usage_metrics`);
    assert.deepEqual(rows.map((row) => ({ ...row })), [{ name: "calculator", latency_ms: 3 }]);
  });
});

Deno.test("'always allow' and an operator's grants and caps are written as service role", async () => {
  await withUser("operator", async (sql, user) => {
    await rememberAlways(sql, user.id, {
      tool: "calculator",
      grantedBy: "calculator",
      mode: "ask",
      constraints: {},
    });
    const grants = await loadGrants(sql, user.claims);
    assert.equal(grants.find((g) => g.tool === "calculator")?.approval_mode, "auto");

    // What docs/tools.md tells an operator to run with the secret key.
    const tool = `operator_tool_${crypto.randomUUID().slice(0, 8)}`;
    await asServiceRole(sql, async (tx) => {
      await tx`insert into public.default_permissions (tool, approval_mode) values (${tool}, 'ask')`;
      await tx`update public.default_permissions set approval_mode = 'deny' where tool = ${tool}`;
      await tx`insert into public.permissions (user_id, tool, approval_mode)
               values (${user.id}, ${tool}, 'auto')`;
      await tx`update public.user_limits set daily_token_cap = 1234 where user_id = ${user.id}`;
    });
    const [defaults] = await sql`
      select approval_mode from public.default_permissions where tool = ${tool}`;
    assert.equal(defaults.approval_mode, "deny");
    assert.ok((await loadGrants(sql, user.claims)).some((g) => g.tool === tool));

    await asServiceRole(sql, async (tx) => {
      await tx`delete from public.permissions where user_id = ${user.id} and tool = ${tool}`;
      await tx`delete from public.default_permissions where tool = ${tool}`;
    });
    assert.ok(!(await loadGrants(sql, user.claims)).some((g) => g.tool === tool));
    const [limits] = await as(
      sql,
      user,
      (tx) => tx`select daily_token_cap::int from public.user_limits`,
    );
    assert.equal(limits.daily_token_cap, 1234);
  });
});

Deno.test("a user reads his chat's context through agent_chat_context", async () => {
  await withUser("context", async (sql, user) => {
    const [{ context }] = await queryAsUser<{ context: { grants: unknown[]; history: unknown[] } }>(
      sql,
      user.claims,
      inlineSql`select public.agent_chat_context(${crypto.randomUUID()}::uuid, null::uuid, 10,
        '{}'::uuid[]) as context`,
    );
    assert.ok(context.grants.length > 0, "the default grants come with the context");
    assert.deepEqual(context.history, []);
  });
});

Deno.test("a backend with the secret key reads every table published to Realtime", async () => {
  const sql = connectTestDatabase(1);
  try {
    const published = await sql<{ tablename: string }[]>`
      select tablename from pg_publication_tables
      where pubname = 'supabase_realtime' and schemaname = 'public' order by 1`;
    assert.deepEqual(published.map((row) => row.tablename), [
      "agent_turns",
      "chat_history",
      "chat_sessions",
      "mcp_servers",
      "permissions",
      "usage_metrics",
    ]);
    await asServiceRole(sql, async (tx) => {
      for (const { tablename } of published) {
        await tx.unsafe(`select count(*) from public.${tablename}`);
      }
    });
  } finally {
    await sql.end();
  }
});
