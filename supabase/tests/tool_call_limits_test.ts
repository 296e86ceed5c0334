/**
 * consume_tool_calls (20261203000400_tool_call_limits.sql): MCP tool calls take a request from
 * the caller's request bucket and a fixed token cost from his token quota, exactly under
 * concurrency. Run as service_role, as the mcp function runs it.
 */
import assert from "node:assert/strict";
import { consumeToolCalls } from "../functions/_shared/tool_limits.ts";
import { connectTestDatabase, createUser } from "./support/database.ts";

Deno.test("50 parallel tool calls against a burst of 30 admit exactly 30, each metered", async () => {
  const callers = 50;
  const sql = connectTestDatabase(callers);
  try {
    const alice = await createUser(sql, "tool-calls");
    await sql`update public.user_limits set tool_calls_per_minute = 0, refill_per_minute = 0
              where user_id = ${alice.id}`;
    await Promise.all(Array.from({ length: callers }, () => sql`select 1`));

    const decisions = await Promise.all(
      Array.from({ length: callers }, () => consumeToolCalls(sql, alice.id, 1)),
    );
    const admitted = decisions.filter((d) => d.allowed).length;
    console.log(`${callers} parallel tool calls, burst 30: ${admitted} admitted`);
    assert.equal(admitted, 30);
    for (const refused of decisions.filter((d) => !d.allowed)) {
      assert.deepEqual(refused, { allowed: false, reason: "request_rate" });
    }
    const [row] = await sql`select tool_call_tokens, bucket_tokens, day_tokens
                            from public.user_limits where user_id = ${alice.id}`;
    assert.deepEqual(
      [row.tool_call_tokens, row.bucket_tokens, Number(row.day_tokens)],
      [0, 100_000 - 30 * 100, 30 * 100],
      "each admitted call cost 100 tokens",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("tool calls are refused by the token quota and say when the requests refill", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "tool-quota");
    await sql`update public.user_limits
              set bucket_tokens = 150, refill_per_minute = 0, tool_call_tokens = 10,
                  tool_call_updated_at = now()
              where user_id = ${alice.id}`;
    assert.deepEqual(await consumeToolCalls(sql, alice.id, 2), {
      allowed: false,
      reason: "token_bucket",
    });
    assert.deepEqual(await consumeToolCalls(sql, alice.id, 1), { allowed: true });
    const [row] = await sql`select tool_call_tokens from public.user_limits
                            where user_id = ${alice.id}`;
    assert.ok(row.tool_call_tokens < 10 && row.tool_call_tokens >= 9, "only the admitted call");

    await sql`update public.user_limits set tool_call_tokens = 0, tool_call_updated_at = now()
              where user_id = ${alice.id}`;
    const refused = await consumeToolCalls(sql, alice.id, 1);
    assert.equal(refused.allowed, false);
    assert.ok(!refused.allowed && refused.reason === "request_rate");
    // One request at 120 a minute refills in 500 ms.
    const retry = refused.allowed ? 0 : refused.retryAfterMs ?? 0;
    assert.ok(retry > 0 && retry <= 500, `retry_after_ms ${retry}`);
  } finally {
    await sql.end();
  }
});
