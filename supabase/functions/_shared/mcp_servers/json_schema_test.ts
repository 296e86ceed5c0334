import assert from "node:assert/strict";
import { argumentsProblem } from "./json_schema.ts";

const SCHEMA = {
  type: "object",
  properties: {
    text: { type: "string" },
    items: { type: "array", items: { type: "object", properties: { n: { type: "integer" } } } },
  },
  required: ["text"],
};

Deno.test("argumentsProblem: the first failing path and why; undefined when the arguments fit", () => {
  assert.equal(argumentsProblem(SCHEMA, { text: "a", items: [{ n: 1 }], extra: true }), undefined);
  assert.deepEqual(argumentsProblem(SCHEMA, { text: 1 })?.path, ["text"]);
  assert.deepEqual(argumentsProblem(SCHEMA, {})?.path, ["text"]);
  assert.deepEqual(argumentsProblem(SCHEMA, { text: "a", items: [{ n: 1.5 }] })?.path, [
    "items",
    0,
    "n",
  ]);
});

Deno.test("argumentsProblem: a schema it cannot check against refuses the edit, saying so", () => {
  const problem = argumentsProblem(
    { type: "object", properties: { x: { $ref: "https://example.com/s.json" } } },
    { x: 1 },
  );
  assert.deepEqual(problem?.path, []);
  assert.match(problem!.message, /cannot be checked against this tool's schema/);
});
