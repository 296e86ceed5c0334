import assert from "node:assert/strict";
import { importJWK, SignJWT } from "jose";
import { bearerToken, createTokenVerifier } from "./token_verifier.ts";
import { generateSigningKey, issueAccessToken, jwksOf } from "./signing_keys.ts";

const key = await generateSigningKey();
const issuer = "http://127.0.0.1/auth/v1";
const verifier = createTokenVerifier({ jwks: jwksOf(key) });

Deno.test("token verifier: accepts the stand-in's ES256 tokens and gives their claims", async () => {
  const userId = crypto.randomUUID();
  const token = await issueAccessToken(key, { userId, issuer, email: "a@example.com" });
  const verdict = await verifier.verify(token);
  assert.ok(verdict.ok, JSON.stringify(verdict));
  assert.equal(verdict.user.id, userId);
  assert.equal(verdict.user.role, "authenticated");
  assert.equal(verdict.user.claims.email, "a@example.com");
});

Deno.test("token verifier: refuses expired, foreign, wrong-audience and HS256 tokens", async () => {
  const userId = crypto.randomUUID();
  const expired = await issueAccessToken(key, {
    userId,
    issuer,
    now: Math.floor(Date.now() / 1000) - 7200,
  });
  assert.deepEqual(await verifier.verify(expired), {
    ok: false,
    code: "expired_token",
    message: "The access token has expired",
  });

  const foreign = await issueAccessToken(await generateSigningKey(), { userId, issuer });
  assert.equal(((await verifier.verify(foreign)) as { code: string }).code, "invalid_token");

  const privateKey = await importJWK(key.privateJwk, "ES256");
  const now = Math.floor(Date.now() / 1000);
  const wrongAudience = await new SignJWT({ sub: userId, role: "authenticated", aud: "other" })
    .setProtectedHeader({ alg: "ES256", kid: key.kid })
    .setExpirationTime(now + 60)
    .sign(privateKey);
  assert.equal(((await verifier.verify(wrongAudience)) as { code: string }).code, "invalid_token");

  const hs256 = await new SignJWT({ sub: userId, role: "authenticated", aud: "authenticated" })
    .setProtectedHeader({ alg: "HS256", kid: key.kid })
    .setExpirationTime(now + 60)
    .sign(new TextEncoder().encode("a shared secret of at least 32 bytes!"));
  assert.equal(((await verifier.verify(hs256)) as { code: string }).code, "invalid_token");

  assert.equal(((await verifier.verify("")) as { code: string }).code, "missing_token");
  assert.equal(((await verifier.verify("not.a.jwt")) as { code: string }).code, "invalid_token");
});

Deno.test("token verifier: checks the issuer only when given one", async () => {
  const token = await issueAccessToken(key, { userId: crypto.randomUUID(), issuer });
  const strict = createTokenVerifier({ jwks: jwksOf(key), issuer: "http://elsewhere/auth/v1" });
  assert.equal((await strict.verify(token)).ok, false);
  assert.equal((await verifier.verify(token)).ok, true);
});

Deno.test("bearerToken reads `Authorization: Bearer <token>`, scheme case-insensitive", () => {
  const request = (value?: string) =>
    new Request("http://x/", { headers: value ? { Authorization: value } : {} });
  assert.equal(bearerToken(request("Bearer abc")), "abc");
  assert.equal(bearerToken(request("bearer  abc ")), "abc");
  assert.equal(bearerToken(request("Basic abc")), undefined);
  assert.equal(bearerToken(request("Bearer a b")), undefined);
  assert.equal(bearerToken(request()), undefined);
});
