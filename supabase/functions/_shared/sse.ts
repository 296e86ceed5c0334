/**
 * Incremental Server-Sent-Events decoder: `eventsource-parser` (the WHATWG "event stream
 * interpretation") over a streaming TextDecoder and a reused read buffer (`ChunkReader`).
 *
 * Network chunks split anywhere: inside a multi-byte UTF-8 character, inside a line, or
 * between the `\r` and `\n` of one line end. The TextDecoder (`stream: true`) keeps the bytes
 * of an unfinished character for the next chunk; the parser keeps the unterminated line, and
 * holds back a trailing `\r` until it knows whether a `\n` follows.
 *
 * One deliberate departure from the spec: an event still pending at end of stream is
 * dispatched instead of dropped, because some upstreams close without a final blank line and
 * the last event is often the one carrying usage or `[DONE]`. (`reset({ consume: true })`
 * only parses the unterminated line and then discards the pending event, so the end of the
 * stream is fed as a blank line instead.)
 */

import { createParser } from "eventsource-parser";

export interface SseEvent {
  /** The `event:` field, when the event had one. */
  event?: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /**
   * The last `id:` seen on the stream so far, when any. Only blocks that dispatch count: the
   * parser drops an `id:` in a block without `data:`, which no upstream of ours sends.
   */
  id?: string;
}

/**
 * Yields the events of `stream` as they complete. Comment lines (`:` first) are skipped.
 * When `signal` aborts, the source is cancelled and the generator throws `signal.reason`.
 * When the consumer stops early, the source is cancelled too, so the connection is released.
 * `onChunk` hears of every network chunk, comments included (keep-alives prove the upstream
 * is alive even when no event completes).
 */
export async function* readSseEvents(
  stream: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
  onChunk?: () => void,
): AsyncGenerator<SseEvent, void, undefined> {
  signal?.throwIfAborted();
  const reader = new ChunkReader(stream);
  const decoder = new TextDecoder();
  const completed: SseEvent[] = [];
  // The parser forgets `id:` after each event; the spec's last event ID lasts the stream.
  let lastEventId: string | undefined;
  const parser = createParser({
    onEvent({ event, data, id }) {
      if (id !== undefined) lastEventId = id;
      const completedEvent: SseEvent = { data };
      if (event !== undefined) completedEvent.event = event;
      if (lastEventId !== undefined) completedEvent.id = lastEventId;
      completed.push(completedEvent);
    },
  });
  function* feed(text: string): Generator<SseEvent> {
    if (text !== "") parser.feed(text);
    for (let i = 0; i < completed.length; i++) yield completed[i];
    completed.length = 0;
  }
  let sourceDone = false;
  const cancelOnAbort = () => {
    // Settles a pending read, so the loop below notices the abort without waiting for data.
    reader.cancel(signal?.reason).catch(() => {});
  };
  signal?.addEventListener("abort", cancelOnAbort, { once: true });
  try {
    while (true) {
      const chunk = await reader.read();
      signal?.throwIfAborted();
      onChunk?.();
      if (chunk === undefined) {
        sourceDone = true;
        // The decoder's last bytes, then a blank line: ends an unterminated line and
        // dispatches the pending event (a no-op when the stream ended on a blank line).
        yield* feed(decoder.decode() + "\n\n");
        return;
      }
      yield* feed(decoder.decode(chunk, { stream: true }));
    }
  } finally {
    signal?.removeEventListener("abort", cancelOnAbort);
    if (!sourceDone) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** Bytes read into one buffer per stream: an SSE chunk is small and is decoded at once. */
const READ_BUFFER_BYTES = 16 * 1024;

/**
 * Reads a byte stream (a `fetch` body) into one buffer it reuses, and any other stream with
 * its default reader. A default reader of a byte stream allocates a fresh 64 KiB buffer for
 * every chunk, however small: at a hundred streams of tokens that is over 100 MB a second of
 * buffers outside the JavaScript heap, and V8 answers such external memory with a full
 * garbage collection several times a second, each pausing every stream of the isolate.
 */
export class ChunkReader {
  /** `byob` for a byte stream, read into the reused buffer. */
  readonly mode: "byob" | "default";
  readonly #byob: ReadableStreamBYOBReader | undefined;
  readonly #default: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #buffer: ArrayBuffer | undefined;

  constructor(stream: ReadableStream<Uint8Array>) {
    let byob: ReadableStreamBYOBReader | undefined;
    try {
      byob = stream.getReader({ mode: "byob" });
    } catch (error) {
      // Not a byte stream (e.g. one built from chunks): read it as it comes.
      if (!(error instanceof TypeError)) throw error;
    }
    this.#byob = byob;
    this.#default = byob ? undefined : stream.getReader();
    this.mode = byob ? "byob" : "default";
  }

  /** The next chunk, valid until the next read; undefined at the end of the stream. */
  async read(): Promise<Uint8Array | undefined> {
    if (this.#default) {
      const { done, value } = await this.#default.read();
      return done ? undefined : value;
    }
    const buffer = this.#buffer ?? new ArrayBuffer(READ_BUFFER_BYTES);
    this.#buffer = undefined;
    const { done, value } = await this.#byob!.read(new Uint8Array(buffer));
    if (value) this.#buffer = value.buffer as ArrayBuffer; // the same memory, handed back
    return done ? undefined : value;
  }

  cancel(reason?: unknown): Promise<void> {
    return (this.#byob ?? this.#default)!.cancel(reason);
  }

  releaseLock(): void {
    (this.#byob ?? this.#default)!.releaseLock();
  }
}
