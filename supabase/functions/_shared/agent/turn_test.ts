import assert from "node:assert/strict";
import type { TurnFrame } from "../agent_protocol.ts";
import { newLiveTurn } from "../../../tests/support/live_turn.ts";
import { runTurn, type TurnEnding, type TurnRun } from "./turn.ts";
import { initialCheckpoint } from "./turn_checkpoint.ts";
import {
  doublerTool,
  fakeTurnScope,
  scriptedLlm,
  textAnswer,
  toolCallAnswer,
} from "../../../tests/support/turn_fakes.ts";

function ended(run: TurnRun): TurnEnding {
  assert.equal(run.kind, "ended");
  return run as TurnEnding;
}

function framesOf(turn: ReturnType<typeof newLiveTurn>): TurnFrame[] {
  const frames: TurnFrame[] = [];
  turn.subscribe(0, (frame) => frames.push(frame));
  return frames;
}

Deno.test("turn: a text answer streams token by token and completes with its usage", async () => {
  const llm = scriptedLlm(textAnswer("Hel", "lo"));
  const { scope, usage } = fakeTurnScope(llm.fetch);
  const turn = newLiveTurn();
  const frames = framesOf(turn);

  const ending = ended(await runTurn(turn, scope));

  assert.deepEqual(frames.map((f) => f.type === "token" ? f.delta : f.type), [
    "step",
    "Hel",
    "lo",
  ]);
  const [step] = frames;
  assert.deepEqual(step.type === "step" && [step.step, step.index], ["calling_model", 1]);
  assert.equal(turn.content, "Hello");
  assert.deepEqual(ending.outcome, { state: "complete", messageStatus: "complete" });
  assert.deepEqual(ending.closing.map((f) => f.type), ["response", "complete"]);
  const complete = ending.closing[1];
  assert.ok(
    complete.type === "complete" && complete.duration_ms! >= 0,
    "complete says its duration",
  );
  assert.deepEqual(ending.usage, { prompt_tokens: 10, completion_tokens: 2, cost: 0.001 });
  assert.deepEqual(usage.map((row) => [row.kind, row.name, row.status]), [["llm", "m", "ok"]]);
  assert.equal(usage[0].turn_id, turn.turnId);
  assert.equal(llm.requests.length, 1);
});

Deno.test("turn: a tool call runs through the scope's tools and its result goes back to the model", async () => {
  const llm = scriptedLlm(toolCallAnswer("doubler", { n: 21 }), textAnswer("42"));
  const { scope, usage } = fakeTurnScope(llm.fetch);
  const turn = newLiveTurn();
  const frames = framesOf(turn);

  const ending = ended(await runTurn(turn, scope));

  assert.deepEqual(frames.map((f) => f.type === "step" ? `${f.step}:${f.index}` : f.type), [
    "calling_model:1",
    "running_tool:1",
    "tool_call",
    "progress",
    "tool_result",
    "calling_model:2",
    "token",
  ]);
  const running = frames.find((f) => f.type === "step" && f.step === "running_tool");
  const call = frames.find((f) => f.type === "tool_call");
  assert.deepEqual(
    running?.type === "step" && [running.tool, running.call_id],
    ["doubler", call?.type === "tool_call" && call.call_id],
  );
  const result = frames.find((f) => f.type === "tool_result");
  assert.deepEqual(result?.type === "tool_result" && result.result, { doubled: 42 });
  assert.equal(ending.outcome.state, "complete");
  assert.equal(turn.steps, 2);
  // The second request carries the assistant's call and the tool's answer, in order.
  const second = llm.requests[1].messages as { role: string; content: string | null }[];
  assert.deepEqual(second.slice(-2).map((m) => m.role), ["assistant", "tool"]);
  assert.equal(second.at(-1)?.content, '{"doubled":42}');
  assert.deepEqual(usage.map((row) => [row.kind, row.status]), [
    ["llm", "ok"],
    ["tool", "ok"],
    ["llm", "ok"],
  ]);
  assert.deepEqual(turn.toolCalls.map((call) => [call.name, call.is_error]), [
    ["doubler", false],
  ]);
});

Deno.test("turn: a model that keeps calling tools stops at the step limit", async () => {
  const llm = scriptedLlm(toolCallAnswer("doubler", { n: 1 }), toolCallAnswer("doubler", { n: 2 }));
  const { scope } = fakeTurnScope(llm.fetch, { maxSteps: 2 });
  const turn = newLiveTurn();

  const ending = ended(await runTurn(turn, scope));

  assert.equal(ending.outcome.state, "error");
  const error = ending.closing.find((frame) => frame.type === "error");
  assert.equal(error?.type === "error" && error.code, "step_limit");
  // The last step may only answer in words.
  assert.equal(llm.requests[1].tool_choice, "none");
});

Deno.test("turn: a further LLM call the user's limits refuse is not made; the turn ends rate_limited", async () => {
  const llm = scriptedLlm(toolCallAnswer("doubler", { n: 21 }), textAnswer("never"));
  const { scope } = fakeTurnScope(llm.fetch);
  const asked: [string, number, number][] = [];
  scope.reserveStep = (turnId, promptTokens, completionTokens) => {
    asked.push([turnId, promptTokens, completionTokens]);
    return Promise.resolve({ allowed: false, reason: "daily_cost_cap", retryAfterMs: 1000 });
  };
  const turn = newLiveTurn();

  const ending = ended(await runTurn(turn, scope));

  assert.equal(llm.requests.length, 1, "only the call reserved at the start");
  assert.equal(asked.length, 1);
  assert.equal(asked[0][0], turn.turnId);
  assert.equal(asked[0][2], scope.config.maxCompletionTokens, "a full completion is reserved");
  assert.ok(asked[0][1] > 0, "and the grown prompt");
  assert.equal(ending.outcome.state, "error");
  const error = ending.closing.find((frame) => frame.type === "error");
  assert.deepEqual(
    error?.type === "error" && [error.code, error.reason, error.retry_after_ms, error.retryable],
    ["rate_limited", "daily_cost_cap", 1000, true],
  );
});

Deno.test("turn: a cancelled turn ends as cancelled without another LLM call", async () => {
  const llm = scriptedLlm(toolCallAnswer("doubler", { n: 1 }), textAnswer("never"));
  const { scope } = fakeTurnScope(llm.fetch);
  const turn = newLiveTurn();
  turn.subscribe(0, (frame) => {
    if (frame.type === "tool_result") turn.abort("cancelled");
  });

  const ending = ended(await runTurn(turn, scope));

  assert.equal(ending.outcome.state, "cancelled");
  assert.equal(llm.requests.length, 1);
});

/** A turn taken over while `doubler` (n: 4) was running, after the model's first step. */
function takenOverDuringTheCall(scope: ReturnType<typeof fakeTurnScope>["scope"]) {
  const turn = newLiveTurn();
  const call = { id: "call_1", name: "doubler", arguments: '{"n":4}' };
  turn.checkpoint = {
    ...initialCheckpoint(scope),
    progress: 1,
    step: 1,
    messages: [...scope.messages, {
      role: "assistant",
      content: null,
      tool_calls: [{ id: call.id, type: "function", function: call }],
    }],
    calls: [{ ...call, status: "running" }],
  };
  return turn;
}

Deno.test("turn: after a takeover, a call that was running is run again only if idempotent", async () => {
  const idempotent = fakeTurnScope(scriptedLlm(textAnswer("8")).fetch);
  const again = takenOverDuringTheCall(idempotent.scope);
  const frames = framesOf(again);
  assert.equal(ended(await runTurn(again, idempotent.scope)).outcome.state, "complete");
  assert.deepEqual(frames.map((f) => f.type), [
    "step",
    "tool_call",
    "progress",
    "tool_result",
    "step",
    "token",
  ]);
  assert.deepEqual(idempotent.usage.map((row) => [row.kind, row.status]), [
    ["tool", "ok"],
    ["llm", "ok"],
  ]);

  // The same call of a tool that does not say it is idempotent: not run again.
  const llm = scriptedLlm(textAnswer("I cannot tell whether it ran."));
  const once = fakeTurnScope(llm.fetch);
  once.scope.registry = [{
    ...doublerTool,
    annotations: { ...doublerTool.annotations, idempotentHint: false },
  }];
  const unknown = takenOverDuringTheCall(once.scope);
  const seen = framesOf(unknown);
  assert.equal(ended(await runTurn(unknown, once.scope)).outcome.state, "complete");
  assert.deepEqual(seen.map((f) => f.type), ["tool_result", "step", "token"]);
  assert.deepEqual(once.usage.map((row) => row.kind), ["llm"], "the tool did not run");
  assert.deepEqual(unknown.toolCalls.map((c) => [c.id, c.outcome, c.is_error]), [[
    "call_1",
    "unknown",
    true,
  ]]);
  const told = llm.requests[0].messages as { role: string; content: string }[];
  assert.match(told.at(-1)!.content, /outcome_unknown/);
});
