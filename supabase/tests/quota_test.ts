/**
 * consume_quota / settle_quota: the token bucket and daily caps, exact under concurrency.
 */
import assert from "node:assert/strict";
import { connectTestDatabase, createUser } from "./support/database.ts";
import type { Sql } from "../functions/_shared/db/client.ts";

interface QuotaDecision {
  allowed: boolean;
  reason: string | null;
  remaining_tokens: string;
  retry_after_ms: string | null;
}

async function consume(sql: Sql, userId: string, tokens: number): Promise<QuotaDecision> {
  const [decision] = await sql<QuotaDecision[]>`
    select * from public.consume_quota(${userId}, ${tokens})`;
  return decision;
}

Deno.test("50 parallel consumers against a bucket of N tokens admit exactly N", async () => {
  const consumers = 50;
  const capacity = 300;
  const sql = connectTestDatabase(consumers);
  try {
    const user = await createUser(sql, "quota");
    await sql`update public.user_limits
              set bucket_capacity = ${capacity}, bucket_tokens = ${capacity}, refill_per_minute = 0
              where user_id = ${user.id}`;
    // Warm the pool so every consumer really holds its own connection.
    await Promise.all(Array.from({ length: consumers }, () => sql`select 1`));

    let admitted = 0;
    let refused = 0;
    await Promise.all(Array.from({ length: consumers }, async () => {
      while (true) {
        const decision = await consume(sql, user.id, 1);
        if (!decision.allowed) {
          assert.equal(decision.reason, "token_bucket");
          refused++;
          return;
        }
        admitted++;
      }
    }));
    assert.equal(admitted, capacity);
    assert.equal(refused, consumers);
    const [row] = await sql`select bucket_tokens, day_tokens from public.user_limits
                            where user_id = ${user.id}`;
    assert.equal(row.bucket_tokens, 0);
    assert.equal(Number(row.day_tokens), capacity);
  } finally {
    await sql.end();
  }
});

Deno.test("the bucket refills with time and says when to retry", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql, "refill");
    await sql`update public.user_limits
              set bucket_tokens = 0, bucket_updated_at = now() - interval '1 minute'
              where user_id = ${user.id}`;
    const first = await consume(sql, user.id, 1000);
    assert.equal(first.allowed, true, "one minute refills 1,000 tokens");

    const second = await consume(sql, user.id, 100);
    assert.equal(second.allowed, false);
    assert.equal(second.reason, "token_bucket");
    // 100 tokens at 1,000/min take about 6 s to refill.
    const retry = Number(second.retry_after_ms);
    assert.ok(retry > 5000 && retry <= 6000, `retry_after_ms ${retry}`);
  } finally {
    await sql.end();
  }
});

Deno.test("a request above the bucket's capacity is refused outright", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql, "capacity");
    const decision = await consume(sql, user.id, 100001);
    assert.deepEqual([decision.allowed, decision.reason, decision.retry_after_ms], [
      false,
      "exceeds_capacity",
      null,
    ]);
    assert.equal(Number(decision.remaining_tokens), 100000, "a refusal takes nothing");
  } finally {
    await sql.end();
  }
});

Deno.test("daily token and cost caps refuse until the next UTC day", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql, "daily");
    await sql`update public.user_limits set daily_token_cap = 100, daily_cost_cap_usd = 0.5
              where user_id = ${user.id}`;
    assert.equal((await consume(sql, user.id, 60)).allowed, true);
    const overTokens = await consume(sql, user.id, 60);
    assert.equal(overTokens.reason, "daily_token_cap");
    const untilMidnight = Number(overTokens.retry_after_ms);
    assert.ok(untilMidnight > 0 && untilMidnight <= 86_400_000);

    await sql`select public.settle_quota(${user.id}, 60, 10, 0.5)`;
    const overCost = await consume(sql, user.id, 1);
    assert.equal(overCost.reason, "daily_cost_cap");

    await sql`update public.user_limits set usage_day = usage_day - 1 where user_id = ${user.id}`;
    const nextDay = await consume(sql, user.id, 60);
    assert.equal(nextDay.allowed, true, "a new day starts the counters at zero");
    const [row] = await sql`select day_tokens, day_cost_usd from public.user_limits
                            where user_id = ${user.id}`;
    assert.deepEqual([Number(row.day_tokens), Number(row.day_cost_usd)], [60, 0]);
  } finally {
    await sql.end();
  }
});

Deno.test("settling returns unused reserved tokens and takes overuse", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql, "settle");
    await sql`update public.user_limits set refill_per_minute = 0 where user_id = ${user.id}`;
    await consume(sql, user.id, 10000);
    await sql`select public.settle_quota(${user.id}, 10000, 2500, 0.01)`;
    let [row] = await sql`select bucket_tokens, day_tokens, day_cost_usd from public.user_limits
                          where user_id = ${user.id}`;
    assert.deepEqual([row.bucket_tokens, Number(row.day_tokens), Number(row.day_cost_usd)], [
      97500,
      2500,
      0.01,
    ]);

    await consume(sql, user.id, 1000);
    await sql`select public.settle_quota(${user.id}, 1000, 4000, 0)`;
    [row] = await sql`select bucket_tokens, day_tokens from public.user_limits
                      where user_id = ${user.id}`;
    assert.deepEqual([row.bucket_tokens, Number(row.day_tokens)], [93500, 6500]);

    const refund = sql`select public.settle_quota(${user.id}, -1, 0, 0)`;
    await assert.rejects(refund, /non-negative/);
  } finally {
    await sql.end();
  }
});
