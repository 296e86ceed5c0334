/**
 * Queued chats (double-texting with `policy: "enqueue"`): stored in `agent_chat_queue` by
 * `agent_start_chat`, started here when their session is free. Nothing of the queue is in
 * memory: the isolate that ends a session's turn starts the next chat, and so does any isolate
 * that notices a free session with chats waiting (a connection following a queued turn, a new
 * connection, a sweep), so a queue moves on even when the isolate that should have moved it
 * died. Concurrent attempts to start one chat start it once (`agent_start_chat` under the
 * session's lock: the losers get `gone`).
 */
import { ChatFrameSchema, type ServerError, type ServerFrame } from "../agent_protocol.ts";
import type { AccountRefusal } from "../account_access.ts";
import type { VerifiedUser } from "../auth.ts";
import { type JwtClaims, queryAsServiceRole } from "../db/client.ts";
import { inlineSql, jsonText } from "../db/inline_sql.ts";
import { USER_ROLE } from "../http/require_user.ts";
import { handleChat } from "./chat.ts";
import type { AgentRuntime } from "./runtime.ts";
import type { TurnClient } from "./turn_client.ts";

/** Whose queue: the user and the claims his queued turns run with. */
export interface QueueCaller {
  id: string;
  claims: JwtClaims;
}

/** How many queued chats one call starts at most (each failed one lets the next try). */
const MAX_STARTS = 16;

/**
 * Starts the next queued chat of each of the user's free sessions (or of one session). A chat
 * that cannot start (its quota refuses it, say) leaves the queue with its error, and the next
 * one gets its chance.
 */
export async function startQueuedChats(
  runtime: AgentRuntime,
  caller: QueueCaller,
  sessionId?: string,
): Promise<void> {
  const { sql, config } = runtime.deps;
  for (let started = 0; started < MAX_STARTS;) {
    const heads = await queryAsServiceRole<QueueHead>(
      sql,
      inlineSql`select q.chat_id, q.session_id, q.turn_id, q.frame
        from public.agent_startable_chats(${caller.id}::uuid, ${sessionId ?? null}::uuid,
          ${config.staleAfterMs}) q`,
    );
    if (heads.length === 0) return;
    let failed = false;
    for (const head of heads) {
      started++;
      const client = new QueueClient(caller);
      const frame = ChatFrameSchema.safeParse(head.frame);
      if (frame.success) {
        await handleChat(runtime, client, frame.data, { queuedTurnId: head.turn_id });
      } else {
        client.sendError({
          code: "bad_request",
          message: "The queued chat is no longer valid",
          retryable: false,
        });
      }
      if (client.error) {
        failed = true;
        await queryAsServiceRole(
          sql,
          inlineSql`select public.agent_fail_queued_chat(${caller.id}::uuid,
            ${head.chat_id}::uuid, ${jsonText(client.error)}::jsonb)`,
        );
      }
    }
    // Only failures leave a session free with chats still waiting.
    if (!failed) return;
  }
}

/** How many sessions' queues one sweep moves at most; the next sweep takes the rest. */
const SWEEP_QUEUES = 16;

/**
 * The sweep's part (`POST /agent/sweep`): starts the queued chats of sessions with no running
 * or parked turn, of any user — the queues that a dead isolate or a turn ended where nobody
 * was connected left waiting. Each starts as the user who queued it (the claims stored with
 * it); a concurrent start elsewhere makes this one a no-op. Returns how many queues it moved.
 */
export async function startSweptQueues(runtime: AgentRuntime): Promise<number> {
  const heads = await queryAsServiceRole<
    { user_id: string; session_id: string; claims: JwtClaims }
  >(
    runtime.deps.sql,
    inlineSql`select q.user_id, q.session_id, q.claims
      from public.agent_sweep_queued_chats(${SWEEP_QUEUES}) q`,
  );
  for (const head of heads) {
    await startQueuedChats(runtime, { id: head.user_id, claims: head.claims }, head.session_id);
  }
  return heads.length;
}

interface QueueHead {
  chat_id: string;
  session_id: string;
  turn_id: string;
  frame: unknown;
}

/**
 * The client of a queued chat while it starts: nobody is on the other end (followers read
 * the turn from Postgres), so it only keeps what would have been said to a refused chat.
 */
class QueueClient implements TurnClient {
  readonly user: VerifiedUser;
  error: ServerError | undefined;

  constructor(caller: QueueCaller) {
    this.user = { id: caller.id, role: USER_ROLE, claims: caller.claims };
  }

  /** Closed: nothing follows a turn on its behalf. */
  get isOpen(): boolean {
    return false;
  }

  send(_frame: ServerFrame): void {}

  sendError(error: ServerError): void {
    this.error ??= error;
  }

  revokeAccess(refusal: AccountRefusal): void {
    this.sendError({ code: "access_revoked", reason: refusal, message: refusal, retryable: false });
  }

  follow(_turnId: string, _stop: () => void): void {}

  unfollow(_turnId: string, stop?: () => void): void {
    stop?.();
  }
}
