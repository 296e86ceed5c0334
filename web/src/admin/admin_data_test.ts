import assert from "node:assert/strict";
import { adminTables } from "./admin_data.ts";

Deno.test("adminTables: turns by state, errors and refusals by code, rows per model, tool and approval outcome", () => {
  const buckets = [0, 0, 0, 0, 0, 0, 0, 0];
  const tables = adminTables({
    window_seconds: 3600,
    open_sockets: 2,
    turns: [
      { state: "complete", code: "", turns: 5 },
      { state: "error", code: "llm_timeout", turns: 1 },
      { state: "error", code: "step_limit", turns: 2 },
    ],
    usage: [
      {
        kind: "llm",
        source: "agent",
        name: "m",
        status: "ok",
        calls: 3,
        prompt_tokens: 30,
        completion_tokens: 6,
        cost_usd: 0.5,
        latency_ms_sum: 900,
        latency_buckets: buckets,
        ttft_calls: 2,
        ttft_ms_sum: 300,
        ttft_buckets: buckets,
      },
      {
        kind: "llm",
        source: "agent",
        name: "m",
        status: "error",
        calls: 1,
        prompt_tokens: 10,
        completion_tokens: 0,
        cost_usd: 0,
        latency_ms_sum: 100,
        latency_buckets: buckets,
        ttft_calls: 0,
        ttft_ms_sum: 0,
        ttft_buckets: buckets,
      },
      {
        kind: "tool",
        source: "mcp",
        name: "calculator",
        status: "ok",
        calls: 4,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_usd: 0,
        latency_ms_sum: 8,
        latency_buckets: buckets,
        ttft_calls: 0,
        ttft_ms_sum: 0,
        ttft_buckets: buckets,
      },
      {
        kind: "tool",
        source: "agent",
        name: "calculator",
        status: "denied",
        calls: 1,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_usd: 0,
        latency_ms_sum: 0,
        latency_buckets: buckets,
        ttft_calls: 0,
        ttft_ms_sum: 0,
        ttft_buckets: buckets,
      },
    ],
    approval_waits: [{ outcome: "allowed", calls: 2, wait_ms_sum: 5000, wait_buckets: buckets }],
    refusals: [
      { code: "bad_request", reason: "", refusals: 1 },
      { code: "rate_limited", reason: "daily_tokens", refusals: 3 },
    ],
  });
  assert.deepEqual(tables.turnsByState, [["complete", 5], ["error", 3]]);
  assert.deepEqual(tables.errorsByCode, [["step_limit", 2], ["llm_timeout", 1]]);
  assert.deepEqual(tables.models, [{
    model: "m",
    calls: 4,
    errors: 1,
    promptTokens: 40,
    completionTokens: 6,
    costUsd: 0.5,
    meanLatencyMs: 250,
    meanTtftMs: 150,
  }]);
  assert.deepEqual(tables.tools, [{
    tool: "calculator",
    calls: 5,
    outcomes: { ok: 4, denied: 1 },
  }]);
  assert.deepEqual(tables.refusalsByCode, [["rate_limited (daily_tokens)", 3], ["bad_request", 1]]);
  assert.deepEqual(tables.approvals, [{ outcome: "allowed", calls: 2, meanWaitMs: 2500 }]);
});
