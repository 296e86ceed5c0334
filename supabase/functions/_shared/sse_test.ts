import assert from "node:assert/strict";
import { ChunkReader, readSseEvents, type SseEvent } from "./sse.ts";

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

function byteByByte(text: string): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  return streamOf([...bytes].map((byte) => Uint8Array.of(byte)));
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of readSseEvents(stream)) events.push(event);
  return events;
}

const MIXED = ": OPENROUTER PROCESSING\r\n\r\n" +
  'data: {"text":"grüße 👋"}\r\n\r\n' +
  "event: update\nid: 7\ndata: first line\ndata: second line\n\n" +
  ": keep-alive\r\r" +
  "data:no space\rdata:  two spaces\r\r" +
  "data: [DONE]\n\n";

const MIXED_EVENTS: SseEvent[] = [
  { data: '{"text":"grüße 👋"}' },
  { event: "update", id: "7", data: "first line\nsecond line" },
  { id: "7", data: "no space\n two spaces" },
  { id: "7", data: "[DONE]" },
];

Deno.test("sse: decodes a whole stream with LF, CRLF and CR line ends and comments", async () => {
  const events = await collect(streamOf([new TextEncoder().encode(MIXED)]));
  assert.deepEqual(events, MIXED_EVENTS);
});

Deno.test("sse: the same stream split byte by byte gives the same events", async () => {
  // Byte splits land inside "ü" and "👋" and between every "\r" and "\n".
  const events = await collect(byteByByte(MIXED));
  assert.deepEqual(events, MIXED_EVENTS);
});

Deno.test("sse: a CR at the end of one chunk and LF at the start of the next is one line end", async () => {
  const encoder = new TextEncoder();
  const events = await collect(streamOf([
    encoder.encode("data: a\r"),
    encoder.encode("\ndata: b\r"),
    encoder.encode("\n\r"),
    encoder.encode("\n"),
  ]));
  assert.deepEqual(events, [{ data: "a\nb" }]);
});

Deno.test("sse: comment-only blocks and blank keep-alives dispatch nothing", async () => {
  const events = await collect(byteByByte(": ping\n\n\n\n: OPENROUTER PROCESSING\n\n"));
  assert.deepEqual(events, []);
});

Deno.test("sse: an empty data field still dispatches an event with empty data", async () => {
  const events = await collect(byteByByte("data\n\ndata:\ndata:\n\n"));
  assert.deepEqual(events, [{ data: "" }, { data: "\n" }]);
});

Deno.test("sse: the last event is dispatched at end of stream without a blank line", async () => {
  const events = await collect(byteByByte("data: one\n\ndata: two\ndata: three"));
  assert.deepEqual(events, [{ data: "one" }, { data: "two\nthree" }]);
});

Deno.test("sse: event type does not leak into the next event", async () => {
  const events = await collect(byteByByte("event: a\ndata: 1\n\ndata: 2\n\n"));
  assert.deepEqual(events, [{ event: "a", data: "1" }, { data: "2" }]);
});

Deno.test("sse: stopping early cancels the source stream", async () => {
  let cancelled = false;
  const encoder = new TextEncoder();
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(encoder.encode(`data: ${sent++}\n\n`));
    },
    cancel() {
      cancelled = true;
    },
  });
  for await (const event of readSseEvents(stream)) {
    if (event.data === "2") break;
  }
  assert.equal(cancelled, true);
});

Deno.test("sse: aborting the signal cancels the source and throws the reason", async () => {
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("data: first\n\n"));
      // No more data and no close: only the abort can end the read below.
    },
    cancel() {
      cancelled = true;
    },
  });
  const controller = new AbortController();
  const seen: string[] = [];
  await assert.rejects(
    async () => {
      for await (const event of readSseEvents(stream, controller.signal)) {
        seen.push(event.data);
        controller.abort(new Error("stop now"));
      }
    },
    { message: "stop now" },
  );
  assert.deepEqual(seen, ["first"]);
  assert.equal(cancelled, true);
});

Deno.test("sse: a fetch body is read into one reused buffer (byob), a chunk stream as it comes", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("data: x\n\n", { headers: { "content-type": "text/event-stream" } }),
  );
  try {
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    const reader = new ChunkReader(response.body!);
    assert.equal(reader.mode, "byob");
    const chunk = await reader.read();
    assert.equal(new TextDecoder().decode(chunk), "data: x\n\n");
    assert.equal(await reader.read(), undefined);
    reader.releaseLock();
  } finally {
    await server.shutdown();
  }
  assert.equal(
    new ChunkReader(streamOf([new TextEncoder().encode("data: y\n\n")])).mode,
    "default",
  );
});

Deno.test("sse: events larger than the read buffer arrive whole from a byte stream", async () => {
  const big = "é".repeat(30_000); // 60,000 bytes: several reads of the 16 KiB buffer
  const bytes = new TextEncoder().encode(`data: ${big}\n\ndata: after\n\n`);
  let offset = 0;
  const byteStream = new ReadableStream({
    type: "bytes",
    pull(controller) {
      const request = controller.byobRequest!;
      const view = request.view! as Uint8Array;
      const size = Math.min(view.byteLength, bytes.length - offset, 7_001);
      view.set(bytes.subarray(offset, offset + size));
      offset += size;
      request.respond(size);
      if (offset === bytes.length) controller.close();
    },
  });
  const events: SseEvent[] = [];
  for await (const event of readSseEvents(byteStream)) events.push(event);
  assert.deepEqual(events.map((event) => event.data), [big, "after"]);
});

Deno.test("sse: a multi-byte character split across chunks decodes whole", async () => {
  const bytes = new TextEncoder().encode("data: ü👋\n\n");
  // "ü" is bytes 6–7 and "👋" bytes 8–11: split inside each.
  const events = await collect(streamOf([
    bytes.subarray(0, 7),
    bytes.subarray(7, 10),
    bytes.subarray(10),
  ]));
  assert.deepEqual(events, [{ data: "ü👋" }]);
});

Deno.test("sse: an id lasts the stream, an empty event type is none, unknown fields and retry are ignored", async () => {
  const events = await collect(
    byteByByte(
      "id: 1\nevent:\nretry: 10\nfoo: bar\ndata: a\n\nretry: x\ndata: b\n\nid:\ndata: c\n\n",
    ),
  );
  assert.deepEqual(events, [{ id: "1", data: "a" }, { id: "1", data: "b" }, { id: "", data: "c" }]);
});

Deno.test("sse: the pending event at end of stream is dispatched after a trailing CR or a complete line", async () => {
  assert.deepEqual(await collect(byteByByte("data: a\r")), [{ data: "a" }]);
  assert.deepEqual(await collect(byteByByte("data: a\ndata: b\n")), [{ data: "a\nb" }]);
  assert.deepEqual(await collect(byteByByte("event: x\ndata: a")), [{ event: "x", data: "a" }]);
});
