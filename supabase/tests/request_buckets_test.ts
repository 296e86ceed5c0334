/**
 * consume_request (20261203000600_request_buckets.sql): each request of a user to `mcp` or
 * `history` takes one from his bucket for that surface, exactly under concurrency, and a
 * refusal says when the next one would pass. Run as service_role, as the functions run it.
 */
import assert from "node:assert/strict";
import { consumeRequest } from "../functions/_shared/request_buckets.ts";
import { connectTestDatabase, createUser } from "./support/database.ts";

Deno.test("40 parallel requests against a burst of 30 admit exactly 30; surfaces are apart", async () => {
  const callers = 40;
  const sql = connectTestDatabase(callers);
  try {
    const alice = await createUser(sql, "requests");
    await sql`update public.user_limits set requests_per_minute = 0 where user_id = ${alice.id}`;
    await Promise.all(Array.from({ length: callers }, () => sql`select 1`));

    const decisions = await Promise.all(
      Array.from({ length: callers }, () => consumeRequest(sql, alice.id, "history")),
    );
    assert.equal(decisions.filter((d) => d.allowed).length, 30);
    for (const refused of decisions.filter((d) => !d.allowed)) {
      assert.deepEqual(refused, { allowed: false }, "no refill: no time to retry after");
    }
    assert.deepEqual(await consumeRequest(sql, alice.id, "mcp"), { allowed: true });
  } finally {
    await sql.end();
  }
});

Deno.test("a refused request says when the bucket holds one again", async () => {
  const sql = connectTestDatabase(2);
  try {
    const bob = await createUser(sql, "requests-retry");
    await sql`update public.user_limits set request_capacity = 2, requests_per_minute = 60
              where user_id = ${bob.id}`;
    assert.deepEqual(await consumeRequest(sql, bob.id, "mcp"), { allowed: true });
    assert.deepEqual(await consumeRequest(sql, bob.id, "mcp"), { allowed: true });
    const refused = await consumeRequest(sql, bob.id, "mcp");
    assert.equal(refused.allowed, false);
    // 60 a minute: one a second, less what refilled since the last admission.
    assert.ok(
      !refused.allowed && refused.retryAfterMs! > 0 && refused.retryAfterMs! <= 1000,
      JSON.stringify(refused),
    );
    const [bucket] = await sql`select tokens from public.request_buckets
                               where user_id = ${bob.id} and surface = 'mcp'`;
    assert.ok(bucket.tokens < 1, "the refusal took nothing");
  } finally {
    await sql.end();
  }
});
