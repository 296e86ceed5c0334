/**
 * Writes what changed in this isolate's turns to Postgres: on a timer while they stream
 * (each change is stored within one flush interval), and at once when a turn ends. All turns
 * go into one statement per flush, so a thousand streaming turns cost one write per interval,
 * not a thousand. At most one flush is in flight; callers asking meanwhile share the next.
 */
import type { Sql } from "../db.ts";
import type { FlushEntry, LiveTurn } from "./live_turn.ts";
import { writeFlush } from "./turn_store.ts";

export interface FlushReport {
  /** The turn is no longer running as ours: another isolate marked it interrupted. */
  onLost(turn: LiveTurn): void;
  /** Someone asked (maybe through another isolate) to cancel the turn. */
  onCancelRequested(turn: LiveTurn): void;
}

export class Flusher {
  readonly #dirty = new Set<LiveTurn>();
  /** Turns whose heartbeat is due, changed or not. */
  readonly #beating = new Set<LiveTurn>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inFlight: Promise<void> | undefined;
  #queued: Promise<void> | undefined;
  #closed = false;

  constructor(
    private readonly sql: Sql,
    private readonly owner: string,
    private readonly intervalMs: number,
    private readonly report: FlushReport,
  ) {}

  /** Something changed in `turn`: it is written within one interval. */
  markDirty(turn: LiveTurn): void {
    this.#dirty.add(turn);
    if (
      this.#timer === undefined && this.#queued === undefined && !this.#closed
    ) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.flush().catch((error) => console.error("agent: flush failed", error));
      }, this.intervalMs);
    }
  }

  /**
   * Writes the heartbeat of `turns` (with anything new of theirs) now. Heartbeats go through
   * the flusher so that one transaction at a time updates this isolate's turns: two of them
   * updating overlapping rows in different orders would deadlock.
   */
  heartbeat(turns: Iterable<LiveTurn>): Promise<void> {
    for (const turn of turns) this.#beating.add(turn);
    return this.flush();
  }

  /** Writes everything dirty now (after the flush in flight, if any); rejects if that fails. */
  flush(): Promise<void> {
    if (this.#queued) return this.#queued;
    const previous = this.#inFlight ?? Promise.resolve();
    const next = previous.catch(() => {}).then(() => {
      this.#queued = undefined;
      const write = this.#write();
      this.#inFlight = write;
      return write;
    });
    this.#queued = next;
    return next;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #write(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const entries: FlushEntry[] = [];
    for (const turn of new Set([...this.#dirty, ...this.#beating])) {
      const entry = turn.takeFlush() ??
        (this.#beating.has(turn) && !turn.settled ? turn.heartbeatEntry() : undefined);
      if (entry) entries.push(entry);
    }
    this.#dirty.clear();
    this.#beating.clear();
    if (entries.length === 0) return;
    let owned;
    try {
      ({ owned } = await writeFlush(this.sql, this.owner, entries));
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
      if (!state) this.report.onLost(entry.turn);
      else if (state.cancelRequested) this.report.onCancelRequested(entry.turn);
    }
  }
}
