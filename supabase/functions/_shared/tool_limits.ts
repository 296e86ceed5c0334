/**
 * The caller's limits in front of tool calls, from MCP and the agent alike
 * (`public.consume_tool_calls`): a request bucket against call floods, and a fixed token cost
 * per call from the same token quota LLM calls draw on. Run as service_role: users must not
 * meter themselves.
 */
import { queryAsServiceRole, type Sql } from "./db/client.ts";
import { inlineSql } from "./db/inline_sql.ts";

export type ToolCallDecision =
  | { allowed: true }
  /** `reason`: `request_rate`, or consume_quota's (`token_bucket`, `daily_token_cap`, …). */
  | { allowed: false; reason: string; retryAfterMs?: number };

/** Admits `calls` tool calls of one request, all or none. */
export async function consumeToolCalls(
  sql: Sql,
  userId: string,
  calls: number,
): Promise<ToolCallDecision> {
  const [row] = await queryAsServiceRole<
    { allowed: boolean; reason: string | null; retry_after_ms: string | null }
  >(sql, inlineSql`select * from public.consume_tool_calls(${userId}::uuid, ${calls})`);
  if (row.allowed) return { allowed: true };
  return {
    allowed: false,
    reason: row.reason ?? "quota",
    ...(row.retry_after_ms === null ? {} : { retryAfterMs: Number(row.retry_after_ms) }),
  };
}
