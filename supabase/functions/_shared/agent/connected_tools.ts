/**
 * The tools a caller's turn may use: the built-in registry and the tools of the servers he
 * connected (the hub). A chat reads them when it starts; an isolate that takes a turn over
 * reads them again the same way, or the turn would not find its connected tools.
 */
import type { ToolCaller, ToolDefinition } from "../tools/types.ts";

/** Reads the caller's connected servers' tools, as registry tools. */
export type ConnectedTools = (caller: ToolCaller) => Promise<ToolDefinition[]>;

/** The built-in tools and, when the runtime has them, the caller's connected ones. */
export async function toolsFor(
  deps: { registry: readonly ToolDefinition[]; connectedTools?: ConnectedTools },
  caller: ToolCaller,
): Promise<readonly ToolDefinition[]> {
  if (!deps.connectedTools) return deps.registry;
  return [...deps.registry, ...await deps.connectedTools(caller)];
}
