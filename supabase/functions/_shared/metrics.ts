/**
 * `GET /<function>/metrics`: what an operator watches, in Prometheus' text format, behind the
 * `METRICS_TOKEN` secret (`Authorization: Bearer <token>`). Every number comes from Postgres
 * (`public.operator_metrics`, 20261204000100_operator_metrics.sql) over a bounded window, so
 * each isolate of each function reports the same and none keeps counters that die with it.
 * Windowed counts go out as gauges (`…{…} N` over the last `window` seconds): a scraper
 * charts them as they are, no `rate()` needed.
 */
import type { Handler } from "hono";
import { z } from "zod";
import { queryAsServiceRole, type Sql } from "./db/client.ts";
import { inlineSql } from "./db/inline_sql.ts";
import { HttpError } from "./http/errors.ts";

/** Upper bounds (ms) of the latency histogram's buckets, as the SQL function counts them. */
export const LATENCY_BUCKETS_MS = [250, 500, 1000, 2500, 5000, 10000, 30000, 60000] as const;

/** Upper bounds (ms) of the time-to-first-token histogram's buckets. */
export const TTFT_BUCKETS_MS = [100, 250, 500, 1000, 2500, 5000, 10000, 30000] as const;

/** Upper bounds (ms) of the approval-wait histogram's buckets: 1 s to 1 h. */
export const APPROVAL_WAIT_BUCKETS_MS = [
  1000,
  5000,
  15000,
  30000,
  60000,
  300000,
  900000,
  3600000,
] as const;

/** Every metric `/metrics` can report, with its type and help (the dashboard test reads it). */
export const METRICS = {
  agent_metrics_window_seconds: ["gauge", "The window the other numbers cover, in seconds"],
  agent_open_sockets: ["gauge", "Agent sockets alive now (heartbeat within the stale limit)"],
  agent_turns: ["gauge", "Turns started in the window, by state"],
  agent_turn_errors: ["gauge", "Turns started in the window that ended with an error, by code"],
  agent_llm_calls: ["gauge", "LLM calls in the window, by source, model and status"],
  agent_tool_calls: ["gauge", "Tool calls in the window, by source, tool and status"],
  agent_tokens: ["gauge", "Tokens of LLM calls in the window, by model and direction"],
  agent_cost_usd: ["gauge", "Cost of LLM calls in the window, USD, by model"],
  agent_llm_latency_ms: ["histogram", "LLM call latency in the window, ms, by model"],
  agent_tool_latency_ms: ["histogram", "Tool call latency in the window, ms, by tool"],
  agent_llm_ttft_ms: [
    "histogram",
    "Time from an LLM request to its first streamed token in the window, ms, by model",
  ],
  agent_approval_wait_ms: [
    "histogram",
    "How long tool calls waited for the user's approval in the window, ms, by outcome",
  ],
  agent_refusals: [
    "gauge",
    "Client frames refused in the window (limits, bad input), by code and reason",
  ],
} as const;

export type MetricName = keyof typeof METRICS;

const UsageGroupSchema = z.object({
  kind: z.enum(["llm", "tool"]),
  source: z.string(),
  name: z.string(),
  status: z.string(),
  calls: z.number(),
  prompt_tokens: z.number(),
  completion_tokens: z.number(),
  cost_usd: z.number(),
  latency_ms_sum: z.number(),
  latency_buckets: z.array(z.number()).length(LATENCY_BUCKETS_MS.length),
  ttft_calls: z.number(),
  ttft_ms_sum: z.number(),
  ttft_buckets: z.array(z.number()).length(TTFT_BUCKETS_MS.length),
});

export const OperatorMetricsSchema = z.object({
  window_seconds: z.number(),
  usage: z.array(UsageGroupSchema),
  turns: z.array(z.object({ state: z.string(), code: z.string(), turns: z.number() })),
  open_sockets: z.number(),
  approval_waits: z.array(z.object({
    outcome: z.string(),
    calls: z.number(),
    wait_ms_sum: z.number(),
    wait_buckets: z.array(z.number()).length(APPROVAL_WAIT_BUCKETS_MS.length),
  })),
  refusals: z.array(z.object({ code: z.string(), reason: z.string(), refusals: z.number() })),
});

export type OperatorMetrics = z.infer<typeof OperatorMetricsSchema>;

/** Read as service_role: the numbers are everyone's. */
export async function readOperatorMetrics(
  sql: Sql,
  windowSeconds: number,
  staleSeconds: number,
): Promise<OperatorMetrics> {
  const [row] = await queryAsServiceRole<{ metrics: unknown }>(
    sql,
    inlineSql`select public.operator_metrics(${windowSeconds}::integer, ${staleSeconds}::integer) as metrics`,
  );
  return OperatorMetricsSchema.parse(row.metrics);
}

export function renderPrometheus(metrics: OperatorMetrics): string {
  const lines: string[] = [];
  const head = (name: MetricName) => {
    lines.push(`# HELP ${name} ${METRICS[name][1]}`, `# TYPE ${name} ${METRICS[name][0]}`);
  };
  const sample = (name: string, labels: Record<string, string>, value: number) => {
    const text = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
    lines.push(`${name}${text ? `{${text}}` : ""} ${formatNumber(value)}`);
  };
  head("agent_metrics_window_seconds");
  sample("agent_metrics_window_seconds", {}, metrics.window_seconds);
  head("agent_open_sockets");
  sample("agent_open_sockets", {}, metrics.open_sockets);

  head("agent_turns");
  const byState = new Map<string, number>();
  for (const group of metrics.turns) {
    byState.set(group.state, (byState.get(group.state) ?? 0) + group.turns);
  }
  for (const [state, turns] of byState) sample("agent_turns", { state }, turns);
  head("agent_turn_errors");
  for (const group of metrics.turns) {
    if (group.code !== "") sample("agent_turn_errors", { code: group.code }, group.turns);
  }

  const llm = metrics.usage.filter((group) => group.kind === "llm");
  const tools = metrics.usage.filter((group) => group.kind === "tool");
  head("agent_llm_calls");
  for (const g of llm) {
    sample("agent_llm_calls", { source: g.source, model: g.name, status: g.status }, g.calls);
  }
  head("agent_tool_calls");
  for (const g of tools) {
    sample("agent_tool_calls", { source: g.source, tool: g.name, status: g.status }, g.calls);
  }
  head("agent_tokens");
  for (const [model, sums] of sumBy(llm, (g) => g.name)) {
    sample("agent_tokens", { model, direction: "prompt" }, sums.prompt_tokens);
    sample("agent_tokens", { model, direction: "completion" }, sums.completion_tokens);
  }
  head("agent_cost_usd");
  for (const [model, sums] of sumBy(llm, (g) => g.name)) {
    sample("agent_cost_usd", { model }, sums.cost_usd);
  }
  for (
    const [name, label, groups] of [
      ["agent_llm_latency_ms", "model", llm],
      ["agent_tool_latency_ms", "tool", tools],
    ] as const
  ) {
    head(name);
    for (const [key, sums] of sumBy(groups, (g) => g.name)) {
      LATENCY_BUCKETS_MS.forEach((le, i) => {
        sample(`${name}_bucket`, { [label]: key, le: String(le) }, sums.latency_buckets[i]);
      });
      sample(`${name}_bucket`, { [label]: key, le: "+Inf" }, sums.calls);
      sample(`${name}_sum`, { [label]: key }, sums.latency_ms_sum);
      sample(`${name}_count`, { [label]: key }, sums.calls);
    }
  }
  const histogram = (
    name: MetricName,
    labels: Record<string, string>,
    bounds: readonly number[],
    buckets: readonly number[],
    count: number,
    sum: number,
  ) => {
    bounds.forEach((le, i) => sample(`${name}_bucket`, { ...labels, le: String(le) }, buckets[i]));
    sample(`${name}_bucket`, { ...labels, le: "+Inf" }, count);
    sample(`${name}_sum`, labels, sum);
    sample(`${name}_count`, labels, count);
  };
  head("agent_llm_ttft_ms");
  for (const [model, sums] of sumBy(llm, (g) => g.name)) {
    if (sums.ttft_calls === 0) continue;
    histogram(
      "agent_llm_ttft_ms",
      { model },
      TTFT_BUCKETS_MS,
      sums.ttft_buckets,
      sums.ttft_calls,
      sums.ttft_ms_sum,
    );
  }
  head("agent_approval_wait_ms");
  for (const group of metrics.approval_waits) {
    histogram(
      "agent_approval_wait_ms",
      { outcome: group.outcome },
      APPROVAL_WAIT_BUCKETS_MS,
      group.wait_buckets,
      group.calls,
      group.wait_ms_sum,
    );
  }
  head("agent_refusals");
  for (const group of metrics.refusals) {
    sample("agent_refusals", { code: group.code, reason: group.reason }, group.refusals);
  }
  return lines.join("\n") + "\n";
}

type UsageGroup = z.infer<typeof UsageGroupSchema>;
type Sums = Pick<
  UsageGroup,
  | "calls"
  | "prompt_tokens"
  | "completion_tokens"
  | "cost_usd"
  | "latency_ms_sum"
  | "latency_buckets"
  | "ttft_calls"
  | "ttft_ms_sum"
  | "ttft_buckets"
>;

function sumBy(groups: UsageGroup[], key: (group: UsageGroup) => string): Map<string, Sums> {
  const sums = new Map<string, Sums>();
  for (const group of groups) {
    const current = sums.get(key(group)) ?? {
      calls: 0,
      prompt_tokens: 0,
      completion_tokens: 0,
      cost_usd: 0,
      latency_ms_sum: 0,
      latency_buckets: LATENCY_BUCKETS_MS.map(() => 0),
      ttft_calls: 0,
      ttft_ms_sum: 0,
      ttft_buckets: TTFT_BUCKETS_MS.map(() => 0),
    };
    current.calls += group.calls;
    current.prompt_tokens += group.prompt_tokens;
    current.completion_tokens += group.completion_tokens;
    current.cost_usd += group.cost_usd;
    current.latency_ms_sum += group.latency_ms_sum;
    current.latency_buckets = current.latency_buckets.map((n, i) => n + group.latency_buckets[i]);
    current.ttft_calls += group.ttft_calls;
    current.ttft_ms_sum += group.ttft_ms_sum;
    current.ttft_buckets = current.ttft_buckets.map((n, i) => n + group.ttft_buckets[i]);
    sums.set(key(group), current);
  }
  return sums;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toPrecision(12).replace(/\.?0+$/, "");
}

const WindowSchema = z.coerce.number().int().min(60).max(86400).default(3600);

export interface MetricsRouteOptions {
  sql: Sql;
  /** When a socket's row counts as alive: the agent's stale limit, in seconds. */
  staleSeconds?: number;
}

/** The handler after `requireSecret` (METRICS_TOKEN): `?window=<seconds>`, 60 to 86400. */
export function metricsHandler(options: MetricsRouteOptions): Handler {
  return async (c) => {
    const window = WindowSchema.safeParse(c.req.query("window"));
    if (!window.success) {
      throw new HttpError(422, "invalid_request", "window: seconds, from 60 to 86400", {
        path: "window",
      });
    }
    const metrics = await readOperatorMetrics(options.sql, window.data, options.staleSeconds ?? 30);
    return c.body(renderPrometheus(metrics), 200, {
      "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
      "Cache-Control": "no-store",
    });
  };
}
