/**
 * The agent WebSocket, framework-free: connects with the access token as the `jwt-<token>`
 * subprotocol (browsers cannot send headers), decodes every frame with the protocol's zod
 * schemas, and after a lost connection reconnects with exponential backoff (1 s · 2ⁿ, five
 * tries), then stays offline until `reconnect()` (the UI's "Reconnect" button). What to do
 * once connected again (resume turns) is the owner's business: see `onReady`.
 */
import { RECONNECT_POLICY, reconnectDelay } from "./backoff.ts";
import {
  type ClientFrame,
  ClientFrameSchema,
  CLOSE_CODES,
  decodeServerFrame,
  type Limits,
  type ServerFrame,
  TOKEN_SUBPROTOCOL_PREFIX,
} from "./protocol.ts";

export type ConnectionStatus =
  | { state: "idle" }
  | { state: "connecting"; attempt: number }
  | { state: "open"; connectionId: string; limits: Limits }
  /** Reconnect try `attempt` (1…maxAttempts) starts at `retryAt` (epoch ms). */
  | { state: "waiting"; attempt: number; maxAttempts: number; retryAt: number }
  /** Given up, or told not to come back (`code`); `reconnect()` starts again. */
  | { state: "offline"; code: string; message: string };

/** The part of the DOM WebSocket this module uses; tests pass a fake. */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((event: Event) => void) | null;
  onmessage: ((event: MessageEvent) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface Timers {
  set(callback: () => void, ms: number): number;
  clear(id: number): void;
  now(): number;
}

export interface ConnectionProblem {
  code: string;
  message: string;
}

export interface AgentConnectionOptions {
  url: string;
  /** The current access token; undefined when signed out. */
  token(): Promise<string | undefined>;
  onFrame(frame: ServerFrame): void;
  onStatus(status: ConnectionStatus): void;
  /** After every `ready`: the place to resume turns that were running. */
  onReady?(): void;
  /** Frames that break the protocol; shown to the user, never swallowed. */
  onProblem(problem: ConnectionProblem): void;
  openSocket?: (url: string, protocols: string[]) => SocketLike;
  timers?: Timers;
  policy?: { baseDelayMs: number; maxAttempts: number };
  /** Keep-alive ping while open; 0 turns it off. */
  pingIntervalMs?: number;
}

const OPEN = 1;
const NORMAL_CLOSURE = 1000;

const browserTimers: Timers = {
  set: (callback, ms) => setTimeout(callback, ms) as unknown as number,
  clear: (id) => clearTimeout(id),
  now: () => Date.now(),
};

export type SendResult = { ok: true } | { ok: false; code: "not_connected" | "bad_request" };

export class AgentConnection {
  readonly #options: AgentConnectionOptions;
  readonly #timers: Timers;
  readonly #policy: { baseDelayMs: number; maxAttempts: number };
  #socket: SocketLike | undefined;
  #status: ConnectionStatus = { state: "idle" };
  /** Tries since the last `ready`; 0 while connected. */
  #failures = 0;
  #retryTimer: number | undefined;
  #pingTimer: number | undefined;
  #stopped = true;
  /** Bumped by every connect, so a stale socket's events change nothing. */
  #generation = 0;

  constructor(options: AgentConnectionOptions) {
    this.#options = options;
    this.#timers = options.timers ?? browserTimers;
    this.#policy = options.policy ?? RECONNECT_POLICY;
  }

  get status(): ConnectionStatus {
    return this.#status;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#failures = 0;
    void this.#connect();
  }

  /** The "Reconnect" button: a fresh round of tries, starting now. */
  reconnect(): void {
    this.#stopped = false;
    this.#failures = 0;
    this.#clearRetry();
    this.#dropSocket();
    void this.#connect();
  }

  stop(): void {
    this.#stopped = true;
    this.#clearRetry();
    this.#dropSocket();
    this.#setStatus({ state: "idle" });
  }

  send(frame: ClientFrame): SendResult {
    const checked = ClientFrameSchema.safeParse(frame);
    if (!checked.success) return { ok: false, code: "bad_request" };
    if (this.#status.state !== "open" || this.#socket?.readyState !== OPEN) {
      return { ok: false, code: "not_connected" };
    }
    this.#socket.send(JSON.stringify(checked.data));
    return { ok: true };
  }

  async #connect(): Promise<void> {
    const generation = ++this.#generation;
    this.#setStatus({ state: "connecting", attempt: this.#failures });
    let token: string | undefined;
    try {
      token = await this.#options.token();
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#options.onProblem({ code: "auth_unavailable", message: String(error) });
      return this.#scheduleRetry();
    }
    if (generation !== this.#generation || this.#stopped) return;
    if (!token) {
      return this.#setStatus({
        state: "offline",
        code: "signed_out",
        message: "Sign in to talk to the agent",
      });
    }
    const open = this.#options.openSocket ??
      ((url, protocols) => new WebSocket(url, protocols) as SocketLike);
    const socket = open(this.#options.url, [`${TOKEN_SUBPROTOCOL_PREFIX}${token}`]);
    this.#socket = socket;
    socket.onmessage = (event) => {
      if (generation === this.#generation) this.#receive(event.data);
    };
    socket.onclose = (event) => {
      if (generation === this.#generation) this.#closed(event);
    };
    // A failed socket also closes; the close decides what happens next.
    socket.onerror = () => {};
  }

  #receive(data: unknown): void {
    if (typeof data !== "string") {
      return this.#options.onProblem({
        code: "protocol_error",
        message: "The agent sent a binary frame",
      });
    }
    let frame: ServerFrame;
    try {
      frame = decodeServerFrame(data);
    } catch (error) {
      return this.#options.onProblem({
        code: "protocol_error",
        message: `The agent sent a frame this client does not understand: ${
          error instanceof Error ? error.message.slice(0, 300) : String(error)
        }`,
      });
    }
    if (frame.type === "ready") {
      this.#failures = 0;
      this.#setStatus({ state: "open", connectionId: frame.connection_id, limits: frame.limits });
      this.#startPing();
      this.#options.onReady?.();
      return;
    }
    this.#options.onFrame(frame);
  }

  #closed(event: CloseEvent): void {
    this.#socket = undefined;
    this.#stopPing();
    if (this.#stopped) return this.#setStatus({ state: "idle" });
    if (event.code === CLOSE_CODES.tooManyConnections) {
      return this.#setStatus({
        state: "offline",
        code: "replaced",
        message: "Closed because you opened the agent in more places than your limit allows",
      });
    }
    // Deleted, banned or signed out: another try with this session's token would fail too.
    if (event.code === CLOSE_CODES.accessRevoked) {
      return this.#setStatus({
        state: "offline",
        code: "access_revoked",
        message: event.reason === "session_ended"
          ? "Your session was signed out; sign in again"
          : "Your account can no longer use the agent",
      });
    }
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (this.#failures >= this.#policy.maxAttempts) {
      return this.#setStatus({
        state: "offline",
        code: "unreachable",
        message: `Could not reach the agent after ${this.#policy.maxAttempts} tries`,
      });
    }
    const delay = reconnectDelay(this.#failures, this.#policy.baseDelayMs);
    this.#failures++;
    this.#setStatus({
      state: "waiting",
      attempt: this.#failures,
      maxAttempts: this.#policy.maxAttempts,
      retryAt: this.#timers.now() + delay,
    });
    this.#retryTimer = this.#timers.set(() => {
      this.#retryTimer = undefined;
      void this.#connect();
    }, delay);
  }

  #startPing(): void {
    const interval = this.#options.pingIntervalMs ?? 25_000;
    if (interval <= 0) return;
    this.#stopPing();
    const tick = () => {
      this.send({ type: "ping" });
      this.#pingTimer = this.#timers.set(tick, interval);
    };
    this.#pingTimer = this.#timers.set(tick, interval);
  }

  #stopPing(): void {
    if (this.#pingTimer !== undefined) this.#timers.clear(this.#pingTimer);
    this.#pingTimer = undefined;
  }

  #clearRetry(): void {
    if (this.#retryTimer !== undefined) this.#timers.clear(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  #dropSocket(): void {
    this.#generation++;
    this.#stopPing();
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket) {
      socket.onmessage = socket.onclose = socket.onerror = null;
      socket.close(NORMAL_CLOSURE, "client closed");
    }
  }

  #setStatus(status: ConnectionStatus): void {
    this.#status = status;
    this.#options.onStatus(status);
  }
}
