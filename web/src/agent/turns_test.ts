import assert from "node:assert/strict";
import type { TurnFrame } from "./protocol.ts";
import { TurnScript } from "./test_support.ts";
import { answerApproval, applyTurnFrame, type TurnView } from "./turns.ts";

function play(frames: unknown[], from?: TurnView): TurnView | undefined {
  return frames.reduce<TurnView | undefined>(
    (turn, frame) => applyTurnFrame(turn, frame as TurnFrame),
    from,
  );
}

Deno.test("tokens build the text; the response replaces it with the whole answer", () => {
  const s = new TurnScript();
  const streaming = play([s.start(), s.token("Hel"), s.token("lo")])!;
  assert.equal(streaming.text, "Hello");
  assert.equal(streaming.status, "running");
  assert.equal(streaming.messageId, s.messageId);
  const done = play([s.response("Hello, world"), s.complete()], streaming)!;
  assert.equal(done.text, "Hello, world");
  assert.equal(done.status, "complete");
  assert.equal(done.usage?.completion_tokens, 5);
});

Deno.test("the label names the model that answered, not the one asked for", () => {
  const s = new TurnScript();
  const turn = play([s.start(), s.token("hi"), s.complete({ model: "fallback/model" })])!;
  assert.equal(turn.model, "fallback/model");
});

Deno.test("frames replayed by a resume change nothing", () => {
  const s = new TurnScript();
  const start = s.start();
  const a = s.token("a");
  const b = s.token("b");
  const turn = play([start, a, b])!;
  assert.equal(applyTurnFrame(turn, a as TurnFrame), turn);
  assert.equal(applyTurnFrame(turn, start as TurnFrame), turn);
  assert.equal(play([b, s.token("c")], turn)!.text, "abc");
});

Deno.test("a tool call waits for approval, shows progress, then its result", () => {
  const s = new TurnScript();
  const args = { expression: "2+2" };
  let turn = play([s.start(), s.toolCall("c1", "calculator", args)])!;
  assert.deepEqual(turn.toolCalls.map((c) => [c.callId, c.status]), [["c1", "running"]]);
  turn = play([s.approvalRequired("c1", "calculator", args)], turn)!;
  assert.equal(turn.toolCalls[0].status, "awaiting_approval");
  assert.equal(turn.toolCalls[0].approval?.timeoutMs, 120000);
  turn = answerApproval(turn, "c1", "allow");
  assert.equal(turn.toolCalls[0].approval?.answered, "allow");
  turn = play([s.progress("c1", 1, 4)], turn)!;
  assert.deepEqual(turn.toolCalls[0].progress, { progress: 1, total: 4, message: undefined });
  turn = play([s.toolResult("c1", "calculator", { value: "4" })], turn)!;
  assert.equal(turn.toolCalls[0].status, "done");
  assert.deepEqual(turn.toolCalls[0].result, { value: "4" });
  assert.equal(turn.toolCalls.length, 1);
});

Deno.test("a failing tool is shown as failed with its error", () => {
  const s = new TurnScript();
  const turn = play([
    s.start(),
    s.toolCall("c1", "query_table", {}),
    s.toolResult("c1", "query_table", { code: "denied", message: "no" }, true),
  ])!;
  assert.equal(turn.toolCalls[0].status, "failed");
  assert.deepEqual(turn.toolCalls[0].result, { code: "denied", message: "no" });
});

Deno.test("a cancelled turn is stopped, and calls still running fail with it", () => {
  const s = new TurnScript();
  const turn = play([s.start(), s.token("part"), s.toolCall("c1", "x", {}), s.error("cancelled")])!;
  assert.equal(turn.status, "cancelled");
  assert.equal(turn.error?.code, "cancelled");
  assert.equal(turn.text, "part");
  assert.equal(turn.toolCalls[0].status, "failed");
  const failed = play([new TurnScript().start()])!;
  assert.equal(
    play([{ ...s.error("llm_timeout"), turn_id: failed.turnId, seq: 2 }], failed)!.status,
    "failed",
  );
});

Deno.test("frames of a turn whose start was never seen are ignored", () => {
  const s = new TurnScript();
  s.start();
  assert.equal(applyTurnFrame(undefined, s.token("x") as TurnFrame), undefined);
});

Deno.test("a restart_step drops the frames from its seq on: the step's partial text and calls", () => {
  const s = new TurnScript();
  // seq 1-4: from the server that died; only 1-2 were stored.
  const before = play([
    s.start(),
    s.token("Hello "),
    s.token("wor"),
    s.toolCall("c9", "calc", {}),
  ])!;
  assert.equal(before.toolCalls.length, 1);
  const restart = {
    type: "restart_step",
    turn_id: s.turnId,
    seq: 3,
    step: 1,
    epoch: 1,
    keep_chars: 6,
  };
  const after = play([
    restart,
    { type: "token", turn_id: s.turnId, seq: 4, delta: "world" },
    {
      type: "complete",
      turn_id: s.turnId,
      seq: 5,
      usage: { prompt_tokens: 1, completion_tokens: 1, cost: 0 },
      steps: 1,
    },
  ], before)!;
  assert.equal(after.text, "Hello world");
  assert.deepEqual(after.toolCalls, [], "the dead server's unstored call is gone");
  assert.equal(after.epoch, 1);
  assert.equal(after.status, "complete");
  // Seen again (a resume replays it): nothing changes.
  assert.equal(applyTurnFrame(after, restart as TurnFrame), after);
});
