/**
 * The chat screen: the sessions (a drawer on narrow screens), the open conversation and the
 * composer. A new chat has no session until the agent starts its turn; then the view moves
 * to the session the server created.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { NEW_SESSION } from "../agent/store.ts";
import { useAgent, useRunningTurn } from "../agent/useAgent.tsx";
import { Composer } from "./Composer.tsx";
import { MessageList } from "./MessageList.tsx";
import { SessionList } from "./SessionList.tsx";
import { useChatRows } from "./useChatRows.ts";
import { useSessions } from "./useSessions.ts";

export interface ChatViewProps {
  userId: string;
  sessionId: string | undefined;
  navigate(hash: string): void;
}

export function ChatView({ userId, sessionId, navigate }: ChatViewProps) {
  const agent = useAgent();
  const { rows, loading, error } = useChatRows(sessionId);
  const sentHere = useRef(new Set<string>());
  const [drawerOpen, setDrawerOpen] = useState(false);

  useEffect(
    () =>
      agent.store.onTurnStarted((turn) => {
        if (!sessionId && sentHere.current.has(turn.userMessageId)) {
          navigate(`#/chat/${turn.sessionId}`);
        }
      }),
    [agent, sessionId, navigate],
  );

  const onSend = useCallback((content: string, model: string) => {
    sentHere.current.add(agent.sendChat({ content, sessionId, model }));
  }, [agent, sessionId]);
  const closeDrawer = useCallback(() => setDrawerOpen(false), []);
  // On a narrow screen the drawer covers the conversation: Escape closes it, as a tap on
  // what it covers (the backdrop) and its close button do.
  useEffect(() => {
    if (!drawerOpen) return;
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") setDrawerOpen(false);
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [drawerOpen]);

  return (
    <div className="chat-layout">
      <aside
        id="chat-drawer"
        className={`chat-sidebar${drawerOpen ? " open" : ""}`}
        aria-label="Your chats"
      >
        <button
          type="button"
          className="drawer-close"
          aria-label="Close the chat list"
          onClick={closeDrawer}
        >
          ×
        </button>
        <Sessions userId={userId} currentId={sessionId} onPick={closeDrawer} />
      </aside>
      {drawerOpen && (
        <div className="drawer-backdrop" data-testid="drawer-backdrop" onClick={closeDrawer} />
      )}
      <section className="chat-main" aria-label="Conversation">
        <div className="chat-toolbar">
          <button
            type="button"
            className="drawer-toggle"
            aria-expanded={drawerOpen}
            aria-controls="chat-drawer"
            onClick={() => setDrawerOpen(!drawerOpen)}
          >
            Chats
          </button>
          <TurnAnnouncer sessionId={sessionId} />
        </div>
        {error && (
          <p className="inline-error" role="alert">
            <code>{error.code}</code> {error.message}
          </p>
        )}
        {loading && <p className="muted">Loading messages…</p>}
        <MessageList rows={rows} sessionId={sessionId} sessionKey={sessionId ?? NEW_SESSION} />
        <Composer sessionId={sessionId} onSend={onSend} />
      </section>
    </div>
  );
}

/** Its own component, so live session updates re-render the list and nothing else. */
function Sessions(
  { userId, currentId, onPick }: { userId: string; currentId?: string; onPick(): void },
) {
  const state = useSessions(userId);
  return <SessionList state={state} currentId={currentId} onPick={onPick} />;
}

function TurnAnnouncer({ sessionId }: { sessionId: string | undefined }) {
  const running = useRunningTurn(sessionId);
  return (
    <span className="muted turn-status" role="status">
      {running ? "The agent is answering…" : ""}
    </span>
  );
}
