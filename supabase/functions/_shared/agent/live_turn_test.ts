import assert from "node:assert/strict";
import type { TurnFrame } from "../agent_protocol.ts";
import { newLiveTurn } from "../../../tests/support/live_turn.ts";

Deno.test("frames are numbered from 1 and a late subscriber gets the rest, then live ones", () => {
  const live = newLiveTurn();
  live.emit({ type: "token", delta: "a" });
  live.emit({ type: "token", delta: "b" });
  live.emit({ type: "token", delta: "c" });
  const seen: TurnFrame[] = [];
  const stop = live.subscribe(1, (frame) => seen.push(frame));
  live.emit({ type: "token", delta: "d" });
  stop();
  live.emit({ type: "token", delta: "e" });
  assert.deepEqual(seen.map((f) => [f.seq, f.type === "token" && f.delta]), [
    [2, "b"],
    [3, "c"],
    [4, "d"],
  ]);
  assert.ok(seen.every((frame) => frame.turn_id === live.turnId));
});

Deno.test("closing frames reach listeners only when released", () => {
  const live = newLiveTurn();
  const seen: string[] = [];
  live.subscribe(0, (frame) => seen.push(frame.type));
  live.emit({ type: "token", delta: "x" });
  const closing = live.end({ state: "complete", messageStatus: "complete" }, [
    { type: "response", message_id: live.assistantMessageId, content: "x" },
    {
      type: "complete",
      usage: { prompt_tokens: 1, completion_tokens: 1, cost: 0 },
      steps: 1,
    },
  ]);
  assert.deepEqual(closing.map((f) => f.seq), [2, 3]);
  assert.deepEqual(seen, ["token"]);
  const late: string[] = [];
  live.subscribe(0, (frame) => late.push(frame.type));
  assert.deepEqual(
    late,
    ["token"],
    "held frames are not replayed before release either",
  );
  live.release();
  assert.deepEqual(seen, ["token", "response", "complete"]);
  assert.deepEqual(late, ["token", "response", "complete"]);
  assert.throws(
    () => live.emit({ type: "token", delta: "y" }),
    /already ended/,
  );
});

Deno.test("a flush takes what is new; a failed one is taken again", () => {
  const live = newLiveTurn();
  live.emit({ type: "token", delta: "a" });
  live.appendText("a");
  const first = live.takeFlush()!;
  assert.deepEqual(first.frames.map((f) => f.seq), [1]);
  assert.deepEqual(first.message, { fromChars: 0, text: "a", untilChars: 1, untilUnits: 1 });
  live.flushFailed(first);
  live.appendText("👋");
  const retry = live.takeFlush()!;
  assert.deepEqual(retry.frames.map((f) => f.seq), [1]);
  assert.deepEqual(retry.message, { fromChars: 0, text: "a👋", untilChars: 2, untilUnits: 3 });
  live.flushed(retry);
  assert.equal(live.takeFlush(), undefined, "nothing new");

  // Only the new text goes out, counted from the stored characters (the emoji is one).
  live.appendText("b");
  live.recordToolCall({ id: "c1", name: "calculator", arguments: "{}" });
  live.emit({ type: "token", delta: "b" });
  live.end({ state: "complete", messageStatus: "complete" }, [
    { type: "complete", usage: { prompt_tokens: 0, completion_tokens: 0, cost: 0 }, steps: 1 },
  ]);
  const last = live.takeFlush()!;
  assert.deepEqual(last.frames.map((f) => f.seq), [2, 3]);
  assert.deepEqual(last.message, {
    fromChars: 2,
    text: "b",
    toolCalls: [{ id: "c1", name: "calculator", arguments: "{}" }],
    untilChars: 3,
    untilUnits: 4,
  });
  assert.equal(last.outcome?.state, "complete");
  assert.equal(live.settled, false);
  live.flushed(last);
  assert.equal(live.settled, true);
});

Deno.test("abort keeps its first reason", () => {
  const live = newLiveTurn();
  live.abort("cancelled");
  live.abort("interrupted");
  assert.equal(live.signal.aborted, true);
  assert.equal(live.abortReason, "cancelled");
});

Deno.test("streamed text is stored at most once per text interval; tool calls and the ending at once", () => {
  // Watchers follow the frames; the stored row is for late readers and recovery, so each of
  // its rewrites (one Realtime message with the whole text to every watching tab) is rare.
  const live = newLiveTurn({ textFlushIntervalMs: 3_600_000 });
  live.emit({ type: "token", delta: "Hel" });
  live.appendText("Hel");
  const first = live.takeFlush();
  assert.equal(first?.frames.length, 1, "the frames go out with every flush");
  assert.equal(first?.message, undefined, "the text waits for its interval");
  live.flushed(first!);
  live.appendText("lo");
  live.recordToolCall({ id: "c1", tool: "calculator", args: {} } as never);
  const withCall = live.takeFlush();
  assert.equal(withCall?.message?.text, "Hello", "a tool call stores the text with it");
  live.flushed(withCall!);
  live.appendText("!");
  assert.equal(live.takeFlush(), undefined, "nothing new to store but text within its interval");
  live.end({ state: "complete", messageStatus: "complete" }, []);
  const ending = live.takeFlush();
  assert.equal(ending?.message?.text, "!");
  assert.equal(ending?.message?.fromChars, 5);
});
