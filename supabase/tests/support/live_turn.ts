/** A `LiveTurn` with fresh ids, for the unit tests of the turn and of what consumes it. */
import { LiveTurn, type LiveTurnInit } from "../../functions/_shared/agent/live_turn.ts";

export function newLiveTurn(init: Partial<LiveTurnInit> = {}): LiveTurn {
  return new LiveTurn({
    turnId: crypto.randomUUID(),
    userId: crypto.randomUUID(),
    sessionId: crypto.randomUUID(),
    assistantRowId: crypto.randomUUID(),
    assistantMessageId: crypto.randomUUID(),
    userMessageId: crypto.randomUUID(),
    model: "m",
    reservedTokens: 10,
    reservedCostUsd: 0,
    ...init,
  });
}
