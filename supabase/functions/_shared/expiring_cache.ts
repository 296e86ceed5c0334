/**
 * A bounded map whose entries each stand until their own deadline: least recently used out
 * first when full. What an isolate remembers to save work (a verified token, an OAuth access
 * token read lately), never the truth: a miss costs only the work again.
 */
export class ExpiringCache<V> {
  #entries = new Map<string, { value: V; until: number }>();
  constructor(readonly capacity: number) {}

  get(key: string, at: number): V | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    if (at >= entry.until) return undefined;
    this.#entries.set(key, entry);
    return entry.value;
  }

  set(key: string, value: V, until: number) {
    if (this.capacity <= 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, { value, until });
    while (this.#entries.size > this.capacity) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }

  delete(key: string) {
    this.#entries.delete(key);
  }
}
