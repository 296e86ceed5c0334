import assert from "node:assert/strict";
import type { TurnFrame } from "../agent_protocol.ts";
import { newLiveTurn } from "../../../tests/support/live_turn.ts";
import {
  executeToolCall,
  llmToolDefinitions,
  offeredTools,
  type ToolCallParked,
  type ToolCallResult,
} from "./tools.ts";

function ran(outcome: ToolCallResult | ToolCallParked): ToolCallResult {
  assert.ok(!("park" in outcome), "the call ran");
  return outcome as ToolCallResult;
}
import { doublerTool, fakeTurnScope, scriptedLlm } from "../../../tests/support/turn_fakes.ts";

Deno.test("agent tools: offered are the requested tools the user holds a non-deny grant for", () => {
  const other = { ...doublerTool, name: "other", permission: "other" };
  const registry = [doublerTool, other];
  const names = (tools: { name: string }[]) => tools.map((tool) => tool.name);
  assert.deepEqual(names(offeredTools(registry, [])), []);
  assert.deepEqual(
    names(offeredTools(registry, [{ tool: "*", approval_mode: "ask", constraints: {} }])),
    ["doubler", "other"],
  );
  assert.deepEqual(
    names(offeredTools(registry, [
      { tool: "*", approval_mode: "auto", constraints: {} },
      { tool: "other", approval_mode: "deny", constraints: {} },
    ])),
    ["doubler"],
  );
  assert.deepEqual(
    names(offeredTools(registry, [{ tool: "*", approval_mode: "auto", constraints: {} }], [
      "other",
    ])),
    ["other"],
  );
  const [definition] = llmToolDefinitions([doublerTool]);
  assert.equal(definition.function.name, "doubler");
  assert.equal((definition.function.parameters as { type: string }).type, "object");
  assert.equal("$schema" in definition.function.parameters, false);
});

Deno.test("agent tools: a call is announced, run, reported and recorded with its turn", async () => {
  const { scope, usage } = fakeTurnScope(scriptedLlm().fetch);
  const turn = newLiveTurn();
  const frames: TurnFrame[] = [];
  turn.subscribe(0, (frame) => frames.push(frame));

  const result = ran(
    await executeToolCall(scope, turn, {
      id: "call-1",
      name: "doubler",
      arguments: '{"n":4}',
    }),
  );

  assert.deepEqual(result, { content: '{"doubled":8}', isError: false });
  assert.deepEqual(frames.map((frame) => frame.type), ["tool_call", "progress", "tool_result"]);
  assert.deepEqual(turn.toolCalls, [{
    id: "call-1",
    name: "doubler",
    arguments: '{"n":4}',
    result: { doubled: 8 },
    is_error: false,
  }]);
  assert.deepEqual(usage.map((row) => [row.source, row.name, row.status, row.turn_id]), [
    ["agent", "doubler", "ok", turn.turnId],
  ]);
});

Deno.test("agent tools: arguments that are not JSON are a tool error the model reads back", async () => {
  const { scope, usage } = fakeTurnScope(scriptedLlm().fetch);
  const turn = newLiveTurn();
  const frames: TurnFrame[] = [];
  turn.subscribe(0, (frame) => frames.push(frame));

  const result = ran(
    await executeToolCall(scope, turn, {
      id: "call-2",
      name: "doubler",
      arguments: '{"n":',
    }),
  );

  assert.equal(result.isError, true);
  assert.equal(JSON.parse(result.content).error.code, "invalid_arguments");
  const announced = frames[0];
  assert.equal(announced.type === "tool_call" && announced.args, '{"n":', "shown as sent");
  assert.deepEqual(usage.map((row) => row.status), ["error"]);
});
