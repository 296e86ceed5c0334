/**
 * A turn running in this isolate: its numbered frames, who listens to them, and the state of
 * its assistant message. It knows nothing of Postgres: the flusher takes what is new from it
 * (`takeFlush`) and reports back (`flushed` / `flushFailed`). Postgres holds the truth; this
 * object only lets clients on this isolate follow the turn without polling.
 */
import type {
  ErrorCode,
  ErrorFrame,
  NoticeFrame,
  TurnFrame,
  UnnumberedTurnFrame,
} from "../agent_protocol.ts";
import type { Database } from "../db/database.types.ts";
import type { StoredToolCall } from "../history/protocol.ts";
import type { TurnCheckpoint } from "./turn_checkpoint.ts";

export type TurnState = Database["public"]["Enums"]["turn_state"];
export type MessageStatus = Database["public"]["Enums"]["message_status"];

export interface LiveTurnInit {
  turnId: string;
  userId: string;
  sessionId: string;
  /** `chat_history.id` of the assistant message. */
  assistantRowId: string;
  /** The assistant message's client id, as clients know it. */
  assistantMessageId: string;
  userMessageId: string;
  model: string;
  reservedTokens: number;
  reservedCostUsd: number;
  /** The turn's epoch (0 for a turn started here; an adoption's otherwise). */
  epoch?: number;
  /** Frames up to this seq are stored already (an adopted turn's); new ones follow it. */
  baseSeq?: number;
  /**
   * The answer so far as stored, and how much of it stands (an adopted turn's). `stored`: how
   * much of what stands the message row holds already, when that is less (a continued
   * answer's text comes from the stored frames, and the row is rewritten only now and then).
   */
  content?: {
    text: string;
    units: number;
    chars: number;
    stored?: { units: number; chars: number };
  };
  /**
   * Its model continues a partial answer, so a takeover keeps the stored text: each flush
   * that stores more of it is progress (it ends a run of takeovers, as a checkpoint does).
   */
  keepsPartialText?: boolean;
  /** Seqs where takeovers restarted the turn ({epoch, seq}), for `resume`. */
  restarts?: { epoch: number; seq: number }[];
  /** The request (the socket's upgrade) that started it, for log lines. */
  requestId?: string;
  /**
   * Streamed text is written to the message row at most this often at first, then at twice
   * the previous interval each time (default 0: with every flush). Clients follow the frames;
   * every rewrite of the row sends its whole text to each tab watching it through Realtime, so
   * rewrites are kept rare, and doubling keeps their bytes under about twice the answer's
   * however long it grows. Tool calls and the ending store the text at once.
   */
  textFlushIntervalMs?: number;
}

/** How a turn ended (or parked), as it is stored. */
export interface TurnOutcome {
  state: Exclude<TurnState, "running">;
  /** Absent for a park: the message stays `streaming`. */
  messageStatus?: Exclude<MessageStatus, "streaming">;
  /** Until when a parked turn waits for its approval. */
  parkedUntil?: string;
  error?: { code: string; message: string };
  /** What the turn used of its quota reservation; settled with the ending. */
  used?: { tokens: number; costUsd: number };
}

/**
 * `lost`: another isolate took the turn over (this one's lease lapsed); `released`: this
 * isolate is going away and leaves the turn to another. Neither ends the turn.
 */
export type AbortReason = "cancelled" | "interrupted" | "shutdown" | "lost" | "released";

export type FrameListener = (frame: TurnFrame) => void;
/** Hears a turn's live-only notices (`NoticeFrame`). */
export type NoticeListener = (notice: NoticeFrame) => void;

/** Told, with the last seq it was given, that the turn goes on elsewhere (or parked). */
export type LeaveListener = (lastSeq: number) => void;

/** The turn row as the last flush left it. */
export interface StoredTurnState {
  state: TurnState;
  approvalAnswer: unknown;
}

/**
 * A change of the streaming message: the text from character `fromChars` on (characters as
 * Postgres counts them: code points), and the tool calls when they changed. Writing
 * `left(content, fromChars) || text` is idempotent, so a flush whose outcome was unclear can
 * be written again without doubling text; and the whole answer is not resent every time.
 */
export interface MessageChange {
  fromChars: number;
  text: string;
  toolCalls?: StoredToolCall[];
  /** Where the stored text ends once this change is written. */
  untilChars: number;
  untilUnits: number;
}

/** What one flush writes for one turn. */
export interface FlushEntry {
  turn: LiveTurn;
  /** Frames not yet stored, in seq order (maybe none). */
  frames: TurnFrame[];
  /** What changed in the message since the last stored flush. */
  message?: MessageChange;
  steps: number;
  model: string;
  /** Set once the turn has ended: the flush that carries it finishes the turn. */
  outcome?: TurnOutcome;
  /** The writer's epoch: the row is written only while it is still the turn's. */
  epoch: number;
  /** A new checkpoint to store with this flush. */
  checkpoint?: TurnCheckpoint;
  /** It stores text a takeover keeps (see `keepsPartialText`): the turn progressed. */
  progressed?: boolean;
}

export class LiveTurn {
  readonly turnId: string;
  readonly userId: string;
  readonly sessionId: string;
  readonly assistantRowId: string;
  readonly assistantMessageId: string;
  readonly userMessageId: string;
  readonly requestId?: string;
  /** What the turn has reserved so far; grows with each step (`reserveStep`). */
  reservedTokens: number;
  reservedCostUsd: number;
  model: string;
  steps = 0;
  content = "";
  toolCalls: StoredToolCall[] = [];
  readonly epoch: number;
  readonly baseSeq: number;
  readonly restarts: { epoch: number; seq: number }[];
  /** What the last checkpoint said (the turn loop keeps it current). */
  checkpoint: TurnCheckpoint | undefined;
  readonly keepsPartialText: boolean;
  /**
   * Taken over and not yet stored anything new: its first new text is flushed at once (not
   * with the interval), so the takeover counts as progress as early as it can. Under churn the
   * next isolate may die within a flush interval, and three takeovers without progress end
   * the turn.
   */
  awaitsProgress = false;
  #checkpointDirty = false;
  #pendingPark: TurnOutcome | undefined;
  /** The row as the last flush that carried this turn left it. */
  storedState: StoredTurnState | undefined;

  /** When this isolate took the turn on (for `complete`'s `duration_ms`). */
  readonly #startedAt = performance.now();
  /** Aborts the LLM request and the running tool. */
  readonly #abort = new AbortController();
  #abortReason: AbortReason | undefined;
  readonly #frames: TurnFrame[] = [];
  /** Frames with a seq up to this are stored. */
  #storedSeq = 0;
  /** Frames numbered but held back from listeners until they are stored (the last ones). */
  #heldFrom: number | undefined;
  #messageDirty = false;
  #toolCallsDirty = false;
  /** Code points of `content`, and how much of it (in code points and UTF-16 units) is stored. */
  #chars = 0;
  #storedChars = 0;
  #storedUnits = 0;
  #textFlushIntervalMs: number;
  /** When the text was last taken for storing (`performance.now()`). */
  #textTakenAt = performance.now();
  #outcome: TurnOutcome | undefined;
  #outcomeStored = false;
  readonly #listeners = new Set<FrameListener>();
  readonly #leaveListeners = new Map<FrameListener, { onLeave: LeaveListener; last: number }>();
  readonly #noticeListeners = new Set<NoticeListener>();
  /** Told of every change that needs storing (the runtime hands it to the flusher). */
  onChange: (turn: LiveTurn) => void = () => {};

  constructor(init: LiveTurnInit) {
    this.turnId = init.turnId;
    this.userId = init.userId;
    this.sessionId = init.sessionId;
    this.assistantRowId = init.assistantRowId;
    this.assistantMessageId = init.assistantMessageId;
    this.userMessageId = init.userMessageId;
    this.requestId = init.requestId;
    this.model = init.model;
    this.reservedTokens = init.reservedTokens;
    this.reservedCostUsd = init.reservedCostUsd;
    this.epoch = init.epoch ?? 0;
    this.baseSeq = init.baseSeq ?? 0;
    this.#storedSeq = this.baseSeq;
    this.restarts = init.restarts ?? [];
    if (init.content) {
      // Only the part that stands: the stored rest (a restarted step's text) is cut off by
      // the first flush, which writes from `chars` on.
      this.content = init.content.text.slice(0, init.content.units);
      this.#chars = init.content.chars;
      this.#storedChars = init.content.stored?.chars ?? init.content.chars;
      this.#storedUnits = init.content.stored?.units ?? init.content.units;
      this.#messageDirty = true;
      // The cut is written with the first flush, whatever the text interval.
      this.#textTakenAt = -Infinity;
    }
    this.#textFlushIntervalMs = init.textFlushIntervalMs ?? 0;
    this.keepsPartialText = init.keepsPartialText ?? false;
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get abortReason(): AbortReason | undefined {
    return this.#abortReason;
  }

  /** Stops the turn's work; the turn loop sees the signal and ends the turn. */
  abort(reason: AbortReason): void {
    if (this.#abort.signal.aborted) return;
    this.#abortReason = reason;
    this.#abort.abort(reason);
  }

  /** Milliseconds since this isolate took the turn on. */
  elapsedMs(): number {
    return Math.round(performance.now() - this.#startedAt);
  }

  /** Tells the turn's listeners something live (not numbered, not stored, never replayed). */
  notify(notice: Omit<NoticeFrame, "type" | "turn_id">): void {
    const frame: NoticeFrame = { type: "notice", turn_id: this.turnId, ...notice };
    for (const listener of this.#noticeListeners) listener(frame);
  }

  get lastSeq(): number {
    return this.baseSeq + this.#frames.length;
  }

  /** The answer's length as a checkpoint records it. */
  get textPosition(): { units: number; chars: number } {
    return { units: this.content.length, chars: this.#chars };
  }

  /**
   * Parks the turn with its next flush (which settles its reservation), unless an approval
   * answer overtook it; `storedState` tells which after that flush.
   */
  requestPark(outcome: TurnOutcome): void {
    this.#pendingPark = outcome;
    this.onChange(this);
  }

  /** A new checkpoint: stored with the next flush of this turn. */
  setCheckpoint(checkpoint: TurnCheckpoint): void {
    this.checkpoint = checkpoint;
    this.#checkpointDirty = true;
    this.onChange(this);
  }

  get ended(): boolean {
    return this.#outcome !== undefined;
  }

  /** Numbers a frame and hands it to every listener at once. */
  emit(frame: UnnumberedTurnFrame): TurnFrame {
    if (this.#outcome) throw new Error(`turn ${this.turnId} has already ended`);
    const numbered = this.#number(frame);
    for (const listener of this.#listeners) listener(numbered);
    this.onChange(this);
    return numbered;
  }

  appendText(delta: string): void {
    this.content += delta;
    this.#chars += codePoints(delta);
    this.#messageDirty = true;
    this.onChange(this);
  }

  recordToolCall(call: StoredToolCall): void {
    this.toolCalls = [...this.toolCalls.filter((c) => c.id !== call.id), call];
    this.#messageDirty = true;
    this.#toolCallsDirty = true;
    this.onChange(this);
  }

  /**
   * Ends the turn with its closing frames (e.g. `response` + `complete`, or one `error`).
   * They are numbered now but reach listeners only through `release`, after the flush that
   * stores them: a client that saw `complete` finds the stored answer.
   */
  end(outcome: TurnOutcome, closing: UnnumberedTurnFrame[]): TurnFrame[] {
    if (this.#outcome) throw new Error(`turn ${this.turnId} has already ended`);
    this.#heldFrom = this.lastSeq + 1;
    const numbered = closing.map((frame) => this.#number(frame));
    this.#outcome = outcome;
    this.#messageDirty = true;
    return numbered;
  }

  /** Delivers the closing frames `end` held back. */
  release(): void {
    if (this.#heldFrom === undefined) return;
    const held = this.#frames.slice(this.#heldFrom - 1 - this.baseSeq);
    this.#heldFrom = undefined;
    for (const frame of held) {
      for (const listener of this.#listeners) listener(frame);
    }
  }

  /**
   * Replays the frames after `afterSeq` to `listener` and keeps it informed of new ones,
   * synchronously, so nothing falls between replay and live. Returns the unsubscribe.
   */
  subscribe(
    afterSeq: number,
    listener: FrameListener,
    onNotice?: NoticeListener,
    onLeave?: LeaveListener,
  ): () => void {
    if (afterSeq < this.baseSeq) {
      throw new Error(`turn ${this.turnId}: frames up to ${this.baseSeq} are only in storage`);
    }
    const visible = this.#heldFrom === undefined ? this.lastSeq : this.#heldFrom - 1;
    let last = afterSeq;
    const tracked = (frame: TurnFrame) => {
      last = frame.seq;
      const entry = this.#leaveListeners.get(tracked);
      if (entry) entry.last = last;
      listener(frame);
    };
    for (
      const frame of this.#frames.slice(afterSeq - this.baseSeq, visible - this.baseSeq)
    ) {
      tracked(frame);
    }
    this.#listeners.add(tracked);
    if (onNotice) this.#noticeListeners.add(onNotice);
    if (onLeave) this.#leaveListeners.set(tracked, { onLeave, last });
    return () => {
      this.#listeners.delete(tracked);
      this.#leaveListeners.delete(tracked);
      if (onNotice) this.#noticeListeners.delete(onNotice);
    };
  }

  /**
   * The turn goes on elsewhere (taken over, released, or parked): each follower is told the
   * last seq it got, so it can follow the turn from storage instead.
   */
  leave(): void {
    const leaving = [...this.#leaveListeners.values()];
    this.#leaveListeners.clear();
    this.#listeners.clear();
    this.#noticeListeners.clear();
    for (const { onLeave, last } of leaving) onLeave(last);
  }

  /** Everything the next flush should write for this turn, or undefined when nothing. */
  takeFlush(): FlushEntry | undefined {
    const frames = this.#frames.slice(this.#storedSeq - this.baseSeq);
    const outcome = (this.#outcomeStored ? undefined : this.#outcome) ?? this.#pendingPark;
    this.#pendingPark = undefined;
    // A checkpoint records the answer's position: the text up to it is stored with it, so an
    // adopter finds it (and a park or an ending stores it too).
    const forced = this.#toolCallsDirty || outcome !== undefined || this.#checkpointDirty;
    const timed = !forced && performance.now() - this.#textTakenAt >= this.#textFlushIntervalMs;
    const messageDue = this.#messageDirty && (forced || timed);
    if (messageDue && timed) this.#textFlushIntervalMs *= 2;
    if (frames.length === 0 && !messageDue && !outcome && !this.#checkpointDirty) {
      return undefined;
    }
    const entry: FlushEntry = {
      turn: this,
      frames,
      steps: this.steps,
      model: this.model,
      epoch: this.epoch,
    };
    if (this.#checkpointDirty && this.checkpoint) {
      entry.checkpoint = this.checkpoint;
      this.#checkpointDirty = false;
    }
    if (messageDue) {
      this.#textTakenAt = performance.now();
      entry.message = {
        fromChars: this.#storedChars,
        text: this.content.slice(this.#storedUnits),
        ...(this.#toolCallsDirty ? { toolCalls: this.toolCalls } : {}),
        untilChars: this.#chars,
        untilUnits: this.content.length,
      };
      this.#messageDirty = false;
      this.#toolCallsDirty = false;
    }
    if (outcome) entry.outcome = outcome;
    if (this.keepsPartialText && frames.some((frame) => frame.type === "token")) {
      entry.progressed = true;
    }
    return entry;
  }

  /** A flush entry that only keeps the turn alive. */
  heartbeatEntry(): FlushEntry {
    return { turn: this, frames: [], steps: this.steps, model: this.model, epoch: this.epoch };
  }

  flushed(entry: FlushEntry): void {
    const last = entry.frames.at(-1);
    if (last) this.#storedSeq = Math.max(this.#storedSeq, last.seq);
    if (entry.message) {
      this.#storedChars = entry.message.untilChars;
      this.#storedUnits = entry.message.untilUnits;
    }
    if (entry.outcome && entry.outcome.state !== "parked") this.#outcomeStored = true;
  }

  /** The write failed: what it carried is written again by the next flush. */
  flushFailed(entry: FlushEntry): void {
    if (entry.message) this.#messageDirty = true;
    if (entry.message?.toolCalls) this.#toolCallsDirty = true;
    if (entry.checkpoint && !this.#checkpointDirty) this.#checkpointDirty = true;
    if (entry.outcome?.state === "parked") this.#pendingPark ??= entry.outcome;
  }

  /** True once the ending and every frame are stored. */
  get settled(): boolean {
    return this.#outcomeStored && this.#storedSeq === this.lastSeq;
  }

  #number(frame: UnnumberedTurnFrame): TurnFrame {
    const numbered = {
      ...frame,
      turn_id: this.turnId,
      seq: this.lastSeq + 1,
    } as TurnFrame;
    this.#frames.push(numbered);
    return numbered;
  }
}

/** Characters as Postgres counts them (code points), for `left(content, n)`. */
export function codePoints(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/** An `error` turn frame without its number. */
export function errorFrame(
  code: ErrorCode,
  message: string,
  retryable: boolean,
): Omit<ErrorFrame, "turn_id" | "seq"> & { code: ErrorCode } {
  return { type: "error", code, message, retryable };
}
