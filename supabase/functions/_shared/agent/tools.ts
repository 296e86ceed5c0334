/**
 * Registry tools as the agent serves them: offered to the model as JSON Schema functions, and
 * each call the model makes announced to the client, run through `invokeTool` under the
 * agent's policy (an `ask` grant waits for the user's approval) and reported back. Every
 * refusal is a tool error the model sees, so it can explain or try otherwise.
 */
import { nestsDeeperThan, tooDeepMessage } from "../json_depth.ts";
import { z } from "zod";
import type { Json } from "../db/database.types.ts";
import type { ToolDefinition as LlmToolDefinition } from "../llm_client.ts";
import {
  type PermissionGrant,
  type ResolvedPermission,
  resolvePermission,
} from "../permissions.ts";
import { invokeTool, refusal, type ToolArguments, type ToolRefusal } from "../tools/invoke.ts";
import type { ToolDefinition } from "../tools/types.ts";
import {
  approvedForSession,
  awaitApproval,
  rememberAlways,
  rememberForSession,
} from "./approvals.ts";
import type { LiveTurn } from "./live_turn.ts";
import type { ParkedAnswer } from "./turn_checkpoint.ts";
import type { TurnScope } from "./turn_scope.ts";

/**
 * The tools a turn offers: those the client asked for (default: all), among those the user
 * holds a grant for that is not `deny`. A call to any other tool still gets a clear error.
 */
export function offeredTools(
  registry: readonly ToolDefinition[],
  grants: readonly PermissionGrant[],
  requested?: readonly string[],
): ToolDefinition[] {
  const wanted = requested ? new Set(requested) : undefined;
  return registry.filter((tool) => {
    if (wanted && !wanted.has(tool.name)) return false;
    const permission = resolvePermission(grants, tool.permission);
    return permission !== null && permission.mode !== "deny";
  });
}

/** The OpenAI `tools` entries for registry tools: their zod input schemas as JSON Schema. */
export function llmToolDefinitions(
  tools: readonly ToolDefinition[],
): LlmToolDefinition[] {
  return tools.map((tool) => {
    const { $schema: _schema, ...parameters } = tool.inputJsonSchema ??
      z.toJSONSchema(tool.input, { io: "input" });
    return {
      type: "function",
      function: { name: tool.name, description: tool.description, parameters },
    };
  });
}

/** The part of a turn's scope its tool calls use. */
export type AgentToolScope = Pick<
  TurnScope,
  | "caller"
  | "sql"
  | "recordUsage"
  | "deferUsage"
  | "meterToolCall"
  | "registry"
  | "grants"
  | "config"
  | "trace"
>;

export interface ToolCallRequest {
  /** The server's id for the call (unique; the model sees it as tool_call_id). */
  id: string;
  name: string;
  /** The arguments JSON text as the model produced it. */
  arguments: string;
  /** Epoch ms when the user was asked to approve it (a call answered after a park). */
  askedAt?: number;
}

export interface ToolCallResult {
  /** What the model reads back (JSON text). */
  content: string;
  isError: boolean;
}

/** The call waits for the user's approval: the turn parks for at most `waitMs`. */
export interface ToolCallParked {
  park: true;
  waitMs: number;
}

export interface ToolCallOptions {
  /** The user's answer, when the turn was parked on this call. */
  answer?: ParkedAnswer;
  /** Send `tool_call` (not again for a call the client was already asked to approve). */
  announce: boolean;
  /**
   * Called once the call is allowed, right before the tool runs (the turn records that the
   * call started); false: the turn is no longer this isolate's, and the call does not run.
   */
  beforeRun?: () => Promise<boolean>;
}

/** How an approval wait ended, as the usage row records it. */
const APPROVAL_OUTCOMES = { allow: "allowed", deny: "denied", expired: "expired" } as const;

/** Thrown by the policy to leave `invokeTool` before the tool runs: the turn parks. */
class ParkSignal {
  constructor(readonly waitMs: number) {}
}

/**
 * Announces, runs (through `invokeTool`) and reports one call; never throws for what the
 * model did. A call that needs an approval not given yet is not run: the turn parks.
 */
export async function executeToolCall(
  scope: AgentToolScope,
  turn: LiveTurn,
  call: ToolCallRequest,
  options: ToolCallOptions = { announce: true },
): Promise<ToolCallResult | ToolCallParked> {
  const parsed = parseArguments(call.arguments);
  if (options.announce) {
    turn.emit({
      type: "tool_call",
      call_id: call.id,
      tool: call.name,
      args: parsed.ok ? parsed.value : call.arguments,
    });
  }
  const edited = options.answer?.decision === "allow" ? options.answer.args : undefined;
  const args: ToolArguments = edited ? { ok: true, value: edited } : parsed;
  let outcome;
  try {
    outcome = await invokeTool(scope.registry, {
      ...scope,
      signal: turn.signal,
      source: "agent",
      sessionId: turn.sessionId,
      turnId: turn.turnId,
      callId: call.id,
      ...(turn.requestId ? { requestId: turn.requestId } : {}),
    }, {
      name: call.name,
      args,
      ...(options.answer && options.answer.decision !== "cancel" && call.askedAt !== undefined
        ? {
          usage: {
            approval: APPROVAL_OUTCOMES[options.answer.decision],
            approval_wait_ms: Math.max(0, Date.now() - call.askedAt),
          },
        }
        : {}),
      policy: async (tool, permission, input) =>
        await askWhenGrantSays(scope, turn, call, tool, permission, input, options.answer) ??
          // A server that meters its own calls (our `mcp` function) takes them from his limits.
          (tool.meteredBy === "server" ? undefined : await meterCall(scope, turn)) ??
          (!options.beforeRun || await options.beforeRun()
            ? undefined
            : refusal("cancelled", "The turn moved to another server", "cancelled")),
      progress: (progress, total, message, detail) => {
        if (!turn.ended) {
          turn.emit({
            type: "progress",
            call_id: call.id,
            progress,
            ...(total === undefined ? {} : { total }),
            ...(message === undefined ? {} : { message }),
            ...(detail?.stage === undefined ? {} : { stage: detail.stage }),
            ...(detail?.data === undefined ? {} : { data: detail.data }),
          });
        }
        return Promise.resolve();
      },
    });
  } catch (error) {
    if (error instanceof ParkSignal) return { park: true, waitMs: error.waitMs };
    throw error;
  }
  const { result } = outcome;
  const isError = !result.ok;
  const resultValue = (result.ok ? result.output : result.error) as Json;
  turn.recordToolCall({
    id: call.id,
    name: call.name,
    arguments: call.arguments,
    result: resultValue,
    is_error: isError,
    ...(edited ? { edited_arguments: JSON.stringify(edited) } : {}),
  });
  turn.emit({
    type: "tool_result",
    call_id: call.id,
    tool: call.name,
    result: resultValue,
    is_error: isError,
  });
  return {
    content: JSON.stringify(result.ok ? result.output : { error: result.error }),
    isError,
  };
}

function parseArguments(text: string): ToolArguments {
  if (text.trim() === "") return { ok: true, value: {} };
  // The model writes these: validating a deeply nested value would overflow the stack.
  if (nestsDeeperThan(text)) return { ok: false, message: tooDeepMessage("The arguments") };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    return { ok: false, message: error.message };
  }
}

/**
 * A call the user allowed counts against his limits like an MCP call (`consume_tool_calls`):
 * his tool-call rate and, at a fixed token cost, his token bucket and daily caps. Metered
 * after the approval, so a call the user denies or never answers costs nothing.
 */
async function meterCall(scope: AgentToolScope, turn: LiveTurn): Promise<ToolRefusal | undefined> {
  const decision = await scope.meterToolCall(turn.userId);
  if (decision.allowed) return undefined;
  const retry = decision.retryAfterMs === undefined
    ? ""
    : `; try again in ${Math.ceil(decision.retryAfterMs / 1000)} s`;
  return refusal(
    "rate_limited",
    decision.reason === "request_rate"
      ? `Too many tool calls: the user's tool-call rate is used up${retry}`
      : `The user's quota does not hold this tool call (${decision.reason})${retry}`,
    "denied",
  );
}

/** How long a call of this grant waits for its approval: the grant's own, or the default. */
export function approvalWaitMs(permission: ResolvedPermission, defaultMs: number): number {
  const own = permission.constraints.approval_timeout_ms;
  return typeof own === "number" && Number.isSafeInteger(own) && own > 0 ? own : defaultMs;
}

/**
 * The agent's policy: an `ask` grant needs the user's decision (remembered for the session
 * or for good when the user says so); `auto` runs at once. Undefined lets the call run.
 * Without an answer yet, the call is announced for approval and the turn parks.
 */
async function askWhenGrantSays(
  scope: AgentToolScope,
  turn: LiveTurn,
  call: ToolCallRequest,
  tool: ToolDefinition,
  permission: ResolvedPermission,
  args: unknown,
  answer: ParkedAnswer | undefined,
): Promise<ToolRefusal | undefined> {
  if (permission.mode !== "ask") return undefined;
  const { sql, caller: { claims }, config } = scope;
  const waitMs = approvalWaitMs(permission, config.approvalTimeoutMs);
  if (!answer) {
    const remembered = await approvedForSession(sql, claims, turn.sessionId, tool.name);
    if (remembered) return undefined;
    // Named before it is announced: an answer that comes back at once, through any isolate,
    // finds the call waiting.
    await awaitApproval(sql, turn.turnId, { id: call.id, tool: tool.name });
    turn.emit({
      type: "approval_required",
      call_id: call.id,
      tool: tool.name,
      args,
      timeout_ms: waitMs,
    });
    throw new ParkSignal(waitMs);
  }
  const decision = answer.decision === "allow" ? { kind: "allow" as const, ...answer } : {
    kind: answer.decision,
  };
  switch (decision.kind) {
    case "cancel":
      return refusal("cancelled", "The call was cancelled", "cancelled");
    case "expired":
      return refusal(
        "approval_timeout",
        `The user did not answer within ${waitMs} ms whether ${tool.name} may run; it did not`,
        "denied",
      );
    case "deny":
      return refusal("approval_denied", `The user denied this call of ${tool.name}`, "denied");
    case "allow":
      if (decision.remember === "session") {
        await rememberForSession(sql, claims, turn.sessionId, tool.name);
      } else if (decision.remember === "always") {
        await rememberAlways(sql, turn.userId, permission);
        const granted: PermissionGrant = {
          tool: permission.tool,
          approval_mode: "auto",
          constraints: permission.constraints,
        };
        const own = scope.grants.findIndex((grant) => grant.tool === permission.tool);
        if (own >= 0) scope.grants[own] = granted;
        else scope.grants.push(granted);
      }
      return undefined;
  }
}
