import assert from "node:assert/strict";
import { configureLog, hashUserId, log, logFailure, logLevelFromEnv, requestIdOf } from "./log.ts";

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

Deno.test("logFailure: one failure line with what failed, the error, its stack and ids", () => {
  const lines: string[] = [];
  configureLog({ level: "info", write: (line) => lines.push(line) });
  logFailure("turn_failed", new TypeError("boom\nsecond line"), { turn_id: "t1" });
  logFailure("progress_report", "not an Error", {}, "warn");
  const [failed, warned] = lines.map((line) => JSON.parse(line));
  assert.equal(lines.length, 2);
  assert.ok(lines.every((line) => !line.includes("\n")), "one line each");
  assert.deepEqual(
    [failed.event, failed.level, failed.what, failed.turn_id, failed.error],
    ["failure", "error", "turn_failed", "t1", "TypeError: boom\nsecond line"],
  );
  assert.match(failed.stack, /log_test\.ts/);
  assert.deepEqual([warned.level, warned.what, warned.error], [
    "warn",
    "progress_report",
    "not an Error",
  ]);
});

Deno.test("function code logs through log.ts only: no free-text console lines", async () => {
  const root = new URL("../", import.meta.url);
  const offending: string[] = [];
  const walk = async (dir: URL, path: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const name = `${path}${entry.name}`;
      if (entry.isDirectory) {
        if (entry.name !== "vendor") await walk(new URL(`${entry.name}/`, dir), `${name}/`);
      } else if (
        name.endsWith(".ts") && !name.endsWith("_test.ts") && name !== "_shared/log.ts"
      ) {
        const text = await Deno.readTextFile(new URL(entry.name, dir));
        text.split("\n").forEach((line, index) => {
          if (/\bconsole\.(log|info|warn|error|debug)\(/.test(line)) {
            offending.push(`${name}:${index + 1}`);
          }
        });
      }
    }
  };
  await walk(root, "");
  assert.deepEqual(offending, []);
});
