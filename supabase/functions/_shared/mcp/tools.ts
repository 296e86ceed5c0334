/**
 * Registry tools on an MCP server: `tools/list` shows the tools the caller may use, with their
 * zod schemas as JSON Schema and their annotations; `tools/call` runs through `invokeTool`
 * under MCP's policy, and its result comes back as `structuredContent` plus the same JSON as
 * text (a failure as an `isError: true` result naming its code). Progress goes out as
 * `notifications/progress` for the request's progress token; cancellation is the request's
 * abort signal.
 *
 * Permission policy for MCP: a tool is offered when the caller's grant for it is `auto`.
 * `ask` counts as not granted here, because MCP gives this server no reliable way to ask the
 * user: clients decide for themselves whether to confirm tool calls (many never do), and an
 * elicitation round trip needs the client's answer to come back to the same server, which a
 * stateless function spread over isolates cannot promise. Failing closed keeps `ask` meaning
 * "a person approves every call"; the agent, which can ask, serves those tools.
 */
// The SDK's wildcard export gives `<path>.js` the types `<path>.js.d.ts`, which it does not ship;
// Deno 2.1.4 (the hosted Edge Runtime's) then fails the type check. Each import therefore takes
// its types from `<path>` without `.js`, which the same export maps to `<path>.d.ts`.
// @ts-types="@modelcontextprotocol/sdk/server/index"
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
// @ts-types="@modelcontextprotocol/sdk/shared/protocol"
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import {
  type CallToolRequest,
  CallToolRequestSchema,
  type CallToolResult,
  type ListToolsRequest,
  ListToolsRequestSchema,
  type RequestId,
  type ServerNotification,
  type ServerRequest,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { type PermissionGrant, resolvePermission } from "../permissions.ts";
import { invokeTool, refusal, type ToolPolicy, type ToolScope } from "../tools/invoke.ts";
import type { ProgressReporter, ToolDefinition, ToolError, ToolResult } from "../tools/types.ts";

type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** MCP cannot ask the user, so an `ask` grant refuses the call (see above). */
const mcpPolicy: ToolPolicy = (tool, permission) => {
  if (permission.mode !== "ask") return Promise.resolve(undefined);
  return Promise.resolve(refusal(
    "approval_required",
    `Your "${tool.permission}" permission asks for approval before each call, which this ` +
      `MCP server cannot obtain; use the agent, or have the permission set to auto`,
    "denied",
  ));
};

/** Whether MCP lists `tool` for a caller with these grants: an `auto` grant, nothing less. */
function mcpOffers(
  grants: readonly PermissionGrant[],
  tool: Pick<ToolDefinition, "permission">,
): boolean {
  return resolvePermission(grants, tool.permission)?.mode === "auto";
}

/**
 * Each tool's `tools/list` entry, built once: converting zod schemas to JSON Schema on every
 * request would cost more than the rest of a listing. Draft-7, as the SDK's own server writes.
 */
export function mcpToolListing(tools: readonly ToolDefinition[]): Map<string, Tool> {
  return new Map(tools.map((tool) => [tool.name, {
    name: tool.name,
    title: tool.title,
    description: tool.description,
    inputSchema: z.toJSONSchema(tool.input, { target: "draft-7", io: "input" }) as Tool[
      "inputSchema"
    ],
    outputSchema: z.toJSONSchema(tool.output, { target: "draft-7", io: "output" }) as Tool[
      "outputSchema"
    ],
    annotations: { title: tool.title, ...tool.annotations },
  }]));
}

export interface McpToolsOptions {
  tools: readonly ToolDefinition[];
  listing: ReadonlyMap<string, Tool>;
  /** The caller's grants: what `tools/list` shows and what each call is checked against. */
  grants: readonly PermissionGrant[];
  /** The call's scope, given the request's abort signal. */
  scope(signal: AbortSignal): ToolScope;
  /** A call ended (`cancelled`: the SDK sends no response for it). */
  onSettled(requestId: RequestId, cancelled: boolean): void;
}

/** Serves the registry's `tools/list` and `tools/call` on a low-level MCP `Server`. */
export function serveTools(server: Server, options: McpToolsOptions): void {
  const { tools, listing, grants } = options;

  server.setRequestHandler(ListToolsRequestSchema, (_request: ListToolsRequest) => {
    return {
      tools: tools.filter((tool) => mcpOffers(grants, tool)).map((tool) => listing.get(tool.name)!),
    };
  });

  server.setRequestHandler(
    CallToolRequestSchema,
    async (request: CallToolRequest, extra: Extra) => {
      const { name, arguments: args } = request.params;
      // As the SDK's own server answers a name it does not know; no usage row for it.
      if (!listing.has(name)) {
        return errorResult({ code: "unknown_tool", message: `Tool ${name} not found` });
      }
      try {
        const { result } = await invokeTool(tools, options.scope(extra.signal), {
          name,
          args: { ok: true, value: args ?? {} },
          policy: mcpPolicy,
          progress: progressReporter(extra),
        });
        return toCallToolResult(result);
      } finally {
        options.onSettled(extra.requestId, extra.signal.aborted);
      }
    },
  );
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

function toCallToolResult(result: ToolResult<unknown>): CallToolResult {
  if (!result.ok) return errorResult(result.error);
  const output = result.output as Record<string, unknown>;
  return { content: [{ type: "text", text: JSON.stringify(output) }], structuredContent: output };
}

function errorResult(error: ToolError): CallToolResult {
  return { content: [{ type: "text", text: JSON.stringify({ error }) }], isError: true };
}
