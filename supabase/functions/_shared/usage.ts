/**
 * One `usage_metrics` row per LLM call and per tool call. Users may read their usage but not
 * write it (they would erase what limits and bills are computed from), so rows are written as
 * service_role, the one place the functions step outside RLS for this.
 */
import type { Database } from "./database.types.ts";
import { asServiceRole, type Sql } from "./db.ts";

export type UsageRecord = Database["public"]["Tables"]["usage_metrics"]["Insert"];
export type UsageStatus = Database["public"]["Enums"]["usage_status"];
export type UsageSource = Database["public"]["Enums"]["usage_source"];

const MAX_LATENCY_MS = 2_147_483_647;

/** Inserts one row; the latency is rounded to whole milliseconds (the column is an integer). */
export async function recordUsage(sql: Sql, record: UsageRecord): Promise<void> {
  const latency = Math.min(MAX_LATENCY_MS, Math.max(0, Math.round(record.latency_ms ?? 0)));
  await asServiceRole(sql, (tx) =>
    tx`
      insert into public.usage_metrics (user_id, session_id, turn_id, kind, name, source,
        prompt_tokens, completion_tokens, cost_usd, latency_ms, status)
      values (${record.user_id}, ${record.session_id ?? null}, ${record.turn_id ?? null},
        ${record.kind}, ${record.name}, ${record.source ?? "agent"},
        ${record.prompt_tokens ?? 0}, ${record.completion_tokens ?? 0}, ${record.cost_usd ?? 0},
        ${latency}, ${record.status})`);
}
