/**
 * Incremental Server-Sent-Events decoder (the WHATWG "event stream interpretation").
 *
 * Network chunks split anywhere: inside a multi-byte UTF-8 character, inside a line, or
 * between the `\r` and `\n` of one line end. The decoder therefore keeps both a streaming
 * TextDecoder and a carry-over of the unterminated line, and remembers a trailing `\r` so a
 * `\n` at the start of the next chunk is not read as a second (blank) line, which would
 * dispatch an event too early.
 *
 * One deliberate departure from the spec: an event still pending at end of stream is
 * dispatched instead of dropped, because some upstreams close without a final blank line and
 * the last event is often the one carrying usage or `[DONE]`.
 */

export interface SseEvent {
  /** The `event:` field, when the event had one. */
  event?: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The last `id:` seen on the stream so far, when any. */
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
  const parser = new SseLineParser();
  const decoder = new TextDecoder();
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
        yield* parser.push(decoder.decode());
        yield* parser.end();
        return;
      }
      yield* parser.push(decoder.decode(chunk, { stream: true }));
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

/** Turns decoded text into events; separate from the byte handling so it stays synchronous. */
class SseLineParser {
  private carry = "";
  private skipLeadingLineFeed = false;
  private dataLines: string[] = [];
  private hasData = false;
  private eventType: string | undefined;
  private lastEventId: string | undefined;

  *push(text: string): Generator<SseEvent> {
    if (text === "") return;
    if (this.skipLeadingLineFeed) {
      this.skipLeadingLineFeed = false;
      if (text.startsWith("\n")) text = text.slice(1);
    }
    let buffer = this.carry + text;
    let start = 0;
    while (start < buffer.length) {
      const lineEnd = findLineEnd(buffer, start);
      if (lineEnd === -1) break;
      const line = buffer.slice(start, lineEnd);
      if (buffer[lineEnd] === "\r") {
        if (lineEnd + 1 === buffer.length) {
          // The matching "\n" may be the first byte of the next chunk.
          this.skipLeadingLineFeed = true;
          start = lineEnd + 1;
        } else {
          start = buffer[lineEnd + 1] === "\n" ? lineEnd + 2 : lineEnd + 1;
        }
      } else {
        start = lineEnd + 1;
      }
      const event = this.processLine(line);
      if (event) yield event;
    }
    buffer = buffer.slice(start);
    this.carry = buffer;
  }

  *end(): Generator<SseEvent> {
    if (this.carry !== "") {
      const event = this.processLine(this.carry);
      this.carry = "";
      if (event) yield event;
    }
    const event = this.dispatch();
    if (event) yield event;
  }

  private processLine(line: string): SseEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.dataLines.push(value);
        this.hasData = true;
        break;
      case "event":
        this.eventType = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      default:
        // `retry` and unknown fields carry nothing a one-shot reader needs.
        break;
    }
    return undefined;
  }

  private dispatch(): SseEvent | undefined {
    const hasData = this.hasData;
    const event: SseEvent = { data: this.dataLines.join("\n") };
    if (this.eventType !== undefined && this.eventType !== "") event.event = this.eventType;
    if (this.lastEventId !== undefined) event.id = this.lastEventId;
    this.dataLines = [];
    this.hasData = false;
    this.eventType = undefined;
    return hasData ? event : undefined;
  }
}

function findLineEnd(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const char = text.charCodeAt(i);
    if (char === 10 || char === 13) return i;
  }
  return -1;
}
