/**
 * A turn's scope: what a chat hands the runtime for one turn, and what the runtime lends every
 * turn it runs. One object goes from the runtime through the turn loop to each tool call, so
 * nothing is unpacked and packed again on the way. Types only, imported by all of them.
 */
import type { Sql } from "../db/client.ts";
import type { ChatMessage, LlmConfig, ToolDefinition as LlmToolDefinition } from "../llm_client.ts";
import type { PermissionGrant } from "../permissions.ts";
import type { ToolCaller, ToolDefinition } from "../tools/types.ts";
import type { UsageWriter } from "../usage.ts";
import type { AgentConfig } from "./config.ts";
import type { LiveTurn } from "./live_turn.ts";
import type { StepReservation } from "./turn_store.ts";
import type { ToolCallDecision } from "../tool_limits.ts";
import type { TraceContext } from "../tracing/genai.ts";

export interface LlmSettings extends LlmConfig {
  fetch?: typeof fetch;
}

/** What a chat hands the runtime for one turn: who asks, with which tools, about what. */
export interface TurnInputs {
  caller: ToolCaller;
  /** The user's grants; "always" approvals update this copy too. */
  grants: PermissionGrant[];
  /** Offered to the model. */
  llmTools: LlmToolDefinition[];
  /** The tools this turn may call, when more than the runtime's (the caller's connected ones). */
  registry?: readonly ToolDefinition[];
  /** The conversation so far, ending with the user's message (the first checkpoint's). */
  messages: ChatMessage[];
}

/** What the runtime owns and lends every turn it runs. */
export interface RuntimeServices {
  sql: Sql;
  /** Where usage rows go: one per LLM call and per tool call. */
  recordUsage: UsageWriter;
  /** Keeps a tool call's usage write alive while the turn goes on (`ToolScope.deferUsage`). */
  deferUsage?: (write: Promise<void>) => void;
  /** Reserves a turn's next LLM call before it is made (`reserveStep` in turn_store.ts). */
  reserveStep(turnId: string, promptTokens: number, completionTokens: number): Promise<
    StepReservation
  >;
  /** Meters one tool call the user allowed (`consumeToolCalls` in tool_limits.ts). */
  meterToolCall(userId: string): Promise<ToolCallDecision>;
  llm: LlmSettings;
  config: AgentConfig;
  registry: readonly ToolDefinition[];
  /** Writes the turn's pending frames, text and checkpoint now (its flush, conditional). */
  flushTurn(turn: LiveTurn): Promise<void>;
  /** This run's span (`tracing/genai.ts`): the parent of its LLM and tool calls' spans. */
  trace?: TraceContext;
}

/** Everything a running turn uses, from its first LLM call to its last tool call. */
export type TurnScope = TurnInputs & RuntimeServices;
