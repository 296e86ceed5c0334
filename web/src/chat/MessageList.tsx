/**
 * The conversation: stored rows in seq order, then what this tab sent that is not stored yet
 * and the answer it is streaming. It re-renders when a message is added, never per token.
 */
import { memo, useMemo, useRef } from "react";
import { usePendingChats, useRunningTurn } from "../agent/useAgent.tsx";
import { renderCounts } from "../perf.ts";
import type { ChatRows } from "./chat_rows.ts";
import { MessageItem } from "./MessageItem.tsx";
import { useRowOrder } from "./useChatRows.ts";
import { useStickToBottom } from "./useStickToBottom.ts";

export interface MessageListProps {
  rows: ChatRows;
  sessionId: string | undefined;
  /** The key of this view's unsent chats: the session id, or NEW_SESSION. */
  sessionKey: string;
}

export const MessageList = memo(function MessageList(
  { rows, sessionId, sessionKey }: MessageListProps,
) {
  renderCounts.messageList++;
  const order = useRowOrder(rows);
  const pending = usePendingChats(sessionKey);
  const running = useRunningTurn(sessionId);
  const ids = useMemo(() => {
    const stored = new Set(order);
    const extra = pending.map((chat) => chat.id).filter((id) => !stored.has(id));
    if (running && !stored.has(running.messageId)) extra.push(running.messageId);
    return [...order, ...extra];
  }, [order, pending, running?.messageId]);
  const container = useRef<HTMLDivElement>(null);
  useStickToBottom(container);

  return (
    <div className="message-scroll" ref={container} tabIndex={0} aria-label="Conversation">
      {ids.length === 0
        ? (
          <p className="empty-hint">
            Ask anything. Try “what is (2+3)*4?” to see the agent call a tool.
          </p>
        )
        : (
          <ol className="message-list" aria-label="Messages">
            {ids.map((id) => <MessageItem key={id} id={id} rows={rows} />)}
          </ol>
        )}
    </div>
  );
});
