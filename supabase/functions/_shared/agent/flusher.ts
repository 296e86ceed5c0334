/**
 * Writes what changed in this isolate's turns to Postgres: on a timer while they stream
 * (each change is stored within one flush interval), and at once when a turn ends. The timed
 * flush puts all turns into one statement, so a thousand streaming turns cost one write per
 * interval, not a thousand. A turn's ending goes out alone (with other endings due at that
 * moment): were it to take every streaming turn along, turns ending all the time under load
 * would make every ending a write of every turn, and the interval meaningless.
 * At most one write is in flight; callers asking meanwhile share the next one.
 */
import type { FlushEntry, LiveTurn } from "./live_turn.ts";
import type { FlushOutcome } from "./turn_store.ts";
import { logFailure } from "../log.ts";

export interface FlushReport {
  /**
   * The turn is no longer ours: another isolate took it over (our lease lapsed), or marked it
   * interrupted.
   */
  onLost(turn: LiveTurn): void;
  /** Someone asked (maybe through another isolate) to cancel the turn. */
  onCancelRequested(turn: LiveTurn): void;
}

/** Stores a batch of entries in one transaction (`writeFlush` bound to a pool and owner). */
export type FlushWriter = (entries: FlushEntry[]) => Promise<FlushOutcome>;

export class Flusher {
  readonly #dirty = new Set<LiveTurn>();
  /** Turns whose heartbeat is due, changed or not. */
  readonly #beating = new Set<LiveTurn>();
  /** Turns the next write carries even when it is not a full one. */
  readonly #urgent = new Set<LiveTurn>();
  /** Whether the next write carries every dirty turn or only the urgent and beating ones. */
  #nextIsFull = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inFlight: Promise<void> | undefined;
  #queued: Promise<void> | undefined;
  #closed = false;

  constructor(
    private readonly write: FlushWriter,
    private readonly intervalMs: number,
    private readonly report: FlushReport,
  ) {}

  /** Something changed in `turn`: it is written within one interval. */
  markDirty(turn: LiveTurn): void {
    this.#dirty.add(turn);
    this.#armTimer();
  }

  /**
   * Writes the heartbeat of `turns` (with anything new of every turn) now. Heartbeats go
   * through the flusher so that one transaction at a time updates this isolate's turns: two
   * of them updating overlapping rows in different orders would deadlock.
   */
  heartbeat(turns: Iterable<LiveTurn>): Promise<void> {
    for (const turn of turns) this.#beating.add(turn);
    return this.flush();
  }

  /** Writes everything dirty now (after the write in flight, if any); rejects if that fails. */
  flush(): Promise<void> {
    this.#nextIsFull = true;
    return this.#schedule();
  }

  /**
   * Writes `turn` now (after the write in flight, if any), leaving the other turns to their
   * interval; rejects if that fails.
   */
  flushTurn(turn: LiveTurn): Promise<void> {
    this.#urgent.add(turn);
    return this.#schedule();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #armTimer(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush().catch((error) => logFailure("flush", error));
    }, this.intervalMs);
  }

  #schedule(): Promise<void> {
    if (this.#queued) return this.#queued;
    const previous = this.#inFlight ?? Promise.resolve();
    const next = previous.catch(() => {}).then(() => {
      this.#queued = undefined;
      const write = this.#writeDue();
      this.#inFlight = write;
      return write;
    });
    this.#queued = next;
    return next;
  }

  async #writeDue(): Promise<void> {
    const full = this.#nextIsFull;
    this.#nextIsFull = false;
    if (full) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const due = new Set([
      ...(full ? this.#dirty : this.#urgent),
      ...this.#urgent,
      ...this.#beating,
    ]);
    const entries: FlushEntry[] = [];
    for (const turn of due) {
      const entry = turn.takeFlush() ??
        (this.#beating.has(turn) && !turn.settled ? turn.heartbeatEntry() : undefined);
      if (entry) entries.push(entry);
      this.#dirty.delete(turn);
    }
    this.#urgent.clear();
    this.#beating.clear();
    if (entries.length === 0) return;
    let owned;
    try {
      ({ owned } = await this.write(entries));
    } catch (error) {
      for (const entry of entries) {
        entry.turn.flushFailed(entry);
        this.markDirty(entry.turn);
      }
      throw error;
    }
    for (const entry of entries) {
      entry.turn.flushed(entry);
      const state = owned.get(entry.turn.turnId);
      if (state) {
        entry.turn.storedState = { state: state.state, approvalAnswer: state.approvalAnswer };
      }
      if (!state) this.report.onLost(entry.turn);
      else if (state.cancelRequested) this.report.onCancelRequested(entry.turn);
    }
  }
}
