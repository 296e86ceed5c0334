import assert from "node:assert/strict";
import { abortableSleep } from "./abortable_sleep.ts";

Deno.test("abortableSleep: true when the time is up, false when aborted before or during", async () => {
  assert.equal(await abortableSleep(1), true);
  assert.equal(await abortableSleep(0), true);

  const before = new AbortController();
  before.abort();
  assert.equal(await abortableSleep(60_000, before.signal), false);

  const during = new AbortController();
  const sleeping = abortableSleep(60_000, during.signal);
  during.abort();
  // Resolves at once (a pending 60 s timer would also fail the test's leak check).
  assert.equal(await sleeping, false);
});
