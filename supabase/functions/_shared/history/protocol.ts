/**
 * The history API's wire shapes and limits: what the `history` function answers and what its
 * callers (the web client among them, as types) read. Every operation resolves to a value,
 * `{ ok: true, value }` or a `HistoryError` naming what the caller got wrong.
 */
import type { Database, Json } from "../db/database.types.ts";

type Tables = Database["public"]["Tables"];
type MessageRow = Tables["chat_history"]["Row"];
type SessionRow = Tables["chat_sessions"]["Row"];

/** One entry of `chat_history.tool_calls` of an assistant message, as the agent stores it. */
export interface StoredToolCall {
  id: string;
  name: string;
  /** The arguments JSON text as the model produced it. */
  arguments: string;
  result?: Json;
  is_error?: boolean;
  /** The arguments the user approved the call with instead of the model's (JSON text). */
  edited_arguments?: string;
  /** `unknown`: the server running the call stopped before it reported back. */
  outcome?: "unknown";
}

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

export type SessionSummary = Pick<SessionRow, "id" | "title" | "created_at" | "updated_at">;

export interface SessionsPage {
  sessions: SessionSummary[];
  /** Pass as `before` for the next (older) page; null on the last page. */
  next_before: string | null;
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

/**
 * `GET /history/admin/summary?window=<seconds>` (users whose `app_metadata.role` is `admin`):
 * what `/metrics` reports, as JSON for the web app's admin page.
 */
export interface AdminSummary {
  window_seconds: number;
  open_sockets: number;
  turns: { state: string; code: string; turns: number }[];
  usage: {
    kind: "llm" | "tool";
    source: string;
    name: string;
    status: string;
    calls: number;
    prompt_tokens: number;
    completion_tokens: number;
    cost_usd: number;
    latency_ms_sum: number;
    latency_buckets: number[];
    /** LLM calls that streamed a token, and their time to it (ms). */
    ttft_calls: number;
    ttft_ms_sum: number;
    ttft_buckets: number[];
  }[];
  /** Approval waits by how they ended (`allowed`, `denied`, `expired`). */
  approval_waits: { outcome: string; calls: number; wait_ms_sum: number; wait_buckets: number[] }[];
  /** Client frames refused (limits, bad input), by code and reason. */
  refusals: { code: string; reason: string; refusals: number }[];
}
