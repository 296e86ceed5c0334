/**
 * The admin page (users whose `app_metadata.role` is `admin`): what the operator's `/metrics`
 * reports, from `GET /history/admin/summary`, over a chosen window. Refreshes on demand.
 */
import { useCallback, useEffect, useState } from "react";
import { type AppError, toAppError } from "../api/app_error.ts";
import { adminSummary } from "../api/history_api.ts";
import { type AdminTables, adminTables } from "./admin_data.ts";

const WINDOWS = [
  [900, "15 minutes"],
  [3600, "1 hour"],
  [86400, "24 hours"],
] as const;

export default function AdminView() {
  const [windowSeconds, setWindowSeconds] = useState<number>(3600);
  const [tables, setTables] = useState<AdminTables>();
  const [error, setError] = useState<AppError>();
  const load = useCallback(() => {
    adminSummary(windowSeconds).then(
      (summary) => {
        setTables(adminTables(summary));
        setError(undefined);
      },
      (problem) => setError(toAppError(problem)),
    );
  }, [windowSeconds]);
  useEffect(load, [load]);

  return (
    <section className="page" aria-labelledby="admin-title">
      <h1 id="admin-title">Admin</h1>
      <p className="muted">
        Everyone's turns, model and tool calls over the window (the numbers of the functions'
        <code>/metrics</code>).{" "}
        <label>
          Window{" "}
          <select
            value={windowSeconds}
            onChange={(event) => setWindowSeconds(Number(event.target.value))}
          >
            {WINDOWS.map(([seconds, label]) => (
              <option key={seconds} value={seconds}>{label}</option>
            ))}
          </select>
        </label>{" "}
        <button type="button" onClick={load}>Refresh</button>
      </p>
      {error && (
        <p className="inline-error" role="alert">
          <code>{error.code}</code> {error.message}
        </p>
      )}
      {!tables && !error && <p className="muted">Loading…</p>}
      {tables && (
        <div data-testid="admin-summary">
          <p>
            Open agent sockets: <strong>{tables.openSockets}</strong>. Turns:{" "}
            {tables.turnsByState.length === 0
              ? "none"
              : tables.turnsByState.map(([state, n]) => `${n} ${state}`).join(", ")}
            {tables.errorsByCode.length > 0 &&
              ` (errors: ${tables.errorsByCode.map(([code, n]) => `${code} ${n}`).join(", ")})`}
          </p>
          <p>
            Refused client frames: {tables.refusalsByCode.length === 0
              ? "none"
              : tables.refusalsByCode.map(([code, n]) => `${code} ${n}`).join(", ")}. Approval
            waits: {tables.approvals.length === 0
              ? "none"
              : tables.approvals.map((row) =>
                `${row.calls} ${row.outcome} (mean ${row.meanWaitMs} ms)`
              )
                .join(", ")}
          </p>
          <div className="table-scroll">
            <table className="data-table">
              <thead>
                <tr>
                  <th scope="col">Model</th>
                  <th scope="col">Calls</th>
                  <th scope="col">Errors</th>
                  <th scope="col">Tokens in / out</th>
                  <th scope="col">Cost (USD)</th>
                  <th scope="col">Mean latency</th>
                  <th scope="col">Mean time to first token</th>
                </tr>
              </thead>
              <tbody>
                {tables.models.map((row) => (
                  <tr key={row.model}>
                    <th scope="row">
                      <code>{row.model}</code>
                    </th>
                    <td>{row.calls}</td>
                    <td>{row.errors}</td>
                    <td>{row.promptTokens} / {row.completionTokens}</td>
                    <td>{row.costUsd.toFixed(4)}</td>
                    <td>{row.meanLatencyMs} ms</td>
                    <td>{row.meanTtftMs === null ? "–" : `${row.meanTtftMs} ms`}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <div className="table-scroll">
            <table className="data-table">
              <thead>
                <tr>
                  <th scope="col">Tool</th>
                  <th scope="col">Calls</th>
                  <th scope="col">Outcomes</th>
                </tr>
              </thead>
              <tbody>
                {tables.tools.map((row) => (
                  <tr key={row.tool}>
                    <th scope="row">
                      <code>{row.tool}</code>
                    </th>
                    <td>{row.calls}</td>
                    <td>
                      {Object.entries(row.outcomes).map(([outcome, n]) => `${outcome} ${n}`).join(
                        ", ",
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </div>
      )}
    </section>
  );
}
