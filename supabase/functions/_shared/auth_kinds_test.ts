/**
 * The verifier against every kind of project: a shared-secret HS256 key in the JWKS, the
 * algorithm-confusion tricks, and legacy projects checked through Auth's `GET /user` (a
 * counting Auth double here), with its caches. Also: our verdicts against `@supabase/server`'s
 * on the same tokens, the library we chose not to ship (auth.ts says why).
 */
import assert from "node:assert/strict";
import { verifyCredentials } from "@supabase/server/core";
import { base64url, type JWK, SignJWT } from "jose";
import { type AuthResult, createTokenVerifier, tokenVerifierFromEnv } from "./auth.ts";
import {
  functionJwksOf,
  generateSigningKey,
  issueAccessToken,
  issueLegacyApiKey,
  legacySigningKey,
  type SigningKey,
} from "../../../scripts/standin/signing_keys.ts";
import { LEGACY_ANON_KEY, LEGACY_SERVICE_ROLE_KEY } from "../../../scripts/standin/keys.ts";

const ISSUER = "http://127.0.0.1:54321/auth/v1";
const USER_ID = "6f1c4a52-3a0e-4c1e-9a43-0b3b8f0c2d11";

const ec = await generateSigningKey("ES256");
const oct = await generateSigningKey("HS256");
const legacy = legacySigningKey();
const jwks = functionJwksOf(ec, oct);

function assertFailure(result: AuthResult, code: string, reason: RegExp) {
  assert.equal(result.ok, false, `expected ${code}, got a verified user`);
  if (result.ok) return;
  assert.equal(result.code, code, result.message);
  assert.match(result.message, reason);
}

function tokenFor(key: SigningKey, extra: Partial<Parameters<typeof issueAccessToken>[1]> = {}) {
  return issueAccessToken(key, { userId: USER_ID, issuer: ISSUER, ...extra });
}

function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(new TextDecoder().decode(base64url.decode(token.split(".")[1])));
}

/** A token with any header, signed HS256 with any bytes. */
function hs256With(secret: Uint8Array, header: Record<string, unknown>, claims: object) {
  return new SignJWT({ ...claims }).setProtectedHeader({ ...header, alg: "HS256" }).sign(secret);
}

const unsigned = (claims: object, header: object = { alg: "none", typ: "JWT" }) =>
  `${base64url.encode(JSON.stringify(header))}.${base64url.encode(JSON.stringify(claims))}.`;

Deno.test("an HS256 token verifies against the oct key its kid names", async () => {
  const verifier = createTokenVerifier({ jwks });
  const token = await tokenFor(oct, { email: "ada@example.com" });
  const result = await verifier.verify(token);
  assert.ok(result.ok, result.ok ? "" : result.message);
  assert.equal(result.user.id, USER_ID);
  assert.equal(result.user.email, "ada@example.com");
  // Another secret under the same kid, or a changed claim: the signature tells.
  const impostor = { ...(await generateSigningKey("HS256")), kid: oct.kid };
  const forged = await tokenFor({ ...impostor, privateJwk: { ...impostor.privateJwk } });
  assertFailure(await verifier.verify(forged), "invalid_token", /signature/);
  const [header, , signature] = token.split(".");
  const raised = base64url.encode(JSON.stringify({ ...claimsOf(token), role: "service_role" }));
  assertFailure(
    await verifier.verify(`${header}.${raised}.${signature}`),
    "invalid_token",
    /signature/,
  );
});

Deno.test("no algorithm confusion: each key takes its own algorithm only", async () => {
  const verifier = createTokenVerifier({ jwks });
  const claims = claimsOf(await tokenFor(ec));
  const ecPublic = jwks.keys.find((key) => key.kid === ec.kid)!;
  const publicBytes = new TextEncoder().encode(JSON.stringify(ecPublic));
  // HMAC keyed with the public key's bytes, under the EC key's kid: the classic confusion.
  const confused = await hs256With(publicBytes, { kid: ec.kid, typ: "JWT" }, claims);
  assertFailure(await verifier.verify(confused), "invalid_token", /signs with ES256, not HS256/);
  // An ES256 signature under the oct key's kid.
  const ecUnderOct = await tokenFor({ ...ec, kid: oct.kid });
  assertFailure(await verifier.verify(ecUnderOct), "invalid_token", /signs with HS256, not ES256/);
  // alg:none, with or without a kid; and algorithms Supabase never signs with.
  for (const header of [{ alg: "none" }, { alg: "none", kid: ec.kid }, { alg: "HS512" }]) {
    assertFailure(
      await verifier.verify(unsigned(claims, header)),
      "invalid_token",
      /is not accepted/,
    );
  }
  // A key whose declared alg is not its type's is used for nothing.
  const odd: JWK = { ...oct.privateJwk, kid: "odd", alg: "HS512" };
  const withOdd = createTokenVerifier({ jwks: { keys: [odd] } });
  const underOdd = await hs256With(base64url.decode(oct.privateJwk.k!), { kid: "odd" }, claims);
  assertFailure(await withOdd.verify(underOdd), "invalid_token", /no accepted algorithm/);
});

/** A stand-in for Auth's `GET /user` that counts what it is asked. */
function authDouble(answer: (token: string) => Response | Promise<Response>) {
  const calls: { token: string; apikey: string | null }[] = [];
  const fetchImpl: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    assert.equal(new URL(request.url).pathname, "/auth/v1/user");
    const token = request.headers.get("authorization")!.replace(/^Bearer /, "");
    calls.push({ token, apikey: request.headers.get("apikey") });
    return await answer(token);
  };
  return { calls, fetch: fetchImpl };
}

function legacyVerifier(
  auth: ReturnType<typeof authDouble>,
  extra: { now?: () => number; issuer?: string } = {},
) {
  return createTokenVerifier({
    jwks: { keys: [] },
    authServer: { url: "http://auth.test/auth/v1", apiKey: "sb_publishable_x", fetch: auth.fetch },
    ...extra,
  });
}

const goodUser = () => Response.json({ id: USER_ID, aud: "authenticated", role: "authenticated" });
const refused = () =>
  Response.json({ code: 403, error_code: "bad_jwt", msg: "invalid JWT" }, { status: 403 });

Deno.test("legacy: Auth vouches for a token once, then the cache answers", async () => {
  let clock = Date.now();
  const auth = authDouble(goodUser);
  const verifier = legacyVerifier(auth, { now: () => clock });
  const token = await tokenFor(legacy, { email: "ada@example.com", expiresIn: 3600 });
  const first = await verifier.verify(token);
  assert.ok(first.ok, first.ok ? "" : first.message);
  assert.equal(first.user.id, USER_ID);
  assert.equal(first.user.email, "ada@example.com");
  assert.deepEqual(first.user.claims, claimsOf(token));
  assert.deepEqual(auth.calls, [{ token, apikey: "sb_publishable_x" }]);
  clock += 9 * 60_000;
  assert.ok((await verifier.verify(token)).ok);
  assert.equal(auth.calls.length, 1, "served from the cache");
  clock += 2 * 60_000; // past the cache's 10 minutes: Auth is asked again
  assert.ok((await verifier.verify(token)).ok);
  assert.equal(auth.calls.length, 2);
  // A token that expires sooner is kept only until its exp: then it is expired, without Auth.
  const short = await tokenFor(legacy, { expiresIn: 60, now: Math.floor(clock / 1000) });
  assert.ok((await verifier.verify(short)).ok);
  clock += 61_000;
  assertFailure(await verifier.verify(short), "expired_token", /expired/);
  assert.equal(auth.calls.length, 3);
});

Deno.test("legacy: a forged token costs Auth one request per 30 s, however often sent", async () => {
  let clock = Date.now();
  const auth = authDouble(refused);
  const verifier = legacyVerifier(auth, { now: () => clock });
  const forged = await hs256With(
    new TextEncoder().encode("a-guess-at-the-secret-that-is-long-enough"),
    { typ: "JWT" },
    claimsOf(await tokenFor(legacy)),
  );
  const burst = await Promise.all(Array.from({ length: 20 }, () => verifier.verify(forged)));
  for (const result of burst) {
    assertFailure(result, "invalid_token", /Auth refused it \(403 bad_jwt\)/);
  }
  clock += 29_000;
  assertFailure(await verifier.verify(forged), "invalid_token", /Auth refused it/);
  assert.equal(auth.calls.length, 1);
  clock += 2_000;
  assertFailure(await verifier.verify(forged), "invalid_token", /Auth refused it/);
  assert.equal(auth.calls.length, 2);
});

Deno.test("legacy: what the claims already refuse never reaches Auth", async () => {
  const auth = authDouble(goodUser);
  const verifier = legacyVerifier(auth, { issuer: ISSUER });
  const claims = claimsOf(await tokenFor(legacy));
  const secret = base64url.decode(legacy.privateJwk.k!);
  const cases: [string, string, string, RegExp][] = [
    ["expired", await tokenFor(legacy, { now: 1_000_000_000 }), "expired_token", /expired/],
    [
      "wrong audience",
      await hs256With(secret, {}, { ...claims, aud: "elsewhere" }),
      "invalid_token",
      /"aud"/,
    ],
    [
      "wrong issuer",
      await hs256With(secret, {}, { ...claims, iss: "https://evil.test/auth/v1" }),
      "invalid_token",
      /"iss"/,
    ],
    ["no exp", await hs256With(secret, {}, { ...claims, exp: undefined }), "invalid_token", /exp/],
    ["alg none", unsigned(claims), "invalid_token", /"none" is not accepted/],
    ["ES256 with no key", await tokenFor(ec), "invalid_token", /publishes no signing key/],
    ["garbage", "not-a-jwt", "invalid_token", /not a JWT/],
    // The legacy API keys are JWTs signed with the same secret, but they are no user.
    ["anon key", LEGACY_ANON_KEY, "invalid_token", /exp|"aud"|"sub"/],
  ];
  for (const [label, token, code, reason] of cases) {
    const result = await verifier.verify(token);
    assert.equal(result.ok, false, label);
    if (!result.ok) {
      assert.equal(result.code, code, `${label}: ${result.message}`);
      assert.match(result.message, reason, label);
    }
  }
  assert.equal(auth.calls.length, 0);
});

Deno.test("legacy: Auth down or failing rejects (503 at the edge), and is not cached", async () => {
  let answer: () => Response | Promise<Response> = () =>
    new Response("upstream error", { status: 502 });
  const auth = authDouble(() => answer());
  const verifier = legacyVerifier(auth);
  const token = await tokenFor(legacy);
  await assert.rejects(verifier.verify(token), /Auth answered 502/);
  answer = () => Promise.reject(new TypeError("connection refused"));
  await assert.rejects(verifier.verify(token), /connection refused/);
  answer = () => new Response("slow down", { status: 429 });
  await assert.rejects(verifier.verify(token), /Auth answered 429/);
  answer = goodUser;
  assert.ok((await verifier.verify(token)).ok);
  assert.equal(auth.calls.length, 4);
  // Auth vouching for someone else than the token names is no yes.
  const other = await tokenFor(legacy, { userId: crypto.randomUUID() });
  assertFailure(await verifier.verify(other), "invalid_token", /another user/);
});

Deno.test("with keys in the JWKS a token must name one: Auth is never asked instead", async () => {
  const auth = authDouble(goodUser);
  const verifier = createTokenVerifier({
    jwks,
    authServer: { url: "http://auth.test/auth/v1", apiKey: "k", fetch: auth.fetch },
  });
  assertFailure(await verifier.verify(await tokenFor(legacy)), "invalid_token", /names no key/);
  const unknown = await tokenFor({ ...oct, kid: "retired" });
  assertFailure(await verifier.verify(unknown), "invalid_token", /no signing key has the kid/);
  assert.equal(auth.calls.length, 0);
});

Deno.test("tokenVerifierFromEnv asks the project's Auth with its publishable key", async () => {
  const seen: (string | null)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/auth/v1/.well-known/jwks.json") return Response.json({ keys: [] });
    if (path === "/auth/v1/user") {
      seen.push(request.headers.get("apikey"));
      return goodUser();
    }
    return new Response("not found", { status: 404 });
  });
  const origin = `http://127.0.0.1:${server.addr.port}`;
  const envOf = (values: Record<string, string>) => ({ get: (name: string) => values[name] });
  try {
    const envs: [Record<string, string>, string][] = [
      [{
        SUPABASE_URL: origin,
        SUPABASE_JWKS: '{"keys":[]}',
        SUPABASE_PUBLISHABLE_KEYS: '{"web":"sb_publishable_web","default":"sb_publishable_d"}',
        SUPABASE_ANON_KEY: LEGACY_ANON_KEY,
      }, "sb_publishable_d"],
      // No SUPABASE_JWKS: the (empty) public JWKS is fetched; the legacy anon key is the apikey.
      [{ SUPABASE_URL: `${origin}/`, SUPABASE_ANON_KEY: LEGACY_ANON_KEY }, LEGACY_ANON_KEY],
    ];
    for (const [env, apikey] of envs) {
      const result = await tokenVerifierFromEnv(envOf(env)).verify(await tokenFor(legacy));
      assert.ok(result.ok, result.ok ? "" : result.message);
      assert.equal(seen.at(-1), apikey);
    }
    assert.equal(seen.length, 2);
    // Without a key to send, legacy tokens cannot be checked: refused, Auth not asked.
    const keyless = tokenVerifierFromEnv(envOf({ SUPABASE_URL: origin }));
    assertFailure(await keyless.verify(await tokenFor(legacy)), "invalid_token", /no signing key/);
    assert.equal(seen.length, 2);
    assert.throws(
      () => tokenVerifierFromEnv(envOf({ SUPABASE_URL: origin, SUPABASE_PUBLISHABLE_KEYS: "[" })),
      /SUPABASE_PUBLISHABLE_KEYS/,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("the stand-in's legacy API keys are the CLI's, signed with its legacy secret", async () => {
  assert.equal(await issueLegacyApiKey(legacy, "anon"), LEGACY_ANON_KEY);
  assert.equal(await issueLegacyApiKey(legacy, "service_role"), LEGACY_SERVICE_ROLE_KEY);
});

Deno.test("our verdicts match @supabase/server's on keys both can check", async () => {
  const ours = createTokenVerifier({ jwks, cacheSize: 0 });
  const env = { url: "http://127.0.0.1:1", jwks, publishableKeys: {}, secretKeys: {} };
  const theirs = async (token: string) => {
    const { data } = await verifyCredentials({ token, apikey: null }, {
      auth: "user",
      env,
      audience: "authenticated",
    });
    return data !== null;
  };
  const claims = claimsOf(await tokenFor(ec));
  const ecPublic = new TextEncoder().encode(JSON.stringify(jwks.keys[0]));
  const tokens: [string, string, boolean][] = [
    ["ES256", await tokenFor(ec), true],
    ["HS256 oct", await tokenFor(oct), true],
    ["expired", await tokenFor(ec, { now: 1_000_000_000 }), false],
    ["unknown kid", await tokenFor({ ...ec, kid: "gone" }), false],
    ["legacy, no kid", await tokenFor(legacy), false],
    ["HS256 under the EC kid", await hs256With(ecPublic, { kid: ec.kid }, claims), false],
    ["ES256 under the oct kid", await tokenFor({ ...ec, kid: oct.kid }), false],
    ["alg none", unsigned(claims, { alg: "none", kid: ec.kid }), false],
  ];
  for (const [label, token, accepted] of tokens) {
    assert.equal((await ours.verify(token)).ok, accepted, `ours: ${label}`);
    assert.equal(await theirs(token), accepted, `@supabase/server: ${label}`);
  }
});
