/**
 * Every surface (history, MCP, agent) against every kind of project (es256, hs256, legacy) and
 * every kind of bad token: each answered 401 with a stable code, never a 500. The apps run in
 * process, each with the verifier its function builds from the environment Supabase would give
 * it; a legacy project's Auth is a counting double that checks tokens with the stand-in's own
 * (independent) verifier. The end-to-end chat per mode is auth_modes_stack_test.ts.
 */
import assert from "node:assert/strict";
import { importJWK, SignJWT } from "jose";
import { createAgentApp } from "../functions/_shared/agent/app.ts";
import { tokenVerifierFromEnv } from "../functions/_shared/auth.ts";
import { createHistoryApp } from "../functions/_shared/history/app.ts";
import { createMcpApp } from "../functions/_shared/mcp/app.ts";
import { createToolRegistry } from "../functions/_shared/tools/registry.ts";
import { LEGACY_ANON_KEY, LOCAL_PUBLISHABLE_KEY } from "../../scripts/standin/keys.ts";
import {
  functionJwksOf,
  generateSigningKey,
  issueAccessToken,
  type JwtMode,
  serverKeysOf,
  type SigningKey,
  signingKeyFor,
} from "../../scripts/standin/signing_keys.ts";
import { createTokenVerifier as standInVerifier } from "../../scripts/standin/token_verifier.ts";
import { connectTestDatabase } from "./support/database.ts";

const ISSUER = "https://project-ref.supabase.test/auth/v1";
const USER_ID = "0e9c52a8-55a5-4c43-9d5c-7a1f6f0d2c11";

interface Surface {
  name: string;
  /** A request carrying `token` (if any) that needs a signed-in user. */
  request(token?: string): Request;
  /** What a good token gets: the status past sign-in. */
  passed: number;
  fetch(request: Request): Response | Promise<Response>;
  close(): Promise<void>;
}

/** Auth's `/auth/v1`: an empty public JWKS and `GET /user`, counting, and breakable. */
function startAuthDouble(key: SigningKey) {
  const verifier = standInVerifier({ jwks: serverKeysOf(key) });
  const state = { userCalls: 0, down: false };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/auth/v1/.well-known/jwks.json") return Response.json({ keys: [] });
    if (path !== "/auth/v1/user") return new Response("not found", { status: 404 });
    state.userCalls++;
    if (state.down) return new Response("upstream connect error", { status: 503 });
    if (request.headers.get("apikey") !== LOCAL_PUBLISHABLE_KEY) {
      return Response.json({ message: "Invalid API key" }, { status: 401 });
    }
    const token = request.headers.get("authorization")?.replace(/^Bearer /, "") ?? "";
    const verdict = await verifier.verify(token);
    if (!verdict.ok) {
      return Response.json({ code: 403, error_code: "bad_jwt", msg: verdict.message }, {
        status: 403,
      });
    }
    return Response.json({ id: verdict.user.id, aud: "authenticated", role: verdict.user.role });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, state, close: () => server.shutdown() };
}

/** The environment Supabase gives a function in a project of this kind. */
function functionEnv(mode: JwtMode, key: SigningKey, supabaseUrl: string) {
  const values: Record<string, string> = {
    SUPABASE_URL: supabaseUrl,
    SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: LOCAL_PUBLISHABLE_KEY }),
    AUTH_ISSUER_URL: ISSUER,
  };
  if (mode === "legacy") values.SUPABASE_ANON_KEY = LEGACY_ANON_KEY;
  else values.SUPABASE_JWKS = JSON.stringify(functionJwksOf(key));
  return { get: (name: string) => values[name] };
}

function surfaces(
  env: ReturnType<typeof functionEnv>,
  sql: ReturnType<typeof connectTestDatabase>,
) {
  const history = createHistoryApp({ sql, verifier: tokenVerifierFromEnv(env) });
  const mcp = createMcpApp({
    sql,
    verifier: tokenVerifierFromEnv(env),
    tools: createToolRegistry({ workflow: {} }),
  });
  const agent = createAgentApp({
    sql,
    verifier: tokenVerifierFromEnv(env),
    llm: { baseUrl: "http://127.0.0.1:9", model: "unused", fallbackModels: [] },
    tools: createToolRegistry({ workflow: {} }),
  });
  const bearer = (token?: string): Record<string, string> =>
    token ? { Authorization: `Bearer ${token}` } : {};
  const list: Surface[] = [
    {
      name: "history",
      passed: 200,
      request: (token) =>
        new Request("http://localhost/history/sessions", { headers: bearer(token) }),
      fetch: history.fetch,
      close: () => Promise.resolve(),
    },
    {
      name: "mcp",
      passed: 200,
      request: (token) =>
        new Request("http://localhost/mcp", {
          method: "POST",
          headers: {
            ...bearer(token),
            "Content-Type": "application/json",
            Accept: "application/json, text/event-stream",
          },
          body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
        }),
      fetch: mcp.fetch,
      close: () => Promise.resolve(),
    },
    {
      name: "agent",
      // A plain GET that passed sign-in is told to upgrade; the token rides as the subprotocol.
      passed: 426,
      request: (token) =>
        new Request("http://localhost/agent", {
          headers: token ? { "Sec-WebSocket-Protocol": `jwt-${token}` } : {},
        }),
      fetch: agent.fetch,
      close: () => agent.close(),
    },
  ];
  return list;
}

async function signed(key: SigningKey, claims: object, header: object = {}): Promise<string> {
  return await new SignJWT({ ...claims })
    .setProtectedHeader({ alg: key.alg, ...(key.kid ? { kid: key.kid } : {}), ...header })
    .sign(await importJWK(key.privateJwk, key.alg));
}

const b64 = (value: object) =>
  btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

/** Every bad token, as this kind of project would meet it, with the code it must get. */
async function badTokens(mode: JwtMode, key: SigningKey): Promise<[string, string?, string?][]> {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: USER_ID,
    role: "authenticated",
    aud: "authenticated",
    iss: ISSUER,
    iat: now,
    exp: now + 3600,
  };
  const good = await signed(key, claims);
  const [header, , signature] = good.split(".");
  const otherEc = await generateSigningKey("ES256");
  const ecPublicBytes = new TextEncoder().encode(JSON.stringify(otherEc.publicJwk));
  const confusion = mode === "hs256"
    // An ES256 signature under the oct key's kid.
    ? await signed({ ...otherEc, kid: key.kid }, claims)
    // HMAC keyed with an EC public key's bytes, under the EC key's kid (or none: legacy).
    : await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", ...(key.kid ? { kid: key.kid } : {}) })
      .sign(ecPublicBytes);
  return [
    [
      "expired",
      await signed(key, { ...claims, iat: now - 7200, exp: now - 3600 }),
      "expired_token",
    ],
    ["tampered", `${header}.${b64({ ...claims, role: "service_role" })}.${signature}`],
    ["wrong audience", await signed(key, { ...claims, aud: "someone-else" })],
    // Validly signed, but for a role that would bypass RLS: user-facing functions refuse it.
    ["service_role token", await signed(key, { ...claims, role: "service_role" })],
    ["postgres role token", await signed(key, { ...claims, role: "postgres" })],
    ["wrong issuer", await signed(key, { ...claims, iss: "https://evil.test/auth/v1" })],
    ["unknown kid", await signed(key, claims, { kid: "retired-key" })],
    ["algorithm confusion", confusion],
    ["alg none", `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`],
    ["alg none with kid", `${b64({ alg: "none", kid: key.kid ?? "x" })}.${b64(claims)}.`],
    ["garbage", "not-a-jwt"],
    ["missing", undefined, "missing_token"],
  ];
}

async function expectError(
  surface: Surface,
  token: string | undefined,
  status: number,
  code: string,
  label: string,
) {
  const response = await surface.fetch(surface.request(token));
  const text = await response.text();
  assert.equal(response.status, status, `${surface.name}, ${label}: ${text}`);
  assert.equal(JSON.parse(text).error.code, code, `${surface.name}, ${label}`);
  if (status === 401) {
    assert.match(response.headers.get("WWW-Authenticate") ?? "", /^Bearer/, label);
  }
}

for (const mode of ["es256", "hs256", "legacy"] as const) {
  Deno.test(`${mode}: every surface takes good tokens and refuses each bad one with 401`, async () => {
    const key = await signingKeyFor(mode);
    const auth = startAuthDouble(key);
    const sql = connectTestDatabase(4);
    const all = surfaces(functionEnv(mode, key, auth.url), sql);
    try {
      // The token's user exists, as Auth's own tokens' users do (a deleted one's gets 401).
      await sql`insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
          raw_app_meta_data, raw_user_meta_data, created_at, updated_at, confirmation_token,
          recovery_token, email_change_token_new, email_change)
        values ('00000000-0000-0000-0000-000000000000', ${USER_ID}, 'authenticated',
          'authenticated', 'matrix@example.test', '', '{}', '{}', now(), now(), '', '', '', '')
        on conflict (id) do nothing`;
      const token = await issueAccessToken(key, { userId: USER_ID, issuer: ISSUER });
      for (const surface of all) {
        const response = await surface.fetch(surface.request(token));
        const text = await response.text();
        assert.equal(response.status, surface.passed, `${surface.name}: ${text}`);
      }
      const goodCalls = auth.state.userCalls;
      assert.equal(goodCalls, mode === "legacy" ? all.length : 0, "Auth asked once per isolate");

      const cases = await badTokens(mode, key);
      for (const surface of all) {
        for (const [label, bad, code = "invalid_token"] of cases) {
          await expectError(surface, bad, 401, code, label);
        }
      }
      // Legacy tokens Auth must judge (those whose claims pass): tampered, unknown kid,
      // confusion, and the two validly signed for other roles. Sent again, each surface
      // answers from its cache.
      const asked = auth.state.userCalls - goodCalls;
      assert.equal(asked, mode === "legacy" ? 5 * all.length : 0);
      for (const surface of all) {
        for (const [label, bad, code = "invalid_token"] of cases) {
          await expectError(surface, bad, 401, code, `${label}, again`);
        }
        assert.equal((await surface.fetch(surface.request(token))).status, surface.passed);
      }
      assert.equal(auth.state.userCalls - goodCalls, asked, "refusals and successes are cached");

      if (mode === "legacy") {
        // Auth down: a token it has not judged yet cannot be judged now. 503, never 401 or 500.
        auth.state.down = true;
        const fresh = await issueAccessToken(key, { userId: USER_ID, issuer: ISSUER });
        for (const surface of all) {
          await expectError(surface, fresh, 503, "auth_unavailable", "Auth down");
          // What Auth already vouched for still works while it is down.
          const cached = await surface.fetch(surface.request(token));
          await cached.body?.cancel();
          assert.equal(cached.status, surface.passed, `${surface.name}: cached while Auth is down`);
        }
      }
    } finally {
      for (const surface of all) await surface.close();
      await sql.end();
      await auth.close();
    }
  });
}
