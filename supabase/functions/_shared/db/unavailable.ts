/**
 * "The database cannot be reached right now": the one test for it, so every surface says the
 * same thing during an outage (HTTP 503 `db_unavailable` with `Retry-After`, an agent socket
 * closed with `CLOSE_CODES.databaseUnavailable`, a tool result with the code) instead of a
 * 500 that reads like a bug. Only failures of the connection itself count: an error Postgres
 * answered for a statement (a constraint, a syntax error) means the database is up.
 */
import postgres from "postgres";

/** postgres.js's own connection errors, and the socket errors Deno's `node:net` reports. */
const CONNECTION_ERROR_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/**
 * SQLSTATEs with which a server (or a pooler in front of it) says it will not serve now:
 * shutting down, restarting after a crash, starting up, out of connection slots, or the
 * connection class 08.
 */
const UNAVAILABLE_STATES = new Set([
  "57P01",
  "57P02",
  "57P03",
  "53300",
  "08000",
  "08001",
  "08003",
  "08004",
  "08006",
]);

/** How long a client is told to wait before trying again, in seconds (`Retry-After`). */
export const DATABASE_RETRY_AFTER_SECONDS = 5;

export function isDatabaseUnavailable(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    if (current instanceof postgres.PostgresError) return UNAVAILABLE_STATES.has(current.code);
    if (current instanceof Error) {
      const code = (current as { code?: unknown }).code;
      if (typeof code === "string" && CONNECTION_ERROR_CODES.has(code)) return true;
      current = current.cause;
    } else return false;
  }
  return false;
}
