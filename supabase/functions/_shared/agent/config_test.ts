import assert from "node:assert/strict";
import {
  agentConfig,
  agentConfigFromEnv,
  DEFAULT_AGENT_CONFIG,
  FREE_SOCKET_GUARANTEE_MS,
} from "./config.ts";
import { DEFAULT_WORKFLOW_TIMEOUT_MS } from "../tools/execute_workflow.ts";

function env(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

Deno.test("defaults: 8 steps, 24 h approvals, 1.5 s leases, stale after three heartbeats", () => {
  const config = agentConfigFromEnv(env({}));
  assert.deepEqual(config, DEFAULT_AGENT_CONFIG);
  assert.equal(config.maxSteps, 8);
  // A parked approval holds no isolate: it may wait far longer than any socket lives.
  assert.equal(config.approvalTimeoutMs, 24 * 3600 * 1000);
  assert.equal(config.leaseMs, 1_500);
  assert.equal(config.maxRecoveries, 3);
  assert.equal(config.llmTimeoutMs, 60_000);
  assert.equal(config.staleAfterMs, 3 * config.heartbeatIntervalMs);
});

Deno.test("every default wait a socket holds ends inside what a Free isolate guarantees", () => {
  const waits = {
    "LLM silence": DEFAULT_AGENT_CONFIG.llmTimeoutMs,
    webhook: DEFAULT_WORKFLOW_TIMEOUT_MS,
  };
  for (const [wait, ms] of Object.entries(waits)) {
    assert.ok(ms < FREE_SOCKET_GUARANTEE_MS, `${wait} waits ${ms} ms by default`);
  }
});

Deno.test("the environment overrides, and the stale threshold follows the heartbeat", () => {
  const config = agentConfigFromEnv(env({
    AGENT_MAX_STEPS: "3",
    AGENT_APPROVAL_TIMEOUT_MS: "250",
    AGENT_HEARTBEAT_MS: "200",
    AGENT_FLUSH_MS: "50",
    AGENT_START_CONCURRENCY: "4",
    AGENT_LLM_TIMEOUT_MS: "30000",
    AGENT_SYSTEM_PROMPT: "Be brief.",
  }));
  assert.equal(config.maxSteps, 3);
  assert.equal(config.approvalTimeoutMs, 250);
  assert.equal(config.staleAfterMs, 600);
  assert.equal(config.flushIntervalMs, 50);
  assert.equal(config.startConcurrency, 4);
  assert.equal(config.llmTimeoutMs, 30_000);
  assert.equal(config.systemPrompt, "Be brief.");
});

Deno.test("malformed or unsafe values are refused", () => {
  assert.throws(
    () => agentConfigFromEnv(env({ AGENT_MAX_STEPS: "0" })),
    /AGENT_MAX_STEPS/,
  );
  assert.throws(
    () => agentConfigFromEnv(env({ AGENT_POLL_MS: "fast" })),
    /AGENT_POLL_MS/,
  );
  assert.throws(
    () => agentConfigFromEnv(env({ AGENT_START_CONCURRENCY: "0" })),
    /AGENT_START_CONCURRENCY/,
  );
  assert.throws(() => agentConfig({ flushIntervalMs: 501 }), /at most 500/);
  assert.throws(
    () => agentConfig({ heartbeatIntervalMs: 1000, staleAfterMs: 1000 }),
    /longer than the heartbeat/,
  );
});
