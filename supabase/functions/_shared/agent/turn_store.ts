/**
 * Turns in Postgres: creating one, the batched flush of partial output (frames, message text,
 * heartbeat, ending, quota settlement), cross-isolate cancel requests, marking turns of dead
 * isolates interrupted, and reading a turn back for `resume`.
 *
 * Reads that a user may make run as the user (`Tx` from `asUser`, so RLS decides whose turn
 * it is). Writes to `agent_turns` and `agent_turn_events` run as service_role: users read
 * them but must not forge them. A flush also updates the streaming assistant message as
 * service_role, in the same statement, so stored frames and stored text never disagree; the
 * message row itself was created as the user.
 */
import type { ChatFrame, ServerError, TurnFrame } from "../agent_protocol.ts";
import type { Database, Json } from "../db/database.types.ts";
import {
  type JwtClaims,
  queryAsServiceRole,
  queryAsServiceRoleFor,
  queryAsUser,
  type Sql,
  type Tx,
} from "../db/client.ts";
import type { AppendRow } from "../history/append.ts";
import type { FlushEntry, TurnState } from "./live_turn.ts";
import { inlineSql, jsonText, run } from "../db/inline_sql.ts";

type TurnRow = Database["public"]["Tables"]["agent_turns"]["Row"];

/** What `resume` and a retried chat need to know about a stored turn. */
export type StoredTurn =
  & Pick<TurnRow, "id" | "session_id" | "state" | "owner" | "heartbeat_at" | "steps" | "model">
  & Pick<TurnRow, "error" | "epoch">
  & {
    /** Running, but its isolate's lease lapsed: any isolate may adopt it. */
    orphaned: boolean;
    /** Running: how long its isolate's lease still lasts (ms), if it has one. */
    lease_left_ms: number | null;
    /** Where takeovers restarted it (see `restart_step`). */
    restarts: { epoch: number; seq: number }[];
  };

/** What `startTurn` stores: a chat's two messages and its turn. */
export interface TurnStart {
  /** The turn's id, unless its user message was stored before with another. */
  turnId: string;
  sessionId: string;
  /** Set for a new session. */
  title: string | null;
  /** The user message and its empty, streaming answer, validated (`appendRow`). */
  messages: readonly [AppendRow, AppendRow];
  /** The isolate that runs the turn. */
  owner: string;
  model: string;
  /** The first LLM call's worst case: its prompt (estimated) and a full completion. */
  promptTokens: number;
  completionTokens: number;
  /** Set when continuing a session: its turns of dead isolates are marked interrupted first. */
  staleAfterMs?: number;
  /**
   * Double-texting: what a busy session does with the chat (default `reject`; `queued`: the
   * queue's head starting now), and the chat frame a queue stores (needed for `enqueue`).
   */
  policy?: "reject" | "enqueue" | "queued";
  frame?: ChatFrame;
}

export type TurnStartOutcome =
  | { kind: "refused"; reason: string; retryAfterMs?: number }
  /**
   * The session has a running turn (or chats queued before): `reject`, or a queue head; or a
   * parked turn, which refuses even `enqueue` (`enqueueable: false`).
   */
  | { kind: "busy"; turnId: string; enqueueable?: false }
  /** Stored in the session's queue; `ahead` chats start before it. */
  | { kind: "queued"; turnId: string; ahead: number; runningTurnId: string | null }
  /** A queue head that is no longer queued: another isolate started it. */
  | { kind: "gone" }
  /** A concurrent attempt of the same chat started the turn; follow it. */
  | { kind: "exists"; turnId: string }
  | {
    kind: "started";
    turnId: string;
    sessionId: string;
    /** `chat_history.id` of the two messages. */
    userRowId: string;
    assistantRowId: string;
    /** What the start reserved: the first call's tokens and cost, at the model's prices. */
    reservedTokens: number;
    reservedCostUsd: number;
  };

/**
 * Starts a turn in one round trip and one transaction (`public.agent_start_chat`, then
 * `public.agent_start_turn`): applies the double-texting policy under the session's lock,
 * interrupts the session's dead turns, reserves the quota, stores the messages as the user
 * and the turn.
 * Throws the database's error when the messages cannot be stored (see `errorFromDatabase`)
 * or a concurrent attempt of the same chat won a race (`isRace`: read again and retry).
 */
export async function startTurn(
  sql: Sql,
  claims: JwtClaims,
  start: TurnStart,
): Promise<TurnStartOutcome> {
  const [row] = await queryAsServiceRoleFor<{ outcome: StartRow }>(
    sql,
    claims,
    inlineSql`
      select public.agent_start_chat(${start.policy ?? "reject"},
        ${start.frame ? jsonText(start.frame) : null}::jsonb,
        ${start.turnId}::uuid, ${start.sessionId}::uuid,
        ${start.title}, ${jsonText(start.messages)}::jsonb, ${start.owner}, ${start.model},
        ${start.promptTokens}, ${start.completionTokens}, ${start.staleAfterMs ?? null}::integer)
        as outcome`,
  );
  const outcome = row.outcome;
  switch (outcome.kind) {
    case "refused":
      return {
        kind: "refused",
        reason: outcome.reason ?? "quota",
        ...(outcome.retry_after_ms == null ? {} : { retryAfterMs: outcome.retry_after_ms }),
      };
    case "exists":
      return { kind: "exists", turnId: outcome.turn_id };
    case "busy":
      return {
        kind: "busy",
        turnId: outcome.turn_id,
        ...(outcome.enqueueable === false ? { enqueueable: false as const } : {}),
      };
    case "queued":
      return {
        kind: "queued",
        turnId: outcome.turn_id,
        ahead: outcome.ahead,
        runningTurnId: outcome.running_turn_id,
      };
    case "gone":
      return { kind: "gone" };
    case "started":
      return {
        kind: "started",
        turnId: outcome.turn_id,
        sessionId: outcome.session_id,
        userRowId: outcome.user_row_id,
        assistantRowId: outcome.assistant_row_id,
        reservedTokens: outcome.reserved_tokens,
        reservedCostUsd: Number(outcome.reserved_cost_usd),
      };
  }
}

/** What `agent_start_chat` (and so `agent_start_turn`) returns. */
type StartRow =
  | { kind: "refused"; reason: string | null; retry_after_ms: number | null }
  | { kind: "exists"; turn_id: string }
  | { kind: "busy"; turn_id: string; enqueueable: boolean | null }
  | { kind: "queued"; turn_id: string; ahead: number; running_turn_id: string | null }
  | { kind: "gone" }
  | {
    kind: "started";
    turn_id: string;
    session_id: string;
    user_row_id: string;
    assistant_row_id: string;
    reserved_tokens: number;
    /** numeric: a number in JSON. */
    reserved_cost_usd: number | string;
  };

export type StepReservation =
  /** The turn's reservation, with this step's. */
  | { allowed: true; reservedTokens: number; reservedCostUsd: number }
  /** `reason` is consume_quota's, or `not_running` for a turn no longer running. */
  | { allowed: false; reason: string; retryAfterMs?: number };

/**
 * Reserves a running turn's next LLM call at its worst case, in tokens and cost
 * (`public.agent_reserve_step`, under the user's limits row lock), before it is made: parallel
 * multi-step turns cannot together spend more than the bucket and the daily caps hold.
 */
export async function reserveStep(
  sql: Sql,
  turnId: string,
  promptTokens: number,
  completionTokens: number,
): Promise<StepReservation> {
  const [{ outcome }] = await queryAsServiceRole<{
    outcome: {
      allowed: boolean;
      reason?: string;
      retry_after_ms?: number | null;
      reserved_tokens?: number;
      reserved_cost_usd?: number | string;
    };
  }>(
    sql,
    inlineSql`select public.agent_reserve_step(${turnId}::uuid, ${promptTokens},
      ${completionTokens}) as outcome`,
  );
  if (outcome.allowed) {
    return {
      allowed: true,
      reservedTokens: outcome.reserved_tokens ?? 0,
      reservedCostUsd: Number(outcome.reserved_cost_usd ?? 0),
    };
  }
  return {
    allowed: false,
    reason: outcome.reason ?? "quota",
    ...(outcome.retry_after_ms == null ? {} : { retryAfterMs: outcome.retry_after_ms }),
  };
}

/** A queued chat of the caller's, as its follower sees it (read as the user: RLS). */
export interface QueuedChat {
  chat_id: string;
  session_id: string;
  /** Set when it could not start: an `error` frame's fields. */
  error: ServerError | null;
}

export async function readQueuedChat(tx: Tx, turnId: string): Promise<QueuedChat | undefined> {
  const [row] = await run<QueuedChat>(
    tx,
    inlineSql`select q.chat_id, q.session_id, q.error from public.agent_chat_queue q
      where q.turn_id = ${turnId}::uuid`,
  );
  return row;
}

/** A turn of the user's, or undefined (also for another user's turn). */
export async function loadTurn(
  sql: Sql,
  userId: string,
  turnId: string,
): Promise<StoredTurn | undefined> {
  // Leases are not the user's to read: read as service_role, for one turn of the user's.
  const [row] = await queryAsServiceRole<StoredTurn>(
    sql,
    inlineSql`
      select t.id, t.session_id, t.state, t.owner, t.heartbeat_at, t.steps, t.model, t.error,
             t.epoch, t.restarts, t.state = 'running' and not exists (
               select 1 from public.agent_isolates i
               where i.id = t.owner and i.lease_expires_at > clock_timestamp()) as orphaned,
             (select ceil(extract(epoch from i.lease_expires_at - clock_timestamp()) * 1000)::int
              from public.agent_isolates i
              where t.state = 'running' and i.id = t.owner
                and i.lease_expires_at > clock_timestamp()) as lease_left_ms
      from public.agent_turns t
      where t.id = ${turnId}::uuid and t.user_id = ${userId}::uuid`,
  );
  return row;
}

export interface MessageTurn {
  /** chat_history.id of the user message. */
  rowId: string;
  sessionId: string;
  role: string;
  turnId: string | null;
  /** Whether an agent_turns row exists for it. */
  hasTurn: boolean;
}

/**
 * The stored frames of a turn after `afterSeq`, in order, read as the user in one round trip
 * (followers read it every poll).
 */
export async function readFrames(
  sql: Sql,
  claims: JwtClaims,
  turnId: string,
  afterSeq: number,
): Promise<TurnFrame[]> {
  const batches = await queryAsUser<{ seq: number; frames: StoredFrame[] }>(
    sql,
    claims,
    inlineSql`
      select e.seq, e.frames from public.agent_turn_events e
      where e.turn_id = ${turnId}::uuid and e.last_seq > ${afterSeq}
      order by e.seq`,
  );
  return batches.flatMap((batch) =>
    decodeFrames(turnId, batch.seq, batch.frames).filter((frame) => frame.seq > afterSeq)
  );
}

/**
 * The answer as a turn's stored frames up to `lastSeq` tell it: what a client that followed
 * them holds (tokens appended, each `restart_step` cutting the text to its `keep_chars`).
 */
export async function storedAnswer(sql: Sql, turnId: string, lastSeq: number): Promise<string> {
  const batches = await queryAsServiceRole<{ seq: number; frames: StoredFrame[] }>(
    sql,
    inlineSql`
      select e.seq, e.frames from public.agent_turn_events e
      where e.turn_id = ${turnId}::uuid and e.seq <= ${lastSeq}
      order by e.seq`,
  );
  let text = "";
  for (const batch of batches) {
    batch.frames.forEach((frame, index) => {
      if (batch.seq + index > lastSeq) return;
      if (typeof frame === "string") text += frame;
      else if (frame.type === "restart_step") text = text.slice(0, Number(frame.keep_chars));
    });
  }
  return text;
}

/** The last stored frame of a turn (read as the user), or undefined when none is stored. */
export async function lastStoredFrame(
  sql: Sql,
  claims: JwtClaims,
  turnId: string,
): Promise<TurnFrame | undefined> {
  const [row] = await queryAsUser<{ last_seq: number; frame: StoredFrame }>(
    sql,
    claims,
    inlineSql`
      select e.last_seq, e.frames -> -1 as frame from public.agent_turn_events e
      where e.turn_id = ${turnId}::uuid
      order by e.seq desc
      limit 1`,
  );
  return row ? decodeFrames(turnId, row.last_seq, [row.frame])[0] : undefined;
}

/**
 * How a frame is stored in `agent_turn_events.frames`: its seq is its batch's `seq` plus its
 * position and its turn the row's, so neither is repeated; a `token` frame — nearly all of
 * them — is stored as its bare delta. Any other frame is its object (with or without
 * `turn_id` and `seq`: the row's win).
 */
export type StoredFrame = string | { [field: string]: Json | undefined };

export function encodeFrames(frames: readonly TurnFrame[]): StoredFrame[] {
  return frames.map((frame) => {
    if (frame.type === "token") return frame.delta;
    const { turn_id: _turn, seq: _seq, ...rest } = frame;
    return rest as StoredFrame;
  });
}

export function decodeFrames(
  turnId: string,
  firstSeq: number,
  stored: readonly StoredFrame[],
): TurnFrame[] {
  return stored.map((frame, index) => {
    const seq = firstSeq + index;
    return (typeof frame === "string"
      ? { type: "token", turn_id: turnId, seq, delta: frame }
      : { ...frame, turn_id: turnId, seq }) as TurnFrame;
  });
}

export interface OwnedTurn {
  cancelRequested: boolean;
  /** The row's state after the flush (`running` when a park was overtaken by an answer). */
  state: TurnState;
  /** An approval answer left for the turn (one that overtook its park). */
  approvalAnswer: unknown;
}

export interface FlushOutcome {
  /** Turns still ours (or ended or parked by this flush). */
  owned: Map<string, OwnedTurn>;
}

interface TurnUpdate {
  id: string;
  user_id: string;
  epoch: number;
  steps: number;
  model: string;
  state: TurnState | null;
  error: Json | null;
  checkpoint: Json | null;
  parked_until: string | null;
  used_tokens: number | null;
  used_cost: number | null;
  progressed: boolean;
}

interface MessageUpdate {
  turn_id: string;
  id: string;
  from_chars: number;
  /** Null: the text is unchanged. */
  text: string | null;
  /** Null: unchanged. */
  tool_calls: Json | null;
  status: string | null;
  model: string;
}

interface EventBatch {
  turn_id: string;
  user_id: string;
  seq: number;
  last_seq: number;
  frames: Json;
}

/**
 * One flush for every turn of the isolate that has something new, in one statement: the
 * heartbeat (and ending) of each turn still running as ours, its new frames, its message.
 * A turn another isolate marked interrupted meanwhile is left alone and shows up missing
 * from `owned`; a turn this flush ends is in `owned` (with its new state). The quota
 * reservations of ending turns are settled in the same transaction, before their clients
 * hear of the end.
 */
export async function writeFlush(
  sql: Sql,
  owner: string,
  entries: FlushEntry[],
): Promise<FlushOutcome> {
  const turns: TurnUpdate[] = [];
  const messages: MessageUpdate[] = [];
  const events: EventBatch[] = [];
  for (const entry of entries) {
    const { turn, outcome } = entry;
    turns.push({
      id: turn.turnId,
      user_id: turn.userId,
      epoch: entry.epoch,
      steps: entry.steps,
      model: entry.model,
      state: outcome?.state ?? null,
      error: outcome?.error ? { ...outcome.error } : null,
      checkpoint: entry.checkpoint ? entry.checkpoint as unknown as Json : null,
      parked_until: outcome?.parkedUntil ?? null,
      used_tokens: outcome?.used ? Math.max(0, Math.round(outcome.used.tokens)) : null,
      used_cost: outcome?.used ? Math.max(0, outcome.used.costUsd) : null,
      progressed: entry.progressed ?? false,
    });
    if (entry.message || outcome) {
      messages.push({
        turn_id: turn.turnId,
        id: turn.assistantRowId,
        from_chars: entry.message?.fromChars ?? 0,
        text: entry.message?.text ?? null,
        tool_calls: entry.message?.toolCalls ? toolCallsJson(entry.message.toolCalls) : null,
        status: outcome?.messageStatus ?? null,
        model: entry.model,
      });
    }
    if (entry.frames.length > 0) {
      events.push({
        turn_id: turn.turnId,
        user_id: turn.userId,
        seq: entry.frames[0].seq,
        last_seq: entry.frames[entry.frames.length - 1].seq,
        frames: encodeFrames(entry.frames),
      });
    }
  }
  // One function call (public.agent_flush), whose statement's plan Postgres keeps; it settles
  // the reservations of the turns it ends or parks (those still ours only: exactly once).
  const rows = await queryAsServiceRole<
    { id: string; cancel_requested: boolean; state: TurnState; approval_answer: unknown }
  >(
    sql,
    inlineSql`
    select f.id, f.cancel_requested, f.state, f.approval_answer
    from public.agent_flush(${owner}, ${jsonText(turns)}::jsonb, ${jsonText(messages)}::jsonb,
      ${jsonText(events)}::jsonb) f`,
  );
  const owned = new Map<string, OwnedTurn>();
  for (const row of rows) {
    owned.set(row.id, {
      cancelRequested: row.cancel_requested,
      state: row.state,
      approvalAnswer: row.approval_answer,
    });
  }
  return { owned };
}

function toolCallsJson(calls: FlushEntry["turn"]["toolCalls"]): Json | null {
  return calls.length === 0 ? null : calls.map((call) => ({ ...call })) as Json;
}

/** Asks whichever isolate runs the turn to cancel it; false when it is not running. */
export async function requestCancel(sql: Sql, userId: string, turnId: string): Promise<boolean> {
  const rows = await queryAsServiceRole(
    sql,
    inlineSql`
      update public.agent_turns t
      set cancel_requested_at = coalesce(t.cancel_requested_at, now())
      where t.id = ${turnId}::uuid and t.user_id = ${userId}::uuid and t.state = 'running'
      returning t.id`,
  );
  return rows.length > 0;
}

export interface InterruptScope {
  sessionId?: string;
  turnId?: string;
}

/**
 * Marks the user's turns of dead isolates interrupted (see the SQL function); `tx` runs as
 * service_role.
 */
export async function interruptStaleTurns(
  tx: Tx,
  userId: string,
  staleAfterMs: number,
  scope: InterruptScope = {},
): Promise<string[]> {
  const rows = await run<{ turn_id: string }>(
    tx,
    inlineSql`
      select s.turn_id from public.agent_interrupt_stale_turns(
        ${userId}::uuid, ${staleAfterMs}, ${scope.sessionId ?? null}::uuid,
        ${scope.turnId ?? null}::uuid) s`,
  );
  return rows.map((row) => row.turn_id);
}
