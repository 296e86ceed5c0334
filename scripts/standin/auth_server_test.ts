/**
 * The Auth stand-in served over HTTP against the test database and driven by the unmodified
 * `@supabase/supabase-js` client (plus raw requests where the client hides the wire).
 */
import assert from "node:assert/strict";
import {
  type AuthError,
  createClient,
  isAuthApiError,
  isAuthRetryableFetchError,
  isAuthSessionMissingError,
  isAuthWeakPasswordError,
  type Session,
  type SupabaseClient,
} from "@supabase/supabase-js";
import { createTokenVerifier } from "./token_verifier.ts";
import type { Sql } from "../../supabase/functions/_shared/db/client.ts";
import { connect } from "../../supabase/functions/_shared/db/client.ts";
import { connectTestDatabase, testDatabaseUrl } from "../../supabase/tests/support/database.ts";
import { asRole, AUTH_ROLE } from "./postgres.ts";
import { type AuthHandler, type AuthHandlerOptions, createAuthHandler } from "./auth_server.ts";
import { LOCAL_PUBLISHABLE_KEY, LOCAL_SECRET_KEY } from "./keys.ts";
import { generateSigningKey, issueAccessToken } from "./signing_keys.ts";

const signingKey = await generateSigningKey();
const PASSWORD = "correct horse battery";

interface ApiAnswer {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

interface CallOptions {
  method?: string;
  /** A JSON value, or a string sent as is. */
  body?: unknown;
  /** Bearer token; defaults to none. */
  bearer?: string;
  /** The `apikey` header; the publishable key unless null (no header) or another value. */
  apikey?: string | null;
  headers?: Record<string, string>;
}

interface Fixture {
  /** The server's origin, what supabase-js is given as the project URL. */
  url: string;
  sql: Sql;
  /** Moves the server's clock forward (the reuse interval is measured with it). */
  advanceClock(seconds: number): void;
  /** A supabase-js client with the publishable key (or `key`), closed after the test. */
  client(key?: string): SupabaseClient;
  /** A raw request to `/auth/v1<path>`, the body read as JSON when there is one. */
  call(path: string, options?: CallOptions): Promise<ApiAnswer>;
}

async function withAuth(
  options: Partial<AuthHandlerOptions>,
  test: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const sql = connectTestDatabase(5);
  // Auth connects as its own role, as in the stack (and as GoTrue on hosted).
  const authSql = connect(asRole(testDatabaseUrl(), AUTH_ROLE), { max: 5 });
  let offsetMs = 0;
  let handler: AuthHandler = () => Promise.resolve(new Response(null, { status: 503 }));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) => handler(request),
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  handler = createAuthHandler({
    sql: authSql,
    signingKey,
    publicUrl: url,
    now: () => new Date(Date.now() + offsetMs),
    ...options,
  });
  const clients: SupabaseClient[] = [];
  try {
    await test({
      url,
      sql,
      advanceClock(seconds) {
        offsetMs += seconds * 1000;
      },
      client(key = LOCAL_PUBLISHABLE_KEY) {
        const client = createClient(url, key, {
          auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
        });
        clients.push(client);
        return client;
      },
      async call(path, call = {}) {
        const headers = new Headers(call.headers);
        const apikey = call.apikey === undefined ? LOCAL_PUBLISHABLE_KEY : call.apikey;
        if (apikey !== null) headers.set("apikey", apikey);
        if (call.bearer) headers.set("Authorization", `Bearer ${call.bearer}`);
        let body: string | undefined;
        if (call.body !== undefined) {
          body = typeof call.body === "string" ? call.body : JSON.stringify(call.body);
          headers.set("Content-Type", "application/json");
        }
        const response = await fetch(`${url}/auth/v1${path}`, {
          method: call.method ?? (body === undefined ? "GET" : "POST"),
          headers,
          body,
        });
        const text = await response.text();
        return {
          status: response.status,
          headers: response.headers,
          body: text === "" ? undefined : JSON.parse(text),
        };
      },
    });
  } finally {
    for (const client of clients) {
      await client.auth.stopAutoRefresh();
      await client.removeAllChannels();
    }
    await server.shutdown();
    await authSql.end();
    await sql.end();
  }
}

function newEmail(label: string): string {
  return `${label}-${crypto.randomUUID().slice(0, 8)}@example.test`;
}

function claimsOf(accessToken: string): Record<string, unknown> {
  const payload = accessToken.split(".")[1];
  return JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
}

function refreshWith(call: Fixture["call"], refreshToken: string): Promise<ApiAnswer> {
  return call("/token?grant_type=refresh_token", {
    body: { refresh_token: refreshToken },
  });
}

async function signUp(client: SupabaseClient, email = newEmail("user")): Promise<Session> {
  const { data, error } = await client.auth.signUp({ email, password: PASSWORD });
  assert.equal(error, null);
  assert.ok(data.session, "sign-up answers with a session (auto-confirm)");
  return data.session;
}

function assertAuthError(error: AuthError | null, status: number, code: string): AuthError {
  assert.ok(error, `expected an error ${code}`);
  assert.equal(error.status, status, `status of ${error.message}`);
  assert.equal(error.code, code);
  return error;
}

async function tokensOf(sql: Sql, sessionId: string) {
  return await sql<{ token: string; revoked: boolean; parent: string | null }[]>`
    select token, revoked, parent from auth.refresh_tokens
    where session_id = ${sessionId} order by id`;
}

async function sessionIdsOf(sql: Sql, userId: string): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    select id from auth.sessions where user_id = ${userId} order by created_at, id`;
  return rows.map((row) => row.id).sort();
}

Deno.test("signUp creates a confirmed user with default grants and returns a session", async () => {
  await withAuth({}, async ({ url, sql, client }) => {
    const email = newEmail("signup");
    const supabase = client();
    const { data, error } = await supabase.auth.signUp({
      email,
      password: PASSWORD,
      options: { data: { display_name: "Ada" } },
    });
    assert.equal(error, null);
    const { session, user } = data;
    assert.ok(session && user);

    assert.equal(session.token_type, "bearer");
    assert.equal(session.expires_in, 3600);
    const claims = claimsOf(session.access_token);
    assert.equal(session.expires_at, (claims.iat as number) + 3600);
    assert.equal(session.user.id, user.id);

    assert.equal(user.email, email);
    assert.equal(user.aud, "authenticated");
    assert.equal(user.role, "authenticated");
    assert.equal(user.is_anonymous, false);
    assert.equal(user.phone, "");
    assert.deepEqual(user.app_metadata, { provider: "email", providers: ["email"] });
    assert.equal(user.user_metadata.display_name, "Ada");
    assert.ok(user.email_confirmed_at && user.confirmed_at && user.last_sign_in_at);
    assert.ok(user.created_at && user.updated_at);
    assert.equal(user.identities?.length, 1);
    assert.equal(user.identities[0].provider, "email");
    assert.equal(user.identities[0].user_id, user.id);
    assert.equal(user.identities[0].identity_data?.email, email);

    const [row] = await sql`
      select email, email_confirmed_at is not null as confirmed,
        encrypted_password like '$2%' as bcrypt,
        encrypted_password = extensions.crypt(${PASSWORD}, encrypted_password) as matches,
        raw_app_meta_data ->> 'provider' as provider,
        raw_user_meta_data ->> 'display_name' as display_name
      from auth.users where id = ${user.id}`;
    assert.deepEqual({ ...row }, {
      email,
      confirmed: true,
      bcrypt: true,
      matches: true,
      provider: "email",
      display_name: "Ada",
    });
    const [identity] = await sql`
      select provider, provider_id from auth.identities where user_id = ${user.id}`;
    assert.deepEqual({ ...identity }, { provider: "email", provider_id: user.id });

    // The project's trigger on auth.users ran: default grants and a limits row.
    const grants = await sql`
      select tool, approval_mode from public.permissions where user_id = ${user.id} order by tool`;
    const defaults = await sql`
      select tool, approval_mode from public.default_permissions order by tool`;
    assert.ok(defaults.length > 0);
    assert.deepEqual(grants.map((g) => ({ ...g })), defaults.map((d) => ({ ...d })));
    const [limits] = await sql`
      select count(*)::int as n from public.user_limits where user_id = ${user.id}`;
    assert.equal(limits.n, 1);

    assert.deepEqual(await sessionIdsOf(sql, user.id), [claims.session_id]);
    assert.deepEqual(
      (await tokensOf(sql, claims.session_id as string)).map((t) => ({ ...t })),
      [{ token: session.refresh_token, revoked: false, parent: null }],
    );

    // The claims Supabase Auth puts in its access tokens.
    assert.equal(claims.iss, `${url}/auth/v1`);
    assert.equal(claims.sub, user.id);
    assert.equal(claims.aud, "authenticated");
    assert.equal(claims.role, "authenticated");
    assert.equal(claims.email, email);
    assert.equal(claims.phone, "");
    assert.equal(claims.aal, "aal1");
    assert.equal(claims.is_anonymous, false);
    assert.deepEqual(claims.app_metadata, { provider: "email", providers: ["email"] });
    assert.equal((claims.user_metadata as Record<string, unknown>).display_name, "Ada");
    assert.equal((claims.amr as { method: string }[])[0].method, "password");
    assert.equal((claims.exp as number) - (claims.iat as number), 3600);
  });
});

Deno.test("the JWKS is public and verifies the access tokens Auth issues", async () => {
  await withAuth({ accessTokenTtlSeconds: 600 }, async ({ url, client, call }) => {
    const session = await signUp(client());
    const answer = await call("/.well-known/jwks.json", { apikey: null });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.keys.length, 1);
    const [key] = answer.body.keys;
    assert.equal(key.kid, signingKey.kid);
    assert.equal(key.d, undefined, "no private part is published");

    const verifier = createTokenVerifier({ jwks: answer.body, issuer: `${url}/auth/v1` });
    const verdict = await verifier.verify(session.access_token);
    assert.ok(verdict.ok, JSON.stringify(verdict));
    assert.equal(verdict.user.id, session.user.id);
    assert.equal(verdict.user.claims.session_id, claimsOf(session.access_token).session_id);
    assert.equal(session.expires_in, 600);

    const stranger = await issueAccessToken(await generateSigningKey(), {
      userId: session.user.id,
      issuer: `${url}/auth/v1`,
    });
    assert.equal((await verifier.verify(stranger)).ok, false);
  });
});

Deno.test("signUp with a registered email answers 422 user_already_exists", async () => {
  await withAuth({}, async ({ sql, client }) => {
    const email = newEmail("twice");
    await signUp(client(), email);
    for (const again of [email, email.toUpperCase()]) {
      const { data, error } = await client().auth.signUp({ email: again, password: PASSWORD });
      assertAuthError(error, 422, "user_already_exists");
      assert.equal(data.session, null);
    }
    const [{ n }] = await sql`select count(*)::int as n from auth.users where email = ${email}`;
    assert.equal(n, 1);
  });
});

Deno.test("signUp refuses weak passwords and invalid emails without creating users", async () => {
  await withAuth({}, async ({ sql, client, call }) => {
    const email = newEmail("weak");
    const weak = await client().auth.signUp({ email, password: "12345" });
    const error = assertAuthError(weak.error, 422, "weak_password");
    assert.ok(isAuthWeakPasswordError(error));
    assert.deepEqual(error.reasons, ["length"]);

    const invalid = await client().auth.signUp({ email: "not-an-email", password: PASSWORD });
    assertAuthError(invalid.error, 400, "validation_failed");

    const noPassword = await call("/signup", { body: { email } });
    assert.equal(noPassword.status, 422);
    assert.equal(noPassword.body.code, "validation_failed");

    const [{ n }] = await sql`
      select count(*)::int as n from auth.users where email in (${email}, 'not-an-email')`;
    assert.equal(n, 0);
  });
});

Deno.test("signInWithPassword starts a new session and records the sign-in", async () => {
  await withAuth({}, async ({ sql, client, advanceClock }) => {
    const email = newEmail("signin");
    const first = await signUp(client(), email);
    advanceClock(60);
    const { data, error } = await client().auth.signInWithPassword({
      email: email.toUpperCase(),
      password: PASSWORD,
    });
    assert.equal(error, null);
    const { session, user } = data;
    assert.ok(session && user);
    assert.equal(user.id, first.user.id);
    assert.notEqual(session.refresh_token, first.refresh_token);

    const second = claimsOf(session.access_token).session_id as string;
    const initial = claimsOf(first.access_token).session_id as string;
    assert.notEqual(second, initial);
    assert.deepEqual(await sessionIdsOf(sql, user.id), [initial, second].sort());

    const signedInAt = Date.parse(user.last_sign_in_at!);
    assert.ok(signedInAt - Date.parse(first.user.last_sign_in_at!) >= 60_000);
    const [row] = await sql`select last_sign_in_at from auth.users where id = ${user.id}`;
    assert.equal(row.last_sign_in_at.getTime(), signedInAt);
  });
});

Deno.test("a user whose GoTrue token columns are NULL cannot sign in, as with real GoTrue", async () => {
  await withAuth({}, async ({ sql, client, call }) => {
    const email = newEmail("hand-made");
    const session = await signUp(client(), email);
    // What a seed that leaves the columns out writes: GoTrue then fails to read the row.
    await sql`update auth.users set confirmation_token = null where id = ${session.user.id}`;
    const answer = await call("/token?grant_type=password", {
      body: { email, password: PASSWORD },
    });
    assert.equal(answer.status, 500);
    assert.equal(answer.body.error_code, "unexpected_failure");
    assert.equal(answer.body.msg, "Database error querying schema");
  });
});

Deno.test("a wrong password or an unknown email answers 400 invalid_credentials", async () => {
  await withAuth({}, async ({ sql, client }) => {
    const email = newEmail("wrong");
    const session = await signUp(client(), email);
    const attempts = [
      { email, password: "not the password" },
      { email: newEmail("nobody"), password: PASSWORD },
    ];
    for (const credentials of attempts) {
      const { data, error } = await client().auth.signInWithPassword(credentials);
      const failure = assertAuthError(error, 400, "invalid_credentials");
      assert.ok(isAuthApiError(failure));
      assert.equal(failure.message, "Invalid login credentials");
      assert.equal(data.session, null);
    }
    assert.equal((await sessionIdsOf(sql, session.user.id)).length, 1, "no session was started");
  });
});

Deno.test("refreshSession rotates the refresh token within the same session", async () => {
  await withAuth({}, async ({ sql, client, advanceClock }) => {
    const supabase = client();
    const first = await signUp(supabase);
    advanceClock(5);
    const { data, error } = await supabase.auth.refreshSession();
    assert.equal(error, null);
    const refreshed = data.session;
    assert.ok(refreshed);
    assert.notEqual(refreshed.refresh_token, first.refresh_token);
    assert.notEqual(refreshed.access_token, first.access_token);
    assert.equal(refreshed.user.id, first.user.id);

    const sessionId = claimsOf(first.access_token).session_id as string;
    const claims = claimsOf(refreshed.access_token);
    assert.equal(claims.session_id, sessionId);
    assert.ok((claims.iat as number) - (claimsOf(first.access_token).iat as number) >= 5);
    assert.deepEqual((await tokensOf(sql, sessionId)).map((t) => ({ ...t })), [
      { token: first.refresh_token, revoked: true, parent: null },
      { token: refreshed.refresh_token, revoked: false, parent: first.refresh_token },
    ]);
    assert.deepEqual(await sessionIdsOf(sql, first.user.id), [sessionId]);

    // The client keeps working with what it got back.
    const { data: again, error: againError } = await supabase.auth.refreshSession();
    assert.equal(againError, null);
    assert.notEqual(again.session?.refresh_token, refreshed.refresh_token);
  });
});

Deno.test("replaying a rotated refresh token after the reuse interval revokes the session", async () => {
  await withAuth({}, async ({ sql, client, call, advanceClock }) => {
    const supabase = client();
    const first = await signUp(supabase);
    const { data } = await supabase.auth.refreshSession();
    const newest = data.session!.refresh_token;
    advanceClock(11);

    const replay = await refreshWith(call, first.refresh_token);
    assert.equal(replay.status, 400);
    assert.equal(replay.body.code, "refresh_token_already_used");
    assert.equal(replay.body.error_code, "refresh_token_already_used");

    const sessionId = claimsOf(first.access_token).session_id as string;
    const tokens = await tokensOf(sql, sessionId);
    assert.equal(tokens.length, 2);
    assert.ok(tokens.every((t) => t.revoked), "every token of the session is revoked");

    // The legitimate holder of the newest token is out too, and auth-js ends the session.
    const { error } = await client().auth.refreshSession({ refresh_token: newest });
    const failure = assertAuthError(error, 400, "refresh_token_already_used");
    assert.ok(isAuthApiError(failure));
    assert.equal(isAuthRetryableFetchError(failure), false);
  });
});

Deno.test("a refresh token replayed within the reuse interval gets the same child", async () => {
  await withAuth({}, async ({ sql, call, client, advanceClock }) => {
    const first = await signUp(client());
    const sessionId = claimsOf(first.access_token).session_id as string;
    const rotated = await refreshWith(call, first.refresh_token);
    assert.equal(rotated.status, 200);
    advanceClock(5);

    const replay = await refreshWith(call, first.refresh_token);
    assert.equal(replay.status, 200, JSON.stringify(replay.body));
    assert.equal(replay.body.refresh_token, rotated.body.refresh_token);
    assert.equal(claimsOf(replay.body.access_token).session_id, sessionId);
    assert.equal((await tokensOf(sql, sessionId)).length, 2, "no new token was minted");

    // Once the child has itself been rotated, its parent is no longer anyone's fallback.
    const next = await refreshWith(call, rotated.body.refresh_token);
    assert.equal(next.status, 200);
    const stale = await refreshWith(call, first.refresh_token);
    assert.equal(stale.status, 400);
    assert.equal(stale.body.code, "refresh_token_already_used");
    const newest = await refreshWith(call, next.body.refresh_token);
    assert.equal(newest.body.code, "refresh_token_already_used");
  });
});

Deno.test("concurrent refreshes with one token both get the same single child", async () => {
  await withAuth({}, async ({ sql, call, client }) => {
    const first = await signUp(client());
    // Hold the token's row so that both refreshes are in flight at once before either can
    // rotate it: the overlap is forced, not left to timing.
    const holder = await sql.reserve();
    let pending: Promise<ApiAnswer[]>;
    try {
      await holder`begin`;
      await holder`select 1 from auth.refresh_tokens where token = ${first.refresh_token} for update`;
      pending = Promise.all([
        refreshWith(call, first.refresh_token),
        refreshWith(call, first.refresh_token),
      ]);
      await untilBackendsWaitOnLocks(sql, 2);
      await holder`commit`;
    } finally {
      holder.release();
    }
    const [a, b] = await pending;
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.equal(a.body.refresh_token, b.body.refresh_token);
    const sessionId = claimsOf(first.access_token).session_id as string;
    assert.equal((await tokensOf(sql, sessionId)).length, 2);
  });
});

/** Waits (bounded) until `count` backends of the test database are blocked on a lock. */
async function untilBackendsWaitOnLocks(sql: Sql, count: number): Promise<void> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const [{ waiting }] = await sql`
      select count(*)::int as waiting from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`;
    if (waiting >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`fewer than ${count} backends ever waited on a lock`);
}

Deno.test("an unknown refresh token answers 400 refresh_token_not_found", async () => {
  await withAuth({}, async ({ client, call }) => {
    const { error } = await client().auth.refreshSession({ refresh_token: "never-issued" });
    assertAuthError(error, 400, "refresh_token_not_found");
    const missing = await call("/token?grant_type=refresh_token", { body: {} });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.code, "validation_failed");
  });
});

Deno.test("getUser returns the caller and refuses missing, forged and expired tokens", async () => {
  await withAuth({}, async ({ url, client, call }) => {
    const supabase = client();
    const session = await signUp(supabase);
    const { data, error } = await supabase.auth.getUser(session.access_token);
    assert.equal(error, null);
    assert.equal(data.user?.id, session.user.id);
    assert.equal(data.user?.email, session.user.email);
    const fromStoredSession = await supabase.auth.getUser();
    assert.equal(fromStoredSession.data.user?.id, session.user.id);

    const noToken = await call("/user");
    assert.equal(noToken.status, 401);
    assert.equal(noToken.body.code, "no_authorization");

    const issuer = `${url}/auth/v1`;
    const userId = session.user.id;
    const sessionId = claimsOf(session.access_token).session_id as string;
    const refused = [
      "not-a-jwt",
      await issueAccessToken(await generateSigningKey(), { userId, sessionId, issuer }),
      await issueAccessToken(signingKey, {
        userId,
        sessionId,
        issuer,
        now: Math.floor(Date.now() / 1000) - 7200,
      }),
    ];
    for (const bearer of refused) {
      const answer = await call("/user", { bearer });
      assert.equal(answer.status, 403);
      assert.equal(answer.body.code, "bad_jwt");
    }

    const ghost = await issueAccessToken(signingKey, { userId: crypto.randomUUID(), issuer });
    const answer = await call("/user", { bearer: ghost });
    assert.equal(answer.status, 403);
    assert.equal(answer.body.code, "user_not_found");
  });
});

Deno.test("signOut ends the session: its access token gets session_not_found", async () => {
  await withAuth({}, async ({ sql, client, call }) => {
    const email = newEmail("signout");
    const here = client();
    const session = await signUp(here, email);
    const elsewhere = client();
    const other = await elsewhere.auth.signInWithPassword({ email, password: PASSWORD });
    assert.equal(other.error, null);

    assert.equal((await here.auth.signOut({ scope: "local" })).error, null);
    const otherSessionId = claimsOf(other.data.session!.access_token).session_id;
    assert.deepEqual(await sessionIdsOf(sql, session.user.id), [otherSessionId]);

    const { data, error } = await client().auth.getUser(session.access_token);
    assert.ok(isAuthSessionMissingError(error), `got ${error?.name}`);
    assert.equal(data.user, null);
    const raw = await call("/user", { bearer: session.access_token });
    assert.equal(raw.status, 403);
    assert.equal(raw.body.code, "session_not_found");
    const refresh = await refreshWith(call, session.refresh_token);
    assert.equal(refresh.body.code, "refresh_token_not_found");

    const stillIn = await elsewhere.auth.getUser();
    assert.equal(stillIn.error, null);
    assert.equal(stillIn.data.user?.id, session.user.id);
  });
});

Deno.test("signOut scopes: others keeps the caller's session, global ends all", async () => {
  await withAuth({}, async ({ sql, client, call }) => {
    const email = newEmail("scopes");
    const first = client();
    const firstSession = await signUp(first, email);
    const userId = firstSession.user.id;
    for (const _ of [1, 2]) {
      const { error } = await client().auth.signInWithPassword({ email, password: PASSWORD });
      assert.equal(error, null);
    }
    const bystander = await signUp(client());
    assert.equal((await sessionIdsOf(sql, userId)).length, 3);

    assert.equal((await first.auth.signOut({ scope: "others" })).error, null);
    assert.deepEqual(await sessionIdsOf(sql, userId), [
      claimsOf(firstSession.access_token).session_id,
    ]);
    assert.equal((await first.auth.getUser()).error, null);

    assert.equal((await first.auth.signOut()).error, null);
    assert.deepEqual(await sessionIdsOf(sql, userId), []);
    assert.equal((await sessionIdsOf(sql, bystander.user.id)).length, 1);

    const badScope = await call("/logout?scope=everywhere", {
      method: "POST",
      bearer: bystander.access_token,
    });
    assert.equal(badScope.status, 400);
    assert.equal(badScope.body.code, "validation_failed");
  });
});

Deno.test("every call needs a local API key in apikey or as an sb_ Bearer", async () => {
  await withAuth({}, async ({ sql, client, call }) => {
    const missing = await call("/settings", { apikey: null });
    assert.equal(missing.status, 401);
    assert.equal(missing.body.code, "no_api_key");
    const wrong = await call("/settings", { apikey: "sb_publishable_not-this-project" });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.code, "invalid_api_key");
    const userJwtIsNoKey = await call("/health", {
      apikey: null,
      bearer: await issueAccessToken(signingKey, { userId: crypto.randomUUID(), issuer: "x" }),
    });
    assert.equal(userJwtIsNoKey.status, 401);

    const asBearer = await call("/settings", { apikey: null, bearer: LOCAL_PUBLISHABLE_KEY });
    assert.equal(asBearer.status, 200);
    assert.equal(asBearer.body.mailer_autoconfirm, true);
    assert.equal((await call("/health", { apikey: LOCAL_SECRET_KEY })).status, 200);

    const email = newEmail("nokey");
    const { error } = await client("sb_publishable_wrong").auth.signUp({
      email,
      password: PASSWORD,
    });
    assertAuthError(error, 401, "invalid_api_key");
    const [{ n }] = await sql`select count(*)::int as n from auth.users where email = ${email}`;
    assert.equal(n, 0);
  });
});

Deno.test("answers carry the API version, CORS headers and GoTrue's error shape", async () => {
  await withAuth({}, async ({ call }) => {
    const preflight = await call("/token?grant_type=password", {
      method: "OPTIONS",
      apikey: null,
      headers: {
        Origin: "http://localhost:5173",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "apikey, authorization, content-type, x-client-info",
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
    const allowed = preflight.headers.get("access-control-allow-headers")!.split(", ");
    for (const header of ["authorization", "x-client-info", "apikey", "content-type"]) {
      assert.ok(allowed.includes(header), header);
    }
    assert.ok(allowed.includes("x-supabase-api-version"));

    const badJson = await call("/token?grant_type=password", { body: "{not json" });
    assert.equal(badJson.status, 400);
    assert.equal(badJson.body.code, "bad_json");
    assert.equal(badJson.body.error_code, "bad_json");
    assert.equal(typeof badJson.body.msg, "string");
    assert.equal(badJson.headers.get("x-supabase-api-version"), "2024-01-01");
    assert.equal(badJson.headers.get("access-control-allow-origin"), "*");
    assert.match(badJson.headers.get("access-control-expose-headers")!, /X-Supabase-Api-Version/i);

    const notAnObject = await call("/signup", { body: [1, 2] });
    assert.equal(notAnObject.status, 400);
    assert.equal(notAnObject.body.code, "validation_failed");
    const grant = await call("/token?grant_type=magic", { body: {} });
    assert.equal(grant.status, 400);
    assert.equal(grant.body.code, "validation_failed");
    assert.equal((await call("/nothing-here")).status, 404);
    assert.equal((await call("/user", { method: "DELETE" })).status, 405);

    const health = await call("/health");
    assert.equal(health.status, 200);
    assert.equal(health.body.name, "GoTrue");
    assert.equal(health.headers.get("x-supabase-api-version"), "2024-01-01");
  });
});

Deno.test("updateUser merges data into user_metadata and answers the user as GET /user does", async () => {
  await withAuth({}, async ({ sql, client }) => {
    const supabase = client();
    const { data: signedUp, error: signUpError } = await supabase.auth.signUp({
      email: newEmail("update"),
      password: PASSWORD,
      options: { data: { display_name: "Ada", theme: "dark" } },
    });
    assert.equal(signUpError, null);
    const userId = signedUp.user!.id;

    const { data, error } = await supabase.auth.updateUser({
      data: { theme: "light", lang: "fr", display_name: null },
    });
    assert.equal(error, null);
    const metadata = data.user!.user_metadata;
    assert.equal(metadata.theme, "light");
    assert.equal(metadata.lang, "fr");
    assert.equal("display_name" in metadata, false, "a null value removes the key");
    assert.equal(metadata.sub, userId, "the identity's claims stay");
    assert.equal(metadata.email_verified, true);

    const fetched = await supabase.auth.getUser();
    assert.deepEqual(fetched.data.user, data.user);
    const [row] = await sql<{ raw_user_meta_data: Record<string, unknown> }[]>`
      select raw_user_meta_data from auth.users where id = ${userId}`;
    assert.deepEqual(row.raw_user_meta_data, metadata);

    // The next access token carries the new metadata, as GoTrue's would.
    const refreshed = await supabase.auth.refreshSession();
    assert.equal(refreshed.error, null);
    const claims = claimsOf(refreshed.data.session!.access_token);
    assert.equal((claims.user_metadata as Record<string, unknown>).theme, "light");
  });
});

Deno.test("updateUser changes the password and signs out the user's other sessions", async () => {
  await withAuth({}, async ({ sql, client, call }) => {
    const email = newEmail("password");
    const here = client();
    const session = await signUp(here, email);
    const elsewhere = client();
    const other = await elsewhere.auth.signInWithPassword({ email, password: PASSWORD });
    assert.equal(other.error, null);

    const same = await here.auth.updateUser({ password: PASSWORD });
    assertAuthError(same.error, 422, "same_password");
    const weak = await here.auth.updateUser({ password: "abc" });
    assertAuthError(weak.error, 422, "weak_password");

    const changed = await here.auth.updateUser({ password: "a brand new password" });
    assert.equal(changed.error, null);
    assert.equal(changed.data.user!.id, session.user.id);
    assert.deepEqual(await sessionIdsOf(sql, session.user.id), [
      claimsOf(session.access_token)
        .session_id as string,
    ]);
    const stale = await refreshWith(call, other.data.session!.refresh_token);
    assert.equal(stale.status, 400);
    assert.equal(stale.body.code, "refresh_token_not_found");

    const old = await client().auth.signInWithPassword({ email, password: PASSWORD });
    assertAuthError(old.error, 400, "invalid_credentials");
    const fresh = await client().auth.signInWithPassword({
      email,
      password: "a brand new password",
    });
    assert.equal(fresh.error, null);
    // The session that changed the password goes on.
    assert.equal((await here.auth.getUser()).error, null);
  });
});

Deno.test("updateUser refuses what needs confirming or an admin, and writes nothing", async () => {
  await withAuth({}, async ({ sql, client, call }) => {
    const supabase = client();
    const email = newEmail("refused");
    const session = await signUp(supabase, email);
    const taken = (await signUp(client())).user.email!;

    const unchanged = await supabase.auth.updateUser({ email, data: { kept: true } });
    assert.equal(unchanged.error, null, "the current address is no change");
    const newAddress = await supabase.auth.updateUser({
      email: newEmail("moved"),
      data: { lost: true },
    });
    assertAuthError(newAddress.error, 400, "email_address_not_authorized");
    const duplicate = await supabase.auth.updateUser({ email: taken });
    assertAuthError(duplicate.error, 422, "email_exists");
    const phone = await supabase.auth.updateUser({ phone: "+15555550123" });
    assertAuthError(phone.error, 422, "phone_provider_disabled");
    const admin = await call("/user", {
      method: "PUT",
      bearer: session.access_token,
      body: { app_metadata: { role: "admin" } },
    });
    assert.equal(admin.status, 403);
    assert.equal(admin.body.code, "not_admin");
    const anonymous = await call("/user", { method: "PUT", body: { data: { a: 1 } } });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.code, "no_authorization");

    const [row] = await sql<{ email: string; raw_user_meta_data: Record<string, unknown> }[]>`
      select email, raw_user_meta_data from auth.users where id = ${session.user.id}`;
    assert.equal(row.email, email);
    assert.equal(row.raw_user_meta_data.kept, true);
    assert.equal("lost" in row.raw_user_meta_data, false);
  });
});
