/**
 * The agent connection at a glance: connected, connecting, reconnecting (with the try and the
 * countdown) or offline with a "Reconnect" button once the automatic tries are used up.
 */
import { useEffect, useState } from "react";
import type { ConnectionStatus } from "../agent/connection.ts";
import { useAgent, useConnectionStatus } from "../agent/useAgent.tsx";

export function ConnectionIndicator() {
  const status = useConnectionStatus();
  const agent = useAgent();
  const now = useSecondsTicker(status.state === "waiting");
  return (
    <div className={`connection connection-${status.state}`} data-testid="connection">
      <span className="connection-dot" aria-hidden="true" />
      <span role="status">{describe(status, now)}</span>
      {status.state === "offline" && status.code !== "signed_out" && (
        <button
          type="button"
          className="link-button"
          onClick={() => agent.reconnect()}
        >
          Reconnect
        </button>
      )}
    </div>
  );
}

function describe(status: ConnectionStatus, now: number): string {
  switch (status.state) {
    case "idle":
      return "Not connected";
    case "connecting":
      return status.attempt === 0 ? "Connecting…" : `Reconnecting (try ${status.attempt})…`;
    case "open":
      return "Connected";
    case "waiting": {
      const seconds = Math.max(0, Math.ceil((status.retryAt - now) / 1000));
      return `Connection lost: retry ${status.attempt} of ${status.maxAttempts} in ${seconds} s`;
    }
    case "offline":
      return `Offline (${status.code}): ${status.message}`;
  }
}

/** Re-renders every second while `active`, for the countdown. */
function useSecondsTicker(active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [active]);
  return now;
}
