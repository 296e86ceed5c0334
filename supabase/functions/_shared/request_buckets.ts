/**
 * Per-user request buckets of the HTTP surfaces (`public.consume_request`,
 * 20261203000600_request_buckets.sql): each request of a user to `mcp` or `history` takes one
 * token of his bucket for that surface. Run as service_role: users must not meter themselves.
 */
import { queryAsServiceRole, type Sql } from "./db/client.ts";
import { inlineSql } from "./db/inline_sql.ts";

/** The surfaces with a request bucket of their own. */
export type RequestSurface = "mcp" | "history" | "connections";

export type RequestDecision =
  | { allowed: true }
  /** `retryAfterMs`: when one request would be admitted; absent when never (no refill). */
  | { allowed: false; retryAfterMs?: number };

export async function consumeRequest(
  sql: Sql,
  userId: string,
  surface: RequestSurface,
): Promise<RequestDecision> {
  const [row] = await queryAsServiceRole<{ allowed: boolean; retry_after_ms: string | null }>(
    sql,
    inlineSql`select * from public.consume_request(${userId}::uuid, ${surface})`,
  );
  if (row.allowed) return { allowed: true };
  return row.retry_after_ms === null
    ? { allowed: false }
    : { allowed: false, retryAfterMs: Number(row.retry_after_ms) };
}
