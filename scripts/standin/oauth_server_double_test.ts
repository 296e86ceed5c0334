/**
 * The MCP double's authorization server, driven by the MCP SDK's own OAuth client helpers over
 * real HTTP: discovery from the 401, registration, PKCE, rotation, and family revocation when a
 * rotated refresh token comes back.
 */
import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/auth"
import {
  discoverOAuthServerInfo,
  exchangeAuthorization,
  extractWWWAuthenticateParams,
  refreshAuthorization,
  registerClient,
  startAuthorization,
} from "@modelcontextprotocol/sdk/client/auth.js";
import { startMcpServerDouble } from "./mcp_server_double.ts";

const INITIALIZE = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: {
    protocolVersion: "2025-06-18",
    capabilities: {},
    clientInfo: { name: "t", version: "1" },
  },
};

const post = (url: string, token?: string) =>
  fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(INITIALIZE),
  });

Deno.test("oauth double: discovery, registration, PKCE, rotation; a reused refresh token revokes the family", async () => {
  const double = startMcpServerDouble({ oauth: true });
  try {
    const denied = await post(double.url);
    await denied.body?.cancel();
    assert.equal(denied.status, 401);
    const { resourceMetadataUrl } = extractWWWAuthenticateParams(denied);
    assert.ok(resourceMetadataUrl);

    const info = await discoverOAuthServerInfo(double.url, { resourceMetadataUrl });
    assert.equal(info.resourceMetadata?.resource, double.url);
    const metadata = info.authorizationServerMetadata!;
    const redirectUrl = "http://127.0.0.1:1/callback";
    const client = await registerClient(info.authorizationServerUrl, {
      metadata,
      clientMetadata: { redirect_uris: [redirectUrl], token_endpoint_auth_method: "none" },
    });
    const { authorizationUrl, codeVerifier } = await startAuthorization(
      info.authorizationServerUrl,
      { metadata, clientInformation: client, redirectUrl, state: "s1", resource: double.url },
    );
    const consent = await fetch(authorizationUrl, { redirect: "manual" });
    const back = new URL(consent.headers.get("location")!);
    assert.equal(back.searchParams.get("state"), "s1");
    const code = back.searchParams.get("code")!;

    // A wrong verifier is refused (PKCE), and the code is then spent.
    await assert.rejects(
      exchangeAuthorization(info.authorizationServerUrl, {
        metadata,
        clientInformation: client,
        authorizationCode: code,
        codeVerifier: "x".repeat(43),
        redirectUri: redirectUrl,
      }),
      /PKCE|invalid_grant/,
    );
    const again = await startAuthorization(info.authorizationServerUrl, {
      metadata,
      clientInformation: client,
      redirectUrl,
      state: "s2",
    });
    const code2 = new URL(
      (await fetch(again.authorizationUrl, { redirect: "manual" })).headers.get("location")!,
    ).searchParams.get("code")!;
    const tokens = await exchangeAuthorization(info.authorizationServerUrl, {
      metadata,
      clientInformation: client,
      authorizationCode: code2,
      codeVerifier: again.codeVerifier,
      redirectUri: redirectUrl,
    });
    assert.ok(tokens.refresh_token && tokens.expires_in);
    const ok = await post(double.url, tokens.access_token);
    await ok.body?.cancel();
    assert.equal(ok.status, 200);
    assert.ok(codeVerifier);

    const rotated = await refreshAuthorization(info.authorizationServerUrl, {
      metadata,
      clientInformation: client,
      refreshToken: tokens.refresh_token!,
    });
    assert.notEqual(rotated.refresh_token, tokens.refresh_token);
    assert.equal(double.oauth!.refreshes, 1);

    // The old refresh token again: reuse. The family is revoked, the new tokens with it.
    await assert.rejects(
      refreshAuthorization(info.authorizationServerUrl, {
        metadata,
        clientInformation: client,
        refreshToken: tokens.refresh_token!,
      }),
      /reused/,
    );
    assert.equal(double.oauth!.reuses, 1);
    const revoked = await post(double.url, rotated.access_token);
    await revoked.body?.cancel();
    assert.equal(revoked.status, 401);
    await assert.rejects(
      refreshAuthorization(info.authorizationServerUrl, {
        metadata,
        clientInformation: client,
        refreshToken: rotated.refresh_token!,
      }),
      /revoked/,
    );
    assert.equal(double.oauth!.refreshes, 1);
  } finally {
    await double.close();
  }
});

/** A client's metadata document on a loopback server of the test's own; `document` may change. */
function serveClientDocument() {
  let answer: (url: string) => Response = () => new Response(null, { status: 404 });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request) => answer(request.url),
  );
  const origin = `http://127.0.0.1:${server.addr.port}`;
  return {
    clientId: `${origin}/oauth/client-metadata.json`,
    redirectUrl: `${origin}/oauth/callback`,
    serve(document: (url: string) => Response) {
      answer = document;
    },
    close: () => server.shutdown(),
  };
}

Deno.test("oauth double, client-id metadata documents: the URL client_id's document is fetched and checked on /authorize and /token", async () => {
  const double = startMcpServerDouble({
    oauth: { clientRegistration: ["metadata_document"], allowLoopbackClientIds: true },
  });
  const client = serveClientDocument();
  const good = (overrides: Record<string, unknown> = {}) => (url: string) =>
    Response.json({
      client_id: url,
      client_name: "Test client",
      redirect_uris: [client.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      ...overrides,
    });
  try {
    const info = await discoverOAuthServerInfo(double.url);
    const metadata = info.authorizationServerMetadata!;
    assert.equal(metadata.client_id_metadata_document_supported, true);
    assert.equal(metadata.registration_endpoint, undefined);
    const register = await fetch(`${double.origin}/register`, { method: "POST", body: "{}" });
    await register.body?.cancel();
    assert.equal(register.status, 404);

    const clientInformation = { client_id: client.clientId };
    const authorize = async (redirectUrl = client.redirectUrl) => {
      const started = await startAuthorization(info.authorizationServerUrl, {
        metadata,
        clientInformation,
        redirectUrl,
        state: "s",
      });
      const answer = await fetch(started.authorizationUrl, { redirect: "manual" });
      return { answer, codeVerifier: started.codeVerifier };
    };
    const refused = async (redirectUrl?: string) => {
      const { answer } = await authorize(redirectUrl);
      const body = await answer.json();
      assert.equal(answer.status, 400, JSON.stringify(body));
      return body.error;
    };

    client.serve(good());
    const { answer, codeVerifier } = await authorize();
    assert.equal(answer.status, 302);
    const code = new URL(answer.headers.get("location")!).searchParams.get("code")!;
    const tokens = await exchangeAuthorization(info.authorizationServerUrl, {
      metadata,
      clientInformation,
      authorizationCode: code,
      codeVerifier,
      redirectUri: client.redirectUrl,
    });
    const refreshed = await refreshAuthorization(info.authorizationServerUrl, {
      metadata,
      clientInformation,
      refreshToken: tokens.refresh_token!,
    });
    assert.ok(refreshed.access_token);
    assert.equal(double.oauth!.refreshes, 1);
    assert.equal(double.oauth!.metadataDocumentFetches, 3, "on /authorize and on each /token");

    // A redirect_uri the document does not list; a document naming another client_id; one
    // with a client secret; one behind a redirect; one that is not there: each refused.
    assert.equal(await refused(`${client.redirectUrl}/elsewhere`), "invalid_request");
    client.serve(good({ client_id: "https://other.example/client.json" }));
    assert.equal(await refused(), "invalid_client");
    await assert.rejects(
      refreshAuthorization(info.authorizationServerUrl, {
        metadata,
        clientInformation,
        refreshToken: refreshed.refresh_token!,
      }),
      /client_id/,
    );
    client.serve(good({ token_endpoint_auth_method: "client_secret_basic" }));
    assert.equal(await refused(), "invalid_client");
    client.serve(() =>
      new Response(null, { status: 302, headers: { location: client.redirectUrl } })
    );
    assert.equal(await refused(), "invalid_client");
    client.serve(() => new Response("no", { status: 404 }));
    assert.equal(await refused(), "invalid_client");
  } finally {
    await client.close();
    await double.close();
  }
});

Deno.test("oauth double, client-id metadata documents: plain http client ids only under allowLoopbackClientIds; registered ids only with registration", async () => {
  const strict = startMcpServerDouble({ oauth: { clientRegistration: ["metadata_document"] } });
  const neither = startMcpServerDouble({ oauth: { clientRegistration: [] } });
  const client = serveClientDocument();
  client.serve((url) =>
    Response.json({ client_id: url, client_name: "t", redirect_uris: [client.redirectUrl] })
  );
  try {
    const info = await discoverOAuthServerInfo(strict.url);
    const started = await startAuthorization(info.authorizationServerUrl, {
      metadata: info.authorizationServerMetadata!,
      clientInformation: { client_id: client.clientId },
      redirectUrl: client.redirectUrl,
    });
    const answer = await fetch(started.authorizationUrl, { redirect: "manual" });
    const body = await answer.json();
    assert.equal(answer.status, 400);
    assert.equal(body.error, "invalid_client");
    assert.match(body.error_description, /https/);
    assert.equal(strict.oauth!.metadataDocumentFetches, 0, "not fetched at all");

    const plain = (await discoverOAuthServerInfo(neither.url)).authorizationServerMetadata!;
    assert.equal(plain.registration_endpoint, undefined);
    assert.equal(plain.client_id_metadata_document_supported, undefined);
  } finally {
    await client.close();
    await strict.close();
    await neither.close();
  }
});
