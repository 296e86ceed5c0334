/**
 * The RLS matrix: what a user may do with his own rows, what another user and `anon` may
 * not do with them, and what nobody but the service role may change (grants, limits, usage,
 * turns). Each policy is exercised by an allowed case, so dropping any one of them fails here.
 */
import assert from "node:assert/strict";
import {
  ANON_CLAIMS,
  appendMessages,
  as,
  connectTestDatabase,
  createUser,
  message,
  sqlState,
  type TestUser,
} from "./support/database.ts";
import type { Sql, Tx } from "../functions/_shared/db/client.ts";

const OWNED_TABLES = [
  "chat_sessions",
  "chat_history",
  "permissions",
  "usage_metrics",
  "user_limits",
  "agent_turns",
] as const;

interface World {
  sql: Sql;
  alice: TestUser;
  bob: TestUser;
  sessionId: string;
  messageId: string;
}

async function world(): Promise<World> {
  const sql = connectTestDatabase();
  const alice = await createUser(sql, "alice");
  const bob = await createUser(sql, "bob");
  const sessionId = crypto.randomUUID();
  const [row] = await as(sql, alice, (tx) => appendMessages(tx, sessionId, [message("hello")]));
  await sql`insert into public.usage_metrics (user_id, session_id, kind, name, status)
            values (${alice.id}, ${sessionId}, 'llm', 'test-model', 'ok')`;
  await sql`insert into public.agent_turns (user_id, session_id, owner, user_message_id)
            values (${alice.id}, ${sessionId}, 'test', ${row.id})`;
  return { sql, alice, bob, sessionId, messageId: row.id };
}

function countOwnedBy(sql: Sql, who: TestUser | typeof ANON_CLAIMS, table: string, owner: string) {
  return as(sql, who, async (tx) => {
    const [{ count }] = await tx`select count(*)::int as count from ${tx("public." + table)}
                                 where user_id = ${owner}`;
    return count as number;
  });
}

/** True when the statement was refused outright (42501) or touched no row. */
async function refusedOrNoRows(statement: Promise<{ count: number }>): Promise<boolean> {
  try {
    return (await statement).count === 0;
  } catch (error) {
    if ((error as { code?: string }).code === "42501") return true;
    throw error;
  }
}

Deno.test("every public table has RLS enabled", async () => {
  const sql = connectTestDatabase();
  try {
    const rows =
      await sql`select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                           where n.nspname = 'public' and c.relkind = 'r' and not c.relrowsecurity`;
    assert.deepEqual(rows.map((r) => r.relname), []);
  } finally {
    await sql.end();
  }
});

Deno.test("a user reads his own rows in every table", async () => {
  const w = await world();
  try {
    for (const table of OWNED_TABLES) {
      assert.ok(await countOwnedBy(w.sql, w.alice, table, w.alice.id) > 0, `alice reads ${table}`);
    }
    const defaults = await as(
      w.sql,
      w.alice,
      (tx) => tx`select tool from public.default_permissions`,
    );
    assert.ok(defaults.length >= 4, "signed-in users read the default grants");
  } finally {
    await w.sql.end();
  }
});

Deno.test("another user neither selects, updates nor deletes a user's rows", async () => {
  const w = await world();
  try {
    for (const table of OWNED_TABLES) {
      assert.equal(await countOwnedBy(w.sql, w.bob, table, w.alice.id), 0, `bob selects ${table}`);
      const update = as(
        w.sql,
        w.bob,
        (tx) =>
          tx`update ${tx("public." + table)} set user_id = user_id where user_id = ${w.alice.id}`,
      );
      assert.ok(await refusedOrNoRows(update), `bob updates ${table}`);
      const remove = as(
        w.sql,
        w.bob,
        (tx) => tx`delete from ${tx("public." + table)} where user_id = ${w.alice.id}`,
      );
      assert.ok(await refusedOrNoRows(remove), `bob deletes ${table}`);
    }
    for (const table of OWNED_TABLES) {
      const [{ count }] = await w.sql`select count(*)::int as count from ${w.sql("public." + table)}
                                      where user_id = ${w.alice.id}`;
      assert.ok(count > 0, `alice's ${table} rows survive`);
    }
  } finally {
    await w.sql.end();
  }
});

Deno.test("another user cannot insert into a user's session or as that user", async () => {
  const w = await world();
  try {
    const intoAlicesSession = as(
      w.sql,
      w.bob,
      (tx) =>
        tx`insert into public.chat_history (session_id, user_id, client_id, seq, role, content)
         values (${w.sessionId}, ${w.bob.id}, ${crypto.randomUUID()}, 99, 'user', 'sneaky')`,
    );
    assert.equal(await sqlState(intoAlicesSession), "23503", "(session_id, user_id) must match");

    const asAlice = as(
      w.sql,
      w.bob,
      (tx) =>
        tx`insert into public.chat_sessions (user_id, title) values (${w.alice.id}, 'forged')`,
    );
    assert.equal(await sqlState(asAlice), "42501");

    const appendToAlices = as(
      w.sql,
      w.bob,
      (tx) => appendMessages(tx, w.sessionId, [message("sneaky")]),
    );
    assert.equal(await sqlState(appendToAlices), "AG404");
  } finally {
    await w.sql.end();
  }
});

Deno.test("anon sees nothing and writes nothing", async () => {
  const w = await world();
  try {
    for (const table of [...OWNED_TABLES, "default_permissions"]) {
      const state = await sqlState(
        as(w.sql, ANON_CLAIMS, (tx) => tx`select count(*) from ${tx("public." + table)}`),
      );
      assert.equal(state, "42501", `anon selects ${table}`);
    }
    const insert = as(
      w.sql,
      ANON_CLAIMS,
      (tx) => tx`insert into public.chat_sessions (user_id) values (${w.alice.id})`,
    );
    assert.equal(await sqlState(insert), "42501");
    const append = as(w.sql, ANON_CLAIMS, (tx) => appendMessages(tx, w.sessionId, [message("x")]));
    assert.equal(await sqlState(append), "42501");
  } finally {
    await w.sql.end();
  }
});

Deno.test("a user writes his own chat: sessions and messages", async () => {
  const w = await world();
  try {
    await as(w.sql, w.alice, async (tx) => {
      const [session] = await tx`insert into public.chat_sessions (title) values ('mine')
                                 returning id, user_id`;
      assert.equal(session.user_id, w.alice.id, "user_id defaults to auth.uid()");
      const renamed = await tx`update public.chat_sessions set title = 'renamed'
                               where id = ${w.sessionId}`;
      assert.equal(renamed.count, 1);
      const inserted = await tx`
        insert into public.chat_history (session_id, client_id, seq, role, content)
        values (${session.id}, ${crypto.randomUUID()}, 1, 'user', 'direct insert')`;
      assert.equal(inserted.count, 1);
      const edited = await tx`update public.chat_history set content = 'edited'
                              where id = ${w.messageId}`;
      assert.equal(edited.count, 1);
      const removedMessage = await tx`delete from public.chat_history where id = ${w.messageId}`;
      assert.equal(removedMessage.count, 1);
      const removedSession = await tx`delete from public.chat_sessions where id = ${session.id}`;
      assert.equal(removedSession.count, 1);
    });
  } finally {
    await w.sql.end();
  }
});

Deno.test("a user cannot grant himself a tool, raise his limits or write usage and turns", async () => {
  const w = await world();
  try {
    const grant = as(
      w.sql,
      w.alice,
      (tx) =>
        tx`insert into public.permissions (user_id, tool) values (${w.alice.id}, 'execute_workflow')`,
    );
    assert.equal(await sqlState(grant), "42501");

    const loosen = await sqlState(
      as(w.sql, w.alice, (tx) =>
        tx`update public.permissions set approval_mode = 'auto', tool = '*'
         where user_id = ${w.alice.id}`),
    );
    assert.equal(loosen, "42501");

    const defaults = as(
      w.sql,
      w.alice,
      (tx) => tx`insert into public.default_permissions (tool) values ('execute_workflow')`,
    );
    assert.equal(await sqlState(defaults), "42501");

    const raise = as(
      w.sql,
      w.alice,
      (tx) =>
        tx`update public.user_limits set bucket_capacity = 1e9, bucket_tokens = 1e9
         where user_id = ${w.alice.id}`,
    );
    assert.equal(await sqlState(raise), "42501");

    for (
      const call of [
        (tx: Tx) => tx`select public.settle_quota(${w.alice.id}, 100000, 0, 0)`,
        (tx: Tx) => tx`select * from public.consume_quota(${w.alice.id}, 1)`,
      ]
    ) {
      assert.equal(await sqlState(as(w.sql, w.alice, call)), "42501");
    }

    const usage = as(
      w.sql,
      w.alice,
      (tx) =>
        tx`insert into public.usage_metrics (user_id, kind, name, status)
         values (${w.alice.id}, 'tool', 'calculator', 'ok')`,
    );
    assert.equal(await sqlState(usage), "42501");
    const turn = as(
      w.sql,
      w.alice,
      (tx) =>
        tx`insert into public.agent_turns (user_id, session_id, owner)
         values (${w.alice.id}, ${w.sessionId}, 'me')`,
    );
    assert.equal(await sqlState(turn), "42501");

    const [limits] = await w.sql`select bucket_capacity from public.user_limits
                                 where user_id = ${w.alice.id}`;
    assert.equal(limits.bucket_capacity, 100000);
  } finally {
    await w.sql.end();
  }
});

Deno.test("new users get the default grants and limits; the watched tables are published", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql, "fresh");
    const grants = await sql`select tool, approval_mode from public.permissions
                             where user_id = ${user.id} order by tool`;
    assert.deepEqual(grants.map((g) => `${g.tool}:${g.approval_mode}`), [
      "calculator:auto",
      "get_usage:auto",
      "query_table:auto",
      "search_history:auto",
    ]);
    const [limits] = await sql`select bucket_capacity, refill_per_minute, bucket_tokens
                               from public.user_limits where user_id = ${user.id}`;
    assert.deepEqual({ ...limits }, {
      bucket_capacity: 100000,
      refill_per_minute: 1000,
      bucket_tokens: 100000,
    });
    const published = await sql`select tablename from pg_publication_tables
                                where pubname = 'supabase_realtime' order by tablename`;
    assert.deepEqual(published.map((r) => r.tablename), [
      "agent_turns",
      "chat_history",
      "chat_sessions",
      "mcp_servers",
      "permissions",
      "usage_metrics",
    ]);
  } finally {
    await sql.end();
  }
});
