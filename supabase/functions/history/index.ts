/**
 * The `history` Edge Function: chat history over JSON (see `_shared/history/app.ts`).
 * Dependencies come from the environment Supabase gives every function.
 */
import { tokenVerifierFromEnv } from "../_shared/auth.ts";
import { connectTo } from "../_shared/db/client.ts";
import { databaseConfigFromEnv, POOL_SIZES, poolSizeFromEnv } from "../_shared/db/config.ts";
import { createHistoryApp } from "../_shared/history/app.ts";
import { hostPolicyFromEnv } from "../_shared/http/host_policy.ts";

const app = createHistoryApp({
  sql: connectTo(databaseConfigFromEnv(), poolSizeFromEnv(POOL_SIZES.history)),
  verifier: tokenVerifierFromEnv(),
  hostPolicy: hostPolicyFromEnv(),
  metricsToken: Deno.env.get("METRICS_TOKEN") || undefined,
});
Deno.serve(app.fetch);
