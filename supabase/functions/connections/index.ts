/**
 * The `connections` Edge Function: the MCP servers a user connects for the agent
 * (`_shared/mcp_servers/app.ts`). Dependencies come from the environment and the function's
 * secrets (`MCP_CREDENTIALS_KEY`, `MCP_ALLOW_LOOPBACK`).
 */
import { tokenVerifierFromEnv } from "../_shared/auth.ts";
import { connectTo } from "../_shared/db/client.ts";
import { databaseConfigFromEnv, POOL_SIZES, poolSizeFromEnv } from "../_shared/db/config.ts";
import { hostPolicyFromEnv } from "../_shared/http/host_policy.ts";
import { createConnectionsApp } from "../_shared/mcp_servers/app.ts";
import { credentialKeyFromEnv } from "../_shared/mcp_servers/credentials.ts";
import { oauthSettingsFromEnv } from "../_shared/mcp_servers/oauth.ts";
import { remoteSettingsFromEnv } from "../_shared/mcp_servers/remote.ts";

const app = createConnectionsApp({
  sql: connectTo(
    databaseConfigFromEnv(),
    poolSizeFromEnv(POOL_SIZES.connections),
  ),
  verifier: tokenVerifierFromEnv(),
  remote: remoteSettingsFromEnv(),
  credentialKey: await credentialKeyFromEnv(),
  oauth: oauthSettingsFromEnv(),
  hostPolicy: hostPolicyFromEnv(),
  metricsToken: Deno.env.get("METRICS_TOKEN") || undefined,
});
Deno.serve(app.fetch);
