/**
 * The agent asks before running a tool whose grant says `ask`: allow once, for the rest of
 * this session, always (the grant becomes `auto`), or deny. Announced to screen readers; it
 * does not steal focus from the composer.
 */
import { useId } from "react";

export interface ApprovalPromptProps {
  tool: string;
  timeoutMs: number;
  onAnswer(decision: "allow" | "deny", remember?: "session" | "always"): void;
}

export function ApprovalPrompt({ tool, timeoutMs, onAnswer }: ApprovalPromptProps) {
  const id = useId();
  const minutes = Math.round(timeoutMs / 60_000);
  return (
    <div className="approval" role="group" aria-labelledby={id}>
      <p id={id} className="approval-question" role="alert">
        Allow <strong>{tool}</strong> to run with these arguments?
        {minutes > 0 && (
          <span className="tool-note">Denied after {minutes} min without an answer.</span>
        )}
      </p>
      <div className="approval-actions">
        <button type="button" className="primary" onClick={() => onAnswer("allow")}>
          Allow once
        </button>
        <button type="button" onClick={() => onAnswer("allow", "session")}>
          Allow for this session
        </button>
        <button type="button" onClick={() => onAnswer("allow", "always")}>
          Always allow
        </button>
        <button type="button" className="danger" onClick={() => onAnswer("deny")}>
          Deny
        </button>
      </div>
    </div>
  );
}
