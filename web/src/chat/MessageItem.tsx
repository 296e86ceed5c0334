/**
 * One message. It subscribes to its own row, live turn and optimistic chat, so a token
 * re-renders this message and nothing else.
 */
import { memo, useEffect } from "react";
import { useAgent, usePendingChat, useTurnOfMessage } from "../agent/useAgent.tsx";
import { renderCounts } from "../perf.ts";
import type { ChatRows } from "./chat_rows.ts";
import { Markdown } from "./Markdown.tsx";
import { type MessageState, messageView } from "./message_view.ts";
import { ToolCallCard } from "./ToolCallCard.tsx";
import { useRow } from "./useChatRows.ts";

const STATE_TEXT: Partial<Record<MessageState, string>> = {
  sending: "Sending…",
  streaming: "Writing…",
  stopped: "Stopped",
  interrupted: "Interrupted",
  error: "Failed",
  failed_to_send: "Not sent",
};

export const MessageItem = memo(function MessageItem(
  { id, rows }: { id: string; rows: ChatRows },
) {
  renderCounts.messageItem++;
  const agent = useAgent();
  const row = useRow(rows, id);
  const turn = useTurnOfMessage(id);
  const pending = usePendingChat(id);
  const view = messageView(id, row, turn, pending);
  // An answer streaming in another tab or device: follow its turn over this tab's socket
  // (live text, Stop, approvals) instead of waiting for the stored row's rare rewrites.
  const streamingTurn = !turn && row?.role === "assistant" && row.status === "streaming"
    ? row.turnId
    : null;
  useEffect(() => {
    if (streamingTurn) agent.followTurn(streamingTurn);
  }, [agent, streamingTurn]);
  if (!view || view.role === "system") return null;
  const stateText = STATE_TEXT[view.state];
  return (
    <li
      className={`message message-${view.role} message-${view.state}`}
      data-testid={`message-${view.role}`}
      data-state={view.state}
      data-message-id={id}
    >
      <div className="message-meta">
        <span className="message-author">{view.role === "user" ? "You" : "Agent"}</span>
        {view.role === "assistant" && view.model && (
          <span className="message-model">{view.model}</span>
        )}
        {stateText && <span className="message-state">{stateText}</span>}
      </div>
      {view.toolCalls.map((call) => (
        <ToolCallCard
          key={call.callId}
          call={call}
          onApprove={view.live
            ? (decision, remember) => agent.approve(id, call.callId, decision, remember)
            : undefined}
        />
      ))}
      {view.role === "assistant"
        ? view.text !== "" && <Markdown text={view.text} />
        : <p className="message-text">{view.text}</p>}
      {view.state === "streaming" && view.text === "" && view.toolCalls.length === 0 && (
        <p className="message-typing" aria-label="The agent is thinking">…</p>
      )}
      {/* A stop the user asked for is no error: "Stopped" above says it. */}
      {view.error && view.state !== "stopped" && (
        <p className="message-error" role="alert">
          <code>{view.error.code}</code> {view.error.message}
          {view.state === "failed_to_send" && (
            <button
              type="button"
              className="link-button"
              onClick={() => agent.retryChat(id)}
            >
              Retry
            </button>
          )}
        </p>
      )}
    </li>
  );
});
