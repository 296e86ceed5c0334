/** Reconnecting after a lost connection: 1 s · 2ⁿ before try n (0-based), five tries. */
export const RECONNECT_POLICY = {
  baseDelayMs: 1_000,
  maxAttempts: 5,
} as const;

/** The wait before reconnect try `attempt` (0 for the first): 1 s, 2 s, 4 s, 8 s, 16 s. */
export function reconnectDelay(
  attempt: number,
  baseDelayMs: number = RECONNECT_POLICY.baseDelayMs,
): number {
  return baseDelayMs * 2 ** attempt;
}
