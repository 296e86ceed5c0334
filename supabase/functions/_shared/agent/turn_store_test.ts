import assert from "node:assert/strict";
import type { TurnFrame } from "../agent_protocol.ts";
import { decodeFrames, encodeFrames } from "./turn_store.ts";

const turnId = "6f1f6d3e-3c2a-4d7e-9a51-0c6b2b1f8a10";

Deno.test("stored frames drop what the row holds and keep tokens as bare deltas", () => {
  const frames: TurnFrame[] = [
    { type: "token", turn_id: turnId, seq: 7, delta: "Hel" },
    { type: "token", turn_id: turnId, seq: 8, delta: "lo" },
    {
      type: "complete",
      turn_id: turnId,
      seq: 9,
      usage: { prompt_tokens: 1, completion_tokens: 2, cost: 0 },
      steps: 1,
    },
  ];
  const stored = encodeFrames(frames);
  assert.deepEqual(stored, [
    "Hel",
    "lo",
    { type: "complete", usage: { prompt_tokens: 1, completion_tokens: 2, cost: 0 }, steps: 1 },
  ]);
  assert.deepEqual(decodeFrames(turnId, 7, stored), frames);
});

Deno.test("a frame stored whole (as the SQL function writes it) decodes to itself", () => {
  const whole = {
    type: "error",
    turn_id: turnId,
    seq: 3,
    code: "interrupted",
    message: "m",
    retryable: true,
  };
  assert.deepEqual(decodeFrames(turnId, 3, [whole]), [whole]);
});
