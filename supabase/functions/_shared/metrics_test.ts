import assert from "node:assert/strict";
import {
  APPROVAL_WAIT_BUCKETS_MS,
  LATENCY_BUCKETS_MS,
  METRICS,
  type OperatorMetrics,
  renderPrometheus,
  TTFT_BUCKETS_MS,
} from "./metrics.ts";

const SNAPSHOT: OperatorMetrics = {
  window_seconds: 600,
  open_sockets: 3,
  turns: [
    { state: "complete", code: "", turns: 4 },
    { state: "error", code: "llm_timeout", turns: 1 },
  ],
  usage: [{
    kind: "llm",
    source: "agent",
    name: 'odd "model"\\name',
    status: "ok",
    calls: 2,
    prompt_tokens: 10,
    completion_tokens: 5,
    cost_usd: 0.25,
    latency_ms_sum: 900,
    latency_buckets: LATENCY_BUCKETS_MS.map(() => 2),
    ttft_calls: 2,
    ttft_ms_sum: 300,
    ttft_buckets: TTFT_BUCKETS_MS.map((le) => le >= 250 ? 2 : 1),
  }, {
    kind: "tool",
    source: "mcp",
    name: "calculator",
    status: "ok",
    calls: 1,
    prompt_tokens: 0,
    completion_tokens: 0,
    cost_usd: 0,
    latency_ms_sum: 3,
    latency_buckets: LATENCY_BUCKETS_MS.map(() => 1),
    ttft_calls: 0,
    ttft_ms_sum: 0,
    ttft_buckets: TTFT_BUCKETS_MS.map(() => 0),
  }],
  approval_waits: [{
    outcome: "expired",
    calls: 1,
    wait_ms_sum: 300000,
    wait_buckets: APPROVAL_WAIT_BUCKETS_MS.map((le) => le >= 300000 ? 1 : 0),
  }],
  refusals: [{ code: "rate_limited", reason: "daily_tokens", refusals: 7 }],
};

Deno.test("renderPrometheus: every family declared, label values escaped", () => {
  const text = renderPrometheus(SNAPSHOT);
  const families = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]);
  assert.deepEqual(families.sort(), Object.keys(METRICS).sort());
  assert.match(
    text,
    /^agent_llm_calls\{source="agent",model="odd \\"model\\"\\\\name",status="ok"\} 2$/m,
  );
  assert.match(text, /^agent_turns\{state="error"\} 1$/m);
  assert.match(text, /^agent_turn_errors\{code="llm_timeout"\} 1$/m);
  assert.match(text, /^agent_tool_latency_ms_bucket\{tool="calculator",le="\+Inf"\} 1$/m);
  assert.match(text, /^agent_cost_usd\{model=".*"\} 0\.25$/m);
  assert.match(text, /^agent_llm_ttft_ms_bucket\{model=".*",le="100"\} 1$/m);
  assert.match(text, /^agent_llm_ttft_ms_count\{model=".*"\} 2$/m);
  // A tool never streams tokens: no time-to-first-token series for it.
  assert.doesNotMatch(text, /^agent_llm_ttft_ms_count\{model="calculator"\}/m);
  assert.match(text, /^agent_approval_wait_ms_bucket\{outcome="expired",le="60000"\} 0$/m);
  assert.match(text, /^agent_approval_wait_ms_bucket\{outcome="expired",le="\+Inf"\} 1$/m);
  assert.match(text, /^agent_refusals\{code="rate_limited",reason="daily_tokens"\} 7$/m);
});

Deno.test("the Grafana dashboard in docs/ names only metrics /metrics reports", async () => {
  const dashboard = JSON.parse(
    await Deno.readTextFile(new URL("../../../docs/grafana-dashboard.json", import.meta.url)),
  );
  const exprs: string[] = dashboard.panels.flatMap((panel: { targets: { expr: string }[] }) =>
    panel.targets.map((target) => target.expr)
  );
  assert.ok(exprs.length >= 8, "a panel per thing an operator watches");
  const known = new Set<string>();
  for (const [name, [type]] of Object.entries(METRICS)) {
    if (type === "histogram") {
      for (const part of ["_bucket", "_sum", "_count"]) known.add(name + part);
    } else known.add(name);
  }
  const named = new Set(exprs.flatMap((expr) => expr.match(/\bagent_[a-z_]+/g) ?? []));
  for (const name of named) assert.ok(known.has(name), `the dashboard names ${name}`);
  // And every family is on some panel.
  for (const name of Object.keys(METRICS)) {
    if (name === "agent_metrics_window_seconds") continue;
    assert.ok([...named].some((n) => n.startsWith(name)), `no panel shows ${name}`);
  }
});
