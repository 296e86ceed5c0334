import assert from "node:assert/strict";
import { z } from "zod";
import { createToolRegistry } from "./registry.ts";

const tools = createToolRegistry({ workflow: {} });

Deno.test("the registry holds the five tools, each named like a permissions.tool", () => {
  assert.deepEqual(tools.map((tool) => tool.name), [
    "calculator",
    "search_history",
    "get_usage",
    "query_table",
    "execute_workflow",
  ]);
  for (const tool of tools) {
    assert.match(tool.name, /^[a-z][a-z0-9_]{0,63}$/);
    assert.equal(tool.permission, tool.name, "a tool is granted by its own name");
    assert.ok(tool.title.length > 0 && tool.description.length > 20, tool.name);
  }
});

Deno.test("every schema converts to JSON Schema objects (what MCP and the LLM receive)", () => {
  for (const tool of tools) {
    const input = z.toJSONSchema(tool.input, { io: "input" }) as Record<string, unknown>;
    const output = z.toJSONSchema(tool.output, { io: "output" }) as Record<string, unknown>;
    assert.equal(input.type, "object", tool.name);
    assert.equal(output.type, "object", tool.name);
  }
});

Deno.test("only execute_workflow changes or reaches anything outside", () => {
  for (const tool of tools) {
    const outside = tool.name === "execute_workflow";
    assert.equal(tool.annotations.readOnlyHint, !outside, tool.name);
    assert.equal(tool.annotations.openWorldHint, outside, tool.name);
  }
});

Deno.test("calculator wraps the engine: decimal, fraction, exact; errors keep the engine's code", async () => {
  const calculator = tools.find((tool) => tool.name === "calculator")!;
  const context = {} as Parameters<typeof calculator.run>[1];
  assert.deepEqual(await calculator.run({ expression: "1/4 + 1/4" }, context), {
    ok: true,
    output: { value: "0.5", fraction: "1/2", exact: true },
  });
  const failed = await calculator.run({ expression: "2 +" }, context);
  assert.equal(failed.ok, false);
  assert.equal(failed.ok ? "" : failed.error.code, "unexpected_end");
});
