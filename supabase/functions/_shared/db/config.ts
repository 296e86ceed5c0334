/**
 * Which Postgres a function talks to, and with how many connections per isolate.
 *
 * - `DATABASE_URL` (optional secret): the transaction-mode pooler string from the dashboard's
 *   Connect dialog (Supavisor, port 6543). Preferred when set. A transaction pooler hands each
 *   transaction whichever server connection is free, so nothing may outlive a transaction on
 *   it: prepared statements are off on this path (see `connect`).
 * - `SUPABASE_DB_URL`: what Supabase injects, the direct connection as `postgres`. A small
 *   plan has about 60 direct slots for every isolate of every function, Auth, PostgREST and
 *   Realtime together, so each isolate keeps its pools small.
 *
 * Pool sizes per isolate have one variable per function because secrets are project-wide:
 * one `DB_POOL_SIZE` would size every function alike.
 */
import type { Env } from "../env.ts";

export interface DatabaseConfig {
  url: string;
  /** True for `DATABASE_URL`: no prepared statements, nothing kept across transactions. */
  transactionPooler: boolean;
}

export interface PoolSetting {
  /** The environment variable that overrides the default. */
  variable: string;
  defaultSize: number;
}

/** Connections per isolate; see the module comment and the README for why so few. */
export const POOL_SIZES = {
  agent: { variable: "AGENT_DB_POOL_SIZE", defaultSize: 3 },
  /** The agent's flusher writes through a pool of its own so a flush never queues behind chats. */
  agentFlush: { variable: "AGENT_FLUSH_DB_POOL_SIZE", defaultSize: 1 },
  mcp: { variable: "MCP_DB_POOL_SIZE", defaultSize: 2 },
  history: { variable: "HISTORY_DB_POOL_SIZE", defaultSize: 2 },
  connections: { variable: "CONNECTIONS_DB_POOL_SIZE", defaultSize: 2 },
} as const satisfies Record<string, PoolSetting>;

export type DatabaseConfigErrorCode = "database_url_missing" | "invalid_pool_size";

/** A function's database settings are unusable; it refuses to start. */
export class DatabaseConfigError extends Error {
  constructor(readonly code: DatabaseConfigErrorCode, message: string) {
    super(message);
    this.name = "DatabaseConfigError";
  }
}

export function databaseConfigFromEnv(env: Env = Deno.env): DatabaseConfig {
  const pooler = env.get("DATABASE_URL")?.trim();
  if (pooler) return { url: pooler, transactionPooler: true };
  const direct = env.get("SUPABASE_DB_URL")?.trim();
  if (direct) return { url: direct, transactionPooler: false };
  throw new DatabaseConfigError(
    "database_url_missing",
    "neither DATABASE_URL nor SUPABASE_DB_URL is set",
  );
}

export function poolSizeFromEnv(pool: PoolSetting, env: Env = Deno.env): number {
  const raw = env.get(pool.variable)?.trim();
  if (raw === undefined || raw === "") return pool.defaultSize;
  const size = Number(raw);
  if (!Number.isSafeInteger(size) || size < 1) {
    throw new DatabaseConfigError(
      "invalid_pool_size",
      `${pool.variable} must be an integer >= 1, got "${raw}"`,
    );
  }
  return size;
}
