/**
 * Shared set-up for database tests: a superuser connection to the test database that
 * `deno task test` migrated, users created the way Auth creates them, and claims for
 * running SQL as them through the same `asUser` the functions use.
 */
import {
  asUser,
  connect,
  connectTo,
  type JwtClaims,
  type Sql,
  type Tx,
} from "../../functions/_shared/db/client.ts";
import { databaseConfigFromEnv } from "../../functions/_shared/db/config.ts";
import { type AppendedRow, callAppendMessages } from "../../functions/_shared/history/append.ts";

export function testDatabaseUrl(): string {
  const url = Deno.env.get("SUPABASE_DB_URL");
  if (!url) {
    throw new Error(
      "SUPABASE_DB_URL is not set: run the tests with `deno task test`.",
    );
  }
  return url;
}

/** A direct pool on the test database, for set-up; `max` sized for concurrency tests. */
export function connectTestDatabase(max = 10): Sql {
  return connect(testDatabaseUrl(), { max });
}

/**
 * The database settings a function reads from its environment: the direct SUPABASE_DB_URL,
 * and DATABASE_URL when `deno task test --pooler` runs the tests through PgBouncer.
 */
export function functionDatabaseEnv(): Record<string, string> {
  const pooler = Deno.env.get("DATABASE_URL");
  return {
    SUPABASE_DB_URL: testDatabaseUrl(),
    ...(pooler ? { DATABASE_URL: pooler } : {}),
  };
}

/** A pool as a function builds it from `functionDatabaseEnv()`: through the pooler if any. */
export function connectFunctionDatabase(max = 10): Sql {
  const env = functionDatabaseEnv();
  return connectTo(databaseConfigFromEnv({ get: (name) => env[name] }), max);
}

export interface TestUser {
  id: string;
  email: string;
  /** The session a sign-in opened (`auth.sessions`): his tokens name it, as GoTrue's do. */
  sessionId: string;
  claims: JwtClaims;
}

/**
 * Inserts an auth.users row as GoTrue would, signed in (one `auth.sessions` row); the
 * project's trigger adds grants and limits.
 */
export async function createUser(sql: Sql, label = "user"): Promise<TestUser> {
  const id = crypto.randomUUID();
  const sessionId = crypto.randomUUID();
  const email = `${label}-${id.slice(0, 8)}@example.test`;
  await sql`
    insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
      email_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
      confirmation_token, recovery_token, email_change_token_new, email_change)
    values ('00000000-0000-0000-0000-000000000000', ${id}, 'authenticated', 'authenticated',
      ${email}, extensions.crypt('password123', extensions.gen_salt('bf', 4)), now(),
      '{"provider":"email","providers":["email"]}', '{}', now(), now(), '', '', '', '')`;
  await sql`insert into auth.sessions (id, user_id, created_at, updated_at, aal)
            values (${sessionId}, ${id}, now(), now(), 'aal1')`;
  return { id, email, sessionId, claims: userClaims(id, email, sessionId) };
}

/**
 * Inserts `count` auth.users rows in one statement (for benchmarks: no password, so no bcrypt
 * per user), each signed in with a session whose id is the user's; the project's trigger adds
 * their grants and limits. Returns their ids.
 */
export async function createUsers(
  sql: Sql,
  count: number,
  label = "user",
): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    with created as (
    insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
      email_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
      confirmation_token, recovery_token, email_change_token_new, email_change)
    select '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated',
      'authenticated', ${label} || '-' || n || '-' || substr(md5(random()::text), 1, 8)
        || '@example.test',
      '', now(), '{"provider":"email","providers":["email"]}', '{}', now(), now(),
      '', '', '', ''
    from generate_series(1, ${count}) as n
    returning id)
    insert into auth.sessions (id, user_id, created_at, updated_at, aal)
    select id, id, now(), now(), 'aal1' from created
    returning user_id as id`;
  return rows.map((row) => row.id);
}

/**
 * Lifts a user's request and tool-call limits, as an operator would for a load test: a
 * benchmark measures the server, not the caller's quota.
 */
export async function liftRequestLimits(
  sql: Sql,
  userId: string,
): Promise<void> {
  const lots = 1_000_000_000;
  await sql`update public.user_limits
    set request_capacity = ${lots}, requests_per_minute = ${lots},
      tool_call_capacity = ${lots}, tool_calls_per_minute = ${lots}, tool_call_tokens = ${lots},
      tool_call_token_cost = 0
    where user_id = ${userId}`;
}

export function userClaims(
  id: string,
  email?: string,
  sessionId?: string,
): JwtClaims {
  return {
    sub: id,
    role: "authenticated",
    aud: "authenticated",
    email,
    is_anonymous: false,
    ...(sessionId ? { session_id: sessionId } : {}),
  };
}

export const ANON_CLAIMS: JwtClaims = { role: "anon" };

export function as<T>(
  sql: Sql,
  who: TestUser | JwtClaims,
  work: (tx: Tx) => Promise<T>,
) {
  return asUser(sql, isTestUser(who) ? who.claims : who, work);
}

function isTestUser(who: TestUser | JwtClaims): who is TestUser {
  return typeof (who as TestUser).id === "string" &&
    typeof who.claims === "object";
}

/** The SQLSTATE of a failed query, for asserting which error a statement raised. */
export async function sqlState(
  promise: Promise<unknown>,
): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code !== "string") throw error;
    return code;
  }
}

export interface MessageInput {
  id: string;
  role: "user" | "assistant" | "system" | "tool";
  content: string;
  [field: string]: unknown;
}

export function message(
  content: string,
  role: MessageInput["role"] = "user",
): MessageInput {
  return { id: crypto.randomUUID(), role, content };
}

export type { AppendedRow };

/** `public.append_messages` as the SQL tests need it: unvalidated, database errors thrown. */
export function appendMessages(
  tx: Tx,
  sessionId: string,
  messages: MessageInput[],
  title: string | null = null,
): Promise<AppendedRow[]> {
  return callAppendMessages(tx, sessionId, messages, title);
}
