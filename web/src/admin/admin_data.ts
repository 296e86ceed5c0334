/**
 * The admin page's tables from `GET /history/admin/summary` (the numbers `/metrics` reports):
 * turns by state, errors by code, refusals by code, per model, per tool and per approval outcome
 * rows.
 */
import type { AdminSummary } from "../api/history_api.ts";

export interface ModelRow {
  model: string;
  calls: number;
  errors: number;
  promptTokens: number;
  completionTokens: number;
  costUsd: number;
  meanLatencyMs: number;
  /** Mean time to the first token of the calls that streamed one; null when none did. */
  meanTtftMs: number | null;
}

export interface ApprovalRow {
  /** How the wait ended: allowed, denied, expired. */
  outcome: string;
  calls: number;
  meanWaitMs: number;
}

export interface ToolRow {
  tool: string;
  calls: number;
  /** Calls by outcome: ok, error, denied, cancelled. */
  outcomes: Record<string, number>;
}

export interface AdminTables {
  windowSeconds: number;
  openSockets: number;
  turnsByState: [string, number][];
  errorsByCode: [string, number][];
  models: ModelRow[];
  tools: ToolRow[];
  /** `code` or `code (reason)`, with the count. */
  refusalsByCode: [string, number][];
  approvals: ApprovalRow[];
}

export function adminTables(summary: AdminSummary): AdminTables {
  const turnsByState = new Map<string, number>();
  const errorsByCode = new Map<string, number>();
  for (const group of summary.turns) {
    turnsByState.set(group.state, (turnsByState.get(group.state) ?? 0) + group.turns);
    if (group.code) errorsByCode.set(group.code, (errorsByCode.get(group.code) ?? 0) + group.turns);
  }
  const models = new Map<
    string,
    ModelRow & { latencySum: number; ttftSum: number; ttftCalls: number }
  >();
  const tools = new Map<string, ToolRow>();
  for (const group of summary.usage) {
    if (group.kind === "llm") {
      const row = models.get(group.name) ?? {
        model: group.name,
        calls: 0,
        errors: 0,
        promptTokens: 0,
        completionTokens: 0,
        costUsd: 0,
        meanLatencyMs: 0,
        meanTtftMs: null,
        latencySum: 0,
        ttftSum: 0,
        ttftCalls: 0,
      };
      row.calls += group.calls;
      if (group.status !== "ok") row.errors += group.calls;
      row.promptTokens += group.prompt_tokens;
      row.completionTokens += group.completion_tokens;
      row.costUsd += group.cost_usd;
      row.latencySum += group.latency_ms_sum;
      row.meanLatencyMs = row.calls === 0 ? 0 : Math.round(row.latencySum / row.calls);
      row.ttftSum += group.ttft_ms_sum;
      row.ttftCalls += group.ttft_calls;
      row.meanTtftMs = row.ttftCalls === 0 ? null : Math.round(row.ttftSum / row.ttftCalls);
      models.set(group.name, row);
    } else {
      const row = tools.get(group.name) ?? { tool: group.name, calls: 0, outcomes: {} };
      row.calls += group.calls;
      row.outcomes[group.status] = (row.outcomes[group.status] ?? 0) + group.calls;
      tools.set(group.name, row);
    }
  }
  const byCount = (a: [string, number], b: [string, number]) => b[1] - a[1];
  return {
    windowSeconds: summary.window_seconds,
    openSockets: summary.open_sockets,
    turnsByState: [...turnsByState].sort(byCount),
    errorsByCode: [...errorsByCode].sort(byCount),
    models: [...models.values()]
      .map(({ latencySum: _l, ttftSum: _s, ttftCalls: _c, ...row }) => row)
      .sort((a, b) => b.calls - a.calls),
    tools: [...tools.values()].sort((a, b) => b.calls - a.calls),
    refusalsByCode: summary.refusals
      .map(({ code, reason, refusals }): [string, number] => [
        reason ? `${code} (${reason})` : code,
        refusals,
      ])
      .sort(byCount),
    approvals: summary.approval_waits.map((group) => ({
      outcome: group.outcome,
      calls: group.calls,
      meanWaitMs: group.calls === 0 ? 0 : Math.round(group.wait_ms_sum / group.calls),
    })),
  };
}
