/**
 * `/metrics` against the database: what it reports equals the rows of `usage_metrics` and
 * `agent_turns` in its window (public.operator_metrics, run as service_role, the one role that
 * may), and the route stays shut without METRICS_TOKEN.
 */
import assert from "node:assert/strict";
import { createTokenVerifier } from "../functions/_shared/auth.ts";
import { createFunctionApp } from "../functions/_shared/http/function_app.ts";
import { addOperatorRoutes } from "../functions/_shared/http/operator_routes.ts";
import { METRICS } from "../functions/_shared/metrics.ts";
import { countRefusal } from "../functions/_shared/refusals.ts";
import {
  as,
  connectFunctionDatabase,
  connectTestDatabase,
  createUser,
} from "./support/database.ts";

const TOKEN = "metrics-token-for-tests";

function metricsApp(sql: ReturnType<typeof connectFunctionDatabase>, metricsToken?: string) {
  const app = createFunctionApp("fn");
  addOperatorRoutes(app, {
    sql,
    verifier: createTokenVerifier({ jwks: { keys: [] } }),
    metricsToken,
  });
  return (path: string, token?: string) =>
    app.fetch(
      new Request(`http://localhost/fn${path}`, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
      }),
    );
}

/** Prometheus text → samples by series (`name{labels}`), ignoring comments. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = line.match(/^([a-z_]+)(\{.*\})? (\S+)$/);
    assert.ok(match, `not a sample line: ${line}`);
    samples.set(`${match[1]}${match[2] ?? ""}`, Number(match[3]));
  }
  return samples;
}

const sumOf = (samples: Map<string, number>, name: string, filter = "") =>
  [...samples].filter(([series]) =>
    (series === name || series.startsWith(`${name}{`)) && series.includes(filter)
  ).reduce((total, [, value]) => total + value, 0);

Deno.test("/metrics: parses, and its numbers equal the rows of its window", async () => {
  const sql = connectTestDatabase(2);
  const pool = connectFunctionDatabase(2);
  try {
    const user = await createUser(sql, "metrics");
    await sql`insert into public.usage_metrics
                (user_id, kind, source, name, prompt_tokens, completion_tokens, cost_usd,
                 latency_ms, status)
              values (${user.id}, 'llm', 'agent', 'metrics-model', 120, 30, 0.0015, 400, 'ok'),
                     (${user.id}, 'llm', 'agent', 'metrics-model', 80, 0, 0, 70000, 'error'),
                     (${user.id}, 'tool', 'mcp', 'calculator', 0, 0, 0, 5, 'ok'),
                     (${user.id}, 'tool', 'agent', 'calculator', 0, 0, 0, 12, 'denied')`;
    // Outside the window: not counted.
    await sql`insert into public.usage_metrics (user_id, kind, source, name, status, created_at)
              values (${user.id}, 'llm', 'agent', 'metrics-model', 'ok', now() - interval '2 hours')`;

    const fetchMetrics = metricsApp(pool, TOKEN);
    const response = await fetchMetrics("/metrics?window=3600", TOKEN);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const samples = parsePrometheus(text);

    const [expected] = await sql`
      select
        count(*) filter (where kind = 'llm')::int as llm_calls,
        count(*) filter (where kind = 'tool')::int as tool_calls,
        coalesce(sum(prompt_tokens) filter (where kind = 'llm'), 0)::int as prompt_tokens,
        coalesce(sum(completion_tokens) filter (where kind = 'llm'), 0)::int as completion_tokens,
        coalesce(sum(cost_usd) filter (where kind = 'llm'), 0)::float8 as cost
      from public.usage_metrics where created_at >= now() - interval '3600 seconds'`;
    assert.equal(sumOf(samples, "agent_llm_calls"), expected.llm_calls);
    assert.equal(sumOf(samples, "agent_tool_calls"), expected.tool_calls);
    assert.equal(sumOf(samples, "agent_tokens", 'direction="prompt"'), expected.prompt_tokens);
    assert.equal(
      sumOf(samples, "agent_tokens", 'direction="completion"'),
      expected.completion_tokens,
    );
    assert.ok(Math.abs(sumOf(samples, "agent_cost_usd") - expected.cost) < 1e-9);

    // This test's own rows, series by series.
    assert.equal(
      samples.get('agent_llm_calls{source="agent",model="metrics-model",status="error"}'),
      1,
    );
    assert.equal(
      samples.get('agent_tool_calls{source="agent",tool="calculator",status="denied"}') !==
        undefined,
      true,
    );
    const model = 'model="metrics-model"';
    assert.equal(samples.get(`agent_llm_latency_ms_bucket{${model},le="500"}`), 1);
    assert.equal(samples.get(`agent_llm_latency_ms_bucket{${model},le="60000"}`), 1);
    assert.equal(samples.get(`agent_llm_latency_ms_bucket{${model},le="+Inf"}`), 2);
    assert.equal(samples.get(`agent_llm_latency_ms_sum{${model}}`), 70400);
    assert.equal(samples.get("agent_metrics_window_seconds"), 3600);
    assert.ok(samples.has("agent_open_sockets"));
    // Every family the route names is one METRICS declares.
    for (const name of text.matchAll(/^# TYPE (\S+)/gm)) assert.ok(name[1] in METRICS);
  } finally {
    await Promise.all([sql.end(), pool.end()]);
  }
});

Deno.test("/metrics: time to first token, approval waits and refusals equal their rows", async () => {
  const sql = connectTestDatabase(2);
  const pool = connectFunctionDatabase(2);
  try {
    const user = await createUser(sql, "metrics-latency");
    const model = `ttft-model-${crypto.randomUUID().slice(0, 8)}`;
    const tool = `approved-tool-${crypto.randomUUID().slice(0, 8)}`;
    await sql`insert into public.usage_metrics
                (user_id, kind, source, name, latency_ms, ttft_ms, status)
              values (${user.id}, 'llm', 'agent', ${model}, 900, 80, 'ok'),
                     (${user.id}, 'llm', 'agent', ${model}, 3000, 2000, 'ok'),
                     (${user.id}, 'llm', 'agent', ${model}, 100, null, 'error')`;
    await sql`insert into public.usage_metrics
                (user_id, kind, source, name, latency_ms, approval, approval_wait_ms, status)
              values (${user.id}, 'tool', 'agent', ${tool}, 5, 'allowed', 4000, 'ok'),
                     (${user.id}, 'tool', 'agent', ${tool}, 0, 'expired', 300000, 'denied')`;
    // The counting statement, as the agent runs it (service_role): twice in one minute is one
    // row of two; a row older than two days goes with the next count.
    const code = `test_refusal_${crypto.randomUUID().slice(0, 8)}`;
    await sql`insert into public.refusal_counts (minute, code, reason, refusals)
              values (date_trunc('minute', now()) - interval '3 days', ${code}, 'old', 5)`;
    await countRefusal(pool, code, "daily_tokens");
    await countRefusal(pool, code, "daily_tokens");
    await countRefusal(pool, code);
    const rows = await sql`select reason, refusals::int from public.refusal_counts
                           where code = ${code} order by reason`;
    assert.deepEqual(rows.map((row) => [row.reason, row.refusals]), [["", 1], [
      "daily_tokens",
      2,
    ]]);

    const response = await metricsApp(pool, TOKEN)("/metrics?window=3600", TOKEN);
    assert.equal(response.status, 200);
    const samples = parsePrometheus(await response.text());
    const m = `model="${model}"`;
    assert.equal(samples.get(`agent_llm_ttft_ms_bucket{${m},le="100"}`), 1);
    assert.equal(samples.get(`agent_llm_ttft_ms_bucket{${m},le="2500"}`), 2);
    assert.equal(samples.get(`agent_llm_ttft_ms_bucket{${m},le="+Inf"}`), 2);
    assert.equal(samples.get(`agent_llm_ttft_ms_sum{${m}}`), 2080);
    assert.equal(samples.get(`agent_llm_ttft_ms_count{${m}}`), 2, "calls without a token: none");

    const [waits] = await sql`
      select count(*) filter (where approval = 'expired')::int as expired,
             count(*) filter (where approval = 'expired' and approval_wait_ms <= 60000)::int
               as expired_within_a_minute,
             coalesce(sum(approval_wait_ms) filter (where approval = 'allowed'), 0)::int
               as allowed_sum
      from public.usage_metrics
      where created_at >= now() - interval '3600 seconds' and approval is not null`;
    assert.equal(samples.get('agent_approval_wait_ms_count{outcome="expired"}'), waits.expired);
    assert.equal(
      samples.get('agent_approval_wait_ms_bucket{outcome="expired",le="60000"}'),
      waits.expired_within_a_minute,
    );
    assert.equal(samples.get('agent_approval_wait_ms_sum{outcome="allowed"}'), waits.allowed_sum);

    assert.equal(samples.get(`agent_refusals{code="${code}",reason="daily_tokens"}`), 2);
    assert.equal(samples.get(`agent_refusals{code="${code}",reason=""}`), 1);
    assert.equal(samples.get(`agent_refusals{code="${code}",reason="old"}`), undefined);
  } finally {
    await Promise.all([sql.end(), pool.end()]);
  }
});

Deno.test("/metrics: shut without METRICS_TOKEN, 401 without the token, 422 for a bad window", async () => {
  const pool = connectFunctionDatabase(1);
  try {
    const shut = await metricsApp(pool)("/metrics", TOKEN);
    assert.equal(shut.status, 503);
    assert.equal((await shut.json()).error.code, "not_configured");
    const fetchMetrics = metricsApp(pool, TOKEN);
    const anonymous = await fetchMetrics("/metrics");
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    const bad = await fetchMetrics("/metrics?window=5", TOKEN);
    assert.equal(bad.status, 422);
    assert.equal((await bad.json()).error.path, "window");
  } finally {
    await pool.end();
  }
});

Deno.test("operator_metrics: only service_role may run it", async () => {
  const sql = connectTestDatabase(1);
  try {
    const user = await createUser(sql, "metrics-caller");
    const refused = await as(sql, user, (tx) => tx`select public.operator_metrics(60, 30)`)
      .then(() => "allowed", (error) => error.code);
    assert.equal(refused, "42501");
    const [row] = await as(
      sql,
      { role: "service_role" },
      (tx) => tx`select public.operator_metrics(60, 30) as metrics`,
    );
    assert.equal(row.metrics.window_seconds, 60);
  } finally {
    await sql.end();
  }
});
