/**
 * A turn as this client has seen it, built from its frames by a pure reducer: the text so far,
 * each tool call with its approval, progress and result, and how it ended. Frames at or below
 * the last seq are dropped, so a `resume` that replays a frame twice changes nothing.
 */
import type { TurnFrame, Usage } from "./protocol.ts";

export type ToolCallStatus = "running" | "awaiting_approval" | "done" | "failed";

export interface ToolCallView {
  callId: string;
  tool: string;
  args: unknown;
  status: ToolCallStatus;
  /** While awaiting approval: how long the server waits, and what this client answered. */
  approval?: { timeoutMs: number; answered?: "allow" | "deny" };
  progress?: { progress: number; total?: number; message?: string; stage?: string };
  result?: unknown;
  /** The seq of the frame that first showed it (a `restart_step` drops calls from its seq on). */
  seenAt?: number;
}

export type TurnStatus = "running" | "complete" | "cancelled" | "failed";

export interface TurnError {
  code: string;
  message: string;
  retryable: boolean;
}

export interface TurnView {
  turnId: string;
  sessionId: string;
  /** The assistant message (chat_history.client_id). */
  messageId: string;
  userMessageId: string;
  model: string;
  lastSeq: number;
  text: string;
  toolCalls: ToolCallView[];
  status: TurnStatus;
  error?: TurnError;
  usage?: Usage;
  /** What the agent is doing now (the last `step` frame): calling the model, running a tool. */
  step?: { kind: string; tool?: string };
  /** How long the turn took on the server, from its `complete`. */
  durationMs?: number;
  /** The highest `restart_step.epoch` seen (absent: none), sent with `resume`. */
  epoch?: number;
}

/** The turn after `frame`; the same object when the frame changes nothing. */
export function applyTurnFrame(turn: TurnView | undefined, frame: TurnFrame): TurnView | undefined {
  if (frame.type === "start") {
    if (turn) return turn;
    return {
      turnId: frame.turn_id,
      sessionId: frame.session_id,
      messageId: frame.message_id,
      userMessageId: frame.user_message_id,
      model: frame.model,
      lastSeq: frame.seq,
      text: "",
      toolCalls: [],
      status: "running",
    };
  }
  // Nothing can be shown of a turn whose start this client never saw; resume from 0 gets it.
  if (!turn) return turn;
  if (frame.type === "restart_step" && frame.epoch > (turn.epoch ?? 0)) {
    // Another server took the turn over: what this client holds from this seq on came from the
    // one that stopped and is replaced. The answer keeps its first `keep_chars` UTF-16 units
    // (the step asked again streams the rest anew); calls first seen from this seq on go.
    return {
      ...turn,
      lastSeq: frame.seq,
      epoch: frame.epoch,
      text: turn.text.slice(0, frame.keep_chars),
      toolCalls: turn.toolCalls.filter((call) => (call.seenAt ?? 0) < frame.seq),
    };
  }
  if (frame.seq <= turn.lastSeq) return turn;
  const next: TurnView = { ...turn, lastSeq: frame.seq };
  switch (frame.type) {
    case "step":
      next.step = { kind: frame.step, ...(frame.tool ? { tool: frame.tool } : {}) };
      return next;
    case "token":
      next.text = turn.text + frame.delta;
      return next;
    case "tool_call":
      next.toolCalls = upsertCall(
        turn.toolCalls,
        frame.call_id,
        frame.tool,
        frame.args,
        (call) => ({
          ...call,
          status: "running",
        }),
        frame.seq,
      );
      return next;
    case "approval_required":
      next.toolCalls = upsertCall(
        turn.toolCalls,
        frame.call_id,
        frame.tool,
        frame.args,
        (call) => ({
          ...call,
          status: "awaiting_approval",
          approval: { timeoutMs: frame.timeout_ms },
        }),
        frame.seq,
      );
      return next;
    case "progress":
      next.toolCalls = turn.toolCalls.map((call) =>
        call.callId === frame.call_id
          ? {
            ...call,
            status: "running",
            progress: {
              progress: frame.progress,
              total: frame.total,
              message: frame.message,
              ...(frame.stage === undefined ? {} : { stage: frame.stage }),
            },
          }
          : call
      );
      return next;
    case "tool_result":
      next.toolCalls = upsertCall(turn.toolCalls, frame.call_id, frame.tool, undefined, (call) => ({
        ...call,
        status: frame.is_error ? "failed" : "done",
        result: frame.result,
      }), frame.seq);
      return next;
    case "response":
      // The whole answer: authoritative, also when some token was never seen.
      next.text = frame.content;
      return next;
    case "complete":
      next.status = "complete";
      next.usage = frame.usage;
      if (frame.duration_ms !== undefined) next.durationMs = frame.duration_ms;
      if (frame.model) next.model = frame.model;
      return next;
    case "error":
      next.status = frame.code === "cancelled" ? "cancelled" : "failed";
      next.error = { code: frame.code, message: frame.message, retryable: frame.retryable };
      next.toolCalls = turn.toolCalls.map((call) =>
        call.status === "running" || call.status === "awaiting_approval"
          ? { ...call, status: "failed" }
          : call
      );
      return next;
    default:
      // A kind of frame this client does not know yet: its seq is taken, nothing else.
      return next;
  }
}

/** Records this client's answer to an approval prompt, so the prompt closes at once. */
export function answerApproval(
  turn: TurnView,
  callId: string,
  decision: "allow" | "deny",
): TurnView {
  return {
    ...turn,
    toolCalls: turn.toolCalls.map((call) =>
      call.callId === callId && call.approval
        ? { ...call, approval: { ...call.approval, answered: decision } }
        : call
    ),
  };
}

export function isRunning(turn: TurnView | undefined): boolean {
  return turn?.status === "running";
}

function upsertCall(
  calls: ToolCallView[],
  callId: string,
  tool: string,
  args: unknown,
  update: (call: ToolCallView) => ToolCallView,
  seenAt?: number,
): ToolCallView[] {
  const index = calls.findIndex((call) => call.callId === callId);
  if (index === -1) {
    return [...calls, update({ callId, tool, args, status: "running", seenAt })];
  }
  return calls.map((call, i) => (i === index ? update(call) : call));
}
