/**
 * The `mcp` Edge Function: the project's tools over MCP (Streamable HTTP, stateless).
 * Everything lives in `_shared/mcp/app.ts`; this file only wires in the environment.
 */
import { tokenVerifierFromEnv } from "../_shared/auth.ts";
import { connectTo } from "../_shared/db/client.ts";
import { databaseConfigFromEnv, POOL_SIZES, poolSizeFromEnv } from "../_shared/db/config.ts";
import { createMcpApp } from "../_shared/mcp/app.ts";

function requiredEnv(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const app = createMcpApp({
  sql: connectTo(databaseConfigFromEnv(), poolSizeFromEnv(POOL_SIZES.mcp)),
  verifier: tokenVerifierFromEnv(),
  supabaseUrl: requiredEnv("SUPABASE_URL"),
  functionUrl: Deno.env.get("MCP_FUNCTION_URL") || undefined,
});

Deno.serve(app.fetch);
