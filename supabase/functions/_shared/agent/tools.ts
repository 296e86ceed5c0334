/**
 * Registry tools as the agent serves them: offered to the model as JSON Schema functions,
 * and each call the model makes checked (known tool, JSON arguments valid for its schema,
 * permission and approval) before it runs as the user. Every refusal is a tool error the
 * model sees, so it can explain or try otherwise; every call leaves one usage row.
 */
import { z } from "zod";
import { fieldPath } from "../agent_protocol.ts";
import type { Json } from "../database.types.ts";
import { asUser, type JwtClaims, type Sql } from "../db.ts";
import type { ToolDefinition as LlmToolDefinition } from "../llm_client.ts";
import {
  type PermissionGrant,
  type ResolvedPermission,
  resolvePermission,
} from "../permissions.ts";
import type { ToolDefinition, ToolResult } from "../tools/registry.ts";
import type { UsageStatus, UsageWriter } from "../usage.ts";
import {
  approvedForSession,
  awaitApproval,
  type PendingApprovals,
  rememberAlways,
  rememberForSession,
  remoteAnswer,
} from "./approvals.ts";
import type { LiveTurn } from "./live_turn.ts";

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
    const { $schema: _schema, ...parameters } = z.toJSONSchema(tool.input, {
      io: "input",
    });
    return {
      type: "function",
      function: { name: tool.name, description: tool.description, parameters },
    };
  });
}

export interface ToolCallContext {
  sql: Sql;
  claims: JwtClaims;
  /** Where the call's usage row goes (the runtime's batched writer). */
  recordUsage: UsageWriter;
  turn: LiveTurn;
  registry: readonly ToolDefinition[];
  /** The user's grants; "always" approvals update this copy too. */
  grants: PermissionGrant[];
  approvals: PendingApprovals;
  approvalTimeoutMs: number;
  /** How often a waiting approval looks for an answer given through another isolate. */
  pollIntervalMs: number;
}

export interface ToolCallRequest {
  /** The server's id for the call (unique; the model sees it as tool_call_id). */
  id: string;
  name: string;
  /** The arguments JSON text as the model produced it. */
  arguments: string;
}

export interface ToolCallResult {
  /** What the model reads back (JSON text). */
  content: string;
  isError: boolean;
}

/** Announces, checks, runs and reports one call; never throws for what the model did. */
export async function executeToolCall(
  context: ToolCallContext,
  call: ToolCallRequest,
): Promise<ToolCallResult> {
  const { turn } = context;
  const args = parseArguments(call.arguments);
  turn.emit({
    type: "tool_call",
    call_id: call.id,
    tool: call.name,
    args: args.value,
  });
  const started = performance.now();
  const outcome = await checkAndRun(context, call, args);
  const result = outcome.result;
  const isError = !result.ok;
  const resultValue = (result.ok ? result.output : result.error) as Json;
  turn.recordToolCall({
    id: call.id,
    name: call.name,
    arguments: call.arguments,
    result: resultValue,
    is_error: isError,
  });
  turn.emit({
    type: "tool_result",
    call_id: call.id,
    tool: call.name,
    result: resultValue,
    is_error: isError,
  });
  try {
    await context.recordUsage({
      user_id: turn.userId,
      session_id: turn.sessionId,
      turn_id: turn.turnId,
      kind: "tool",
      source: "agent",
      name: call.name.slice(0, 200) || "(unnamed tool)",
      latency_ms: performance.now() - started,
      status: outcome.status,
    });
  } catch (error) {
    // A lost usage row must not lose the user's answer; the log keeps the trace.
    console.error(`agent: could not record usage of tool ${call.name}`, error);
  }
  return {
    content: JSON.stringify(
      result.ok ? result.output : { error: result.error },
    ),
    isError,
  };
}

type Arguments = { ok: true; value: unknown } | {
  ok: false;
  value: string;
  message: string;
};

function parseArguments(text: string): Arguments {
  if (text.trim() === "") return { ok: true, value: {} };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    return { ok: false, value: text, message: error.message };
  }
}

interface Outcome {
  result: ToolResult<unknown>;
  status: UsageStatus;
}

function failure(
  code: string,
  message: string,
  status: UsageStatus = "error",
): Outcome {
  return { result: { ok: false, error: { code, message } }, status };
}

async function checkAndRun(
  context: ToolCallContext,
  call: ToolCallRequest,
  args: Arguments,
): Promise<Outcome> {
  const { turn } = context;
  const tool = context.registry.find((candidate) => candidate.name === call.name);
  if (!tool) {
    return failure("unknown_tool", `There is no tool named "${call.name}"`);
  }
  if (!args.ok) {
    return failure(
      "invalid_arguments",
      `The arguments are not valid JSON: ${args.message}`,
    );
  }
  const input = tool.input.safeParse(args.value);
  if (!input.success) {
    const [issue] = input.error.issues;
    const path = fieldPath(issue.path);
    return failure(
      "invalid_arguments",
      path ? `${path}: ${issue.message}` : issue.message,
    );
  }

  const permission = resolvePermission(context.grants, tool.permission);
  if (permission === null) {
    return failure(
      "permission_denied",
      `Calling ${tool.name} needs the "${tool.permission}" permission, which the user does not have`,
      "denied",
    );
  }
  if (permission.mode === "deny") {
    return failure(
      "permission_denied",
      `The user's "${tool.permission}" permission is set to deny`,
      "denied",
    );
  }
  if (permission.mode === "ask") {
    const refusal = await askForApproval(
      context,
      call,
      tool,
      permission,
      args.value,
    );
    if (refusal) return refusal;
  }
  if (turn.signal.aborted) {
    return failure("cancelled", "The turn was cancelled", "cancelled");
  }

  try {
    const result = await tool.run(input.data, {
      caller: { id: turn.userId, claims: context.claims },
      db: (work) => asUser(context.sql, context.claims, work),
      progress: (progress, total, message) => {
        if (!turn.ended) {
          turn.emit({
            type: "progress",
            call_id: call.id,
            progress,
            ...(total === undefined ? {} : { total }),
            ...(message === undefined ? {} : { message }),
          });
        }
        return Promise.resolve();
      },
      signal: turn.signal,
      permission,
    });
    if (turn.signal.aborted) {
      return failure("cancelled", "The turn was cancelled", "cancelled");
    }
    return { result, status: result.ok ? "ok" : "error" };
  } catch (error) {
    if (turn.signal.aborted) {
      return failure("cancelled", "The turn was cancelled", "cancelled");
    }
    // The model gets a stable code; the details (SQL, stack) stay in the function's log.
    console.error(`agent: tool ${tool.name} failed`, error);
    return failure("internal_error", `${tool.name} failed unexpectedly`);
  }
}

/** Undefined when the call may go ahead; otherwise the refusal to report. */
async function askForApproval(
  context: ToolCallContext,
  call: ToolCallRequest,
  tool: ToolDefinition,
  permission: ResolvedPermission,
  args: unknown,
): Promise<Outcome | undefined> {
  const { turn, sql, claims } = context;
  const remembered = await approvedForSession(sql, claims, turn.sessionId, tool.name);
  if (remembered) return undefined;

  // Named before it is announced: an answer that comes back at once, through any isolate,
  // finds the call waiting.
  await awaitApproval(sql, turn.turnId, call.id);
  turn.emit({
    type: "approval_required",
    call_id: call.id,
    tool: tool.name,
    args,
    timeout_ms: context.approvalTimeoutMs,
  });
  const decision = await context.approvals.wait(
    turn.userId,
    call.id,
    context.approvalTimeoutMs,
    turn.signal,
    {
      check: () => remoteAnswer(sql, turn.turnId, call.id),
      intervalMs: context.pollIntervalMs,
    },
  );
  await awaitApproval(sql, turn.turnId, null);
  switch (decision.kind) {
    case "aborted":
      return failure("cancelled", "The turn was cancelled", "cancelled");
    case "timeout":
      return failure(
        "approval_timeout",
        `The user did not approve ${tool.name} within ${context.approvalTimeoutMs} ms`,
        "denied",
      );
    case "deny":
      return failure(
        "approval_denied",
        `The user denied this call of ${tool.name}`,
        "denied",
      );
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
        const own = context.grants.findIndex((grant) => grant.tool === permission.tool);
        if (own >= 0) context.grants[own] = granted;
        else context.grants.push(granted);
      }
      return undefined;
  }
}
