/**
 * A server's tools as it lists them now, checked and named for the agent: the one discovery
 * that connecting a server, refreshing it by hand and its own `notifications/tools/list_changed`
 * all store. A tool whose schema is not JSON Schema is left out with a warning (remote.ts
 * `discoverTools`); the rest are named `<slug>__<name>` (tool_names.ts).
 */
import {
  discoverTools,
  type Remote,
  type RemoteSettings,
  type ServerAccess,
  withServer,
} from "./remote.ts";
import type { StoredTool } from "./store.ts";
import { offeredToolNames } from "./tool_names.ts";

export interface ServerDiscovery {
  tools: StoredTool[];
  warnings: string[];
}

export async function discoverServerTools(
  access: ServerAccess,
  slug: string,
  remote: RemoteSettings,
): Promise<Remote<ServerDiscovery>> {
  const discovered = await withServer(
    access,
    remote,
    (client) => discoverTools(client, remote.requestTimeoutMs),
  );
  if (!discovered.ok) return discovered;
  const { tools, warnings } = discovered.value;
  const names = await offeredToolNames(slug, tools.map((t) => t.originalName));
  return {
    ok: true,
    value: {
      warnings,
      tools: tools.map((tool, index): StoredTool => ({
        name: names[index],
        original_name: tool.originalName,
        title: tool.title ?? null,
        description: tool.description,
        input_schema: tool.inputSchema,
        output_schema: tool.outputSchema ?? null,
        annotations: tool.annotations,
      })),
    },
  };
}
