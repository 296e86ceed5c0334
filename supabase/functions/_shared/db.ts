/**
 * Direct Postgres for the functions, scoped the way PostgREST scopes a request: every unit
 * of work is one transaction with `role` and `request.jwt.claims` set transaction-locally,
 * so RLS decides what the caller sees. Transaction-local settings are the only kind that
 * work behind Supavisor's transaction pooler (port 6543), which also needs `prepare: false`.
 */
import postgres from "postgres";

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
  /** Pool size; an Edge Function isolate needs few. */
  max?: number;
}

export function connect(url: string, options: ConnectOptions = {}): Sql {
  return postgres(url, {
    max: options.max ?? 5,
    prepare: false,
    idle_timeout: 20,
    onnotice: () => {},
    connection: { application_name: "supabase-agent" },
  });
}

/** Runs `work` in one transaction as the user the claims describe, exactly as PostgREST. */
export function asUser<T>(sql: Sql, claims: JwtClaims, work: (tx: Tx) => Promise<T>): Promise<T> {
  return sql.begin(async (tx) => {
    await tx`select set_config('role', ${claims.role}, true),
                    set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
    return await work(tx);
  }) as Promise<T>;
}

/** Runs `work` as service_role: RLS bypassed. Use only where the user must not decide. */
export function asServiceRole<T>(sql: Sql, work: (tx: Tx) => Promise<T>): Promise<T> {
  return asUser(sql, { role: "service_role" }, work);
}
