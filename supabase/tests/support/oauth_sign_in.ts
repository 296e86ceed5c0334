/**
 * Connects an OAuth-protected MCP server (the double with `oauth`) for a user the way the web
 * app does, over real HTTP: `POST /connections` on a connections app served here, the
 * authorization URL opened (the double consents at once), the redirect followed to the callback.
 */
import { createTokenVerifier } from "../../functions/_shared/auth.ts";
import { createConnectionsApp } from "../../functions/_shared/mcp_servers/app.ts";
import { importCredentialKey } from "../../functions/_shared/mcp_servers/credentials.ts";
import { jwksOf, type SigningKey } from "../../../scripts/standin/signing_keys.ts";
import { connect } from "../../functions/_shared/db/client.ts";
import { connectFunctionDatabase } from "./database.ts";

/** The key the test's workers seal and open credentials with (`MCP_CREDENTIALS_KEY`). */
export const TEST_CREDENTIALS_KEY = btoa(
  String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))),
);

const LOOPBACK = {
  allowLoopback: true,
  resolveDns: (host: string, type: "A" | "AAAA") => Deno.resolveDns(host, type),
};

/** Signs `token`'s user in to the server at `url` as `slug`; returns the stored server's id. */
export async function signInWithOAuth(
  key: SigningKey,
  token: string,
  url: string,
  slug: string,
  /** The database the connections app uses (default: the tests' function database). */
  databaseUrl?: string,
): Promise<string> {
  const sql = databaseUrl ? connect(databaseUrl, { max: 2 }) : connectFunctionDatabase(2);
  let handle: (request: Request) => Response | Promise<Response> = () => new Response(null);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request) => handle(request),
  );
  const origin = `http://127.0.0.1:${server.addr.port}`;
  try {
    handle = createConnectionsApp({
      sql,
      verifier: createTokenVerifier({ jwks: jwksOf(key) }),
      remote: { policy: LOOPBACK, requestTimeoutMs: 5_000 },
      credentialKey: await importCredentialKey(TEST_CREDENTIALS_KEY),
      oauth: {
        redirectUrl: `${origin}/connections/oauth/callback`,
        flowTtlMs: 60_000,
        refreshMarginMs: 1_000,
        leaseMs: 2_000,
      },
    }).fetch;
    const started = await fetch(`${origin}/connections`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ url, slug, auth: { type: "oauth" } }),
    });
    const body = await started.json();
    if (started.status !== 202) throw new Error(`sign-in start: ${JSON.stringify(body)}`);
    const consent = await fetch(body.sign_in.authorization_url, { redirect: "manual" });
    await consent.body?.cancel();
    const callback = await fetch(consent.headers.get("location")!);
    const page = await callback.text();
    const id = page.match(/"server_id":"([0-9a-f-]{36})"/)?.[1];
    if (callback.status !== 200 || !id) throw new Error(`callback: ${page}`);
    return id;
  } finally {
    await server.shutdown();
    await sql.end();
  }
}
