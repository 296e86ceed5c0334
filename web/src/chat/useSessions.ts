/**
 * The user's sessions, newest first: loaded from the history function and kept live through
 * Realtime on chat_sessions (a new chat in another tab appears here at once).
 */
import { useEffect, useState } from "react";
import { type AppError, toAppError } from "../api/app_error.ts";
import { listSessions, type SessionSummary } from "../api/history_api.ts";
import { watchTable } from "../api/realtime.ts";

export interface SessionsState {
  sessions: SessionSummary[];
  loading: boolean;
  error?: AppError;
}

export function sortSessions(sessions: Iterable<SessionSummary>): SessionSummary[] {
  return [...sessions].sort((a, b) =>
    Date.parse(b.updated_at) - Date.parse(a.updated_at) || b.id.localeCompare(a.id)
  );
}

export function useSessions(userId: string): SessionsState {
  const [state, setState] = useState<SessionsState>({ sessions: [], loading: true });
  useEffect(() => {
    const byId = new Map<string, SessionSummary>();
    let active = true;
    const publish = (error?: AppError) => {
      if (active) setState({ sessions: sortSessions(byId.values()), loading: false, error });
    };
    const load = async () => {
      try {
        for (const session of await listSessions()) byId.set(session.id, session);
        publish();
      } catch (error) {
        publish(toAppError(error));
      }
    };
    const unwatch = watchTable<SessionSummary & { user_id: string }>({
      table: "chat_sessions",
      filter: `user_id=eq.${userId}`,
      onSubscribed: load,
      onError: publish,
      onChange(change) {
        if (change.eventType === "DELETE") {
          if (typeof change.old.id === "string") byId.delete(change.old.id);
        } else {
          const { id, title, created_at, updated_at } = change.new;
          byId.set(id, { id, title, created_at, updated_at });
        }
        publish();
      },
    });
    return () => {
      active = false;
      unwatch();
    };
  }, [userId]);
  return state;
}
