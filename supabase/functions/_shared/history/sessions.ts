/**
 * The caller's sessions (newest first, cursor-paged), a session's messages in seq order, and
 * deleting a session. RLS alone decides whose rows exist: another user's session is
 * indistinguishable from a missing one.
 */
import type { Tx } from "../db/client.ts";
import { checkLimit, invalid } from "./input.ts";
import {
  HISTORY_LIMITS,
  type HistoryError,
  type HistoryMessage,
  type HistoryResult,
  type MessagesPage,
  type SessionsPage,
  type SessionSummary,
} from "./protocol.ts";

export interface ListSessionsOptions {
  limit?: number;
  /** A `next_before` cursor from the previous page. */
  before?: string | null;
}

interface SessionCursor {
  updatedAt: string;
  id: string;
}

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:\d{2})?)$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Opaque to clients. It carries `updated_at` as Postgres printed it, microseconds included:
 * a JavaScript Date would round them away and the next page would repeat or skip rows.
 */
function encodeSessionCursor(cursor: SessionCursor): string {
  const bytes = new TextEncoder().encode(`${cursor.updatedAt}|${cursor.id}`);
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

function decodeSessionCursor(cursor: string): SessionCursor | undefined {
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) return undefined;
  let decoded: string;
  try {
    decoded = atob(cursor.replaceAll("-", "+").replaceAll("_", "/"));
  } catch (error) {
    if (error instanceof DOMException) return undefined;
    throw error;
  }
  const [updatedAt, id, ...rest] = decoded.split("|");
  if (rest.length > 0 || !TIMESTAMP.test(updatedAt ?? "") || !UUID.test(id ?? "")) {
    return undefined;
  }
  return { updatedAt, id };
}

/** The caller's sessions, most recently active first. */
export async function listSessions(
  tx: Tx,
  options: ListSessionsOptions = {},
): Promise<HistoryResult<SessionsPage>> {
  const limit = checkLimit(options.limit, HISTORY_LIMITS.sessionsPage);
  if (!limit.ok) return limit;
  let cursor: SessionCursor | undefined;
  if (options.before !== undefined && options.before !== null) {
    cursor = decodeSessionCursor(options.before);
    if (!cursor) return invalid("is not a cursor this API handed out", "before");
  }
  // ::text first: postgres.js would send a timestamptz parameter through a JS Date, whose
  // milliseconds cut the microseconds off and make the page boundary skip rows.
  const olderThanCursor = cursor
    ? tx`and (s.updated_at, s.id) < (${cursor.updatedAt}::text::timestamptz, ${cursor.id}::uuid)`
    : tx``;
  const rows = await tx<SessionSummary[]>`
    select s.id, s.title,
           to_json(s.created_at) #>> '{}' as created_at,
           to_json(s.updated_at) #>> '{}' as updated_at
    from public.chat_sessions s
    where s.user_id = (select auth.uid()) ${olderThanCursor}
    order by s.updated_at desc, s.id desc
    limit ${limit.value + 1}`;
  const sessions = rows.slice(0, limit.value);
  const last = sessions.at(-1);
  const next_before = rows.length > limit.value && last
    ? encodeSessionCursor({ updatedAt: last.updated_at, id: last.id })
    : null;
  return { ok: true, value: { sessions, next_before } };
}

export interface ListMessagesOptions {
  /** Only messages with a greater seq; default 0 (from the start). */
  afterSeq?: number;
  limit?: number;
}

/** A session's messages in seq order; `not_found` when the caller has no such session. */
export async function listMessages(
  tx: Tx,
  sessionId: string,
  options: ListMessagesOptions = {},
): Promise<HistoryResult<MessagesPage>> {
  const limit = checkLimit(options.limit, HISTORY_LIMITS.messagesPage);
  if (!limit.ok) return limit;
  const afterSeq = options.afterSeq ?? 0;
  if (!Number.isInteger(afterSeq) || afterSeq < 0 || afterSeq > 2 ** 31 - 1) {
    return invalid("must be a non-negative integer", "after_seq");
  }
  if (!UUID.test(sessionId) || !await sessionExists(tx, sessionId)) return noSuchSession();

  const rows = await tx<HistoryMessage[]>`
    select h.client_id as id, h.seq, h.role, h.content, h.tool_calls, h.tool_call_id,
           h.model, h.status, h.turn_id,
           to_json(h.created_at) #>> '{}' as created_at,
           to_json(h.updated_at) #>> '{}' as updated_at
    from public.chat_history h
    where h.session_id = ${sessionId} and h.seq > ${afterSeq}
    order by h.seq
    limit ${limit.value + 1}`;
  const messages = rows.slice(0, limit.value);
  const next_after_seq = rows.length > limit.value ? messages[messages.length - 1].seq : null;
  return { ok: true, value: { session_id: sessionId, messages, next_after_seq } };
}

async function sessionExists(tx: Tx, sessionId: string): Promise<boolean> {
  const rows = await tx`select 1 from public.chat_sessions s where s.id = ${sessionId}`;
  return rows.length > 0;
}

function noSuchSession(): HistoryError {
  return { ok: false, code: "not_found", message: "No such session" };
}

/** Deletes a session with its messages; `not_found` when the caller has no such session. */
export async function deleteSession(tx: Tx, sessionId: string): Promise<HistoryResult<void>> {
  if (!UUID.test(sessionId)) return noSuchSession();
  const deleted = await tx`delete from public.chat_sessions s where s.id = ${sessionId}
                           returning s.id`;
  return deleted.length > 0 ? { ok: true, value: undefined } : noSuchSession();
}
