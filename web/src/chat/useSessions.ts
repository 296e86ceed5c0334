/**
 * The user's sessions, newest first: loaded from the history function and kept live through
 * Realtime on chat_sessions (a new chat in another tab appears here at once).
 */
import type { AppError } from "../api/app_error.ts";
import { listSessions, type SessionSummary } from "../api/history_api.ts";
import { useLiveRows } from "../api/live_rows.ts";

export interface SessionsState {
  sessions: SessionSummary[];
  loading: boolean;
  error?: AppError;
}

export function sortSessions(sessions: Iterable<SessionSummary>): SessionSummary[] {
  return [...sessions].sort(newestFirst);
}

function newestFirst(a: SessionSummary, b: SessionSummary): number {
  return Date.parse(b.updated_at) - Date.parse(a.updated_at) || b.id.localeCompare(a.id);
}

export function useSessions(userId: string): SessionsState {
  const { rows, loading, error } = useLiveRows<SessionSummary>({
    table: "chat_sessions",
    userId,
    load: listSessions,
    pick: ({ id, title, created_at, updated_at }) =>
      ({ id, title, created_at, updated_at }) as SessionSummary,
    compare: newestFirst,
  });
  return { sessions: rows, loading, error };
}
