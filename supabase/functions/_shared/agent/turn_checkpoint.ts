/**
 * A turn's checkpoint: what another isolate needs to go on with the turn when the one running
 * it stops (`agent_turns.checkpoint`, written with the turn's flush, conditional on its epoch).
 * It is written at each step boundary and around each tool call, so an adopter never runs a
 * completed call again, and knows which call was running when the isolate died.
 */
import type { Usage } from "../agent_protocol.ts";
import type { JwtClaims } from "../db/client.ts";
import type { Json } from "../db/database.types.ts";
import type { ChatMessage } from "../llm_client.ts";
import type { PermissionGrant } from "../permissions.ts";

export type CallStatus =
  /** Not started. */
  | "pending"
  /** Started: if the isolate dies now, nobody knows whether it happened. */
  | "running"
  /** Waiting for the user's approval (the turn is parked). */
  | "awaiting"
  | "done";

export interface CheckpointCall {
  id: string;
  name: string;
  /** The arguments JSON text as the model produced it. */
  arguments: string;
  status: CallStatus;
  /** Set once done: what the model reads back (JSON text). */
  content?: string;
  /** Epoch ms when the user was asked to approve it (for the approval-wait metric). */
  askedAt?: number;
}

export interface TurnCheckpoint {
  v: 1;
  /** Grows with every LLM step and every tool call completed; an adoption that finds it
   * unchanged since the last one counts against the recovery budget. */
  progress: number;
  /** LLM calls completed. */
  step: number;
  /** The conversation for the next LLM call (without the current step's tool results). */
  messages: ChatMessage[];
  /** The tools offered to the model (names). */
  tools: string[];
  /** The claims the turn runs its tool calls with (verified when the turn started). */
  claims: JwtClaims;
  grants: PermissionGrant[];
  /** What the turn used so far, and how much of it was settled already (at a park). */
  usage: Usage;
  settled: { tokens: number; cost: number };
  /** The tool calls of the step just completed, until they all ran. */
  calls: CheckpointCall[];
  /** The answer's length when the step being streamed started (UTF-16 units, code points). */
  text: { units: number; chars: number };
}

/** The answer to a parked approval, as `agent_answer_parked` and the sweep store it. */
export type ParkedAnswer =
  | {
    decision: "allow";
    remember?: "session" | "always";
    /** Edited arguments (validated against the tool's schema when they were sent). */
    args?: { [key: string]: Json | undefined };
  }
  | { decision: "deny" }
  | { decision: "expired" }
  | { decision: "cancel" };

/** The used part of `usage` not yet settled (what a park or the ending settles). */
export function unsettled(checkpoint: TurnCheckpoint): { tokens: number; cost: number } {
  const tokens = checkpoint.usage.prompt_tokens + checkpoint.usage.completion_tokens;
  return {
    tokens: Math.max(0, Math.round(tokens - checkpoint.settled.tokens)),
    cost: Math.max(0, checkpoint.usage.cost - checkpoint.settled.cost),
  };
}

/** The first checkpoint of a turn: its conversation and tools, nothing done yet. */
export function initialCheckpoint(inputs: {
  messages: ChatMessage[];
  llmTools: readonly { function: { name: string } }[];
  caller: { claims: JwtClaims };
  grants: PermissionGrant[];
}): TurnCheckpoint {
  return {
    v: 1,
    progress: 0,
    step: 0,
    messages: inputs.messages,
    tools: inputs.llmTools.map((tool) => tool.function.name),
    claims: inputs.caller.claims,
    grants: inputs.grants,
    usage: { prompt_tokens: 0, completion_tokens: 0, cost: 0 },
    settled: { tokens: 0, cost: 0 },
    calls: [],
    text: { units: 0, chars: 0 },
  };
}
