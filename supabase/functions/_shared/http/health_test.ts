import assert from "node:assert/strict";
import { createTokenVerifier } from "../auth.ts";
import { connect } from "../db/client.ts";
import { llmReachability } from "../llm_reachability.ts";
import { generateSigningKey, jwksOf } from "../../../../scripts/standin/signing_keys.ts";
import { connectFunctionDatabase } from "../../../tests/support/database.ts";
import { createFunctionApp } from "./function_app.ts";
import { healthHandler, type HealthOptions } from "./health.ts";

async function probe(options: HealthOptions, headers: Record<string, string> = {}) {
  const app = createFunctionApp("fn");
  app.get("/health", healthHandler(options));
  const response = await app.fetch(new Request("http://localhost/fn/health", { headers }));
  return { response, body: await response.json() };
}

const env = (values: Record<string, string>) => ({ get: (name: string) => values[name] });

/** An LLM upstream double: counts requests, answers `status`, or fails to connect. */
function upstream(answer: number | "down") {
  const seen = { requests: 0 };
  const fetchImpl = ((input: RequestInfo | URL) => {
    seen.requests++;
    assert.match(String(input), /\/v1\/models$/);
    if (answer === "down") return Promise.reject(new TypeError("connection refused"));
    return Promise.resolve(new Response("{}", { status: answer }));
  }) as typeof fetch;
  return { seen, fetch: fetchImpl };
}

Deno.test("health: 200 with each check, the version and commit, no token needed", async () => {
  const sql = connectFunctionDatabase(1);
  const llm = upstream(401);
  try {
    const { response, body } = await probe({
      sql,
      verifier: createTokenVerifier({ jwks: jwksOf(await generateSigningKey()) }),
      llm: llmReachability({ baseUrl: "http://llm.test/v1", fetch: llm.fetch }),
      env: env({ APP_VERSION: "1.2.3", GIT_COMMIT: "abc1234" }),
    }, { "x-request-id": "probe-1" });
    assert.equal(response.status, 200, JSON.stringify(body));
    assert.equal(response.headers.get("x-request-id"), "probe-1");
    assert.equal(response.headers.get("cache-control"), "no-store");
    assert.equal(body.status, "ok");
    assert.deepEqual(body.failed, []);
    assert.equal(body.version, "1.2.3");
    assert.equal(body.commit, "abc1234");
    assert.equal(body.checks.db.ok, true);
    assert.deepEqual(body.checks.keys, { ok: true, source: "environment", age_s: null });
    // A 401 from the upstream still means it is reachable.
    assert.equal(body.checks.llm.ok, true);
    assert.equal(body.checks.llm.status, 401);
  } finally {
    await sql.end();
  }
});

Deno.test("health: 503 naming each failed check; nothing secret in the body", async () => {
  // Port 1 refuses: as a stopped Postgres does.
  const dead = connect("postgres://postgres:secret-password@127.0.0.1:1/postgres", { max: 1 });
  const llm = upstream("down");
  try {
    const { response, body } = await probe({
      sql: dead,
      verifier: createTokenVerifier({
        jwksUrl: "http://127.0.0.1:1/auth/v1/.well-known/jwks.json",
      }),
      llm: llmReachability({
        baseUrl: "http://llm.test/v1",
        apiKey: "sk-secret",
        fetch: llm.fetch,
      }),
      env: env({}),
    });
    assert.equal(response.status, 503);
    assert.deepEqual(body.failed, ["db", "keys", "llm"]);
    assert.equal(body.status, "failing");
    assert.equal(body.checks.db.error, "ECONNREFUSED");
    assert.equal(body.checks.keys.source, "jwks_url");
    assert.equal(body.checks.keys.age_s, null, "the JWKS never answered");
    assert.equal(body.version, "unknown");
    assert.equal(body.commit, "unknown");
    const text = JSON.stringify(body);
    assert.doesNotMatch(text, /secret/);
  } finally {
    await dead.end({ timeout: 0 });
  }
});

Deno.test("health: the LLM upstream is asked once per cache period, not on every probe", async () => {
  const llm = upstream(200);
  const reachability = llmReachability({ baseUrl: "http://llm.test/v1", fetch: llm.fetch });
  const results = await Promise.all([reachability.check(), reachability.check()]);
  await reachability.check();
  assert.equal(llm.seen.requests, 1);
  assert.ok(results.every((result) => result.ok));
  const expired = llmReachability({ baseUrl: "http://llm.test/v1", fetch: llm.fetch, cacheMs: 0 });
  await expired.check();
  await expired.check();
  assert.equal(llm.seen.requests, 3);
});

Deno.test("health: a legacy project's keys are Auth; its /health is asked only when Auth has been quiet", async () => {
  let up = true;
  const asked: string[] = [];
  const verifier = createTokenVerifier({
    jwks: { keys: [] },
    authServer: {
      url: "http://auth.test/auth/v1",
      apiKey: "sb_publishable_x",
      fetch: ((input: RequestInfo | URL) => {
        asked.push(new URL(String(input)).pathname);
        if (!up) return Promise.reject(new TypeError("connection refused"));
        return Promise.resolve(new Response("{}", { status: 200 }));
      }) as typeof fetch,
    },
  });
  assert.deepEqual(await verifier.health!(), { ok: true, source: "auth", age_s: 0 });
  await verifier.health!();
  assert.deepEqual(asked, ["/auth/v1/health"], "the second probe used the first answer");

  const down = createTokenVerifier({
    jwks: { keys: [] },
    authServer: {
      url: "http://auth.test/auth/v1",
      apiKey: "k",
      fetch: (() => Promise.reject(new TypeError("refused"))) as typeof fetch,
    },
  });
  up = false;
  const health = await down.health!();
  assert.equal(health.ok, false);
  assert.equal(health.source, "auth");
});
