/**
 * Everything the agent connection has told this tab, as an external store with one
 * subscription key per thing a component shows: a message (`message:<id>`), a session's
 * running turn and unsent chats (`session:<id>`), the connection (`status`) and the notices.
 * A token marks only its message dirty, and token updates are batched (at most one flush per
 * `FLUSH_INTERVAL_MS`), so a streaming answer re-renders one message, never the list. Every
 * other change (a turn starts or ends, a tool call, a chat, the connection) is flushed at once,
 * together with the tokens before it: the store mutates immediately and components read it
 * when they render, so a change that waited for the next flush would show in a message that
 * happened to re-render (the answer says "Stopped") before it reached the components watching
 * for it (the Stop button).
 */
import type { ConnectionStatus } from "./connection.ts";
import type { ErrorFrame, TurnFrame } from "./protocol.ts";
import { answerApproval, applyTurnFrame, type TurnView } from "./turns.ts";

export interface PendingChat {
  /** The client's id of the user message; sending it again starts no second turn. */
  id: string;
  /** Undefined for the first message of a new session, until its turn starts. */
  sessionId?: string;
  content: string;
  model?: string;
  createdAt: number;
  state: "sending" | "started" | "failed";
  error?: { code: string; message: string };
}

export interface Notice {
  id: number;
  code: string;
  message: string;
}

/** The session key of chats not yet in a session. */
export const NEW_SESSION = "new";

/** Coalesces store notifications; a React render per token would be wasted work. */
export const FLUSH_INTERVAL_MS = 50;

export type Scheduler = (flush: () => void) => void;

/** The clock a scheduler uses; tests pass fake timers. */
export interface SchedulerTimers {
  set(callback: () => void, ms: number): unknown;
  now(): number;
}

const realTimers: SchedulerTimers = {
  set: (callback, ms) => setTimeout(callback, ms),
  now: Date.now,
};

/** One flush for everything marked dirty, at most once per `intervalMs`. */
export function intervalScheduler(
  intervalMs = FLUSH_INTERVAL_MS,
  timers: SchedulerTimers = realTimers,
): Scheduler {
  let scheduled = false;
  let lastFlush = -Infinity;
  return (flush) => {
    if (scheduled) return;
    scheduled = true;
    const wait = Math.max(0, lastFlush + intervalMs - timers.now());
    timers.set(() => {
      scheduled = false;
      lastFlush = timers.now();
      flush();
    }, wait);
  };
}

const EMPTY: readonly PendingChat[] = Object.freeze([]);

export class AgentStore {
  readonly #turns = new Map<string, TurnView>();
  readonly #turnOfMessage = new Map<string, string>();
  readonly #pending = new Map<string, PendingChat>();
  readonly #pendingBySession = new Map<string, readonly PendingChat[]>();
  readonly #startListeners = new Set<(turn: TurnView) => void>();
  #status: ConnectionStatus = { state: "idle" };
  #notices: readonly Notice[] = [];
  #nextNotice = 1;
  readonly #listeners = new Map<string, Set<() => void>>();
  readonly #dirty = new Set<string>();
  readonly #schedule: Scheduler;

  constructor(schedule: Scheduler = intervalScheduler()) {
    this.#schedule = schedule;
  }

  // ---- reading (stable snapshots for useSyncExternalStore)

  subscribe(key: string, listener: () => void): () => void {
    let set = this.#listeners.get(key);
    if (!set) this.#listeners.set(key, set = new Set());
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(key);
    };
  }

  /** Called with every turn this tab sees start (a new chat learns its session this way). */
  onTurnStarted(listener: (turn: TurnView) => void): () => void {
    this.#startListeners.add(listener);
    return () => this.#startListeners.delete(listener);
  }

  get status(): ConnectionStatus {
    return this.#status;
  }

  get notices(): readonly Notice[] {
    return this.#notices;
  }

  turnOfMessage(messageId: string): TurnView | undefined {
    const turnId = this.#turnOfMessage.get(messageId);
    return turnId === undefined ? undefined : this.#turns.get(turnId);
  }

  pendingChat(id: string): PendingChat | undefined {
    return this.#pending.get(id);
  }

  /** The chats of a session (or NEW_SESSION) this tab sent, oldest first. */
  pendingIn(sessionKey: string): readonly PendingChat[] {
    return this.#pendingBySession.get(sessionKey) ?? EMPTY;
  }

  /** The running turn of a session, if this tab follows one. */
  runningTurnIn(sessionId: string): TurnView | undefined {
    for (const turn of this.#turns.values()) {
      if (turn.sessionId === sessionId && turn.status === "running") return turn;
    }
    return undefined;
  }

  hasTurn(turnId: string): boolean {
    return this.#turns.has(turnId);
  }

  runningTurns(): TurnView[] {
    return [...this.#turns.values()].filter((turn) => turn.status === "running");
  }

  /** Chats sent but not yet answered with `start`: safe to send again (same id). */
  unstartedChats(): PendingChat[] {
    return [...this.#pending.values()].filter((chat) => chat.state === "sending");
  }

  // ---- writing

  applyFrame(frame: TurnFrame): void {
    const before = this.#turns.get(frame.turn_id);
    const after = applyTurnFrame(before, frame);
    if (!after || after === before) return;
    this.#turns.set(after.turnId, after);
    this.#dirty.add(`message:${after.messageId}`);
    if (!before) {
      this.#turnOfMessage.set(after.messageId, after.turnId);
      this.#dirty.add(`session:${after.sessionId}`);
      this.#chatStarted(after);
      for (const listener of this.#startListeners) listener(after);
    } else if (before.status !== after.status) {
      this.#dirty.add(`session:${after.sessionId}`);
    }
    if (frame.type === "token") this.#schedule(() => this.#flush());
    else this.#flush();
  }

  /** An `error` frame that ends no turn: it fails the chat or turn it names, or is a notice. */
  applyRefusal(frame: ErrorFrame): void {
    const chat = frame.ref === undefined ? undefined : this.#pending.get(frame.ref);
    if (chat && chat.state === "sending") {
      return this.#updateChat({
        ...chat,
        state: "failed",
        error: { code: frame.code, message: frame.message },
      });
    }
    const turn = frame.ref === undefined ? undefined : this.#turns.get(frame.ref);
    if (turn && turn.status === "running" && frame.code === "not_found") {
      // A resume of a turn the server no longer knows: it will not finish here.
      this.#turns.set(turn.turnId, {
        ...turn,
        status: "failed",
        error: { code: frame.code, message: frame.message, retryable: false },
      });
      this.#markDirty(`message:${turn.messageId}`);
      this.#markDirty(`session:${turn.sessionId}`);
      return;
    }
    this.addNotice(frame.code, frame.message);
  }

  addPending(chat: PendingChat): void {
    this.#updateChat(chat);
  }

  failChat(id: string, error: { code: string; message: string }): void {
    const chat = this.#pending.get(id);
    if (chat) this.#updateChat({ ...chat, state: "failed", error });
  }

  retryChat(id: string): PendingChat | undefined {
    const chat = this.#pending.get(id);
    if (!chat || chat.state !== "failed") return undefined;
    const retried: PendingChat = { ...chat, state: "sending", error: undefined };
    this.#updateChat(retried);
    return retried;
  }

  answerApproval(messageId: string, callId: string, decision: "allow" | "deny"): void {
    const turn = this.turnOfMessage(messageId);
    if (!turn) return;
    this.#turns.set(turn.turnId, answerApproval(turn, callId, decision));
    this.#markDirty(`message:${messageId}`);
  }

  setStatus(status: ConnectionStatus): void {
    this.#status = status;
    this.#markDirty("status");
  }

  addNotice(code: string, message: string): void {
    this.#notices = [...this.#notices.slice(-4), { id: this.#nextNotice++, code, message }];
    this.#markDirty("notices");
  }

  dismissNotice(id: number): void {
    this.#notices = this.#notices.filter((notice) => notice.id !== id);
    this.#markDirty("notices");
  }

  // ---- internals

  #chatStarted(turn: TurnView): void {
    const chat = this.#pending.get(turn.userMessageId);
    if (chat) this.#updateChat({ ...chat, state: "started", sessionId: turn.sessionId });
  }

  #updateChat(chat: PendingChat): void {
    const before = this.#pending.get(chat.id);
    this.#pending.set(chat.id, chat);
    this.#markDirty(`message:${chat.id}`);
    const keys = new Set([sessionKeyOf(before), sessionKeyOf(chat)].filter((k) => k !== ""));
    for (const key of keys) {
      this.#pendingBySession.set(
        key,
        [...this.#pending.values()].filter((c) => sessionKeyOf(c) === key),
      );
      this.#markDirty(`session:${key}`);
    }
  }

  /** Flushed at once, with whatever tokens were waiting: only tokens wait for a flush. */
  #markDirty(key: string): void {
    this.#dirty.add(key);
    this.#flush();
  }

  #flush(): void {
    const keys = [...this.#dirty];
    this.#dirty.clear();
    for (const key of keys) {
      for (const listener of [...(this.#listeners.get(key) ?? [])]) listener();
    }
  }
}

function sessionKeyOf(chat: PendingChat | undefined): string {
  if (!chat) return "";
  return chat.sessionId ?? NEW_SESSION;
}
