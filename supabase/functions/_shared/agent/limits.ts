/**
 * Limits: the per-connection frame rate (connection state, so in memory), and the user's
 * token and cost quota (user state, so in Postgres: each LLM call of a turn reserved at its
 * worst case before it is made, the first by `agent_start_turn`, the others by
 * `agent_reserve_step`, and the whole settled with `settle_quota` against what the turn
 * really used).
 */
import type { Limits } from "../agent_protocol.ts";
import { PROTOCOL_LIMITS } from "../agent_protocol.ts";
import type { Tx } from "../db/client.ts";
import { type InlineSql, inlineSql, jsonText, run } from "../db/inline_sql.ts";
import type { ChatMessage, ToolDefinition as LlmToolDefinition } from "../llm_client.ts";
import type { AgentConfig } from "./config.ts";

/** Admits at most `limit` events in any `windowMs`; refused events do not count. */
export class SlidingWindow {
  readonly #times: number[] = [];
  constructor(readonly limit: number, readonly windowMs: number) {}

  admit(now: number = performance.now()): boolean {
    while (this.#times.length > 0 && now - this.#times[0] >= this.windowMs) {
      this.#times.shift();
    }
    if (this.#times.length >= this.limit) return false;
    this.#times.push(now);
    return true;
  }

  /** Milliseconds until the next event would be admitted. */
  retryAfterMs(now: number = performance.now()): number {
    if (this.#times.length < this.limit) return 0;
    return Math.max(0, Math.ceil(this.#times[0] + this.windowMs - now));
  }
}

/** The frame-rate window of one connection. */
export function frameRateWindow(): SlidingWindow {
  return new SlidingWindow(PROTOCOL_LIMITS.maxFramesPerSecond, 1000);
}

/**
 * Tokens a prompt will cost, estimated as one token per four characters of what is sent
 * (messages and tool schemas as JSON). Rough, but deterministic, and the settlement
 * corrects it with the upstream's real count.
 */
export function estimatePromptTokens(
  messages: readonly ChatMessage[],
  tools: readonly LlmToolDefinition[],
): number {
  const characters = JSON.stringify(messages).length +
    (tools.length > 0 ? JSON.stringify(tools).length : 0);
  return Math.ceil(characters / 4);
}

/** What a turn reserves: its first prompt plus one full completion. */
export function reservationTokens(
  messages: readonly ChatMessage[],
  tools: readonly LlmToolDefinition[],
  maxCompletionTokens: number,
): number {
  return estimatePromptTokens(messages, tools) + maxCompletionTokens;
}

/** How a reservation ends: what the turn reserved, what it used, what it cost. */
export interface Settlement {
  userId: string;
  reservedTokens: number;
  /** The cost reserved with the tokens, counted against the day until given back here. */
  reservedCostUsd: number;
  usedTokens: number;
  costUsd: number;
}

/**
 * Gives back what turns reserved but did not use (or takes what they used beyond), in one
 * statement run as service_role; sent along with a flush.
 */
export function settlementStatement(settlements: readonly Settlement[]): InlineSql {
  const rows = settlements.map((s) => ({
    user_id: s.userId,
    reserved: s.reservedTokens,
    used: Math.max(0, Math.round(s.usedTokens)),
    cost: Math.max(0, s.costUsd),
    reserved_cost: Math.max(0, s.reservedCostUsd),
  }));
  return inlineSql`
    select public.settle_quota(x.user_id, x.reserved, x.used, x.cost, x.reserved_cost)
    from (
      select * from jsonb_to_recordset(${jsonText(rows)}::jsonb)
        as r(user_id uuid, reserved integer, used integer, cost numeric, reserved_cost numeric)
      -- Users' limits rows locked in one order: concurrent settlements cannot deadlock.
      order by r.user_id
    ) x`;
}

/** The `limits` of the `ready` frame: the protocol's and the user's, read as the user. */
export async function readLimits(tx: Tx, config: AgentConfig): Promise<Limits> {
  const [row] = await run<{
    max_connections: number;
    bucket_capacity: number;
    refill_per_minute: number;
    available: number;
    daily_token_cap: string;
    day_tokens: string;
    daily_cost_cap_usd: string;
    day_cost_usd: string;
  }>(
    tx,
    inlineSql`
      select l.max_connections, l.bucket_capacity, l.refill_per_minute,
             floor(least(l.bucket_capacity::double precision, l.bucket_tokens
               + l.refill_per_minute * extract(epoch from now() - l.bucket_updated_at) / 60.0))
               ::int as available,
             l.daily_token_cap,
             case when l.usage_day = (now() at time zone 'utc')::date then l.day_tokens else 0
               end as day_tokens,
             l.daily_cost_cap_usd,
             case when l.usage_day = (now() at time zone 'utc')::date then l.day_cost_usd else 0
               end as day_cost_usd
      from public.user_limits l
      where l.user_id = (select auth.uid())`,
  );
  return {
    max_connections: row?.max_connections ?? 3,
    max_frame_bytes: PROTOCOL_LIMITS.maxFrameBytes,
    max_frames_per_second: PROTOCOL_LIMITS.maxFramesPerSecond,
    max_steps: config.maxSteps,
    approval_timeout_ms: config.approvalTimeoutMs,
    max_completion_tokens: config.maxCompletionTokens,
    token_bucket: {
      capacity: row?.bucket_capacity ?? 0,
      refill_per_minute: row?.refill_per_minute ?? 0,
      available: Math.max(0, row?.available ?? 0),
    },
    daily: {
      token_cap: Number(row?.daily_token_cap ?? 0),
      tokens_used: Number(row?.day_tokens ?? 0),
      cost_cap_usd: Number(row?.daily_cost_cap_usd ?? 0),
      cost_used_usd: Number(row?.day_cost_usd ?? 0),
    },
  };
}
