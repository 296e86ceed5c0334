import assert from "node:assert/strict";
import { type LimitsRow, remainingQuota, summarizeUsage, type UsageRow } from "./usage_data.ts";

let nextId = 1;
function usage(createdAt: string, name: string, tokens: number, cost = 0, kind = "llm"): UsageRow {
  return {
    id: nextId++,
    created_at: createdAt,
    kind: kind as UsageRow["kind"],
    name,
    prompt_tokens: tokens,
    completion_tokens: 1,
    cost_usd: cost,
  };
}

Deno.test("usage is summed per UTC day and per model over the range", () => {
  const now = new Date("2026-11-22T12:00:00Z");
  const summary = summarizeUsage(
    [
      usage("2026-11-22T01:00:00+00:00", "model-a", 99, 0.5),
      usage("2026-11-21T23:30:00-02:00", "model-a", 9, 0.25), // 01:30 UTC on the 22nd
      usage("2026-11-20T10:00:00+00:00", "model-b", 199),
      usage("2026-11-16T00:00:00+00:00", "model-b", 9), // first day of a 7-day range
      usage("2026-11-15T23:59:59+00:00", "model-b", 1000), // before the range
      usage("2026-11-22T02:00:00+00:00", "calculator", 0, 0, "tool"),
    ],
    7,
    now,
  );
  assert.deepEqual(summary.days, [
    "2026-11-16",
    "2026-11-17",
    "2026-11-18",
    "2026-11-19",
    "2026-11-20",
    "2026-11-21",
    "2026-11-22",
  ]);
  assert.deepEqual(summary.models.map((m) => [m.name, m.calls, m.tokens]), [
    ["model-b", 2, 210],
    ["model-a", 2, 110],
  ]);
  assert.deepEqual(summary.tokens, [[10, 0, 0, 0, 200, 0, 0], [0, 0, 0, 0, 0, 0, 110]]);
  assert.deepEqual(summary.cost[1], [0, 0, 0, 0, 0, 0, 0.75]);
  assert.deepEqual(summary.tools, [{ name: "calculator", calls: 1 }]);
  assert.deepEqual(summary.totals, { tokens: 321, cost: 0.75, calls: 5 });
});

Deno.test("the quota refills the bucket up to capacity and resets the day counters", () => {
  const limits: LimitsRow = {
    bucket_capacity: 100_000,
    refill_per_minute: 1_000,
    bucket_tokens: 50_000,
    bucket_updated_at: "2026-11-22T11:50:00+00:00",
    daily_token_cap: 1_000_000,
    daily_cost_cap_usd: 5,
    usage_day: "2026-11-22",
    day_tokens: 200_000,
    day_cost_usd: 1.25,
  };
  const quota = remainingQuota(limits, new Date("2026-11-22T12:00:00Z"));
  assert.equal(quota.bucketTokens, 60_000);
  assert.equal(quota.dailyTokensLeft, 800_000);
  assert.equal(quota.dailyCostLeftUsd, 3.75);
  const later = remainingQuota(limits, new Date("2026-11-23T00:30:00Z"));
  assert.equal(later.bucketTokens, 100_000);
  assert.equal(later.dailyTokensLeft, 1_000_000, "a new UTC day");
  assert.equal(later.dailyCostLeftUsd, 5);
});
