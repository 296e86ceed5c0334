/**
 * Direct Postgres for the functions, scoped the way PostgREST scopes a request: every unit
 * of work is one transaction with `role` and `request.jwt.claims` set transaction-locally,
 * so RLS decides what the caller sees. Transaction-local settings are the only kind that
 * work behind Supavisor's transaction pooler (port 6543), which also needs `prepare: false`
 * (`transactionPooler`); nothing here keeps state on a connection between transactions: no
 * session `set`, no LISTEN, no temporary tables, no advisory locks beyond a transaction.
 *
 * The rule for SQL, everywhere in the functions:
 * - A tagged template (`` tx`… ${value}` ``) is the default: postgres.js binds every value.
 * - `inlineSql` (`./inline_sql.ts`, the only door to it) on hot paths, where one
 *   simple-protocol message saves a round trip; every value becomes an escaped literal.
 * - `unsafe` only for text built in code from fixed pieces, with its values still bound
 *   (`tx.unsafe(text, params)`) or inlined by `inlineSql` — never with a request's value
 *   written into the text.
 * - As the caller (`asUser`, `queryAsUser`) unless a comment says why the service role is
 *   needed (`asServiceRole`, `queryAsServiceRole`).
 */
import postgres from "postgres";
import type { DatabaseConfig } from "./config.ts";
import { type InlineSql, sqlLiteral } from "./inline_sql.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

/** The claims of a verified Supabase access token (or a hand-made anon/service claim set). */
export interface JwtClaims {
  sub?: string;
  role: string;
  aud?: string | string[];
  email?: string;
  exp?: number;
  iat?: number;
  session_id?: string;
  [claim: string]: unknown;
}

export interface ConnectOptions {
  /** Pool size; an Edge Function isolate needs few (`POOL_SIZES` in ./config.ts). */
  max?: number;
  /**
   * The URL is a transaction pooler (Supavisor, PgBouncer): no prepared statements, since the
   * next transaction may run on a server connection that never saw them. On a direct
   * connection they stay on: a parameterised statement then costs one round trip instead of
   * two (parse and describe first), and is planned once per connection.
   */
  transactionPooler?: boolean;
}

export function connect(url: string, options: ConnectOptions = {}): Sql {
  return postgres(url, {
    max: options.max ?? 5,
    prepare: !options.transactionPooler,
    idle_timeout: 20,
    backoff: reconnectBackoffSeconds,
    onnotice: () => {},
    connection: { application_name: "supabase-agent" },
  });
}

/**
 * How long a pool connection waits, after failed connects, before its next attempt (seconds).
 * postgres.js's default grows to 20 s (3^failures / 100 s), and a query that arrives meanwhile
 * waits for that attempt: with the database down, requests got their 503 `db_unavailable` after
 * up to 15 s (BENCHMARKS.md, Outage), and the first ones after it was back waited as long. A
 * connection is attempted only for a query that waits, and a failed attempt fails that query,
 * so a short flat wait costs a database that is down one refused connect per waiting query, not
 * a storm: the 503 comes at once, and the first query after recovery connects at once.
 */
export function reconnectBackoffSeconds(_failures: number): number {
  return 0.025 + Math.random() * 0.025;
}

/** A function's pool of `max` connections to the database its environment names. */
export function connectTo(database: DatabaseConfig, max: number): Sql {
  return connect(database.url, { max, transactionPooler: database.transactionPooler });
}

/** Runs `work` in one transaction as the user the claims describe, exactly as PostgREST. */
export function asUser<T>(sql: Sql, claims: JwtClaims, work: (tx: Tx) => Promise<T>): Promise<T> {
  return sql.begin(async (tx) => {
    // Literal settings go out in one round trip; as a parameterised statement postgres.js
    // would first ask the server for its parameter types (always with prepare: false, and
    // on a connection's first use otherwise), costing two.
    await tx.unsafe(requestSettings(claims.role, claims));
    return await work(tx);
  }) as Promise<T>;
}

/** Runs `work` as service_role: RLS bypassed. Use only where the user must not decide. */
export function asServiceRole<T>(sql: Sql, work: (tx: Tx) => Promise<T>): Promise<T> {
  return asUser(sql, SERVICE_ROLE_CLAIMS, work);
}

/**
 * One statement as the user the claims describe, in one round trip: the settings and the
 * statement travel in one simple-protocol message, which Postgres runs as one implicit
 * transaction (the settings end with it, and an error in one part skips the rest). The same
 * scoping as `asUser`, so RLS decides; for hot paths with a single statement, which must be
 * parameter-free (`inlineSql` writes the values in).
 */
export function queryAsUser<T extends object = Record<string, unknown>>(
  sql: Sql,
  claims: JwtClaims,
  statement: InlineSql,
): Promise<T[]> {
  return queryWithSettings<T>(sql, claims.role, claims, statement);
}

/** `queryAsUser` as service_role: RLS bypassed. Use only where the user must not decide. */
export function queryAsServiceRole<T extends object = Record<string, unknown>>(
  sql: Sql,
  statement: InlineSql,
): Promise<T[]> {
  return queryAsUser<T>(sql, SERVICE_ROLE_CLAIMS, statement);
}

/**
 * One statement as service_role with the user's claims set, so `auth.uid()` is the user: for
 * a function that acts for him beyond what RLS lets him do (it may still switch to
 * `authenticated` for the parts that are his to decide, as `agent_start_turn` does).
 */
export function queryAsServiceRoleFor<T extends object = Record<string, unknown>>(
  sql: Sql,
  claims: JwtClaims,
  statement: InlineSql,
): Promise<T[]> {
  return queryWithSettings<T>(sql, SERVICE_ROLE_CLAIMS.role, claims, statement);
}

async function queryWithSettings<T extends object>(
  sql: Sql,
  role: string,
  claims: JwtClaims,
  statement: InlineSql,
): Promise<T[]> {
  const response = await sql.unsafe(`${requestSettings(role, claims)};\n${statement.text}`);
  // postgres.js answers a message whose statements returned several row sets with an array of
  // them (rows themselves are objects), and with the one result otherwise.
  const last = Array.isArray(response[0]) ? response.at(-1) : response;
  return [...(last ?? [])] as T[];
}

const SERVICE_ROLE_CLAIMS: JwtClaims = { role: "service_role" };

/** What PostgREST sets for a request, transaction-locally. */
function requestSettings(role: string, claims: JwtClaims): string {
  return `set local role ${sqlLiteral(role)};\n` +
    `set local request.jwt.claims = ${sqlLiteral(JSON.stringify(claims))}`;
}
