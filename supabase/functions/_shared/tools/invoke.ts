/**
 * `invokeTool`: the one way a tool call runs, from the agent and from MCP alike. It finds the
 * tool, validates the arguments with its zod schema, resolves the caller's grant, lets the
 * surface's policy decide on it (the agent can ask the user; MCP fails closed), builds the
 * tool's context (the caller's database handle, progress, abort signal), runs it, maps a
 * failure or a cancellation to a stable code, and writes one usage row naming its source.
 * Every refusal is a tool error the caller sees; nothing here throws for what a caller sent.
 */
import { isDatabaseUnavailable } from "../db/unavailable.ts";
import { log, logFailure } from "../log.ts";
import { fieldPath } from "../field_path.ts";
import { asUser, type Sql } from "../db/client.ts";
import {
  type PermissionGrant,
  type ResolvedPermission,
  resolvePermission,
} from "../permissions.ts";
import type { UsageRecord, UsageSource, UsageStatus, UsageWriter } from "../usage.ts";
import {
  contextOf,
  endToolSpan,
  startToolSpan,
  type TraceContext,
  traceIdOf,
} from "../tracing/genai.ts";
import type {
  ProgressReporter,
  ToolCaller,
  ToolContext,
  ToolDefinition,
  ToolError,
  ToolResult,
} from "./types.ts";

/** What a call runs within: who calls, through which surface, and where its usage goes. */
export interface ToolScope {
  caller: ToolCaller;
  sql: Sql;
  /** The caller's grants (a policy may update them, e.g. after "always allow"). */
  grants: readonly PermissionGrant[];
  /** Aborts when the caller cancels or goes away. */
  signal: AbortSignal;
  recordUsage: UsageWriter;
  /**
   * Takes the write of the call's usage row instead of waiting for its commit, for a caller
   * that goes on meanwhile and keeps the write alive itself (the agent: its runtime tracks it,
   * and the turn's next usage row commits after it, from the same writer). Without it the call
   * ends once its row is committed: an HTTP surface's answer closes its request.
   */
  deferUsage?: (write: Promise<void>) => void;
  source: UsageSource;
  /** Put on the usage row when the call belongs to a chat turn. */
  sessionId?: string;
  turnId?: string;
  /** The request the call came in (MCP's POST), for the log line. */
  requestId?: string;
  /** The model's id for the call (agent), on its span. */
  callId?: string;
  /** The span the call's span goes under (the turn's run; an MCP client's traceparent). */
  trace?: TraceContext;
}

/** The arguments as the caller sent them: a value, or JSON text that did not parse. */
export type ToolArguments =
  | { ok: true; value: unknown }
  | { ok: false; message: string };

export interface ToolRefusal {
  error: ToolError;
  /** How the usage row counts it: `denied` for a permission or approval, else `error`. */
  status: UsageStatus;
}

/**
 * A surface's say on a call its caller holds a non-`deny` grant for: undefined lets it run.
 * Called after the arguments are validated, so a prompt shows only calls that could run.
 */
export type ToolPolicy = (
  tool: ToolDefinition,
  permission: ResolvedPermission,
  input: unknown,
) => Promise<ToolRefusal | undefined>;

export interface ToolInvocation {
  name: string;
  args: ToolArguments;
  policy: ToolPolicy;
  progress: ProgressReporter;
  /** More for the usage row: how the call's approval wait ended (agent). */
  usage?: Pick<UsageRecord, "approval" | "approval_wait_ms">;
}

export interface ToolOutcome {
  result: ToolResult<unknown>;
  status: UsageStatus;
}

/** An outcome, and whether the tool's `run` was called (past validation, grant and policy). */
type CheckedOutcome = ToolOutcome & { ran?: true };

/** Runs one call to its end and records it; resolves, never rejects, for anything the caller did. */
export async function invokeTool(
  registry: readonly ToolDefinition[],
  scope: ToolScope,
  invocation: ToolInvocation,
): Promise<ToolOutcome> {
  const started = performance.now();
  const span = startToolSpan(scope.trace, {
    name: invocation.name.slice(0, 200),
    source: scope.source,
    ...(scope.callId ? { callId: scope.callId } : {}),
  });
  let checked: CheckedOutcome;
  try {
    checked = await checkAndRun(registry, scope, invocation);
  } catch (error) {
    // A policy that leaves the call (the agent parks the turn) ends its span here.
    endToolSpan(span, { status: "left" });
    throw error;
  }
  const { ran, ...outcome } = checked;
  const latencyMs = performance.now() - started;
  endToolSpan(span, {
    status: outcome.status,
    ...(outcome.result.ok ? {} : { code: outcome.result.error.code }),
  });
  log(outcome.status === "ok" ? "info" : "warn", "tool_call", {
    source: scope.source,
    tool: invocation.name.slice(0, 64),
    status: outcome.status,
    ...(outcome.result.ok ? {} : { code: outcome.result.error.code }),
    ...(scope.turnId ? { turn_id: scope.turnId } : {}),
    ...(scope.requestId ? { request_id: scope.requestId } : {}),
    user_id: scope.caller.id,
    latency_ms: Math.round(latencyMs),
  });
  const tool = registry.find((candidate) => candidate.name === invocation.name);
  // A server that meters its own calls writes their row; a call that never reached it is ours.
  if (!(ran && tool?.meteredBy === "server")) {
    const write = recordToolUsage(
      { ...scope, trace: contextOf(span) },
      invocation.name,
      outcome.status,
      latencyMs,
      invocation.usage,
    );
    if (scope.deferUsage) scope.deferUsage(write);
    else await write;
  }
  return outcome;
}

/** The usage row of a call that never reached `invokeTool` (refused by a protocol layer). */
export async function recordToolUsage(
  scope: Pick<ToolScope, "caller" | "recordUsage" | "source" | "sessionId" | "turnId" | "trace">,
  name: string,
  status: UsageStatus,
  latencyMs: number,
  extra: Pick<UsageRecord, "approval" | "approval_wait_ms"> = {},
): Promise<void> {
  const traceId = traceIdOf(scope.trace);
  try {
    await scope.recordUsage({
      user_id: scope.caller.id,
      ...(scope.sessionId ? { session_id: scope.sessionId } : {}),
      ...(scope.turnId ? { turn_id: scope.turnId } : {}),
      kind: "tool",
      source: scope.source,
      name: name.slice(0, 200) || "(unnamed tool)",
      latency_ms: latencyMs,
      status,
      ...(traceId ? { trace_id: traceId } : {}),
      ...extra,
    });
  } catch (error) {
    // Losing one usage row must not lose the caller's result: the log keeps the trace.
    logFailure("record_usage", error, {
      source: scope.source,
      tool: name.slice(0, 64),
      ...(scope.turnId ? { turn_id: scope.turnId } : {}),
    });
  }
}

/** The refusal of a caller without a usable grant; undefined when the grant lets it run. */
function grantRefusal(
  tool: Pick<ToolDefinition, "name" | "permission">,
  permission: ResolvedPermission | null,
): ToolRefusal | undefined {
  if (permission === null) {
    return refusal(
      "permission_denied",
      `Calling ${tool.name} needs the "${tool.permission}" permission, which the user does ` +
        `not have`,
      "denied",
    );
  }
  if (permission.mode === "deny") {
    return refusal(
      "permission_denied",
      `Calling ${tool.name} needs the "${tool.permission}" permission, which is set to deny ` +
        `for the user`,
      "denied",
    );
  }
  return undefined;
}

export function refusal(
  code: string,
  message: string,
  status: UsageStatus = "error",
): ToolRefusal {
  return { error: { code, message }, status };
}

function cancelled(): ToolOutcome {
  return {
    result: { ok: false, error: { code: "cancelled", message: "The call was cancelled" } },
    status: "cancelled",
  };
}

function refused({ error, status }: ToolRefusal): ToolOutcome {
  return { result: { ok: false, error }, status };
}

async function checkAndRun(
  registry: readonly ToolDefinition[],
  scope: ToolScope,
  { name, args, policy, progress }: ToolInvocation,
): Promise<CheckedOutcome> {
  const tool = registry.find((candidate) => candidate.name === name);
  if (!tool) return refused(refusal("unknown_tool", `There is no tool named "${name}"`));
  if (!args.ok) {
    return refused(
      refusal("invalid_arguments", `The arguments are not valid JSON: ${args.message}`),
    );
  }
  const input = tool.input.safeParse(args.value);
  if (!input.success) {
    const [issue] = input.error.issues;
    const path = fieldPath(issue.path);
    return refused(
      refusal("invalid_arguments", path ? `${path}: ${issue.message}` : issue.message),
    );
  }

  const permission = resolvePermission(scope.grants, tool.permission);
  const denied = grantRefusal(tool, permission);
  if (denied) return refused(denied);
  const { caller, sql } = scope;
  const context: ToolContext = {
    caller,
    db: (work) => asUser(sql, caller.claims, work),
    progress,
    signal: scope.signal,
    permission: permission!,
  };
  // A grant that needs no human lets the tool begin while the policy decides (it meters);
  // the tool acts only once admitted, so a refused call still never happens.
  const prepared = permission!.mode === "auto" ? tool.prepare?.(input.data, context) : undefined;
  let decided: ToolRefusal | undefined;
  try {
    decided = await policy(tool, permission!, input.data);
  } catch (error) {
    prepared?.discard();
    throw error;
  }
  if (decided || scope.signal.aborted) {
    prepared?.discard();
    return decided ? refused(decided) : cancelled();
  }

  try {
    const result = prepared ? await prepared.run() : await tool.run(input.data, context);
    if (scope.signal.aborted) return { ...cancelled(), ran: true };
    return { result, status: result.ok ? "ok" : "error", ran: true };
  } catch (error) {
    if (scope.signal.aborted) return { ...cancelled(), ran: true };
    if (isDatabaseUnavailable(error)) {
      return {
        ...refused(
          refusal("db_unavailable", `${tool.name} needs the database, which cannot be reached now`),
        ),
        ran: true,
      };
    }
    // The caller gets a stable code; the details (SQL, stack) stay in the function's log.
    logFailure("tool", error, {
      source: scope.source,
      tool: tool.name,
      ...(scope.turnId ? { turn_id: scope.turnId } : {}),
      ...(scope.requestId ? { request_id: scope.requestId } : {}),
    });
    return { ...refused(refusal("internal_error", `${tool.name} failed unexpectedly`)), ran: true };
  }
}
