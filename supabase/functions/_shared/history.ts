/**
 * Chat history as the calling user: append a batch, list sessions, list a session's
 * messages, search, delete a session. The `history` function serves these over HTTP and the
 * `agent` function calls them directly, both with a `Tx` that `asUser` scoped, so RLS alone
 * decides whose rows exist: another user's session is indistinguishable from a missing one.
 *
 * Every operation resolves to a value: `{ ok: true, value }` or `{ ok: false, code, message,
 * path? }` for what the caller got wrong (bad input, unknown session, reused client id).
 * Anything else (connection lost, a bug) is thrown. A failed append runs inside a savepoint,
 * so the caller's transaction stays usable after an error value.
 */
import postgres from "postgres";
import { z } from "zod";
import type { Tx } from "./db.ts";
import { Constants, type Database, type Json } from "./database.types.ts";
import { fieldPath } from "./field_path.ts";

export { fieldPath };

type Tables = Database["public"]["Tables"];
type MessageRow = Tables["chat_history"]["Row"];
type SessionRow = Tables["chat_sessions"]["Row"];

export type HistoryErrorCode = "invalid_request" | "not_found" | "conflict" | "forbidden";

export interface HistoryError {
  ok: false;
  code: HistoryErrorCode;
  message: string;
  /** The input field at fault, e.g. `messages[2].role`. */
  path?: string;
}

export type HistoryResult<T> = { ok: true; value: T } | HistoryError;

export const HISTORY_LIMITS = {
  maxMessagesPerBatch: 500,
  /** The `chat_history.content` check: octet_length(content) <= 1 MiB. */
  maxContentBytes: 1024 * 1024,
  /** The `chat_sessions.title` check: char_length(title) <= 200. */
  maxTitleChars: 200,
  sessionsPage: { default: 20, max: 100 },
  messagesPage: { default: 100, max: 500 },
  searchPage: { default: 20, max: 100 },
  maxSearchQueryChars: 1000,
} as const;

// ---------------------------------------------------------------------------------------------
// Input

/** Postgres text cannot hold U+0000; refusing it here names the field instead of failing late. */
function text() {
  return z.string().refine((s) => !s.includes("\u0000"), "must not contain NUL characters");
}

/** Any 8-4-4-4-12 hex id, as Postgres' uuid type accepts it (not only RFC 4122 variants). */
const uuid = () => z.guid("must be a uuid");

function withinBytes(s: string, max: number): boolean {
  // A UTF-16 unit never takes more than 3 UTF-8 bytes: short strings need no encoding.
  return s.length * 3 <= max || new TextEncoder().encode(s).byteLength <= max;
}

export const NewMessageSchema = z.object({
  /** The client's id for the message: a retry with the same id is stored once. */
  id: uuid(),
  role: z.enum(Constants.public.Enums.message_role),
  content: text().refine(
    (s) => withinBytes(s, HISTORY_LIMITS.maxContentBytes),
    `must be at most ${HISTORY_LIMITS.maxContentBytes} bytes`,
  ),
  tool_calls: z.array(z.json()).nullish(),
  tool_call_id: text().nullish(),
  model: text().nullish(),
  status: z.enum(Constants.public.Enums.message_status).optional(),
  turn_id: uuid().nullish(),
});

export const AppendInputSchema = z.object({
  /** Absent: the session of an earlier attempt of this batch, else a new one. */
  session_id: uuid().optional(),
  /** Kept when the session already has a title. */
  title: text()
    .refine(
      (s) => [...s].length <= HISTORY_LIMITS.maxTitleChars,
      `must be at most ${HISTORY_LIMITS.maxTitleChars} characters`,
    )
    .nullish(),
  messages: z.array(NewMessageSchema).min(1).max(HISTORY_LIMITS.maxMessagesPerBatch),
}).superRefine((input, ctx) => {
  const seen = new Set<string>();
  input.messages.forEach((message, index) => {
    const id = message.id.toLowerCase();
    if (seen.has(id)) {
      ctx.addIssue({
        code: "custom",
        path: ["messages", index, "id"],
        message: "is used twice in this batch",
      });
    }
    seen.add(id);
  });
});

export type NewMessage = z.input<typeof NewMessageSchema>;
export type AppendInput = z.input<typeof AppendInputSchema>;

function invalid(message: string, path?: string): HistoryError {
  return path === undefined
    ? { ok: false, code: "invalid_request", message }
    : { ok: false, code: "invalid_request", message: `${path}: ${message}`, path };
}

function invalidFromZod(error: z.ZodError): HistoryError {
  const [issue] = error.issues;
  return invalid(issue.message, issue.path.length > 0 ? fieldPath(issue.path) : undefined);
}

/** Validates an append request (the HTTP body, or what the agent built). */
export function parseAppendInput(input: unknown): HistoryResult<AppendInput> {
  const parsed = AppendInputSchema.safeParse(input);
  return parsed.success ? { ok: true, value: parsed.data } : invalidFromZod(parsed.error);
}

function checkLimit(
  value: number | undefined,
  bounds: { default: number; max: number },
): HistoryResult<number> {
  if (value === undefined) return { ok: true, value: bounds.default };
  if (!Number.isInteger(value) || value < 1 || value > bounds.max) {
    return invalid(`must be an integer from 1 to ${bounds.max}`, "limit");
  }
  return { ok: true, value };
}

// ---------------------------------------------------------------------------------------------
// Database errors → values

/** The SQLSTATEs of `append_messages` and of the columns' checks that mean "bad input". */
const INVALID_INPUT_STATES = new Set([
  "AG422", // append_messages: the batch itself is invalid
  "22P02", // invalid text representation: a uuid or enum value
  "23514", // check violation: content over 1 MiB, title over 200 characters
  "22001", // string too long
  "22P05", // untranslatable character: \u0000 inside tool_calls
  "22021", // character not in repertoire
]);

/** An error of `append_messages` (or of the rows' checks) as a value; undefined for others. */
export function errorFromDatabase(error: unknown): HistoryError | undefined {
  if (!(error instanceof postgres.PostgresError)) return undefined;
  if (error.code === "AG404") {
    return { ok: false, code: "not_found", message: "No such session" };
  }
  if (error.code === "AG409") {
    return {
      ok: false,
      code: "conflict",
      message: "A message id of this batch is already used by another message",
    };
  }
  if (error.code === "42501") {
    return { ok: false, code: "forbidden", message: "Not allowed for this role" };
  }
  if (INVALID_INPUT_STATES.has(error.code)) return invalid(error.message);
  return undefined;
}

/** `append_messages` found a client id of the batch already used (AG409). */
export function isConflict(error: unknown): boolean {
  return error instanceof postgres.PostgresError && error.code === "AG409";
}

/**
 * Unique keys concurrent attempts of one batch can collide on: the client ids, and the session
 * row itself when several attempts create the same new session at once (`append_messages`
 * names only the primary key as its ON CONFLICT arbiter, so the (id, user_id) key can raise).
 */
const RACED_CONSTRAINTS = new Set([
  "chat_history_client_id_key",
  "chat_sessions_pkey",
  "chat_sessions_id_user_key",
]);

/**
 * An error a concurrent attempt caused and that a retry resolves, since the retry sees what
 * that attempt committed. Deadlocks belong here too: two attempts inserting the same keys into
 * two unique indexes can wait for each other, and Postgres breaks the cycle by failing one.
 */
export function isRace(error: unknown): boolean {
  if (!(error instanceof postgres.PostgresError)) return false;
  if (error.code === "40P01") return true;
  return error.code === "23505" && RACED_CONSTRAINTS.has(error.constraint_name ?? "");
}

// ---------------------------------------------------------------------------------------------
// Append

/** One row `public.append_messages` returns. `created_at` as Postgres prints it in JSON. */
export interface AppendedRow {
  /** The server's row id (`chat_history.id`). */
  id: string;
  client_id: string;
  seq: number;
  created_at: string;
  /** False when an earlier attempt had already stored this message. */
  inserted: boolean;
}

/**
 * The one call site of `public.append_messages`, unvalidated: database errors are thrown as
 * they are. Use `appendMessages` unless you are testing the SQL function itself.
 */
export function callAppendMessages(
  tx: Tx,
  sessionId: string,
  messages: readonly unknown[],
  title: string | null = null,
): Promise<AppendedRow[]> {
  return tx<AppendedRow[]>`
    select a.id, a.client_id, a.seq, to_json(a.created_at) #>> '{}' as created_at, a.inserted
    from public.append_messages(${sessionId}, ${tx.json(messages as Json[] as never)}, ${title}) a`;
}

export interface AppendedMessage {
  /** The client's id. */
  id: string;
  /** The server's row id, for references such as `agent_turns.user_message_id`. */
  row_id: string;
  seq: number;
  created_at: string;
  inserted: boolean;
}

export interface AppendResult {
  session_id: string;
  /** In the order of the input batch. */
  messages: AppendedMessage[];
  /** True when at least one message was new; false for a pure retry. */
  inserted: boolean;
}

/** How often an append that lost a race is tried again (it then sees the winner's rows). */
const RACE_RETRIES = 3;

/**
 * Appends a batch, all or nothing, creating the session when absent. Idempotent by client
 * id: a retried batch returns the seqs it got the first time, also when it names no session
 * (it then lands in the session its first attempt created).
 */
export async function appendMessages(
  tx: Tx,
  input: AppendInput,
): Promise<HistoryResult<AppendResult>> {
  const parsed = parseAppendInput(input);
  if (!parsed.ok) return parsed;
  const { session_id: requestedSession, title, messages } = parsed.value;
  const clientIds = messages.map((m) => m.id);
  const rows = messages.map(appendRow);

  const earlierSession = () => sessionOfEarlierAttempt(tx, clientIds);
  let sessionId = requestedSession ?? await earlierSession() ?? crypto.randomUUID();
  for (let attempt = 0;; attempt++) {
    try {
      const stored = await tx.savepoint((sp) =>
        callAppendMessages(sp, sessionId, rows, title ?? null)
      );
      return { ok: true, value: appendResult(sessionId, messages, stored) };
    } catch (error) {
      // Lost a race against an attempt of the same batch that committed meanwhile. With no
      // session named, the batch belongs in the winner's session: try there.
      if (attempt < RACE_RETRIES && (isRace(error) || isConflict(error))) {
        const winner = requestedSession ?? await earlierSession();
        if (isRace(error) || (winner !== null && winner !== sessionId)) {
          sessionId = winner ?? crypto.randomUUID();
          continue;
        }
      }
      const known = errorFromDatabase(error);
      if (known) return known;
      throw error;
    }
  }
}

/** A validated message as `public.append_messages` takes it (an element of its array). */
export type AppendRow = Record<string, unknown>;

/**
 * `append_messages` reads fields with `->`, which turns a JSON null into the jsonb value
 * `null` rather than SQL NULL (and `tool_calls` must be an array or NULL): absent it is.
 */
export function appendRow(message: NewMessage): AppendRow {
  return Object.fromEntries(Object.entries(message).filter(([, value]) => value != null));
}

async function sessionOfEarlierAttempt(tx: Tx, clientIds: string[]): Promise<string | null> {
  const [row] = await tx<{ session_id: string }[]>`
    select h.session_id from public.chat_history h
    where h.user_id = (select auth.uid()) and h.client_id = any (${clientIds}::uuid[])
    limit 1`;
  return row?.session_id ?? null;
}

function appendResult(
  sessionId: string,
  messages: readonly { id: string }[],
  rows: AppendedRow[],
): AppendResult {
  const byClientId = new Map(rows.map((row) => [row.client_id, row]));
  const stored = messages.map((message) => {
    // Postgres prints uuids in lower case; the client may have sent upper case.
    const row = byClientId.get(message.id.toLowerCase());
    if (!row) throw new Error(`append_messages returned no row for message ${message.id}`);
    return {
      id: message.id,
      row_id: row.id,
      seq: row.seq,
      created_at: row.created_at,
      inserted: row.inserted,
    };
  });
  return { session_id: sessionId, messages: stored, inserted: stored.some((m) => m.inserted) };
}

// ---------------------------------------------------------------------------------------------
// Sessions

export type SessionSummary = Pick<SessionRow, "id" | "title" | "created_at" | "updated_at">;

export interface SessionsPage {
  sessions: SessionSummary[];
  /** Pass as `before` for the next (older) page; null on the last page. */
  next_before: string | null;
}

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

/** A stored message as the client sees it: `id` is the client's id. */
export type HistoryMessage =
  & Pick<
    MessageRow,
    | "seq"
    | "role"
    | "content"
    | "tool_calls"
    | "tool_call_id"
    | "model"
    | "status"
    | "turn_id"
    | "created_at"
    | "updated_at"
  >
  & { id: string };

export interface MessagesPage {
  session_id: string;
  messages: HistoryMessage[];
  /** Pass as `after_seq` for the next page; null on the last page. */
  next_after_seq: number | null;
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

// ---------------------------------------------------------------------------------------------
// Search

export interface SearchHit {
  session_id: string;
  session_title: string | null;
  /** The client's id of the message. */
  message_id: string;
  seq: number;
  role: MessageRow["role"];
  created_at: string;
  /** ts_rank of the message against the query; higher is better. */
  rank: number;
  /**
   * HTML-safe excerpt: the content is escaped, and only the matched words are wrapped in
   * `<mark>…</mark>`, so a client may render it as HTML.
   */
  snippet: string;
}

export interface SearchOptions {
  limit?: number;
  /** Only this session's messages. */
  sessionId?: string;
}

// Private-use characters mark the matches inside ts_headline's output; the content is escaped
// afterwards and only these become tags, so message text can never inject markup.
const MATCH_START = "\uE000";
const MATCH_END = "\uE001";
const HEADLINE_OPTIONS =
  `StartSel="${MATCH_START}", StopSel="${MATCH_END}", MaxWords=30, MinWords=12, ` +
  `MaxFragments=2, FragmentDelimiter=" … "`;

/**
 * Full-text search over the caller's own messages (`websearch_to_tsquery('english', q)`:
 * quoted phrases, `or`, `-word`), best `ts_rank` first.
 */
export async function searchMessages(
  tx: Tx,
  query: string,
  options: SearchOptions = {},
): Promise<HistoryResult<SearchHit[]>> {
  const limit = checkLimit(options.limit, HISTORY_LIMITS.searchPage);
  if (!limit.ok) return limit;
  if (query.trim() === "") return invalid("must not be empty", "q");
  if (query.length > HISTORY_LIMITS.maxSearchQueryChars || query.includes("\u0000")) {
    return invalid(`must be at most ${HISTORY_LIMITS.maxSearchQueryChars} characters of text`, "q");
  }
  // ts_headline re-parses the whole content, so it runs on the page of hits only.
  const rows = await tx<SearchHit[]>`
    with query as (select websearch_to_tsquery('english', ${query}) as q),
    hits as (
      select h.id as row_id, h.session_id, h.client_id, h.seq, h.role, h.created_at, h.content,
             ts_rank(h.content_search, query.q) as rank
      from public.chat_history h, query
      where h.user_id = (select auth.uid()) and h.content_search @@ query.q
        and (${options.sessionId ?? null}::uuid is null or h.session_id = ${
    options.sessionId ?? null
  }::uuid)
      order by rank desc, h.created_at desc, h.id
      limit ${limit.value}
    )
    select hits.session_id, s.title as session_title, hits.client_id as message_id, hits.seq,
           hits.role, to_json(hits.created_at) #>> '{}' as created_at, hits.rank,
           ts_headline('english',
                       translate(hits.content, ${MATCH_START + MATCH_END}, ''),
                       query.q, ${HEADLINE_OPTIONS}) as snippet
    from hits
    cross join query
    join public.chat_sessions s on s.id = hits.session_id
    order by hits.rank desc, hits.created_at desc, hits.row_id`;
  const hits = rows.map((row) => ({ ...row, snippet: markMatches(row.snippet) }));
  return { ok: true, value: hits };
}

function markMatches(headline: string): string {
  return headline
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;")
    .replaceAll(MATCH_START, "<mark>")
    .replaceAll(MATCH_END, "</mark>");
}
