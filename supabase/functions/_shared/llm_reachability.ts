/**
 * Whether the LLM upstream answers, for the agent's `/health`: `GET <base>/models` (every
 * OpenAI-compatible server has it), any HTTP answer below 500 counting as reachable. The
 * verdict is kept for `cacheMs`, so a probe every second costs the upstream one request per
 * half minute, and probes arriving together share one request.
 */

export interface LlmReachabilityOptions {
  baseUrl: string;
  apiKey?: string;
  fetch?: typeof fetch;
  /** How long a verdict stands; default 30 s. */
  cacheMs?: number;
  /** How long to wait for the upstream; default 3 s. */
  timeoutMs?: number;
}

export interface ReachabilityResult {
  ok: boolean;
  status?: number;
  latency_ms?: number;
  error?: string;
  /** Seconds since the upstream was last asked. */
  age_s?: number;
}

export interface LlmReachability {
  check(): Promise<ReachabilityResult>;
}

export function llmReachability(options: LlmReachabilityOptions): LlmReachability {
  const cacheMs = options.cacheMs ?? 30_000;
  const timeoutMs = options.timeoutMs ?? 3000;
  const url = `${options.baseUrl.replace(/\/+$/, "")}/models`;
  let verdict: { at: number; result: ReachabilityResult } | undefined;
  let asking: Promise<ReachabilityResult> | undefined;

  const ask = async (): Promise<ReachabilityResult> => {
    const started = performance.now();
    try {
      const response = await (options.fetch ?? fetch)(url, {
        headers: options.apiKey ? { Authorization: `Bearer ${options.apiKey}` } : {},
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.body?.cancel();
      return {
        ok: response.status < 500,
        status: response.status,
        latency_ms: Math.round(performance.now() - started),
      };
    } catch (error) {
      return { ok: false, error: error instanceof Error ? error.name : "error" };
    }
  };

  return {
    async check() {
      const now = Date.now();
      if (verdict && now - verdict.at < cacheMs) {
        return { ...verdict.result, age_s: Math.round((now - verdict.at) / 1000) };
      }
      asking ??= ask().then((result) => {
        verdict = { at: Date.now(), result };
        return result;
      }).finally(() => asking = undefined);
      return { ...(await asking), age_s: 0 };
    },
  };
}
