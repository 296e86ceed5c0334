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
