import assert from "node:assert/strict";
import { configureLog, hashUserId, log, logLevelFromEnv, requestIdOf } from "./log.ts";

Deno.test("log: one JSON line per event, the user hashed, lines under LOG_LEVEL dropped", async () => {
  const lines: string[] = [];
  configureLog({ level: "info", write: (line) => lines.push(line) });
  const userId = "a11ce000-0000-4000-8000-000000000001";
  log("debug", "request", { request_id: "r0" });
  log("info", "turn_end", { request_id: "r1", turn_id: "t1", user_id: userId, latency_ms: 12 });
  log("warn", "refusal", { request_id: "r2", code: "rate_limited" });
  await hashUserId(userId);
  await new Promise((resolve) => setTimeout(resolve, 0));
  const parsed = lines.map((line) => JSON.parse(line));
  assert.deepEqual(parsed.map((line) => line.request_id).sort(), ["r1", "r2"]);
  const end = parsed.find((line) => line.event === "turn_end");
  assert.equal(end.user, await hashUserId(userId));
  assert.match(end.user, /^[0-9a-f]{16}$/);
  assert.ok(!lines.some((line) => line.includes(userId)), "no user id in any line");
  assert.equal(end.level, "info");
  assert.ok(!Number.isNaN(Date.parse(end.ts)));
});

Deno.test("log: LOG_LEVEL is read, unknown values fall back to info", () => {
  assert.equal(logLevelFromEnv({ get: () => "WARN" }), "warn");
  assert.equal(logLevelFromEnv({ get: () => "loud" }), "info");
  assert.equal(logLevelFromEnv({ get: () => undefined }), "info");
});

Deno.test("requestIdOf: the caller's x-request-id or sb-request-id when plain, else a new one", () => {
  const of = (headers: Record<string, string>) =>
    requestIdOf(new Request("http://localhost/", { headers }));
  assert.equal(of({ "x-request-id": "abc-123" }), "abc-123");
  assert.equal(of({ "sb-request-id": "019a7f3c-sb" }), "019a7f3c-sb");
  // Not echoed into bodies and logs: anything that is not a plain token.
  assert.match(of({ "x-request-id": 'a b"<script>' }), /^[0-9a-f-]{36}$/);
  assert.match(of({}), /^[0-9a-f-]{36}$/);
});
