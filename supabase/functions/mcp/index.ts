/**
 * The `mcp` Edge Function: the project's tools over MCP (Streamable HTTP, stateless).
 * Everything lives in `_shared/mcp/app.ts`; this file only wires in the environment.
 */
import { tokenVerifierFromEnv } from "../_shared/auth.ts";
import { connectTo } from "../_shared/db/client.ts";
import { databaseConfigFromEnv, POOL_SIZES, poolSizeFromEnv } from "../_shared/db/config.ts";
import { hostPolicyFromEnv } from "../_shared/http/host_policy.ts";
import { createMcpApp } from "../_shared/mcp/app.ts";
import { tracerFromEnv, useTracer } from "../_shared/tracing/otlp.ts";

// Spans of tool calls go to the OTLP collector the environment names (none: tracing is off).
const tracer = tracerFromEnv(Deno.env, "mcp");
useTracer(tracer);
addEventListener("beforeunload", () => {
  void tracer.flush();
});

const app = createMcpApp({
  sql: connectTo(databaseConfigFromEnv(), poolSizeFromEnv(POOL_SIZES.mcp)),
  verifier: tokenVerifierFromEnv(),
  functionUrl: Deno.env.get("MCP_FUNCTION_URL") || undefined,
  authIssuerUrl: Deno.env.get("AUTH_ISSUER_URL") || undefined,
  hostPolicy: hostPolicyFromEnv(),
  metricsToken: Deno.env.get("METRICS_TOKEN") || undefined,
});

Deno.serve(app.fetch);
