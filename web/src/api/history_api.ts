/**
 * The `history` Edge Function, as the chat views use it: the caller's sessions (newest
 * first) and a session's messages in seq order. Errors arrive as `{"error":{"code","message"}}`
 * and become AppErrors with that code.
 */
import type {
  AdminSummary,
  HistoryMessage,
  MessagesPage,
  SessionsPage,
  SessionSummary,
} from "../../../supabase/functions/_shared/history/protocol.ts";
import { SUPABASE_PUBLISHABLE_KEY, SUPABASE_URL } from "../config.ts";
import { supabase } from "../supabase.ts";
import { AppError } from "./app_error.ts";

export type { AdminSummary, HistoryMessage, SessionSummary };

const HISTORY_URL = `${SUPABASE_URL}/functions/v1/history`;

async function getJson<T>(path: string): Promise<T> {
  const { data } = await supabase.auth.getSession();
  const token = data.session?.access_token;
  if (!token) throw new AppError("signed_out", "Sign in again to see your chats");
  let response: Response;
  try {
    response = await fetch(`${HISTORY_URL}${path}`, {
      headers: { apikey: SUPABASE_PUBLISHABLE_KEY, authorization: `Bearer ${token}` },
    });
  } catch (error) {
    throw new AppError("network_error", `The history service is unreachable: ${error}`);
  }
  const body = await response.json().catch(() => undefined);
  if (!response.ok) {
    const problem = body?.error;
    throw new AppError(
      typeof problem?.code === "string" ? problem.code : `http_${response.status}`,
      typeof problem?.message === "string" ? problem.message : response.statusText,
    );
  }
  return body as T;
}

export async function listSessions(limit = 50): Promise<SessionSummary[]> {
  const page = await getJson<SessionsPage>(`/sessions?limit=${limit}`);
  return page.sessions;
}

/** Every message of a session, following the pages. */
export async function listMessages(sessionId: string): Promise<HistoryMessage[]> {
  const messages: HistoryMessage[] = [];
  let afterSeq = 0;
  for (;;) {
    const page = await getJson<MessagesPage>(
      `/sessions/${encodeURIComponent(sessionId)}/messages?after_seq=${afterSeq}&limit=200`,
    );
    messages.push(...page.messages);
    if (page.next_after_seq === null) return messages;
    afterSeq = page.next_after_seq;
  }
}

/** The operator's numbers over the last `windowSeconds` (admins only; others get `forbidden`). */
export function adminSummary(windowSeconds = 3600): Promise<AdminSummary> {
  return getJson<AdminSummary>(`/admin/summary?window=${windowSeconds}`);
}
