/**
 * Structured logs: one JSON object per line, the shape log drains and `jq` read. Every line has
 * `ts`, `level`, `event` and the fields its caller gives; a user appears only as `user`, a
 * hash of his id (a log drain is no place for identities), and nothing a caller passes may hold
 * a token, a key or message content (a stack test scans the suite's output for them).
 *
 * `LOG_LEVEL` (`debug` | `info` | `warn` | `error`, default `info`) drops lines below it. Lines
 * go to `console.log`/`warn`/`error`, which Supabase files under the matching severity.
 */
import type { Env } from "./env.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";

/** The events an operator can search for; one name per kind of line. */
export type LogEvent =
  | "request"
  | "socket_open"
  | "socket_close"
  | "turn_end"
  | "tool_call"
  | "tools_refreshed"
  | "refusal"
  | "sign_in_failed"
  | "db_unavailable"
  | "ending_delayed"
  | "failure"
  | "trace_export_failed";

export interface LogFields {
  request_id?: string;
  turn_id?: string;
  /** The user's id; written hashed, never as is. */
  user_id?: string;
  code?: string;
  latency_ms?: number;
  [field: string]: string | number | boolean | undefined | null;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function logLevelFromEnv(env: Env = Deno.env): LogLevel {
  const value = env.get("LOG_LEVEL")?.trim().toLowerCase();
  return value && value in RANK ? value as LogLevel : "info";
}

let threshold: LogLevel | undefined;

/** For tests: the level to log at, and where lines go. */
export function configureLog(
  options: { level?: LogLevel; write?: (line: string, level: LogLevel) => void },
) {
  if (options.level) threshold = options.level;
  if (options.write) writer = options.write;
}

let writer = (line: string, level: LogLevel) => {
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
};

/** Writes one line (after hashing `user_id`); never throws, never waits the caller. */
export function log(level: LogLevel, event: LogEvent, fields: LogFields = {}): void {
  threshold ??= logLevelFromEnv();
  if (RANK[level] < RANK[threshold]) return;
  const { user_id: userId, ...rest } = fields;
  const ts = new Date().toISOString();
  const write = (user?: string) =>
    writer(
      JSON.stringify({ ts, level, event, ...(user ? { user } : {}), ...rest }),
      level,
    );
  if (userId === undefined) return write();
  hashUserId(userId).then(write, () => write("unhashable"));
}

/**
 * An unexpected error off a request's answer (a background task, a turn's bookkeeping): one
 * `failure` line naming what failed (`what`), with the error, its stack and the ids the caller
 * has. Never message content: errors here come from the database, the network or our code.
 */
export function logFailure(
  what: string,
  error: unknown,
  fields: LogFields = {},
  level: LogLevel = "error",
): void {
  log(level, "failure", {
    what,
    ...fields,
    error: describeError(error),
    stack: error instanceof Error ? error.stack?.slice(0, 2000) : undefined,
  });
}

/** The errors of a failure as a short text for a log line: name and message, no stack. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 500);
  return String(error).slice(0, 500);
}

const hashes = new Map<string, Promise<string>>();
const HASHES_MAX = 1000;

/**
 * The first 16 hex digits of SHA-256 over the id: stable, so one user's lines can be followed,
 * and no id in the drain. Remembered per isolate (a cache, not state).
 */
export function hashUserId(userId: string): Promise<string> {
  let hash = hashes.get(userId);
  if (!hash) {
    if (hashes.size >= HASHES_MAX) hashes.clear();
    hash = crypto.subtle.digest("SHA-256", new TextEncoder().encode(userId)).then((digest) =>
      [...new Uint8Array(digest).slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("")
    );
    hashes.set(userId, hash);
  }
  return hash;
}

/** A request's id: the caller's (`x-request-id`, else Supabase's `sb-request-id`) or a new one. */
export function requestIdOf(request: Request): string {
  for (const name of ["x-request-id", "sb-request-id"]) {
    const given = request.headers.get(name)?.trim();
    // Kept only when it is a plain token: it is echoed into bodies, headers and logs.
    if (given && /^[A-Za-z0-9._:-]{1,128}$/.test(given)) return given;
  }
  return crypto.randomUUID();
}
