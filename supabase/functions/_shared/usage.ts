/**
 * One `usage_metrics` row per LLM call and per tool call. Users may read their usage but not
 * write it (they would erase what limits and bills are computed from), so rows are written as
 * service_role, the one place the functions step outside RLS for this.
 */
import type { Database } from "./db/database.types.ts";
import { queryAsServiceRole, type Sql } from "./db/client.ts";
import { InlineSql, inlineSql } from "./db/inline_sql.ts";

export type UsageRecord = Database["public"]["Tables"]["usage_metrics"]["Insert"];
export type UsageStatus = Database["public"]["Enums"]["usage_status"];
export type UsageSource = Database["public"]["Enums"]["usage_source"];

const MAX_LATENCY_MS = 2_147_483_647;

/**
 * Inserts one row; the latency is rounded to whole milliseconds (the column is an integer).
 * One round trip: the settings and the insert go out as one message (see `queryAsUser`).
 */
export async function recordUsage(sql: Sql, record: UsageRecord): Promise<void> {
  await insertUsage(sql, [record]);
}

/** Records one row; resolves once it is committed, rejects if it could not be. */
export type UsageWriter = (record: UsageRecord) => Promise<void>;

/**
 * `recordUsage` for a server that records many calls at once. A row is inserted at once when
 * no insert of this writer is under way; rows that arrive meanwhile wait for it and then go
 * out together, in one statement and one commit. Every caller still waits for its own row to
 * be committed, so nothing is kept in memory past its request; a busy server just pays for
 * one insert where it would pay for dozens. A batch that fails is retried row by row, so one
 * bad row (e.g. of a user deleted meanwhile) fails alone.
 */
export function createUsageWriter(sql: Sql): UsageWriter {
  const waiting: PendingRow[] = [];
  let writing = false;

  async function drain() {
    writing = true;
    while (waiting.length > 0) {
      const batch = waiting.splice(0, MAX_BATCH_ROWS);
      try {
        await insertUsage(sql, batch.map((row) => row.record));
        for (const row of batch) row.resolve();
      } catch (error) {
        if (batch.length === 1) batch[0].reject(error);
        else await Promise.all(batch.map((row) => insertOne(row)));
      }
    }
    writing = false;
  }

  async function insertOne(row: PendingRow) {
    try {
      await insertUsage(sql, [row.record]);
      row.resolve();
    } catch (error) {
      row.reject(error);
    }
  }

  return (record) =>
    new Promise<void>((resolve, reject) => {
      waiting.push({ record, resolve, reject });
      if (!writing) void drain();
    });
}

interface PendingRow {
  record: UsageRecord;
  resolve(): void;
  reject(error: unknown): void;
}

/** Rows per statement; bounds the statement's size, not how many rows may wait. */
const MAX_BATCH_ROWS = 500;

function insertUsage(sql: Sql, records: readonly UsageRecord[]): Promise<unknown> {
  const rows = new InlineSql(records.map((record) => usageRow(record).text).join(",\n"));
  return queryAsServiceRole(
    sql,
    inlineSql`
      insert into public.usage_metrics (user_id, session_id, turn_id, kind, name, source,
        prompt_tokens, completion_tokens, cost_usd, latency_ms, status, trace_id, ttft_ms,
        approval_wait_ms, approval)
      values ${rows}`,
  );
}

function usageRow(record: UsageRecord): InlineSql {
  const latency = Math.min(MAX_LATENCY_MS, Math.max(0, Math.round(record.latency_ms ?? 0)));
  return inlineSql`(${record.user_id}, ${record.session_id ?? null}, ${record.turn_id ?? null},
    ${record.kind}, ${record.name}, ${record.source ?? "agent"}, ${record.prompt_tokens ?? 0},
    ${record.completion_tokens ?? 0}, ${record.cost_usd ?? 0}, ${latency}, ${record.status},
    ${record.trace_id ?? null}, ${clampMs(record.ttft_ms)}, ${clampMs(record.approval_wait_ms)},
    ${record.approval ?? null})`;
}

function clampMs(value: number | null | undefined): number | null {
  return value === null || value === undefined
    ? null
    : Math.min(MAX_LATENCY_MS, Math.max(0, Math.round(value)));
}
