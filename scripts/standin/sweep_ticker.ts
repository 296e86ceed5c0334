/**
 * What pg_cron + pg_net do for a hosted project (README, "Durable turns"): call the agent's
 * sweep route every few seconds, so a turn whose isolate died, or whose approval wait expired,
 * goes on with nobody connected. The local stack runs this ticker instead (its Postgres has
 * neither extension).
 */
export interface SweepTicker {
  stop(): Promise<void>;
}

export function startSweepTicker(options: {
  /** `…/functions/v1/agent/sweep` */
  url: string;
  secret: string;
  intervalMs: number;
  log: (line: string) => void;
}): SweepTicker {
  let inFlight: Promise<void> | undefined;
  let lastProblem = "";
  const tick = () => {
    if (inFlight) return;
    inFlight = (async () => {
      let problem = "";
      try {
        const response = await fetch(options.url, {
          method: "POST",
          headers: { Authorization: `Bearer ${options.secret}` },
        });
        const body = await response.text();
        if (!response.ok) {
          problem = `HTTP ${response.status}: ${body.slice(0, 200)}`;
        }
      } catch (error) {
        if (!(error instanceof TypeError)) throw error;
        problem = error.message;
      }
      // A problem is told once, not every two seconds while it lasts.
      if (problem !== lastProblem && problem !== "") {
        options.log(`[agent sweep] ${problem}`);
      }
      lastProblem = problem;
    })().finally(() => inFlight = undefined);
  };
  const timer = setInterval(tick, options.intervalMs);
  return {
    async stop() {
      clearInterval(timer);
      await inFlight;
    },
  };
}
