import assert from "node:assert/strict";
import { ConcurrencyLimit } from "./concurrency_limit.ts";

/** A task that runs until `finish` is called, recording when it started. */
function gate(started: number[], index: number) {
  let finish!: () => void;
  const done = new Promise<void>((resolve) => finish = resolve);
  return {
    task: async () => {
      started.push(index);
      await done;
      return index;
    },
    finish: () => finish(),
  };
}

Deno.test("runs at most `limit` tasks at once, the waiting ones in arrival order", async () => {
  const limit = new ConcurrencyLimit(2);
  const started: number[] = [];
  const gates = [0, 1, 2, 3].map((i) => gate(started, i));
  const results = gates.map((g) => limit.run(g.task));
  await Promise.resolve();
  assert.deepEqual(started, [0, 1]);
  assert.deepEqual([limit.running, limit.waiting], [2, 2]);

  gates[1].finish();
  assert.equal(await results[1], 1);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(started, [0, 1, 2]);
  assert.deepEqual([limit.running, limit.waiting], [2, 1]);

  gates[0].finish();
  gates[2].finish();
  gates[3].finish();
  assert.deepEqual(await Promise.all(results), [0, 1, 2, 3]);
  assert.deepEqual(started, [0, 1, 2, 3]);
  assert.deepEqual([limit.running, limit.waiting], [0, 0]);
});

Deno.test("a failing task frees its slot and its error reaches its caller", async () => {
  const limit = new ConcurrencyLimit(1);
  const failing = limit.run(() => Promise.reject(new Error("boom")));
  const next = limit.run(() => Promise.resolve("after"));
  await assert.rejects(failing, /boom/);
  assert.equal(await next, "after");
  assert.equal(limit.running, 0);
});

Deno.test("the limit must be a positive integer", () => {
  assert.throws(() => new ConcurrencyLimit(0), RangeError);
  assert.throws(() => new ConcurrencyLimit(1.5), RangeError);
});
