/**
 * What one message shows, from whatever this tab knows of it: the live turn it follows over
 * the socket (freshest), the stored row (live through Realtime), or the optimistic chat it
 * has just sent.
 */
import type { PendingChat } from "../agent/store.ts";
import type { ToolCallView, TurnView } from "../agent/turns.ts";
import type { ChatRow } from "./chat_rows.ts";

export type MessageState =
  | "sending"
  | "failed_to_send"
  | "streaming"
  | "complete"
  | "stopped"
  | "interrupted"
  | "error";

export interface MessageView {
  id: string;
  role: ChatRow["role"];
  text: string;
  toolCalls: ToolCallView[];
  state: MessageState;
  model?: string | null;
  error?: { code: string; message: string };
  /** True when the tool calls come from the live turn, so approvals can be answered here. */
  live: boolean;
}

export function messageView(
  id: string,
  row: ChatRow | undefined,
  turn: TurnView | undefined,
  pending: PendingChat | undefined,
): MessageView | undefined {
  if (turn) {
    return {
      id,
      role: "assistant",
      text: turn.text,
      toolCalls: turn.toolCalls,
      state: turn.status === "running"
        ? "streaming"
        : turn.status === "complete"
        ? "complete"
        : turn.status === "cancelled"
        ? "stopped"
        : "error",
      model: turn.model,
      error: turn.error,
      live: turn.status === "running",
    };
  }
  if (row) {
    return {
      id,
      role: row.role,
      text: row.content,
      toolCalls: row.toolCalls.map((call) => ({
        callId: call.id,
        tool: call.name,
        args: call.arguments,
        status: call.result === undefined ? "running" : call.is_error ? "failed" : "done",
        result: call.result,
      })),
      state: row.status === "streaming" ? "streaming" : row.status,
      model: row.model,
      live: false,
    };
  }
  if (pending) {
    return {
      id,
      role: "user",
      text: pending.content,
      toolCalls: [],
      state: pending.state === "failed"
        ? "failed_to_send"
        : pending.state === "sending"
        ? "sending"
        : "complete",
      error: pending.error,
      live: false,
    };
  }
  return undefined;
}
