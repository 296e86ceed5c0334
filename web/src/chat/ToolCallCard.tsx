/**
 * One tool call of an answer: the tool, its arguments, a progress bar while it reports
 * progress, the approval prompt when it waits for the user, and its result or error.
 */
import type { ToolCallStatus, ToolCallView } from "../agent/turns.ts";
import { ApprovalPrompt } from "./ApprovalPrompt.tsx";

const STATUS_TEXT: Record<ToolCallStatus, string> = {
  running: "running",
  awaiting_approval: "waiting for your approval",
  done: "done",
  failed: "failed",
};

export interface ToolCallCardProps {
  call: ToolCallView;
  /** Present when this tab can answer the approval (it follows the live turn). */
  onApprove?: (decision: "allow" | "deny", remember?: "session" | "always") => void;
}

export function ToolCallCard({ call, onApprove }: ToolCallCardProps) {
  const waiting = call.status === "awaiting_approval" && !call.approval?.answered;
  return (
    <section
      className={`tool-card tool-${call.status}`}
      aria-label={`Tool call: ${call.tool}, ${STATUS_TEXT[call.status]}`}
      data-testid="tool-call"
      data-status={call.status}
    >
      <header className="tool-card-header">
        <span className="tool-name">{call.tool}</span>
        <span className="tool-status">{STATUS_TEXT[call.status]}</span>
      </header>
      <details open={waiting}>
        <summary>Arguments</summary>
        <pre className="tool-json">{formatJson(call.args)}</pre>
      </details>
      {call.progress && call.status === "running" && <ToolProgress progress={call.progress} />}
      {waiting && onApprove && (
        <ApprovalPrompt
          tool={call.tool}
          timeoutMs={call.approval?.timeoutMs ?? 0}
          onAnswer={onApprove}
        />
      )}
      {call.status === "awaiting_approval" && call.approval?.answered && (
        <p className="tool-note">You answered: {call.approval.answered}</p>
      )}
      {call.result !== undefined && (
        <div className={call.status === "failed" ? "tool-error" : "tool-result"}>
          <span className="tool-result-label">
            {call.status === "failed" ? "Error" : "Result"}
          </span>
          <pre className="tool-json">{formatJson(call.result)}</pre>
        </div>
      )}
    </section>
  );
}

function ToolProgress({ progress }: { progress: NonNullable<ToolCallView["progress"]> }) {
  const label = progress.message ?? "Working";
  return (
    <div className="tool-progress">
      {progress.total
        ? <progress value={progress.progress} max={progress.total} aria-label={label} />
        : <progress aria-label={label} />}
      <span className="tool-note">{label}</span>
    </div>
  );
}

/** Arguments and results as readable JSON; stored arguments are JSON text. */
export function formatJson(value: unknown): string {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch (error) {
      if (error instanceof SyntaxError) return value;
      throw error;
    }
  }
  return JSON.stringify(value, null, 2) ?? String(value);
}
