/**
 * The `agent` Edge Function: the AI agent over a WebSocket (`GET /functions/v1/agent`).
 * Everything lives in `_shared/agent/`; this file only wires in the environment.
 */
import { createAgentApp } from "../_shared/agent/app.ts";
import { agentConfigFromEnv } from "../_shared/agent/config.ts";
import { tokenVerifierFromEnv } from "../_shared/auth.ts";
import { hostPolicyFromEnv } from "../_shared/http/host_policy.ts";
import { connectTo } from "../_shared/db/client.ts";
import { databaseConfigFromEnv, POOL_SIZES, poolSizeFromEnv } from "../_shared/db/config.ts";
import { llmConfigFromEnv } from "../_shared/llm_client.ts";
import { workflowConfigFromEnv } from "../_shared/tools/execute_workflow.ts";
import { createToolRegistry } from "../_shared/tools/registry.ts";
import { credentialKeyFromEnv } from "../_shared/mcp_servers/credentials.ts";
import { refreshTimingFromEnv } from "../_shared/mcp_servers/oauth.ts";
import { remoteSettingsFromEnv } from "../_shared/mcp_servers/remote.ts";
import { tracerFromEnv, useTracer } from "../_shared/tracing/otlp.ts";
import {
  createConnectedToolsLoader,
  ownMcpUrlFromEnv,
} from "../_shared/mcp_servers/server_tools.ts";

// Turns' spans go to the OTLP collector the environment names (none: tracing is off).
const tracer = tracerFromEnv(Deno.env, "agent");
useTracer(tracer);
const database = databaseConfigFromEnv();
const sql = connectTo(database, poolSizeFromEnv(POOL_SIZES.agent));
const ownMcpUrl = ownMcpUrlFromEnv();

const agent = createAgentApp({
  sql,
  flushSql: connectTo(database, poolSizeFromEnv(POOL_SIZES.agentFlush)),
  verifier: tokenVerifierFromEnv(),
  llm: llmConfigFromEnv(),
  tools: createToolRegistry({ workflow: workflowConfigFromEnv() }),
  // The servers each user connected (the connections function), offered beside the tools above.
  connectedTools: createConnectedToolsLoader({
    sql,
    remote: remoteSettingsFromEnv(),
    credentialKey: await credentialKeyFromEnv(),
    oauth: refreshTimingFromEnv(),
    ...(ownMcpUrl ? { ownMcpUrl } : {}),
  }),
  config: agentConfigFromEnv(),
  hostPolicy: hostPolicyFromEnv(),
  sweepSecret: Deno.env.get("AGENT_SWEEP_SECRET"),
  metricsToken: Deno.env.get("METRICS_TOKEN") || undefined,
});

// Supabase announces the end of a worker: leave its turns to another isolate (stored, lease
// given up) while it still can.
addEventListener("beforeunload", () => {
  void agent.close().finally(() => tracer.flush());
});

Deno.serve(agent.fetch);
