/**
 * The usage screen (loaded on demand with its chart library): tokens and cost per day and
 * per model, what is left of the quota, all live through Realtime on usage_metrics.
 */
import { useMemo, useState } from "react";
import { UsageChart } from "./UsageChart.tsx";
import { type Quota, remainingQuota, summarizeUsage } from "./usage_data.ts";
import { useUsage } from "./useUsage.ts";

const DAYS = 7;

export default function UsageView({ userId }: { userId: string }) {
  const usage = useUsage(userId, DAYS);
  const [metric, setMetric] = useState<"tokens" | "cost">("tokens");
  // Recomputed when usage changes (Realtime), not on every render.
  const summary = useMemo(() => summarizeUsage(usage.rows, DAYS, new Date()), [usage.version]);
  const quota = useMemo(
    () => (usage.limits ? remainingQuota(usage.limits, new Date()) : null),
    [usage.version],
  );

  return (
    <section
      className="page"
      aria-labelledby="usage-title"
      data-testid="usage"
      data-total-tokens={summary.totals.tokens}
      data-total-calls={summary.totals.calls}
    >
      <h1 id="usage-title">Usage</h1>
      {usage.error && (
        <p className="inline-error" role="alert">
          <code>{usage.error.code}</code> {usage.error.message}
        </p>
      )}
      {usage.loading ? <p className="muted">Loading…</p> : (
        <>
          <div className="usage-totals">
            <Stat
              label={`Tokens, last ${DAYS} days`}
              value={summary.totals.tokens.toLocaleString()}
            />
            <Stat label="Cost" value={`$${summary.totals.cost.toFixed(4)}`} />
            <Stat label="Calls (LLM and tools)" value={summary.totals.calls.toLocaleString()} />
          </div>
          <fieldset className="segmented">
            <legend className="visually-hidden">Chart shows</legend>
            {(["tokens", "cost"] as const).map((value) => (
              <label key={value}>
                <input
                  type="radio"
                  name="usage-metric"
                  value={value}
                  checked={metric === value}
                  onChange={() => setMetric(value)}
                />
                {value === "tokens" ? "Tokens" : "Cost"}
              </label>
            ))}
          </fieldset>
          <UsageChart summary={summary} metric={metric} />
          <ModelTable summary={summary} />
          {quota
            ? <QuotaPanel quota={quota} />
            : <p className="muted">No limits are set for you.</p>}
        </>
      )}
    </section>
  );
}

function Stat({ label, value }: { label: string; value: string }) {
  return (
    <div className="stat">
      <span className="stat-value">{value}</span>
      <span className="stat-label muted">{label}</span>
    </div>
  );
}

function ModelTable({ summary }: { summary: ReturnType<typeof summarizeUsage> }) {
  if (summary.models.length === 0 && summary.tools.length === 0) {
    return <p className="muted">No usage in the last {DAYS} days yet.</p>;
  }
  return (
    <div className="table-scroll">
      <table className="data-table" data-testid="usage-table">
        <caption className="visually-hidden">Usage per model and tool</caption>
        <thead>
          <tr>
            <th scope="col">Model or tool</th>
            <th scope="col">Calls</th>
            <th scope="col">Tokens</th>
            <th scope="col">Cost</th>
          </tr>
        </thead>
        <tbody>
          {summary.models.map((model) => (
            <tr key={`llm:${model.name}`}>
              <th scope="row">{model.name}</th>
              <td>{model.calls}</td>
              <td>{model.tokens.toLocaleString()}</td>
              <td>${model.cost.toFixed(4)}</td>
            </tr>
          ))}
          {summary.tools.map((tool) => (
            <tr key={`tool:${tool.name}`}>
              <th scope="row">
                {tool.name} <span className="muted">(tool)</span>
              </th>
              <td>{tool.calls}</td>
              <td>—</td>
              <td>—</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function QuotaPanel({ quota }: { quota: Quota }) {
  return (
    <section className="quota" aria-labelledby="quota-title">
      <h2 id="quota-title">Remaining quota</h2>
      <Meter
        label="Token bucket"
        value={quota.bucketTokens}
        max={quota.bucketCapacity}
        detail={`${quota.bucketTokens.toLocaleString()} of ${quota.bucketCapacity.toLocaleString()} tokens, refills ${quota.refillPerMinute.toLocaleString()}/min`}
      />
      <Meter
        label="Tokens left today"
        value={quota.dailyTokensLeft}
        max={quota.dailyTokenCap}
        detail={`${quota.dailyTokensLeft.toLocaleString()} of ${quota.dailyTokenCap.toLocaleString()}`}
      />
      <Meter
        label="Spend left today"
        value={quota.dailyCostLeftUsd}
        max={quota.dailyCostCapUsd}
        detail={`$${quota.dailyCostLeftUsd.toFixed(4)} of $${quota.dailyCostCapUsd.toFixed(2)}`}
      />
    </section>
  );
}

function Meter(
  { label, value, max, detail }: { label: string; value: number; max: number; detail: string },
) {
  return (
    <div className="meter-row">
      <span className="meter-label">{label}</span>
      <meter min={0} max={max} value={value} aria-label={label} />
      <span className="muted">{detail}</span>
    </div>
  );
}
