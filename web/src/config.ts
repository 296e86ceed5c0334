/**
 * The app's configuration, fixed at build time by Vite (see web/vite.config.ts): which
 * Supabase project to talk to. (The model picker offers the server's model catalogue.)
 */

/** Vite replaces these at build time; Deno's type of `import.meta` does not know `env`. */
const env = (import.meta as unknown as { env: Record<string, string | undefined> }).env;

export const SUPABASE_URL = env.VITE_SUPABASE_URL ?? "http://127.0.0.1:54321";
export const SUPABASE_PUBLISHABLE_KEY = env.VITE_SUPABASE_PUBLISHABLE_KEY ?? "";

/** The agent's WebSocket: the function URL with ws(s) instead of http(s). */
export const AGENT_URL = `${SUPABASE_URL.replace(/^http/, "ws")}/functions/v1/agent`;
