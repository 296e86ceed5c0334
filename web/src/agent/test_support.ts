/**
 * Fakes for testing the agent client without a server: a socket that records what is sent
 * and lets the test play the server, timers the test advances by hand, and frame builders
 * that produce frames valid under the protocol's schemas.
 */
import type { SocketLike, Timers } from "./connection.ts";
import type { Limits, ServerFrame } from "./protocol.ts";

export class FakeSocket implements SocketLike {
  readyState = 0;
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  readonly sent: Record<string, unknown>[] = [];
  closedByClient?: number;

  constructor(readonly url: string, readonly protocols: string[]) {}

  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }

  close(code?: number): void {
    this.closedByClient = code;
    this.readyState = 3;
  }

  /** The server accepts and says `ready`. */
  accept(): void {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
    this.receive(readyFrame());
  }

  receive(frame: ServerFrame | Record<string, unknown> | string): void {
    const data = typeof frame === "string" ? frame : JSON.stringify(frame);
    this.onmessage?.(new MessageEvent("message", { data }));
  }

  /** The connection ends from the other side (or never opened). */
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: false } as CloseEvent);
  }
}

export class FakeTimers implements Timers {
  #now = 1_000_000;
  #next = 1;
  readonly #pending = new Map<number, { at: number; callback: () => void }>();

  set(callback: () => void, ms: number): number {
    const id = this.#next++;
    this.#pending.set(id, { at: this.#now + ms, callback });
    return id;
  }

  clear(id: number): void {
    this.#pending.delete(id);
  }

  now(): number {
    return this.#now;
  }

  /** Delays of the timers now pending, from now. */
  pendingDelays(): number[] {
    return [...this.#pending.values()].map((timer) => timer.at - this.#now).sort((a, b) => a - b);
  }

  /** Moves the clock, firing what falls due in order. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      const due = [...this.#pending.entries()].filter(([, t]) => t.at <= until)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#pending.delete(due[0]);
      this.#now = due[1].at;
      due[1].callback();
    }
    this.#now = until;
  }
}

/** Lets pending promise callbacks (the token lookup before a connect) run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

export const LIMITS: Limits = {
  max_connections: 3,
  max_frame_bytes: 262144,
  max_frames_per_second: 20,
  max_steps: 8,
  approval_timeout_ms: 120000,
  max_completion_tokens: 2048,
  token_bucket: { capacity: 100000, refill_per_minute: 1000, available: 100000 },
  daily: { token_cap: 1000000, tokens_used: 0, cost_cap_usd: 5, cost_used_usd: 0 },
};

export function readyFrame(): ServerFrame {
  return {
    type: "ready",
    user_id: crypto.randomUUID(),
    connection_id: crypto.randomUUID(),
    limits: LIMITS,
  };
}

/** Builds the frames of one turn, numbering them. */
export class TurnScript {
  readonly turnId = crypto.randomUUID();
  readonly sessionId = crypto.randomUUID();
  readonly messageId = crypto.randomUUID();
  #seq = 0;

  constructor(readonly userMessageId: string = crypto.randomUUID()) {}

  #frame<T extends Record<string, unknown>>(type: string, fields: T) {
    return { type, turn_id: this.turnId, seq: ++this.#seq, ...fields } as unknown as ServerFrame;
  }

  start(): ServerFrame {
    return this.#frame("start", {
      session_id: this.sessionId,
      message_id: this.messageId,
      user_message_id: this.userMessageId,
      model: "test-model",
    });
  }

  token(delta: string): ServerFrame {
    return this.#frame("token", { delta });
  }

  toolCall(callId: string, tool: string, args: unknown): ServerFrame {
    return this.#frame("tool_call", { call_id: callId, tool, args });
  }

  approvalRequired(callId: string, tool: string, args: unknown): ServerFrame {
    return this.#frame("approval_required", { call_id: callId, tool, args, timeout_ms: 120000 });
  }

  progress(callId: string, progress: number, total?: number): ServerFrame {
    return this.#frame("progress", { call_id: callId, progress, total });
  }

  toolResult(callId: string, tool: string, result: unknown, isError = false): ServerFrame {
    return this.#frame("tool_result", { call_id: callId, tool, result, is_error: isError });
  }

  response(content: string): ServerFrame {
    return this.#frame("response", { message_id: this.messageId, content });
  }

  complete(fields: { model?: string } = {}): ServerFrame {
    return this.#frame("complete", {
      usage: { prompt_tokens: 10, completion_tokens: 5, cost: 0.0001 },
      steps: 1,
      ...fields,
    });
  }

  error(code: string, message = code): ServerFrame {
    return this.#frame("error", { code, message, retryable: false });
  }

  /** The seq the next frame will get. */
  get nextSeq(): number {
    return this.#seq + 1;
  }
}
