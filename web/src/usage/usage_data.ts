/**
 * Usage rows (one per LLM call and per tool call) turned into what the usage screen shows:
 * tokens and cost per UTC day and per model, totals, and what is left of the quota computed
 * from `user_limits` the way `consume_quota` refills it.
 */
import type { Database } from "../../../supabase/functions/_shared/db/database.types.ts";

type Tables = Database["public"]["Tables"];

export type UsageRow = Pick<
  Tables["usage_metrics"]["Row"],
  "id" | "created_at" | "kind" | "name" | "prompt_tokens" | "completion_tokens" | "cost_usd"
>;

export type LimitsRow = Pick<
  Tables["user_limits"]["Row"],
  | "bucket_capacity"
  | "refill_per_minute"
  | "bucket_tokens"
  | "bucket_updated_at"
  | "daily_token_cap"
  | "daily_cost_cap_usd"
  | "usage_day"
  | "day_tokens"
  | "day_cost_usd"
>;

export interface ModelUsage {
  name: string;
  calls: number;
  tokens: number;
  cost: number;
}

export interface UsageSummary {
  /** UTC days, oldest first (YYYY-MM-DD). */
  days: string[];
  /** LLM models, most tokens first. */
  models: ModelUsage[];
  /** tokens[m][d]: tokens of models[m] on days[d]; cost likewise. */
  tokens: number[][];
  cost: number[][];
  tools: { name: string; calls: number }[];
  totals: { tokens: number; cost: number; calls: number };
}

const DAY_MS = 86_400_000;

export function utcDay(timestamp: string | number | Date): string {
  return new Date(timestamp).toISOString().slice(0, 10);
}

/** The first instant of the range that ends today (UTC) and spans `days` days. */
export function rangeStart(days: number, now: Date): string {
  const today = Date.parse(utcDay(now));
  return new Date(today - (days - 1) * DAY_MS).toISOString();
}

export function summarizeUsage(rows: Iterable<UsageRow>, days: number, now: Date): UsageSummary {
  const dayList = Array.from(
    { length: days },
    (_, i) => utcDay(Date.parse(rangeStart(days, now)) + i * DAY_MS),
  );
  const dayIndex = new Map(dayList.map((day, i) => [day, i]));
  const models = new Map<string, ModelUsage & { tokensByDay: number[]; costByDay: number[] }>();
  const tools = new Map<string, number>();
  const totals = { tokens: 0, cost: 0, calls: 0 };
  for (const row of rows) {
    const day = dayIndex.get(utcDay(row.created_at));
    if (day === undefined) continue;
    const tokens = row.prompt_tokens + row.completion_tokens;
    const cost = Number(row.cost_usd);
    totals.tokens += tokens;
    totals.cost += cost;
    totals.calls++;
    if (row.kind === "tool") {
      tools.set(row.name, (tools.get(row.name) ?? 0) + 1);
      continue;
    }
    let model = models.get(row.name);
    if (!model) {
      model = {
        name: row.name,
        calls: 0,
        tokens: 0,
        cost: 0,
        tokensByDay: dayList.map(() => 0),
        costByDay: dayList.map(() => 0),
      };
      models.set(row.name, model);
    }
    model.calls++;
    model.tokens += tokens;
    model.cost += cost;
    model.tokensByDay[day] += tokens;
    model.costByDay[day] += cost;
  }
  const ordered = [...models.values()].sort((a, b) => b.tokens - a.tokens);
  return {
    days: dayList,
    models: ordered.map(({ name, calls, tokens, cost }) => ({ name, calls, tokens, cost })),
    tokens: ordered.map((model) => model.tokensByDay),
    cost: ordered.map((model) => model.costByDay),
    tools: [...tools].map(([name, calls]) => ({ name, calls })).sort((a, b) => b.calls - a.calls),
    totals,
  };
}

export interface Quota {
  bucketTokens: number;
  bucketCapacity: number;
  refillPerMinute: number;
  dailyTokensLeft: number;
  dailyTokenCap: number;
  dailyCostLeftUsd: number;
  dailyCostCapUsd: number;
}

/** What is left now: the bucket refilled since its last update (capped), today's caps. */
export function remainingQuota(limits: LimitsRow, now: Date): Quota {
  const minutes = Math.max(0, (now.getTime() - Date.parse(limits.bucket_updated_at)) / 60_000);
  const bucket = Math.min(
    limits.bucket_capacity,
    limits.bucket_tokens + limits.refill_per_minute * minutes,
  );
  const today = limits.usage_day === utcDay(now);
  const tokenCap = Number(limits.daily_token_cap);
  const costCap = Number(limits.daily_cost_cap_usd);
  return {
    bucketTokens: Math.floor(bucket),
    bucketCapacity: limits.bucket_capacity,
    refillPerMinute: limits.refill_per_minute,
    dailyTokensLeft: Math.max(0, tokenCap - (today ? Number(limits.day_tokens) : 0)),
    dailyTokenCap: tokenCap,
    dailyCostLeftUsd: Math.max(0, costCap - (today ? Number(limits.day_cost_usd) : 0)),
    dailyCostCapUsd: costCap,
  };
}
