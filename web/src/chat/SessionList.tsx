/** The user's sessions, newest first, live; the open one is marked for assistive tech too. */
import type { SessionsState } from "./useSessions.ts";

export interface SessionListProps {
  state: SessionsState;
  currentId: string | undefined;
  onPick(): void;
}

export function SessionList({ state, currentId, onPick }: SessionListProps) {
  return (
    <nav className="session-list" aria-label="Chats">
      <a className="button primary new-chat" href="#/chat" onClick={onPick}>New chat</a>
      {state.error && (
        <p className="inline-error" role="alert">
          <code>{state.error.code}</code> {state.error.message}
        </p>
      )}
      {state.loading && <p className="muted">Loading chats…</p>}
      <ul data-testid="session-list">
        {state.sessions.map((session) => (
          <li key={session.id}>
            <a
              href={`#/chat/${session.id}`}
              aria-current={session.id === currentId ? "page" : undefined}
              onClick={onPick}
            >
              <span className="session-title">{session.title || "Untitled chat"}</span>
              <time className="muted" dateTime={session.updated_at}>
                {formatWhen(session.updated_at)}
              </time>
            </a>
          </li>
        ))}
      </ul>
    </nav>
  );
}

function formatWhen(timestamp: string): string {
  const date = new Date(timestamp);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}
