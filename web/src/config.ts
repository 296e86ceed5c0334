/**
 * The app's configuration, fixed at build time by Vite (see web/vite.config.ts): which
 * Supabase project to talk to, and which models the picker offers.
 */

/** Vite replaces these at build time; Deno's type of `import.meta` does not know `env`. */
const env = (import.meta as unknown as { env: Record<string, string | undefined> }).env;

export const SUPABASE_URL = env.VITE_SUPABASE_URL ?? "http://127.0.0.1:54321";
export const SUPABASE_PUBLISHABLE_KEY = env.VITE_SUPABASE_PUBLISHABLE_KEY ?? "";

/** The agent's WebSocket: the function URL with ws(s) instead of http(s). */
export const AGENT_URL = `${SUPABASE_URL.replace(/^http/, "ws")}/functions/v1/agent`;

/** The model picker's choices; "" means the server's default (LLM_MODEL). */
export const MODEL_CHOICES: readonly string[] = [
  "",
  ...(env.VITE_AGENT_MODELS
    ? env.VITE_AGENT_MODELS.split(",").map((model) => model.trim()).filter(Boolean)
    : [
      "openai/gpt-4o-mini",
      "anthropic/claude-3.5-haiku",
      "google/gemini-2.0-flash-001",
      "meta-llama/llama-3.3-70b-instruct",
    ]),
];
