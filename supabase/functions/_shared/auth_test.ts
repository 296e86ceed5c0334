import assert from "node:assert/strict";
import { importJWK, SignJWT } from "jose";
import { type AuthResult, createTokenVerifier, tokenVerifierFromEnv } from "./auth.ts";
import { bearerToken } from "./http/require_user.ts";
import {
  generateSigningKey,
  issueAccessToken,
  jwksOf,
  loadOrCreateSigningKey,
  type SigningKey,
} from "../../../scripts/standin/signing_keys.ts";

const ISSUER = "http://127.0.0.1:54321/auth/v1";
const USER_ID = "6f1c4a52-3a0e-4c1e-9a43-0b3b8f0c2d11";

function envOf(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

/** `reason` pins why it failed, so a test cannot pass by failing for some other cause. */
function assertFailure(result: AuthResult, code: string, reason?: RegExp) {
  assert.equal(result.ok, false, `expected ${code}, got a verified user`);
  if (result.ok) return;
  assert.equal(result.code, code, result.message);
  if (reason) assert.match(result.message, reason);
}

function base64url(value: unknown): string {
  return btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function payloadOf(token: string): Record<string, unknown> {
  const part = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
  return JSON.parse(atob(part));
}

const key = await generateSigningKey();
const verifier = createTokenVerifier({ jwks: jwksOf(key) });

function tokenFor(
  signingKey: SigningKey = key,
  extra: Partial<Parameters<typeof issueAccessToken>[1]> = {},
) {
  return issueAccessToken(signingKey, {
    userId: USER_ID,
    email: "ada@example.com",
    issuer: ISSUER,
    ...extra,
  });
}

Deno.test("a token from the local issuer verifies with its claims", async () => {
  const sessionId = crypto.randomUUID();
  const token = await tokenFor(key, { sessionId, userMetadata: { name: "Ada" } });
  const result = await verifier.verify(token);
  assert.ok(result.ok, result.ok ? "" : result.message);
  assert.equal(result.user.id, USER_ID);
  assert.equal(result.user.email, "ada@example.com");
  assert.equal(result.user.role, "authenticated");
  assert.equal(result.user.claims.sub, USER_ID);
  assert.equal(result.user.claims.aud, "authenticated");
  assert.equal(result.user.claims.iss, ISSUER);
  assert.equal(result.user.claims.session_id, sessionId);
  assert.deepEqual(result.user.claims.user_metadata, { name: "Ada" });
});

Deno.test("issued tokens carry Supabase's header and claim set", async () => {
  const now = Math.floor(Date.now() / 1000);
  const token = await tokenFor(key, { now, expiresIn: 600, role: "service_role" });
  const header = JSON.parse(atob(token.split(".")[0].replaceAll("-", "+").replaceAll("_", "/")));
  assert.deepEqual(header, { alg: "ES256", kid: key.kid, typ: "JWT" });
  const claims = payloadOf(token);
  assert.deepEqual(Object.keys(claims).sort(), [
    "aal",
    "amr",
    "app_metadata",
    "aud",
    "email",
    "exp",
    "iat",
    "is_anonymous",
    "iss",
    "phone",
    "role",
    "session_id",
    "sub",
    "user_metadata",
  ]);
  assert.equal(claims.iat, now);
  assert.equal(claims.exp, now + 600);
  assert.equal(claims.role, "service_role");
  assert.equal(claims.aal, "aal1");
  assert.deepEqual(claims.amr, [{ method: "password", timestamp: now }]);
  assert.equal(claims.is_anonymous, false);
  assert.equal(claims.phone, "");
  assert.equal(typeof claims.session_id, "string");
});

Deno.test("an anonymous user's token has no email", async () => {
  const token = await issueAccessToken(key, { userId: USER_ID, issuer: ISSUER, isAnonymous: true });
  const result = await verifier.verify(token);
  assert.ok(result.ok);
  assert.equal(result.user.email, undefined);
  assert.equal(result.user.claims.is_anonymous, true);
});

Deno.test("jwksOf publishes only public parts", async () => {
  const other = await generateSigningKey();
  const jwks = jwksOf(key, other);
  assert.equal(jwks.keys.length, 2);
  for (const [index, jwk] of jwks.keys.entries()) {
    assert.equal(jwk.d, undefined);
    assert.equal(jwk.kid, [key, other][index].kid);
    assert.equal(jwk.alg, "ES256");
    assert.equal(jwk.use, "sig");
    assert.equal(jwk.kty, "EC");
  }
  assert.notEqual(key.kid, other.kid);
});

Deno.test("an expired token is expired_token", async () => {
  const longAgo = Math.floor(Date.now() / 1000) - 7200;
  assertFailure(await verifier.verify(await tokenFor(key, { now: longAgo })), "expired_token");
});

Deno.test("a token signed by a key outside the JWKS is invalid", async () => {
  const stranger = await generateSigningKey();
  assertFailure(
    await verifier.verify(await tokenFor(stranger)),
    "invalid_token",
    /no signing key has the kid/,
  );
});

Deno.test("a token signed by another key under a published kid is invalid", async () => {
  const impostor = { ...(await generateSigningKey()), kid: key.kid };
  assertFailure(await verifier.verify(await tokenFor(impostor)), "invalid_token", /signature/);
});

Deno.test("a token with a tampered payload is invalid", async () => {
  const token = await tokenFor();
  const [header, , signature] = token.split(".");
  const forged = base64url({ ...payloadOf(token), role: "service_role" });
  assertFailure(
    await verifier.verify(`${header}.${forged}.${signature}`),
    "invalid_token",
    /signature/,
  );
});

Deno.test("a token for another audience is invalid", async () => {
  const token = await new SignJWT({ role: "authenticated" })
    .setProtectedHeader({ alg: "ES256", kid: key.kid, typ: "JWT" })
    .setSubject(USER_ID)
    .setAudience("someone-else")
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(await importPrivate(key));
  assertFailure(await verifier.verify(token), "invalid_token", /"aud"/);
  const lenient = createTokenVerifier({ jwks: jwksOf(key), audience: "someone-else" });
  assert.ok((await lenient.verify(token)).ok);
});

Deno.test("the issuer is checked when configured", async () => {
  const strict = createTokenVerifier({ jwks: jwksOf(key), issuer: ISSUER });
  assert.ok((await strict.verify(await tokenFor())).ok);
  const elsewhere = await tokenFor(key, { issuer: "https://evil.example/auth/v1" });
  assertFailure(await strict.verify(elsewhere), "invalid_token", /"iss"/);
  assert.ok((await verifier.verify(elsewhere)).ok, "no issuer configured: any issuer passes");
});

Deno.test("an unsigned alg:none token is invalid", async () => {
  const claims = payloadOf(await tokenFor());
  const unsigned = `${base64url({ alg: "none", typ: "JWT" })}.${base64url(claims)}.`;
  assertFailure(
    await verifier.verify(unsigned),
    "invalid_token",
    /algorithm "none" is not accepted/,
  );
});

Deno.test("an HS256 token naming an EC key's kid is invalid", async () => {
  const secret = new TextEncoder().encode("super-secret-jwt-token-with-at-least-32-characters");
  const token = await new SignJWT(payloadOf(await tokenFor()))
    .setProtectedHeader({ alg: "HS256", kid: key.kid, typ: "JWT" })
    .sign(secret);
  assertFailure(await verifier.verify(token), "invalid_token", /signs with ES256, not HS256/);
});

Deno.test("garbage is invalid and nothing is missing_token", async () => {
  assertFailure(await verifier.verify("not-a-jwt"), "invalid_token");
  assertFailure(await verifier.verify("a.b.c"), "invalid_token");
  assertFailure(await verifier.verify(""), "missing_token");
});

Deno.test("a token without sub or role is invalid", async () => {
  const privateKey = await importPrivate(key);
  const withoutSub = await new SignJWT({ role: "authenticated" })
    .setProtectedHeader({ alg: "ES256", kid: key.kid })
    .setAudience("authenticated")
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(privateKey);
  assertFailure(await verifier.verify(withoutSub), "invalid_token", /"sub"/);
  const withoutRole = await new SignJWT({})
    .setProtectedHeader({ alg: "ES256", kid: key.kid })
    .setSubject(USER_ID)
    .setAudience("authenticated")
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(privateKey);
  assertFailure(await verifier.verify(withoutRole), "invalid_token", /"role"/);
});

Deno.test("a verified token is remembered until its exp, then expires like any other", async () => {
  const issuedAt = 1_900_000_000;
  let clockMs = issuedAt * 1000;
  const cached = createTokenVerifier({ jwks: jwksOf(key), now: () => clockMs });
  const token = await tokenFor(key, { now: issuedAt, expiresIn: 3600 });

  const first = await cached.verify(token);
  assert.ok(first.ok);
  clockMs += 60_000;
  const again = await cached.verify(token);
  assert.ok(again.ok);
  // The same claims object: served from the cache, not verified a second time.
  assert.equal(again.user.claims, first.user.claims);
  assert.ok(Object.isFrozen(again.user.claims));
  assert.ok(Object.isFrozen(again.user.claims.app_metadata));

  // Past the cache's own age limit, the signature is checked again: a new object.
  clockMs = (issuedAt + 11 * 60) * 1000;
  const rechecked = await cached.verify(token);
  assert.ok(rechecked.ok);
  assert.notEqual(rechecked.user.claims, first.user.claims);

  // At exp the token is expired, cached or not (jose: valid while exp > now).
  clockMs = (issuedAt + 3600) * 1000;
  assertFailure(await cached.verify(token), "expired_token");
});

Deno.test("the cache is keyed by the whole token: a forged signature is still refused", async () => {
  const cached = createTokenVerifier({ jwks: jwksOf(key) });
  const token = await tokenFor(key);
  assert.ok((await cached.verify(token)).ok);
  const [header, payload] = token.split(".");
  const foreignSignature = (await tokenFor(await generateSigningKey())).split(".")[2];
  const forged = `${header}.${payload}.${foreignSignature}`;
  assertFailure(await cached.verify(forged), "invalid_token", /signature/i);
  const tampered = `${header}.${base64url({ ...payloadOf(token), role: "service_role" })}.${
    token.split(".")[2]
  }`;
  assertFailure(await cached.verify(tampered), "invalid_token", /signature/i);
});

Deno.test("the cache holds at most cacheSize tokens, least recently used out first", async () => {
  const cached = createTokenVerifier({ jwks: jwksOf(key), cacheSize: 2 });
  const [a, b, c] = await Promise.all([tokenFor(), tokenFor(), tokenFor()]);
  const claimsOf = async (token: string) => {
    const result = await cached.verify(token);
    assert.ok(result.ok);
    return result.user.claims;
  };
  const aClaims = await claimsOf(a);
  const bClaims = await claimsOf(b);
  assert.equal(await claimsOf(a), aClaims); // a is now the most recently used
  await claimsOf(c); // evicts b
  assert.equal(await claimsOf(a), aClaims);
  assert.notEqual(await claimsOf(b), bClaims);

  const uncached = createTokenVerifier({ jwks: jwksOf(key), cacheSize: 0 });
  const once = await uncached.verify(a);
  const twice = await uncached.verify(a);
  assert.ok(once.ok && twice.ok);
  assert.notEqual(once.user.claims, twice.user.claims);
});

Deno.test("bearerToken reads the Authorization header", () => {
  const withHeader = (value?: string) =>
    new Request(
      "http://localhost/",
      value === undefined ? {} : { headers: { Authorization: value } },
    );
  assert.equal(bearerToken(withHeader("Bearer abc.def.ghi")), "abc.def.ghi");
  assert.equal(bearerToken(withHeader("bearer abc.def.ghi")), "abc.def.ghi");
  assert.equal(bearerToken(withHeader("BEARER   abc.def.ghi  ")), "abc.def.ghi");
  assert.equal(bearerToken(withHeader()), undefined);
  assert.equal(bearerToken(withHeader("Basic dXNlcjpwYXNz")), undefined);
  assert.equal(bearerToken(withHeader("Bearer")), undefined);
  assert.equal(bearerToken(withHeader("Bearer a b")), undefined);
  assert.equal(bearerToken(withHeader("Bearerabc")), undefined);
});

Deno.test("tokenVerifierFromEnv takes SUPABASE_JWKS as an object or an array", async () => {
  const token = await tokenFor();
  const asObject = tokenVerifierFromEnv(envOf({ SUPABASE_JWKS: JSON.stringify(jwksOf(key)) }));
  assert.ok((await asObject.verify(token)).ok);
  const asArray = tokenVerifierFromEnv(
    envOf({ SUPABASE_JWKS: JSON.stringify(jwksOf(key).keys), SUPABASE_URL: "http://unused" }),
  );
  assert.ok((await asArray.verify(token)).ok);
  const other = tokenVerifierFromEnv(
    envOf({ SUPABASE_JWKS: JSON.stringify(jwksOf(await generateSigningKey())) }),
  );
  assertFailure(await other.verify(token), "invalid_token", /no signing key has the kid/);
});

Deno.test("tokenVerifierFromEnv checks the issuer only when AUTH_ISSUER_URL is set", async () => {
  const jwks = JSON.stringify(jwksOf(key));
  const token = await tokenFor();
  const strict = tokenVerifierFromEnv(
    envOf({ SUPABASE_JWKS: jwks, AUTH_ISSUER_URL: "https://project.supabase.co/auth/v1" }),
  );
  assertFailure(await strict.verify(token), "invalid_token", /"iss"/);
  const matching = tokenVerifierFromEnv(
    envOf({ SUPABASE_JWKS: jwks, AUTH_ISSUER_URL: ISSUER }),
  );
  assert.ok((await matching.verify(token)).ok);
});

Deno.test("tokenVerifierFromEnv refuses to start without keys or with bad SUPABASE_JWKS", () => {
  assert.throws(() => tokenVerifierFromEnv(envOf({})), /SUPABASE_JWKS/);
  assert.throws(() => tokenVerifierFromEnv(envOf({ SUPABASE_JWKS: "{not json" })), /valid JSON/);
  assert.throws(() => tokenVerifierFromEnv(envOf({ SUPABASE_JWKS: '{"k":1}' })), /SUPABASE_JWKS/);
});

Deno.test("tokenVerifierFromEnv fetches the JWKS from a URL", async () => {
  const requested: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    requested.push(path);
    if (path === "/auth/v1/.well-known/jwks.json" || path === "/keys") {
      return Response.json(jwksOf(key));
    }
    if (path === "/broken") return new Response("upstream down", { status: 503 });
    return new Response("not found", { status: 404 });
  });
  try {
    const origin = `http://127.0.0.1:${server.addr.port}`;
    const token = await tokenFor();

    const fromUrl = tokenVerifierFromEnv(envOf({ SUPABASE_JWKS_URL: `${origin}/keys` }));
    const result = await fromUrl.verify(token);
    assert.ok(result.ok, result.ok ? "" : result.message);
    assert.equal(result.user.id, USER_ID);

    const fromSupabaseUrl = tokenVerifierFromEnv(envOf({ SUPABASE_URL: origin }));
    assert.ok((await fromSupabaseUrl.verify(token)).ok);
    assertFailure(
      await fromSupabaseUrl.verify(await tokenFor(await generateSigningKey())),
      "invalid_token",
      /no signing key has the kid/,
    );
    // No keys to be had is the server's fault: it must not pass for a bad token.
    const broken = tokenVerifierFromEnv(envOf({ SUPABASE_JWKS_URL: `${origin}/broken` }));
    await assert.rejects(broken.verify(token), /Expected 200 OK/);

    assert.ok(requested.includes("/keys"));
    assert.ok(requested.includes("/auth/v1/.well-known/jwks.json"));
  } finally {
    await server.shutdown();
  }
});

Deno.test("loadOrCreateSigningKey keeps one key across restarts, private to its owner", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/auth/signing_key.json`;
    const first = await loadOrCreateSigningKey(path);
    const second = await loadOrCreateSigningKey(path);
    assert.equal(second.kid, first.kid);
    assert.deepEqual(second.publicJwk, first.publicJwk);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const token = await issueAccessToken(first, { userId: USER_ID, issuer: ISSUER });
    const result = await createTokenVerifier({ jwks: jwksOf(second) }).verify(token);
    assert.ok(result.ok);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function importPrivate(signingKey: SigningKey) {
  return importJWK(signingKey.privateJwk, "ES256");
}
