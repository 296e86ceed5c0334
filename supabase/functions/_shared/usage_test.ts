import assert from "node:assert/strict";
import { as, connectFunctionDatabase, createUser, sqlState } from "../../tests/support/database.ts";
import { createUsageWriter, recordUsage } from "./usage.ts";

Deno.test("recordUsage writes one row as service_role, with defaults and rounded latency", async () => {
  const sql = connectFunctionDatabase(2);
  try {
    const user = await createUser(sql, "usage");
    await recordUsage(sql, {
      user_id: user.id,
      kind: "tool",
      name: "calculator",
      source: "mcp",
      latency_ms: 12.6,
      status: "ok",
    });
    await recordUsage(sql, {
      user_id: user.id,
      kind: "llm",
      name: "model-x",
      prompt_tokens: 10,
      completion_tokens: 20,
      cost_usd: 0.0125,
      latency_ms: -5,
      status: "error",
    });
    const rows = await sql`
      select kind, name, source, prompt_tokens, completion_tokens, cost_usd::float8 as cost,
             latency_ms, status
      from public.usage_metrics where user_id = ${user.id} order by id`;
    assert.deepEqual(rows.map((row) => ({ ...row })), [
      {
        kind: "tool",
        name: "calculator",
        source: "mcp",
        prompt_tokens: 0,
        completion_tokens: 0,
        cost: 0,
        latency_ms: 13,
        status: "ok",
      },
      {
        kind: "llm",
        name: "model-x",
        source: "agent",
        prompt_tokens: 10,
        completion_tokens: 20,
        cost: 0.0125,
        latency_ms: 0,
        status: "error",
      },
    ]);
    // The reason it goes through service_role: the user himself may not write usage.
    assert.equal(
      await sqlState(
        as(sql, user, (tx) =>
          tx`insert into public.usage_metrics (user_id, kind, name, status)
           values (${user.id}, 'tool', 'calculator', 'ok')`),
      ),
      "42501",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("createUsageWriter: concurrent rows share inserts, each caller waits for its own", async () => {
  const sql = connectFunctionDatabase(2);
  let statements = 0;
  // Counts the inserts that reach the database, through the same pool.
  const counted = new Proxy(sql, {
    get(target, property, receiver) {
      if (property === "unsafe") {
        return (...args: Parameters<typeof sql.unsafe>) => {
          if (/insert into public\.usage_metrics/.test(String(args[0]))) statements++;
          return target.unsafe(...args);
        };
      }
      return Reflect.get(target, property, receiver);
    },
  });
  try {
    const user = await createUser(sql, "usage-writer");
    const write = createUsageWriter(counted);
    const names = Array.from({ length: 40 }, (_, i) => `tool_${i}`);
    await Promise.all(
      names.map((name) =>
        write({ user_id: user.id, kind: "tool", source: "mcp", name, latency_ms: 1, status: "ok" })
      ),
    );
    const rows = await sql`
      select name from public.usage_metrics where user_id = ${user.id} order by name`;
    assert.deepEqual(rows.map((row) => row.name), [...names].sort());
    // The first row went out alone; the 39 that came while it was written, together.
    assert.equal(statements, 2);

    // A bad row fails alone: the rows batched with it are still written.
    const ghost = crypto.randomUUID(); // no such auth.users row: the foreign key refuses it
    const outcomes = await Promise.allSettled([
      write({ user_id: user.id, kind: "tool", name: "first", status: "ok" }),
      write({ user_id: user.id, kind: "tool", name: "good", status: "ok" }),
      write({ user_id: ghost, kind: "tool", name: "bad", status: "ok" }),
      write({ user_id: user.id, kind: "tool", name: "also_good", status: "ok" }),
    ]);
    assert.deepEqual(outcomes.map((outcome) => outcome.status), [
      "fulfilled",
      "fulfilled",
      "rejected",
      "fulfilled",
    ]);
    assert.equal((outcomes[2] as PromiseRejectedResult).reason.code, "23503");
    const [{ count }] = await sql`
      select count(*)::int as count from public.usage_metrics
      where user_id = ${user.id} and name in ('first', 'good', 'also_good')`;
    assert.equal(count, 3);
  } finally {
    await sql.end();
  }
});
