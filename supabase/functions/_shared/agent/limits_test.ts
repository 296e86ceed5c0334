import assert from "node:assert/strict";
import { estimatePromptTokens, reservationTokens, SlidingWindow } from "./limits.ts";

Deno.test("the sliding window admits `limit` events per window and says when the next fits", () => {
  const window = new SlidingWindow(3, 1000);
  assert.deepEqual([0, 100, 200, 300].map((t) => window.admit(t)), [
    true,
    true,
    true,
    false,
  ]);
  assert.equal(window.retryAfterMs(300), 700);
  assert.equal(window.admit(999), false);
  assert.equal(window.admit(1000), true, "the first event left the window");
  assert.equal(window.retryAfterMs(1000), 100);
});

Deno.test("the reservation is the estimated prompt plus a full completion", () => {
  const messages = [{ role: "user" as const, content: "x".repeat(400) }];
  const prompt = estimatePromptTokens(messages, []);
  assert.equal(prompt, Math.ceil(JSON.stringify(messages).length / 4));
  const tools = [{
    type: "function" as const,
    function: { name: "t", parameters: { type: "object" } },
  }];
  assert.ok(
    estimatePromptTokens(messages, tools) > prompt,
    "tool schemas count",
  );
  assert.equal(reservationTokens(messages, [], 2048), prompt + 2048);
});
