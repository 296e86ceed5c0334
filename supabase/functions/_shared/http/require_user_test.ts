import assert from "node:assert/strict";
import type { AuthResult, TokenVerifier } from "../auth.ts";
import { createFunctionApp } from "./function_app.ts";
import { requireUser, type RequireUserOptions, type UserEnv } from "./require_user.ts";

const GOOD = "good-token";
const EXPIRED = "expired-token";

/** Accepts only GOOD; throws for "down" as a verifier does when the JWKS cannot be fetched. */
const fakeVerifier: TokenVerifier = {
  verify(token: string): Promise<AuthResult> {
    if (token === "down") return Promise.reject(new Error("JWKS fetch failed"));
    if (token === GOOD) {
      return Promise.resolve({
        ok: true,
        user: { id: "user-1", role: "authenticated", claims: { sub: "user-1" } as never },
      });
    }
    if (token === "service" || token === "postgres") {
      // Signed by the project's keys, but not a user's token.
      return Promise.resolve({
        ok: true,
        user: {
          id: "user-1",
          role: token === "service" ? "service_role" : "postgres",
          claims: {
            sub: "user-1",
            role: token === "service" ? "service_role" : "postgres",
          } as never,
        },
      });
    }
    if (token === EXPIRED) {
      return Promise.resolve({
        ok: false,
        code: "expired_token",
        message: 'The "exp" claim is in the past',
      });
    }
    return Promise.resolve({ ok: false, code: "invalid_token", message: "Invalid access token" });
  },
};

function appWith(options: Omit<RequireUserOptions, "verifier">) {
  const app = createFunctionApp<UserEnv>("fn");
  app.get(
    "/",
    requireUser({ verifier: fakeVerifier, ...options }),
    (c) =>
      c.json({
        user: c.var.user.id,
        token: c.var.accessToken,
        protocol: c.var.tokenProtocol ?? null,
      }),
  );
  return app;
}

async function call(
  app: ReturnType<typeof appWith>,
  path: string,
  headers: Record<string, string> = {},
) {
  const response = await app.fetch(
    new Request(`http://localhost/fn${path.replace(/^\//, "")}`, { headers }),
  );
  return { response, body: await response.json() };
}

Deno.test("requireUser: a bearer token reaches the handler as the verified user", async () => {
  const { response, body } = await call(appWith({}), "/", { Authorization: `Bearer ${GOOD}` });
  assert.equal(response.status, 200);
  assert.deepEqual(body, { user: "user-1", token: GOOD, protocol: null });
});

Deno.test("requireUser: the subprotocol and ?jwt= count only where the function allows them", async () => {
  const strict = appWith({});
  const lenient = appWith({ subprotocolPrefix: "jwt-", queryParameter: true });
  const viaProtocol = { "Sec-WebSocket-Protocol": `agent, jwt-${GOOD}` };

  assert.equal((await call(strict, "/", viaProtocol)).response.status, 401);
  assert.equal((await call(strict, `/?jwt=${GOOD}`)).response.status, 401);

  const protocol = await call(lenient, "/", viaProtocol);
  assert.equal(protocol.response.status, 200);
  assert.equal(protocol.body.protocol, `jwt-${GOOD}`, "the entry to echo back");
  const query = await call(lenient, `/?jwt=${GOOD}`);
  assert.equal(query.response.status, 200);
  assert.equal(query.body.protocol, null);
  // A bare prefix is no token.
  assert.equal(
    (await call(lenient, "/", { "Sec-WebSocket-Protocol": "jwt-" })).response.status,
    401,
  );
});

Deno.test("requireUser: a missing token is 401 with a challenge naming the ways to send one", async () => {
  const { response, body } = await call(
    appWith({ subprotocolPrefix: "jwt-", queryParameter: true }),
    "/",
  );
  assert.equal(response.status, 401);
  assert.equal(response.headers.get("WWW-Authenticate"), "Bearer");
  assert.equal(body.error.code, "missing_token");
  assert.match(body.error.message, /Authorization: Bearer/);
  assert.match(body.error.message, /"jwt-<token>"/);
  assert.match(body.error.message, /\?jwt=/);
});

Deno.test("requireUser: a bad token is 401 invalid_token or expired_token, with RFC 6750 and 9728 in the challenge", async () => {
  const metadata = "https://example.test/functions/v1/fn/.well-known/oauth-protected-resource";
  const app = appWith({ resourceMetadataUrl: metadata });

  const missing = await call(app, "/");
  assert.equal(
    missing.response.headers.get("WWW-Authenticate"),
    `Bearer resource_metadata="${metadata}"`,
  );

  const expired = await call(app, "/", { Authorization: `Bearer ${EXPIRED}` });
  assert.equal(expired.response.status, 401);
  assert.equal(expired.body.error.code, "expired_token");
  assert.equal(
    expired.response.headers.get("WWW-Authenticate"),
    `Bearer error="invalid_token", error_description="The 'exp' claim is in the past", ` +
      `resource_metadata="${metadata}"`,
  );

  const junk = await call(app, "/", { Authorization: "Bearer junk" });
  assert.equal(junk.response.status, 401);
  assert.equal(junk.body.error.code, "invalid_token");
});

Deno.test("requireUser: keys that cannot be had are 503 auth_unavailable, not the token's fault", async () => {
  const originalError = console.error;
  console.error = () => {};
  try {
    const { response, body } = await call(appWith({}), "/", { Authorization: "Bearer down" });
    assert.equal(response.status, 503);
    assert.equal(body.error.code, "auth_unavailable");
    assert.equal(response.headers.get("WWW-Authenticate"), null);
  } finally {
    console.error = originalError;
  }
});

Deno.test("requireUser: a valid token of any role but authenticated is 401 (no RLS bypass)", async () => {
  for (const token of ["service", "postgres"]) {
    const { response, body } = await call(appWith({}), "/", { Authorization: `Bearer ${token}` });
    assert.equal(response.status, 401, token);
    assert.equal(body.error.code, "invalid_token");
    assert.match(body.error.message, /signed-in user/);
  }
});
