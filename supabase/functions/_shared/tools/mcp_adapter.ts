/**
 * Maps registry tools onto an MCP `McpServer`: schemas and annotations as they are, results
 * as `structuredContent` plus the same JSON as text, tool errors as `isError: true` results,
 * progress as `notifications/progress` for the request's progress token, cancellation as the
 * handler's abort signal.
 *
 * Permission policy for MCP: a tool is offered when the caller's grant for it is `auto`.
 * `ask` counts as not granted here, because MCP gives this server no reliable way to ask the
 * user: clients decide for themselves whether to confirm tool calls (many never do), and an
 * elicitation round trip needs the client's answer to come back to the same server, which a
 * stateless function spread over isolates cannot promise. Failing closed keeps `ask` meaning
 * "a person approves every call"; the agent, which can ask, serves those tools.
 */
import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type {
  CallToolResult,
  RequestId,
  ServerNotification,
  ServerRequest,
} from "@modelcontextprotocol/sdk/types.js";
import { asUser, type Sql } from "../db.ts";
import {
  type PermissionGrant,
  type ResolvedPermission,
  resolvePermission,
} from "../permissions.ts";
import type {
  ProgressReporter,
  ToolCaller,
  ToolDefinition,
  ToolError,
  ToolResult,
} from "./registry.ts";

type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>;

export type McpAccess =
  | { ok: true; permission: ResolvedPermission }
  | { ok: false; error: ToolError };

/** Whether the MCP server lets the caller use `tool`, and if not, why (naming the permission). */
export function mcpAccess(
  grants: readonly PermissionGrant[],
  tool: Pick<ToolDefinition, "name" | "permission">,
): McpAccess {
  const permission = resolvePermission(grants, tool.permission);
  if (permission === null) {
    return denied(
      "permission_denied",
      `Calling ${tool.name} needs the "${tool.permission}" permission, which you do not have`,
    );
  }
  if (permission.mode === "deny") {
    return denied(
      "permission_denied",
      `Calling ${tool.name} needs the "${tool.permission}" permission, which is set to deny ` +
        `for you`,
    );
  }
  if (permission.mode === "ask") {
    return denied(
      "approval_required",
      `Your "${tool.permission}" permission asks for approval before each call, which this ` +
        `MCP server cannot obtain; use the agent, or have the permission set to auto`,
    );
  }
  return { ok: true, permission };
}

function denied(code: string, message: string): McpAccess {
  return { ok: false, error: { code, message } };
}

export interface McpToolScope {
  tools: readonly ToolDefinition[];
  grants: readonly PermissionGrant[];
  caller: ToolCaller;
  sql: Sql;
  /**
   * Registry tools this request calls. Those the caller may not use are registered for this
   * request only, answering with the denial, so they stay out of `tools/list` while a call
   * still learns which permission it lacks (instead of a bare "tool not found").
   */
  calledTools: ReadonlySet<string>;
  /** A call was refused for want of permission. */
  onDenied(requestId: RequestId): void;
  /** A call ended because it was cancelled; no response will be sent for it. */
  onCancelled(requestId: RequestId): Promise<void>;
}

/** Registers on `server` every tool the caller may use (and denial stubs, see McpToolScope). */
export function registerTools(server: McpServer, scope: McpToolScope): void {
  for (const tool of scope.tools) {
    const access = mcpAccess(scope.grants, tool);
    if (access.ok) {
      registerTool(server, tool, access.permission, scope);
    } else if (scope.calledTools.has(tool.name)) {
      const error = access.error;
      server.registerTool(tool.name, { title: tool.title, description: tool.description }, (
        extra: Extra,
      ) => {
        scope.onDenied(extra.requestId);
        return Promise.resolve(errorResult(error));
      });
    }
  }
}

function registerTool(
  server: McpServer,
  tool: ToolDefinition,
  permission: ResolvedPermission,
  scope: McpToolScope,
): void {
  server.registerTool(
    tool.name,
    {
      title: tool.title,
      description: tool.description,
      inputSchema: tool.input,
      outputSchema: tool.output,
      annotations: { title: tool.title, ...tool.annotations },
    },
    async (args: unknown, extra: Extra) => {
      const result = await runTool(tool, args, permission, scope, extra);
      if (extra.signal.aborted) {
        await scope.onCancelled(extra.requestId);
      }
      return toCallToolResult(result);
    },
  );
}

async function runTool(
  tool: ToolDefinition,
  args: unknown,
  permission: ResolvedPermission,
  scope: McpToolScope,
  extra: Extra,
): Promise<ToolResult<unknown>> {
  const { caller, sql } = scope;
  try {
    return await tool.run(args as Parameters<typeof tool.run>[0], {
      caller,
      db: (work) => asUser(sql, caller.claims, work),
      progress: progressReporter(extra),
      signal: extra.signal,
      permission,
    });
  } catch (error) {
    if (extra.signal.aborted) return { ok: false, error: { code: "cancelled", message: "" } };
    // The client gets a stable code; the details (SQL, stack) stay in the function's logs.
    console.error(`tool ${tool.name} failed`, error);
    return {
      ok: false,
      error: { code: "internal_error", message: `${tool.name} failed unexpectedly` },
    };
  }
}

/** Progress goes out only when the client asked for it with a progress token. */
function progressReporter(extra: Extra): ProgressReporter {
  const progressToken = extra._meta?.progressToken;
  if (progressToken === undefined) return () => Promise.resolve();
  return (progress, total, message) =>
    extra.sendNotification({
      method: "notifications/progress",
      params: {
        progressToken,
        progress,
        ...(total === undefined ? {} : { total }),
        ...(message === undefined ? {} : { message }),
      },
    });
}

export function toCallToolResult(result: ToolResult<unknown>): CallToolResult {
  if (!result.ok) return errorResult(result.error);
  const output = result.output as Record<string, unknown>;
  return { content: [{ type: "text", text: JSON.stringify(output) }], structuredContent: output };
}

function errorResult(error: ToolError): CallToolResult {
  return { content: [{ type: "text", text: JSON.stringify({ error }) }], isError: true };
}
