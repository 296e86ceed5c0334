import assert from "node:assert/strict";
import { as, connectTestDatabase, createUser, sqlState } from "../../tests/db_helpers.ts";
import { recordUsage } from "./usage.ts";

Deno.test("recordUsage writes one row as service_role, with defaults and rounded latency", async () => {
  const sql = connectTestDatabase(2);
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
