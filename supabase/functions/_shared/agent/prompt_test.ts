import assert from "node:assert/strict";
import { buildMessages, type HistoryRow } from "./prompt.ts";

const row = (
  role: HistoryRow["role"],
  content: string,
  tool_calls: HistoryRow["tool_calls"] = null,
) => ({
  client_id: crypto.randomUUID(),
  role,
  content,
  tool_calls,
});

Deno.test("history is replayed: user text, tool calls with their results, answer text", () => {
  const messages = buildMessages("sys", [
    row("user", "what is 2+2?"),
    row("assistant", "It is 4.", [
      {
        id: "c1",
        name: "calculator",
        arguments: '{"expression":"2+2"}',
        result: { value: "4" },
      },
      {
        id: "c2",
        name: "nope",
        arguments: "{}",
        result: { code: "unknown_tool" },
        is_error: true,
      },
    ]),
  ], "and 3+3?");
  assert.deepEqual(messages, [
    { role: "system", content: "sys" },
    { role: "user", content: "what is 2+2?" },
    {
      role: "assistant",
      content: null,
      tool_calls: [
        {
          id: "c1",
          type: "function",
          function: { name: "calculator", arguments: '{"expression":"2+2"}' },
        },
        {
          id: "c2",
          type: "function",
          function: { name: "nope", arguments: "{}" },
        },
      ],
    },
    { role: "tool", tool_call_id: "c1", content: '{"value":"4"}' },
    {
      role: "tool",
      tool_call_id: "c2",
      content: '{"error":{"code":"unknown_tool"}}',
    },
    { role: "assistant", content: "It is 4." },
    { role: "user", content: "and 3+3?" },
  ]);
});

Deno.test("an empty assistant message is skipped, and long histories keep their newest part", () => {
  assert.deepEqual(buildMessages("s", [row("assistant", "")], "q").length, 2);
  // Three messages of 80,000 characters: over the 200,000 kept, so the oldest goes.
  const big = "x".repeat(80_000);
  const history = [
    row("user", "old " + big),
    row("user", "mid " + big),
    row("user", "new " + big),
  ];
  const messages = buildMessages("s", history, "q");
  assert.deepEqual(
    messages.slice(1, -1).map((m) => (m.content as string).slice(0, 3)),
    [
      "mid",
      "new",
    ],
  );
});
