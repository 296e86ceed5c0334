/**
 * The `agent` Edge Function: the AI agent over a WebSocket (`GET /functions/v1/agent`).
 * Everything lives in `_shared/agent/`; this file only wires in the environment.
 */
import { createAgentApp } from "../_shared/agent/app.ts";
import { agentConfigFromEnv } from "../_shared/agent/config.ts";
import { tokenVerifierFromEnv } from "../_shared/auth.ts";
import { connect } from "../_shared/db/client.ts";
import { llmConfigFromEnv } from "../_shared/llm_client.ts";
import { workflowConfigFromEnv } from "../_shared/tools/execute_workflow.ts";
import { createToolRegistry } from "../_shared/tools/registry.ts";

const databaseUrl = Deno.env.get("SUPABASE_DB_URL");
if (!databaseUrl) throw new Error("SUPABASE_DB_URL is not set");

const agent = createAgentApp({
  sql: connect(databaseUrl),
  flushSql: connect(databaseUrl, { max: 1 }),
  verifier: tokenVerifierFromEnv(),
  llm: llmConfigFromEnv(),
  tools: createToolRegistry({ workflow: workflowConfigFromEnv() }),
  config: agentConfigFromEnv(),
});

// Supabase announces the end of a worker: end its turns as interrupted while it still can.
addEventListener("beforeunload", () => {
  void agent.close();
});

Deno.serve(agent.fetch);
