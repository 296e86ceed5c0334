/**
 * How the function names itself to an authorization server (`beginSignIn` against the OAuth
 * double over real HTTP): by its client-id metadata document when the server takes them and the
 * document's URL is one it can fetch, else by registering, else not at all.
 */
import assert from "node:assert/strict";
import { startMcpServerDouble } from "../../../../scripts/standin/mcp_server_double.ts";
import { beginSignIn, clientMetadataDocument, type OAuthSettings } from "./oauth.ts";
import type { RemoteSettings } from "./remote.ts";

const LOCAL: RemoteSettings = {
  policy: { allowLoopback: true, resolveDns: (h, t) => Deno.resolveDns(h, t) },
  requestTimeoutMs: 2_000,
};
const settings = (redirectUrl: string): OAuthSettings => ({
  redirectUrl,
  flowTtlMs: 60_000,
  refreshMarginMs: 1_000,
  leaseMs: 2_000,
});

Deno.test("oauth: the client-id metadata document's URL is the client_id, beside the callback", () => {
  const document = clientMetadataDocument(
    "https://p.example/functions/v1/connections/oauth/callback",
  );
  assert.equal(
    document.client_id,
    "https://p.example/functions/v1/connections/oauth/client-metadata.json",
  );
  assert.deepEqual(document.redirect_uris, [
    "https://p.example/functions/v1/connections/oauth/callback",
  ]);
});

Deno.test("oauth: a server that takes only metadata documents gets the https document URL; a plain http one off loopback is oauth_unsupported", async () => {
  const double = startMcpServerDouble({ oauth: { clientRegistration: ["metadata_document"] } });
  try {
    const hosted = settings("https://p.example/functions/v1/connections/oauth/callback");
    const begun = await beginSignIn(double.url, LOCAL, hosted, "s".repeat(43));
    assert.ok(begun.ok, JSON.stringify(begun));
    const authorize = new URL(begun.value.authorizationUrl);
    assert.equal(
      authorize.searchParams.get("client_id"),
      "https://p.example/functions/v1/connections/oauth/client-metadata.json",
    );
    assert.equal(begun.value.flow.client.client_id, authorize.searchParams.get("client_id"));

    const plain = settings("http://p.example/functions/v1/connections/oauth/callback");
    const refused = await beginSignIn(double.url, LOCAL, plain, "s".repeat(43));
    assert.ok(!refused.ok);
    assert.equal(refused.error.code, "oauth_unsupported");
    assert.match(refused.error.message, /https/);
  } finally {
    await double.close();
  }
});
