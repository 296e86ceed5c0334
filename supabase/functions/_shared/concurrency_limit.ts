/**
 * At most `limit` tasks at once; the others wait their turn, first come first served. The
 * agent starts its turns through one, so that a burst of chats takes only part of its
 * database pool (and of the database) while the turns already running stream, flush and
 * answer approvals.
 */
export class ConcurrencyLimit {
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) {
      throw new RangeError(`limit must be a positive integer, not ${limit}`);
    }
  }

  /** Tasks running now. */
  get running(): number {
    return this.#running;
  }

  /** Tasks waiting for a slot. */
  get waiting(): number {
    return this.#waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.limit) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#running++;
    }
    try {
      return await task();
    } finally {
      // The slot passes straight to the next waiter, so none can be overtaken.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}
