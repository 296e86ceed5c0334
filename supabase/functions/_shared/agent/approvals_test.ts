import assert from "node:assert/strict";
import { PendingApprovals } from "./approvals.ts";

const never = new AbortController().signal;

Deno.test("approvals: the user's answer reaches the waiting call, with what to remember", async () => {
  const approvals = new PendingApprovals();
  const waiting = approvals.wait("alice", "call-1", 10_000, never);
  assert.equal(approvals.size, 1);
  assert.equal(
    approvals.answer("bob", { type: "approve", call_id: "call-1", decision: "allow" }),
    false,
    "another user cannot answer alice's call",
  );
  assert.equal(
    approvals.answer("alice", {
      type: "approve",
      call_id: "call-1",
      decision: "allow",
      remember: "session",
    }),
    true,
  );
  assert.deepEqual(await waiting, { kind: "allow", remember: "session" });
  assert.equal(approvals.size, 0);
  assert.equal(
    approvals.answer("alice", { type: "approve", call_id: "call-1", decision: "deny" }),
    false,
    "an answered call waits no more",
  );
});

Deno.test("approvals: deny, timeout and abort each end the wait", async () => {
  const approvals = new PendingApprovals();
  const denied = approvals.wait("alice", "call-d", 10_000, never);
  approvals.answer("alice", { type: "approve", call_id: "call-d", decision: "deny" });
  assert.deepEqual(await denied, { kind: "deny" });

  assert.deepEqual(await approvals.wait("alice", "call-t", 5, never), { kind: "timeout" });

  const controller = new AbortController();
  const aborted = approvals.wait("alice", "call-a", 10_000, controller.signal);
  controller.abort("cancelled");
  assert.deepEqual(await aborted, { kind: "aborted" });
  assert.deepEqual(
    await approvals.wait("alice", "call-b", 10_000, controller.signal),
    { kind: "aborted" },
    "an already aborted turn does not wait",
  );
  assert.equal(approvals.size, 0);
});

Deno.test("approvals: an answer given through another isolate is found by polling, past a failed look", async () => {
  const approvals = new PendingApprovals();
  let looks = 0;
  const originalError = console.error;
  console.error = () => {};
  try {
    const outcome = await approvals.wait("alice", "call-r", 10_000, never, {
      intervalMs: 1,
      check: () => {
        looks++;
        if (looks === 1) return Promise.reject(new Error("database blip"));
        if (looks < 4) return Promise.resolve(undefined);
        return Promise.resolve({ kind: "allow" as const, remember: "always" as const });
      },
    });
    assert.deepEqual(outcome, { kind: "allow", remember: "always" });
    assert.equal(looks, 4);
  } finally {
    console.error = originalError;
  }
});
