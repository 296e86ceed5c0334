/**
 * Arguments the user edited when approving a call (`approve` with `args`): checked against
 * the tool's schema before the turn takes them, so a bad edit is refused at once with the
 * path that fails (`args.<field>`), and the call keeps waiting for a better answer. A
 * built-in tool is checked by its zod input; a connected server's tool by the JSON Schema it
 * was stored with (read as the user, like every connected tool).
 */
import type { ServerError } from "../agent_protocol.ts";
import { fieldPath } from "../field_path.ts";
import { argumentsProblem } from "../mcp_servers/json_schema.ts";
import type { ToolCaller, ToolDefinition } from "../tools/types.ts";
import { type ConnectedTools, toolsFor } from "./connected_tools.ts";

/** The refusal of an edit that does not fit `tool`'s schema; undefined when it fits. */
export async function editedArgumentsRefusal(
  deps: { registry: readonly ToolDefinition[]; connectedTools?: ConnectedTools },
  caller: ToolCaller,
  toolName: string,
  args: unknown,
  callId: string,
): Promise<ServerError | undefined> {
  const tool = deps.registry.find((candidate) => candidate.name === toolName) ??
    (await toolsFor(deps, caller)).find((candidate) => candidate.name === toolName);
  // A tool gone since (its server disconnected): the turn reports that when it runs the call.
  if (!tool) return undefined;
  const problem = tool.inputJsonSchema
    ? argumentsProblem(tool.inputJsonSchema, args)
    : zodProblem(tool, args);
  if (!problem) return undefined;
  const path = fieldPath(["args", ...problem.path]);
  return {
    code: "bad_request",
    message: `${path}: ${problem.message}`,
    retryable: false,
    ref: callId,
    path,
  };
}

function zodProblem(tool: ToolDefinition, args: unknown) {
  const checked = tool.input.safeParse(args);
  if (checked.success) return undefined;
  const [issue] = checked.error.issues;
  return { path: issue.path, message: issue.message };
}
