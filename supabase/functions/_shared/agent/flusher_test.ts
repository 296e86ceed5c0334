import assert from "node:assert/strict";
import { Flusher, type FlushWriter } from "./flusher.ts";
import type { FlushEntry, LiveTurn } from "./live_turn.ts";
import { newLiveTurn } from "../../../tests/support/live_turn.ts";

const INTERVAL_MS = 40;

function streamingTurn(text: string): LiveTurn {
  const turn = newLiveTurn();
  turn.appendText(text);
  turn.emit({ type: "token", delta: text });
  return turn;
}

/** A writer that records each batch and owns every turn, or fails while `failing` is set. */
function recordingWriter(): { write: FlushWriter; batches: FlushEntry[][]; failing: boolean } {
  const recorder = {
    batches: [] as FlushEntry[][],
    failing: false,
    write: (entries: FlushEntry[]) => {
      if (recorder.failing) return Promise.reject(new Error("the database is away"));
      recorder.batches.push(entries);
      return Promise.resolve({
        owned: new Map(
          entries.map((entry) => [entry.turn.turnId, {
            cancelRequested: false,
            state: "running" as const,
            approvalAnswer: null,
          }]),
        ),
      });
    },
  };
  return recorder;
}

function flusherFor(write: FlushWriter): Flusher {
  return new Flusher(write, INTERVAL_MS, { onLost() {}, onCancelRequested() {} });
}

function textsOf(batch: FlushEntry[]): (string | undefined)[] {
  return batch.map((entry) => entry.message?.text);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("a turn's ending is written alone; the turns still streaming wait for their interval", async () => {
  const writer = recordingWriter();
  const flusher = flusherFor(writer.write);
  const ending = streamingTurn("done");
  const streaming = streamingTurn("still going");
  for (const turn of [ending, streaming]) turn.onChange = (t) => flusher.markDirty(t);
  flusher.markDirty(ending);
  flusher.markDirty(streaming);

  ending.end({ state: "complete", messageStatus: "complete" }, [
    { type: "complete", usage: { prompt_tokens: 1, completion_tokens: 1, cost: 0 }, steps: 1 },
  ]);
  await flusher.flushTurn(ending);
  assert.equal(writer.batches.length, 1);
  assert.deepEqual(writer.batches[0].map((entry) => entry.turn), [ending]);
  assert.ok(ending.settled);

  await sleep(INTERVAL_MS * 3);
  assert.equal(writer.batches.length, 2, "the interval writes the streaming turn");
  assert.deepEqual(writer.batches[1].map((entry) => entry.turn), [streaming]);
  assert.deepEqual(textsOf(writer.batches[1]), ["still going"]);
  flusher.close();
});

Deno.test("a turn changed while an ending waits behind a write is still written within the interval", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const writer = recordingWriter();
  const flusher = flusherFor(async (entries) => {
    await gate;
    return await writer.write(entries);
  });
  const first = streamingTurn("a");
  const second = streamingTurn("b");
  const late = streamingTurn("c");
  late.onChange = (t) => flusher.markDirty(t);

  const inFlight = flusher.flushTurn(first);
  await sleep(0); // the first write is under way; the next one queues behind it
  const queued = flusher.flushTurn(second);
  late.appendText("d"); // marked dirty while an ending-only write is queued
  release();
  await Promise.all([inFlight, queued]);
  assert.deepEqual(writer.batches.map((batch) => batch.map((entry) => entry.turn)), [
    [first],
    [second],
  ]);

  await sleep(INTERVAL_MS * 3);
  assert.equal(writer.batches.length, 3);
  assert.deepEqual(writer.batches[2].map((entry) => entry.turn), [late]);
  assert.deepEqual(textsOf(writer.batches[2]), ["cd"]);
  flusher.close();
});

Deno.test("what a failed write carried is written again by the next one", async () => {
  const writer = recordingWriter();
  const flusher = flusherFor(writer.write);
  const turn = streamingTurn("kept");
  writer.failing = true;
  await assert.rejects(flusher.flushTurn(turn), /the database is away/);
  writer.failing = false;

  await sleep(INTERVAL_MS * 3);
  assert.equal(writer.batches.length, 1);
  assert.deepEqual(textsOf(writer.batches[0]), ["kept"]);
  assert.deepEqual(writer.batches[0][0].frames.map((frame) => frame.seq), [1]);
  flusher.close();
});
