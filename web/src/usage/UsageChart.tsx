/**
 * Tokens or cost per day, one line per model, drawn with uPlot (≈ 20 KB gzipped, canvas,
 * well kept). The canvas is described for screen readers; the table beside it carries the
 * same numbers.
 */
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import type { UsageSummary } from "./usage_data.ts";

const PALETTE = ["#3ecf8e", "#6366f1", "#f59e0b", "#ef4444", "#06b6d4", "#a855f7", "#84cc16"];
const HEIGHT = 260;

export interface UsageChartProps {
  summary: UsageSummary;
  metric: "tokens" | "cost";
}

export function UsageChart({ summary, metric }: UsageChartProps) {
  const container = useRef<HTMLDivElement>(null);
  const values = metric === "tokens" ? summary.tokens : summary.cost;

  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const xs = summary.days.map((day) => Date.parse(day) / 1000);
    const format = metric === "tokens"
      ? (value: number) => Math.round(value).toLocaleString()
      : (value: number) => `$${value.toFixed(4)}`;
    const plot = new uPlot(
      {
        width: Math.max(240, element.clientWidth),
        height: HEIGHT,
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max : 1] } },
        axes: [
          {
            stroke: "currentColor",
            grid: { show: false },
            // One tick per UTC day, labelled MM-DD: the data has nothing finer.
            splits: () => xs,
            values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toISOString().slice(5, 10)),
          },
          {
            stroke: "currentColor",
            size: 70,
            values: (_u, ticks) => ticks.map(format),
          },
        ],
        series: [
          {},
          ...summary.models.map((model, i) => ({
            label: model.name,
            stroke: PALETTE[i % PALETTE.length],
            fill: `${PALETTE[i % PALETTE.length]}22`,
            width: 2,
            points: { size: 7 },
            value: (_u: uPlot, value: number | null) => (value === null ? "—" : format(value)),
          })),
        ],
      },
      [xs, ...values],
      element,
    );
    const resize = new ResizeObserver(() => {
      plot.setSize({ width: Math.max(240, element.clientWidth), height: HEIGHT });
    });
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [summary, metric]);

  const total = metric === "tokens"
    ? `${summary.totals.tokens.toLocaleString()} tokens`
    : `$${summary.totals.cost.toFixed(4)}`;
  return (
    <figure className="usage-chart" data-testid="usage-chart" data-metric={metric}>
      <div
        ref={container}
        role="img"
        aria-label={`${
          metric === "tokens" ? "Tokens" : "Cost"
        } per day and model over the last ${summary.days.length} days: ${total} in all`}
      />
      <figcaption className="muted">
        {metric === "tokens" ? "Tokens" : "Cost (USD)"} per day, by model (UTC days)
      </figcaption>
    </figure>
  );
}
