/**
 * Signing in to a user's MCP server with OAuth 2.1, as the MCP authorization spec describes it,
 * with the MCP SDK's client helpers and only through `guardedFetch` (every URL checked, also the
 * authorization server's):
 *
 * 1. an unauthenticated `initialize` answers 401 with `WWW-Authenticate: Bearer
 *    resource_metadata=…`; its RFC 9728 metadata names the authorization server, whose RFC 8414
 *    metadata names the endpoints;
 * 2. the function names itself as a client, by the spec's preference: a client-id metadata
 *    document (its URL is the client_id; the authorization server fetches it from the
 *    `connections` function) when the authorization server says it takes them, else dynamic
 *    registration (RFC 7591) when it offers that, else it cannot be signed in to;
 * 3. the authorization URL carries a PKCE S256 challenge, `state` and `resource`;
 * 4. the callback's code is exchanged for tokens with the verifier; later, the refresh token
 *    for new ones (the server may rotate it: the answer's refresh token replaces the old).
 *
 * Failures come back as values with a stable code, never as a throw.
 */
// @ts-types="@modelcontextprotocol/sdk/client/auth"
import {
  discoverOAuthServerInfo,
  exchangeAuthorization,
  extractWWWAuthenticateParams,
  isHttpsUrl,
  refreshAuthorization,
  registerClient,
  startAuthorization,
} from "@modelcontextprotocol/sdk/client/auth.js";
// @ts-types="@modelcontextprotocol/sdk/server/auth/errors"
import { InvalidGrantError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
// @ts-types="@modelcontextprotocol/sdk/shared/auth"
import type {
  AuthorizationServerMetadata,
  OAuthClientInformationMixed,
  OAuthClientMetadata,
} from "@modelcontextprotocol/sdk/shared/auth.js";
import { z } from "zod";
import type { OAuthCredential } from "./credentials.ts";
import { DEFAULT_EGRESS_LIMITS, guardedFetch } from "./egress.ts";
import type { Remote, RemoteError, RemoteSettings } from "./remote.ts";
import { checkServerUrl, type UrlPolicy } from "./url_safety.ts";

/** Secret until the callback: sealed in `mcp_oauth_flows.secret`. */
export const FlowSecret = z.object({
  code_verifier: z.string(),
  authorization_server: z.string(),
  metadata: z.record(z.string(), z.unknown()),
  client: z.looseObject({ client_id: z.string(), client_secret: z.string().optional() }),
  resource: z.string(),
});
export type FlowSecret = z.infer<typeof FlowSecret>;

export interface OAuthSettings {
  /**
   * This function's callback, registered as the redirect URI. Its client-id metadata document
   * is served beside it (`clientMetadataUrl`).
   */
  redirectUrl: string;
  /** How long a sign-in may take, from the authorization URL to the callback. */
  flowTtlMs: number;
  /** How long before its expiry an access token is refreshed. */
  refreshMarginMs: number;
  /** How long one isolate holds the refresh lease: longer than a token request may take. */
  leaseMs: number;
}

/** A token set as the token endpoint answered it; `expiresAt` null when it said nothing. */
export interface TokenSet {
  credential: OAuthCredential;
  expiresAt: Date | null;
}

/**
 * The URL of this function's client-id metadata document, which is also its client_id wherever
 * it is used: beside the callback (`…/connections/oauth/client-metadata.json`), so one setting
 * (`SUPABASE_URL` or `MCP_OAUTH_REDIRECT_URL`) names both on the public host.
 */
export function clientMetadataUrl(redirectUrl: string): string {
  return new URL("client-metadata.json", redirectUrl).href;
}

/** What this function says about itself as an OAuth client: registered (RFC 7591) or served. */
function clientMetadata(redirectUrl: string): OAuthClientMetadata {
  return {
    client_name: "Supabase agent",
    redirect_uris: [redirectUrl],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "none",
  };
}

/**
 * The client-id metadata document (draft-ietf-oauth-client-id-metadata-document) an
 * authorization server fetches: a public client whose `client_id` is the document's own URL.
 */
export function clientMetadataDocument(
  redirectUrl: string,
): OAuthClientMetadata & { client_id: string } {
  return { client_id: clientMetadataUrl(redirectUrl), ...clientMetadata(redirectUrl) };
}

/**
 * Whether an authorization server can take this URL as a client_id: https with a path (the
 * SDK's check, as the spec requires), or plain http to 127.0.0.0/8 where `MCP_ALLOW_LOOPBACK`
 * allows loopback servers at all (the local stand-in: its authorization server doubles accept it
 * only under the same kind of option).
 */
function usableAsClientId(url: string, policy: UrlPolicy): boolean {
  if (isHttpsUrl(url)) return true;
  const parsed = URL.parse(url);
  return policy.allowLoopback && parsed?.protocol === "http:" &&
    /^127\.\d+\.\d+\.\d+$/.test(parsed.hostname) && parsed.pathname !== "/";
}

/**
 * Who this function is at the authorization server, by the MCP spec's order: pre-registered
 * client information (none: the servers are the users' own) → a client-id metadata document
 * when `client_id_metadata_document_supported` → dynamic registration when there is a
 * `registration_endpoint` → none, and the server cannot be signed in to.
 */
async function clientAt(
  authorizationServerUrl: string,
  metadata: AuthorizationServerMetadata,
  oauth: OAuthSettings,
  policy: UrlPolicy,
  fetchFn: typeof fetch,
): Promise<Remote<OAuthClientInformationMixed>> {
  const documentUrl = clientMetadataUrl(oauth.redirectUrl);
  const takesDocuments = metadata.client_id_metadata_document_supported === true;
  if (takesDocuments && usableAsClientId(documentUrl, policy)) {
    return { ok: true, value: { client_id: documentUrl } };
  }
  if (metadata.registration_endpoint) {
    const client = await registerClient(authorizationServerUrl, {
      metadata,
      clientMetadata: clientMetadata(oauth.redirectUrl),
      fetchFn,
    });
    return { ok: true, value: client };
  }
  return failure(
    "oauth_unsupported",
    takesDocuments
      ? `the authorization server takes only client-id metadata documents, and this ` +
        `function's (${documentUrl}) is not an https URL it can fetch: set SUPABASE_URL ` +
        `(or MCP_OAUTH_REDIRECT_URL) to the project's public https URL`
      : "the authorization server offers neither client-id metadata documents nor dynamic " +
        "client registration (RFC 7591)",
  );
}

const INITIALIZE = JSON.stringify({
  jsonrpc: "2.0",
  id: 0,
  method: "initialize",
  params: {
    protocolVersion: "2025-06-18",
    capabilities: {},
    clientInfo: { name: "supabase-agent-hub", version: "1.0.0" },
  },
});

/**
 * Discovers the server's authorization server, names this function there (`clientAt`), and
 * answers the authorization URL the user is to open and what the callback will need.
 */
export async function beginSignIn(
  url: string,
  settings: RemoteSettings,
  oauth: OAuthSettings,
  state: string,
): Promise<Remote<{ authorizationUrl: string; flow: FlowSecret }>> {
  const egress = guardedFetch(
    settings.policy,
    settings.limits ?? DEFAULT_EGRESS_LIMITS,
    settings.fetch,
  );
  try {
    const probe = await egress.fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: INITIALIZE,
    });
    await probe.body?.cancel();
    if (probe.status !== 401) {
      return failure(
        "oauth_unsupported",
        `the server answered ${probe.status} without sign-in, not 401: connect it without auth`,
      );
    }
    const { resourceMetadataUrl } = extractWWWAuthenticateParams(probe);
    const info = await discoverOAuthServerInfo(url, {
      ...(resourceMetadataUrl ? { resourceMetadataUrl } : {}),
      fetchFn: egress.fetch,
    });
    const metadata = info.authorizationServerMetadata;
    if (!metadata) {
      return failure("oauth_unsupported", "the server names no authorization server metadata");
    }
    const named = await clientAt(
      info.authorizationServerUrl,
      metadata,
      oauth,
      settings.policy,
      egress.fetch,
    );
    if (!named.ok) return named;
    const client = named.value;
    const resource = info.resourceMetadata?.resource ?? url;
    const started = await startAuthorization(info.authorizationServerUrl, {
      metadata,
      clientInformation: client,
      redirectUrl: oauth.redirectUrl,
      state,
      resource,
    });
    // The user's browser opens it: it must be a web page, never `javascript:` or a private host.
    const checked = await checkServerUrl(started.authorizationUrl.href, settings.policy);
    if (!checked.ok) return failure(checked.code, `authorization URL: ${checked.message}`);
    return {
      ok: true,
      value: {
        authorizationUrl: started.authorizationUrl.href,
        flow: {
          code_verifier: started.codeVerifier,
          authorization_server: info.authorizationServerUrl,
          metadata: metadata as Record<string, unknown>,
          client: { client_id: client.client_id, client_secret: client.client_secret },
          resource,
        },
      },
    };
  } catch (error) {
    return { ok: false, error: egress.trip ?? oauthFailure(error) };
  }
}

/** The callback's code exchanged for tokens (PKCE: with the flow's verifier). */
export async function finishSignIn(
  flow: FlowSecret,
  code: string,
  settings: RemoteSettings,
  oauth: OAuthSettings,
): Promise<Remote<TokenSet>> {
  const egress = guardedFetch(
    settings.policy,
    settings.limits ?? DEFAULT_EGRESS_LIMITS,
    settings.fetch,
  );
  try {
    const tokens = await exchangeAuthorization(flow.authorization_server, {
      // deno-lint-ignore no-explicit-any
      metadata: flow.metadata as any,
      clientInformation: flow.client,
      authorizationCode: code,
      codeVerifier: flow.code_verifier,
      redirectUri: oauth.redirectUrl,
      resource: flow.resource,
      fetchFn: egress.fetch,
    });
    return {
      ok: true,
      value: tokenSet({
        kind: "oauth",
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        authorization_server: flow.authorization_server,
        metadata: flow.metadata,
        client: flow.client,
        resource: flow.resource,
      }, tokens.expires_in),
    };
  } catch (error) {
    return { ok: false, error: egress.trip ?? oauthFailure(error) };
  }
}

export type RefreshError = RemoteError | { code: "invalid_grant"; message: string };

/**
 * New tokens for a refresh token. `invalid_grant`: the grant is gone (revoked, or the refresh
 * token was already used: a rotating server then revokes the whole family) — sign in again.
 */
export async function refreshTokens(
  credential: OAuthCredential,
  settings: RemoteSettings,
  timeoutMs: number,
): Promise<{ ok: true; value: TokenSet } | { ok: false; error: RefreshError }> {
  if (!credential.refresh_token) {
    return { ok: false, error: { code: "invalid_grant", message: "no refresh token was issued" } };
  }
  const egress = guardedFetch(
    settings.policy,
    settings.limits ?? DEFAULT_EGRESS_LIMITS,
    settings.fetch,
  );
  // The whole request ends well within the lease, so no second isolate refreshes beside it.
  const fetchFn: typeof fetch = (input, init) =>
    egress.fetch(input, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  try {
    const tokens = await refreshAuthorization(credential.authorization_server, {
      // deno-lint-ignore no-explicit-any
      metadata: credential.metadata as any,
      clientInformation: credential.client,
      refreshToken: credential.refresh_token,
      resource: credential.resource,
      fetchFn,
    });
    return {
      ok: true,
      value: tokenSet({
        ...credential,
        access_token: tokens.access_token,
        // A rotating server answers a new one; refreshAuthorization keeps the old otherwise.
        refresh_token: tokens.refresh_token,
      }, tokens.expires_in),
    };
  } catch (error) {
    if (error instanceof InvalidGrantError) {
      return { ok: false, error: { code: "invalid_grant", message: error.message } };
    }
    return { ok: false, error: egress.trip ?? oauthFailure(error) };
  }
}

function tokenSet(credential: OAuthCredential, expiresIn: number | undefined): TokenSet {
  return {
    credential,
    expiresAt: expiresIn === undefined ? null : new Date(Date.now() + expiresIn * 1000),
  };
}

function failure(code: RemoteError["code"], message: string): { ok: false; error: RemoteError } {
  return { ok: false, error: { code, message } };
}

function oauthFailure(error: unknown): RemoteError {
  const message = error instanceof Error ? error.message : String(error);
  return { code: "oauth_failed", message: `sign-in failed: ${message.slice(0, 300)}` };
}

/**
 * From the environment: the callback (`MCP_OAUTH_REDIRECT_URL`, else the connections function
 * under `SUPABASE_URL`) and the refresh timing (`refreshTimingFromEnv`). Undefined without a
 * callback URL: signing in is then not offered.
 */
export function oauthSettingsFromEnv(
  env: Pick<typeof Deno.env, "get"> = Deno.env,
): OAuthSettings | undefined {
  const base = env.get("SUPABASE_URL");
  const redirectUrl = env.get("MCP_OAUTH_REDIRECT_URL") ||
    (base ? `${base.replace(/\/$/, "")}/functions/v1/connections/oauth/callback` : "");
  if (!redirectUrl) return undefined;
  return { redirectUrl, flowTtlMs: 10 * 60_000, ...refreshTimingFromEnv(env) };
}

/**
 * `MCP_OAUTH_REFRESH_MARGIN_MS` (default 60000): how long before expiry a token is refreshed;
 * `MCP_OAUTH_LEASE_MS` (default 30000): how long one isolate may take over a refresh.
 */
export function refreshTimingFromEnv(
  env: Pick<typeof Deno.env, "get"> = Deno.env,
): Pick<OAuthSettings, "refreshMarginMs" | "leaseMs"> {
  const number = (name: string, fallback: number) => {
    const value = Number(env.get(name) ?? "");
    return Number.isInteger(value) && value > 0 ? value : fallback;
  };
  return {
    refreshMarginMs: number("MCP_OAUTH_REFRESH_MARGIN_MS", 60_000),
    leaseMs: number("MCP_OAUTH_LEASE_MS", 30_000),
  };
}
