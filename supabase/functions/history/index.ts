/**
 * The `history` Edge Function: chat history over JSON (see `_shared/history/app.ts`).
 * Dependencies come from the environment Supabase gives every function.
 */
import { tokenVerifierFromEnv } from "../_shared/auth.ts";
import { connect } from "../_shared/db/client.ts";
import { createHistoryApp } from "../_shared/history/app.ts";

const databaseUrl = Deno.env.get("SUPABASE_DB_URL");
if (!databaseUrl) throw new Error("SUPABASE_DB_URL is not set");

const app = createHistoryApp({ sql: connect(databaseUrl), verifier: tokenVerifierFromEnv() });
Deno.serve(app.fetch);
