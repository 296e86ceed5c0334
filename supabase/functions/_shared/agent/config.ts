/**
 * The agent's tunables, with their environment variables. Every interval is configurable so
 * tests can run the slow paths (approval timeouts, dead isolates) in milliseconds.
 */
import type { Env } from "../env.ts";

export interface AgentConfig {
  /** `AGENT_MAX_STEPS`: LLM calls per turn. */
  maxSteps: number;
  /**
   * `AGENT_APPROVAL_TIMEOUT_MS`: how long a turn stays parked on an unanswered
   * `approval_required` before the call is denied (a grant may set its own:
   * `constraints.approval_timeout_ms`). The wait holds no isolate, so it may be long.
   */
  approvalTimeoutMs: number;
  /**
   * `AGENT_LEASE_MS`: an isolate's lease on its turns; a turn whose isolate has not renewed
   * it for this long is adopted by another isolate.
   */
  leaseMs: number;
  /** `AGENT_LEASE_RENEW_MS`: how often an isolate renews its lease (and adopts orphans). */
  leaseRenewMs: number;
  /**
   * `AGENT_MAX_RECOVERIES`: adoptions of a turn without a new checkpoint between them, after
   * which it ends as interrupted.
   */
  maxRecoveries: number;
  /** `AGENT_ADOPT_BATCH`: turns one isolate adopts at most per renewal or sweep. */
  adoptBatch: number;
  /** `AGENT_MAX_COMPLETION_TOKENS`: `max_tokens` of each LLM call, and part of the reservation. */
  maxCompletionTokens: number;
  /**
   * `AGENT_FLUSH_MS`: how often partial output (message text and frames) is written to
   * Postgres while a turn streams. At most 500.
   */
  flushIntervalMs: number;
  /**
   * `AGENT_TEXT_FLUSH_MS`: how often a streaming answer's text is rewritten in its message
   * row (the frames still go out every `flushIntervalMs`). Each rewrite reaches every tab
   * watching the row through Realtime with the whole text, so it is rare; tabs follow the
   * stream over their own socket (`resume`).
   */
  textFlushIntervalMs: number;
  /** `AGENT_HEARTBEAT_MS`: how often an isolate tells Postgres its turns and sockets live. */
  heartbeatIntervalMs: number;
  /** `AGENT_STALE_AFTER_MS`: a heartbeat older than this means a dead isolate (default 3×). */
  staleAfterMs: number;
  /** `AGENT_POLL_MS`: how often a resume on another isolate reads new frames. */
  pollIntervalMs: number;
  /** `AGENT_HISTORY_MESSAGES`: earlier messages of the session sent to the model. */
  historyMessages: number;
  /**
   * `AGENT_START_CONCURRENCY`: turn starts (their two statements) and takeovers (their reads)
   * an isolate runs at once. A burst of chats, or a dead isolate's turns, waits its turn
   * rather than fill the database pool, and the database's cores, while running turns stream.
   */
  startConcurrency: number;
  /**
   * `AGENT_LLM_TIMEOUT_MS`: the longest the LLM upstream may stay silent (waiting for its
   * headers, or between two chunks; keep-alive comments count) before the call fails with
   * `llm_timeout`. A hung upstream would otherwise hold the turn until the isolate dies.
   */
  llmTimeoutMs: number;
  /** `AGENT_SYSTEM_PROMPT`. */
  systemPrompt: string;
}

export const DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant inside a chat app. Use the " +
  "tools you are given when they help (for arithmetic, always use the calculator). Answer " +
  "concisely.";

/**
 * How long a socket opened on a fresh isolate is sure to live on Supabase's Free plan: the
 * isolate's 150 s wall clock, retired at half. Every wait a turn holds its socket for (the
 * LLM's silence, an approval, a webhook) defaults to less, so a default never outlasts it.
 */
export const FREE_SOCKET_GUARANTEE_MS = 75_000;

export const DEFAULT_AGENT_CONFIG: AgentConfig = {
  maxSteps: 8,
  approvalTimeoutMs: 24 * 60 * 60 * 1000,
  // Renewed three times a lease: one late renewal does not lose the turns, and a dead
  // isolate's turns are adopted within about 1.5-2 s.
  leaseMs: 1_500,
  leaseRenewMs: 500,
  maxRecoveries: 3,
  adoptBatch: 20,
  maxCompletionTokens: 2048,
  flushIntervalMs: 250,
  textFlushIntervalMs: 5_000,
  heartbeatIntervalMs: 5_000,
  staleAfterMs: 15_000,
  pollIntervalMs: 250,
  historyMessages: 40,
  startConcurrency: 2,
  llmTimeoutMs: 60_000,
  systemPrompt: DEFAULT_SYSTEM_PROMPT,
};

const MAX_FLUSH_INTERVAL_MS = 500;

/** Defaults overridden by the given fields; `staleAfterMs` follows a changed heartbeat. */
export function agentConfig(overrides: Partial<AgentConfig> = {}): AgentConfig {
  const heartbeatIntervalMs = overrides.heartbeatIntervalMs ??
    DEFAULT_AGENT_CONFIG.heartbeatIntervalMs;
  const config: AgentConfig = {
    ...DEFAULT_AGENT_CONFIG,
    staleAfterMs: 3 * heartbeatIntervalMs,
    ...overrides,
  };
  if (config.flushIntervalMs > MAX_FLUSH_INTERVAL_MS) {
    throw new Error(
      `the flush interval must be at most ${MAX_FLUSH_INTERVAL_MS} ms`,
    );
  }
  if (config.leaseMs <= config.leaseRenewMs) {
    throw new Error("the lease must be longer than its renewal interval");
  }
  if (config.staleAfterMs <= config.heartbeatIntervalMs) {
    throw new Error(
      "the stale threshold must be longer than the heartbeat interval",
    );
  }
  return config;
}

const INTEGER_VARIABLES: [keyof AgentConfig, string, number][] = [
  ["maxSteps", "AGENT_MAX_STEPS", 1],
  ["approvalTimeoutMs", "AGENT_APPROVAL_TIMEOUT_MS", 1],
  ["maxCompletionTokens", "AGENT_MAX_COMPLETION_TOKENS", 1],
  ["flushIntervalMs", "AGENT_FLUSH_MS", 1],
  ["textFlushIntervalMs", "AGENT_TEXT_FLUSH_MS", 0],
  ["heartbeatIntervalMs", "AGENT_HEARTBEAT_MS", 1],
  ["staleAfterMs", "AGENT_STALE_AFTER_MS", 1],
  ["pollIntervalMs", "AGENT_POLL_MS", 1],
  ["historyMessages", "AGENT_HISTORY_MESSAGES", 0],
  ["startConcurrency", "AGENT_START_CONCURRENCY", 1],
  ["llmTimeoutMs", "AGENT_LLM_TIMEOUT_MS", 1],
  ["leaseMs", "AGENT_LEASE_MS", 1],
  ["leaseRenewMs", "AGENT_LEASE_RENEW_MS", 1],
  ["maxRecoveries", "AGENT_MAX_RECOVERIES", 0],
  ["adoptBatch", "AGENT_ADOPT_BATCH", 1],
];

/** The configuration from the function's environment; a malformed value is an error. */
export function agentConfigFromEnv(env: Env = Deno.env): AgentConfig {
  const overrides: Partial<Record<keyof AgentConfig, number | string>> = {};
  for (const [field, variable, minimum] of INTEGER_VARIABLES) {
    const raw = env.get(variable)?.trim();
    if (raw === undefined || raw === "") continue;
    const value = Number(raw);
    if (!Number.isSafeInteger(value) || value < minimum) {
      throw new Error(
        `${variable} must be an integer >= ${minimum}, got "${raw}"`,
      );
    }
    overrides[field] = value;
  }
  const prompt = env.get("AGENT_SYSTEM_PROMPT");
  if (prompt !== undefined && prompt.trim() !== "") {
    overrides.systemPrompt = prompt;
  }
  return agentConfig(overrides as Partial<AgentConfig>);
}
