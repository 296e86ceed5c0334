/**
 * `get_usage`: the caller's own token, cost and latency totals over a range of UTC days, by
 * day and by model/tool, and what is left of his quota right now. Read as the caller (RLS).
 *
 * The quota is recomputed from `user_limits` the way `consume_quota` does it, without writing:
 * the bucket refills linearly since its last update, capped at capacity, and the day counters
 * count only when they belong to today (UTC).
 */
import { z } from "zod";
import type { Database } from "../db/database.types.ts";
import type { Tx } from "../db/client.ts";
import { READ_ONLY_ANNOTATIONS, type ToolDefinition } from "./types.ts";

type UsageKind = Database["public"]["Enums"]["usage_kind"];

const DEFAULT_DAYS = 7;
const MAX_DAYS = 366;
const DAY_MS = 86_400_000;

const input = z.object({
  from: z.iso.date().optional().describe(
    `First UTC day (YYYY-MM-DD), inclusive. Default: ${DEFAULT_DAYS - 1} days before \`to\`.`,
  ),
  to: z.iso.date().optional().describe("Last UTC day (YYYY-MM-DD), inclusive. Default: today."),
});

const totals = {
  calls: z.number().int(),
  errors: z.number().int().describe("Calls whose status was not ok."),
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
  cost_usd: z.number(),
  latency_ms_total: z.number().int(),
  latency_ms_avg: z.number().nullable(),
};

const output = z.object({
  from: z.string(),
  to: z.string(),
  totals: z.object(totals),
  by_day: z.array(z.object({ day: z.string(), ...totals })),
  by_name: z.array(z.object({
    kind: z.enum(["llm", "tool"] satisfies UsageKind[]),
    name: z.string().describe("The model or the tool."),
    ...totals,
  })),
  quota: z.object({
    bucket_tokens: z.number().int().describe("Tokens in the bucket now, refill included."),
    bucket_capacity: z.number().int(),
    refill_per_minute: z.number().int(),
    daily_token_cap: z.number().int(),
    daily_tokens_used: z.number().int(),
    daily_tokens_left: z.number().int(),
    daily_cost_cap_usd: z.number(),
    daily_cost_used_usd: z.number(),
    daily_cost_left_usd: z.number(),
  }).nullable().describe("Null when no limits are set for you."),
});

type Totals = { [K in keyof typeof totals]: z.output<(typeof totals)[K]> };
type Output = z.output<typeof output>;

interface AggregateRow {
  calls: number;
  errors: number;
  prompt_tokens: string;
  completion_tokens: string;
  cost_usd: number;
  latency_ms_total: string;
}

export const getUsageTool: ToolDefinition<typeof input, typeof output> = {
  name: "get_usage",
  title: "Usage and quota",
  description: "Your LLM and tool usage (tokens, cost, latency) per day and per model/tool " +
    `over a range of UTC days (default: the last ${DEFAULT_DAYS} days), and your remaining ` +
    "quota (token bucket, daily tokens and cost).",
  input,
  output,
  annotations: READ_ONLY_ANNOTATIONS,
  permission: "get_usage",
  async run(args, { db }) {
    const range = dayRange(args.from, args.to, new Date());
    if (!range.ok) return range;
    const { from, to } = range;
    const { byDay, byName, quota } = await db(async (tx) => ({
      byDay: await usageByDay(tx, from, to),
      byName: await usageByName(tx, from, to),
      quota: await remainingQuota(tx),
    }));
    const result: Output = {
      from,
      to,
      totals: sumTotals(byName),
      by_day: byDay,
      by_name: byName,
      quota,
    };
    return { ok: true, output: result };
  },
};

type RangeResult =
  | { ok: true; from: string; to: string }
  | { ok: false; error: { code: string; message: string } };

/** The inclusive UTC day range asked for, with its defaults; exported for tests. */
export function dayRange(from: string | undefined, to: string | undefined, now: Date): RangeResult {
  const toDay = to ?? now.toISOString().slice(0, 10);
  const fromDay = from ??
    new Date(Date.parse(toDay) - (DEFAULT_DAYS - 1) * DAY_MS).toISOString().slice(0, 10);
  const days = (Date.parse(toDay) - Date.parse(fromDay)) / DAY_MS + 1;
  if (days < 1) {
    return {
      ok: false,
      error: { code: "invalid_range", message: `"from" (${fromDay}) is after "to" (${toDay})` },
    };
  }
  if (days > MAX_DAYS) {
    return {
      ok: false,
      error: {
        code: "range_too_long",
        message: `The range spans ${days} days; at most ${MAX_DAYS}`,
      },
    };
  }
  return { ok: true, from: fromDay, to: toDay };
}

/** The aggregate columns of both breakdowns, over usage_metrics rows aliased `u`. */
function aggregates(tx: Tx) {
  return tx`
    count(u.id)::int as calls,
    (count(u.id) filter (where u.status <> 'ok'))::int as errors,
    coalesce(sum(u.prompt_tokens), 0)::bigint as prompt_tokens,
    coalesce(sum(u.completion_tokens), 0)::bigint as completion_tokens,
    coalesce(sum(u.cost_usd), 0)::float8 as cost_usd,
    coalesce(sum(u.latency_ms), 0)::bigint as latency_ms_total`;
}

async function usageByDay(tx: Tx, from: string, to: string) {
  // Every day of the range, the quiet ones included, so a chart needs no gap filling.
  const rows = await tx<(AggregateRow & { day: string })[]>`
    select to_char(d.day, 'YYYY-MM-DD') as day, ${aggregates(tx)}
    from generate_series(${from}::date::timestamp, ${to}::date::timestamp, interval '1 day')
      as d (day)
    left join public.usage_metrics u
      on u.user_id = (select auth.uid())
     and u.created_at >= d.day at time zone 'utc'
     and u.created_at < (d.day + interval '1 day') at time zone 'utc'
    group by d.day
    order by d.day`;
  return rows.map((row) => ({ day: row.day, ...totalsOf(row) }));
}

async function usageByName(tx: Tx, from: string, to: string) {
  const rows = await tx<(AggregateRow & { kind: UsageKind; name: string })[]>`
    select u.kind, u.name, ${aggregates(tx)}
    from public.usage_metrics u
    where u.user_id = (select auth.uid())
      and u.created_at >= ${from}::date at time zone 'utc'
      and u.created_at < (${to}::date + 1) at time zone 'utc'
    group by u.kind, u.name
    order by sum(u.prompt_tokens + u.completion_tokens) desc, count(*) desc, u.kind, u.name`;
  return rows.map((row) => ({ kind: row.kind, name: row.name, ...totalsOf(row) }));
}

function totalsOf(row: AggregateRow): Totals {
  const prompt = Number(row.prompt_tokens);
  const completion = Number(row.completion_tokens);
  const latency = Number(row.latency_ms_total);
  return {
    calls: row.calls,
    errors: row.errors,
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    cost_usd: row.cost_usd,
    latency_ms_total: latency,
    latency_ms_avg: row.calls === 0 ? null : latency / row.calls,
  };
}

function sumTotals(rows: Totals[]): Totals {
  const sum = (key: "calls" | "errors" | "prompt_tokens" | "completion_tokens" | "cost_usd") =>
    rows.reduce((total, row) => total + row[key], 0);
  const latency = rows.reduce((total, row) => total + row.latency_ms_total, 0);
  const calls = sum("calls");
  return {
    calls,
    errors: sum("errors"),
    prompt_tokens: sum("prompt_tokens"),
    completion_tokens: sum("completion_tokens"),
    total_tokens: sum("prompt_tokens") + sum("completion_tokens"),
    cost_usd: sum("cost_usd"),
    latency_ms_total: latency,
    latency_ms_avg: calls === 0 ? null : latency / calls,
  };
}

interface QuotaRow {
  bucket_tokens: number;
  bucket_capacity: number;
  refill_per_minute: number;
  daily_token_cap: string;
  daily_tokens_used: string;
  daily_cost_cap_usd: number;
  daily_cost_used_usd: number;
}

async function remainingQuota(tx: Tx): Promise<Output["quota"]> {
  const [row] = await tx<QuotaRow[]>`
    select
      floor(least(
        l.bucket_capacity::float8,
        l.bucket_tokens + l.refill_per_minute
          * extract(epoch from (clock_timestamp() - l.bucket_updated_at))::float8 / 60.0
      ))::float8 as bucket_tokens,
      l.bucket_capacity, l.refill_per_minute, l.daily_token_cap,
      case when l.usage_day = (clock_timestamp() at time zone 'utc')::date
        then l.day_tokens else 0 end as daily_tokens_used,
      l.daily_cost_cap_usd::float8 as daily_cost_cap_usd,
      case when l.usage_day = (clock_timestamp() at time zone 'utc')::date
        then l.day_cost_usd else 0 end::float8 as daily_cost_used_usd
    from public.user_limits l
    where l.user_id = (select auth.uid())`;
  if (!row) return null;
  const tokenCap = Number(row.daily_token_cap);
  const tokensUsed = Number(row.daily_tokens_used);
  return {
    bucket_tokens: row.bucket_tokens,
    bucket_capacity: row.bucket_capacity,
    refill_per_minute: row.refill_per_minute,
    daily_token_cap: tokenCap,
    daily_tokens_used: tokensUsed,
    daily_tokens_left: Math.max(0, tokenCap - tokensUsed),
    daily_cost_cap_usd: row.daily_cost_cap_usd,
    daily_cost_used_usd: row.daily_cost_used_usd,
    daily_cost_left_usd: Math.max(0, row.daily_cost_cap_usd - row.daily_cost_used_usd),
  };
}
