/**
 * An OAuth 2.1 authorization server for tests and local runs, in front of the MCP server double
 * (mcp_server_double.ts serves it on the same origin): what a third-party MCP server's sign-in
 * looks like over real HTTP.
 *
 *   GET  /.well-known/oauth-protected-resource[/mcp]   RFC 9728 metadata of the MCP endpoint
 *   GET  /.well-known/oauth-authorization-server       RFC 8414 metadata
 *   POST /register    RFC 7591 dynamic client registration (public clients, PKCE)
 *
 * Clients identify themselves by registering (`clientRegistration` "dynamic", the default), by
 * a client-id metadata document ("metadata_document": the client_id is the URL of a JSON
 * document the double fetches over real HTTP on every /authorize and /token, as
 * draft-ietf-oauth-client-id-metadata-document and the MCP authorization spec describe), by
 * either, or by neither (`[]`: a server this project cannot sign in to). A URL client_id must be
 * https with a path; plain http to 127.0.0.0/8 only under `allowLoopbackClientIds` (the tests'
 * servers are plain http on loopback, as `MCP_ALLOW_LOOPBACK` allows for MCP servers). The
 * document must answer 200 without a redirect, be small JSON whose `client_id` equals the URL
 * exactly, list the `redirect_uri` used, and name no client secret; else `invalid_client`
 * (`invalid_request` for an unlisted redirect_uri), never a redirect to an unchecked URI.
 *   GET  /authorize   PKCE S256 only; consents at once (`autoConsent`) or shows a page with an
 *                     "Allow" button (the browser tests click it)
 *   POST /authorize   the button's form: redirects back with `code` and `state`
 *   POST /token       authorization_code (PKCE checked) and refresh_token grants
 *
 * Access tokens live `accessTokenTtlSeconds` (short on purpose; tests change it). Refresh tokens
 * ROTATE: each refresh answers a new one and retires the old; presenting a retired one is reuse,
 * and revokes the whole family — every refresh and access token of that sign-in (RFC 9700,
 * 4.14.2). `refreshes` counts the refreshes that succeeded; `tokenRequests` every token request.
 *
 * Fault points for the kill tests: `holdRefresh` = "before" holds a refresh request before it is
 * looked at (a client that dies meanwhile leaves the grant untouched); "after" rotates first and
 * then holds the answer (a client that dies meanwhile loses the new token: the answer is lost).
 * `refreshArrived` resolves when a held request is waiting; `release()` lets it go.
 */

export interface OAuthDoubleOptions {
  /** Redirect back without a page (API tests); false shows the "Allow" page. */
  autoConsent?: boolean;
  accessTokenTtlSeconds?: number;
  /** How clients identify themselves (default ["dynamic"]); advertised in the RFC 8414 metadata. */
  clientRegistration?: ClientRegistration[];
  /** Accept plain http client-id URLs on 127.0.0.0/8 (the spec wants https). */
  allowLoopbackClientIds?: boolean;
}

export type ClientRegistration = "dynamic" | "metadata_document";

/** What a client-id metadata document may weigh (the MCP spec suggests 5 kB). */
const MAX_CLIENT_DOCUMENT_BYTES = 5 * 1024;

export type HoldPoint = "before" | "after";

interface Family {
  id: string;
  clientId: string;
  revoked: boolean;
  /** The one refresh token of the family that may be used next. */
  current: string;
}

interface Client {
  clientId: string;
  redirectUris: string[];
}

export interface OAuthDouble {
  /** The authorization server's issuer (this origin). */
  issuer: string;
  accessTokenTtlSeconds: number;
  readonly refreshes: number;
  readonly tokenRequests: number;
  /** Every access and refresh token issued (tests look for them where they must not be). */
  readonly issued: string[];
  /** Refresh attempts refused as reuse (each revoked a family). */
  readonly reuses: number;
  /** Client-id metadata documents fetched (one per /authorize and /token with a URL client_id). */
  readonly metadataDocumentFetches: number;
  /** Set to hold the next refresh requests at that point; null: answer at once. */
  holdRefresh: HoldPoint | null;
  /** Resolves when a refresh request is being held. */
  refreshArrived: Promise<void>;
  release(): void;
  /** Whether this bearer token may use the MCP endpoint now. */
  accessAllowed(token: string | null): boolean;
  /** Revokes one access token alone (as a server may, early), its family left as it is. */
  revokeAccessToken(token: string): void;
  /** Answers the authorization server's routes; null when the path is not one of them. */
  handle(request: Request, resourceUrl: string): Promise<Response | null>;
}

const random = (bytes = 24) =>
  btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(bytes))))
    .replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");

async function s256(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return btoa(String.fromCharCode(...new Uint8Array(digest)))
    .replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

const tokenError = (error: string, description: string, status = 400) =>
  Response.json({ error, error_description: description }, {
    status,
    headers: { "cache-control": "no-store" },
  });

export function createOAuthDouble(origin: string, options: OAuthDoubleOptions = {}): OAuthDouble {
  const registration = new Set(options.clientRegistration ?? ["dynamic"]);
  const clients = new Map<string, Client>();
  let metadataDocumentFetches = 0;
  const codes = new Map<
    string,
    { clientId: string; redirectUri: string; challenge: string; resource: string | null }
  >();
  const refreshTokens = new Map<string, Family>();
  const accessTokens = new Map<string, { family: Family; expiresAt: number }>();
  const issued: string[] = [];
  let refreshes = 0;
  let tokenRequests = 0;
  let reuses = 0;
  let arrived = Promise.withResolvers<void>();
  let released = Promise.withResolvers<void>();

  const issue = (family: Family) => {
    const access = random();
    const refresh = random();
    const ttl = double.accessTokenTtlSeconds;
    accessTokens.set(access, { family, expiresAt: Date.now() + ttl * 1000 });
    family.current = refresh;
    refreshTokens.set(refresh, family);
    issued.push(access, refresh);
    return {
      access_token: access,
      token_type: "Bearer",
      expires_in: ttl,
      refresh_token: refresh,
    };
  };

  const hold = async (signal: AbortSignal) => {
    arrived.resolve();
    await Promise.race([
      released.promise,
      new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())),
    ]);
  };

  /** The client this client_id names: registered here, or described by its metadata document. */
  const resolveClient = async (
    clientId: string,
  ): Promise<{ ok: true; client: Client } | { ok: false; message: string }> => {
    const registered = clients.get(clientId);
    if (registered) return { ok: true, client: registered };
    if (!registration.has("metadata_document") || !/^https?:\/\//i.test(clientId)) {
      return { ok: false, message: "unknown client" };
    }
    const url = URL.parse(clientId);
    const loopbackHttp = options.allowLoopbackClientIds === true && url?.protocol === "http:" &&
      url.hostname.startsWith("127.");
    if (
      !url || (url.protocol !== "https:" && !loopbackHttp) || url.pathname === "/" ||
      url.hash || url.username || url.password || /\/\.\.?(\/|$)/.test(clientId)
    ) {
      return { ok: false, message: "a client_id URL must be https with a path" };
    }
    metadataDocumentFetches++;
    const answer = await fetch(clientId, {
      redirect: "manual",
      headers: { accept: "application/json" },
      signal: AbortSignal.timeout(5_000),
    }).catch((error: Error) => error);
    if (answer instanceof Error) {
      return { ok: false, message: `client metadata document: ${answer.message}` };
    }
    const text = await answer.text();
    if (answer.status !== 200) {
      return { ok: false, message: `client metadata document answered ${answer.status}` };
    }
    if (new TextEncoder().encode(text).length > MAX_CLIENT_DOCUMENT_BYTES) {
      return { ok: false, message: "client metadata document too large" };
    }
    let document: Record<string, unknown>;
    try {
      document = JSON.parse(text);
    } catch {
      return { ok: false, message: "client metadata document is not JSON" };
    }
    if (document?.client_id !== clientId) {
      return { ok: false, message: "the document's client_id is not its URL" };
    }
    const uris = document.redirect_uris;
    if (!Array.isArray(uris) || uris.length === 0 || !uris.every((u) => typeof u === "string")) {
      return { ok: false, message: "the document lists no redirect_uris" };
    }
    const method = document.token_endpoint_auth_method ?? "none";
    if (method !== "none" || "client_secret" in document) {
      return { ok: false, message: "a metadata document client is public: no client secret" };
    }
    return { ok: true, client: { clientId, redirectUris: uris } };
  };

  /** RFC 6749 4.1.2.1: a bad client or redirect_uri is told to the user, never redirected to. */
  const authorizeError = (error: string, description: string) =>
    Response.json({ error, error_description: description }, { status: 400 });

  const authorizeRedirect = async (params: URLSearchParams): Promise<Response> => {
    const clientId = params.get("client_id") ?? "";
    const redirectUri = params.get("redirect_uri") ?? "";
    const resolved = await resolveClient(clientId);
    if (!resolved.ok) return authorizeError("invalid_client", resolved.message);
    if (!resolved.client.redirectUris.includes(redirectUri)) {
      return authorizeError("invalid_request", "redirect_uri is not one the client lists");
    }
    const back = new URL(redirectUri);
    const state = params.get("state");
    if (state) back.searchParams.set("state", state);
    const challenge = params.get("code_challenge");
    if (
      params.get("response_type") !== "code" || !challenge ||
      params.get("code_challenge_method") !== "S256"
    ) {
      back.searchParams.set("error", "invalid_request");
      return Response.redirect(back, 302);
    }
    const code = random();
    codes.set(code, { clientId, redirectUri, challenge, resource: params.get("resource") });
    back.searchParams.set("code", code);
    return Response.redirect(back, 302);
  };

  const consentPage = async (params: URLSearchParams) => {
    // A real server names the client on its consent page: the client is checked first.
    const resolved = await resolveClient(params.get("client_id") ?? "");
    if (!resolved.ok) return authorizeError("invalid_client", resolved.message);
    const fields = [...params].map(([name, value]) =>
      `<input type="hidden" name="${escape(name)}" value="${escape(value)}">`
    ).join("");
    return new Response(
      `<!doctype html><title>Sign in to the MCP double</title><h1>Allow access?</h1>
<p>An app asks to use the MCP double's tools as you.</p>
<form method="post" action="/authorize">${fields}<button type="submit">Allow</button></form>`,
      { headers: { "content-type": "text/html; charset=utf-8" } },
    );
  };

  const token = async (request: Request): Promise<Response> => {
    tokenRequests++;
    const form = new URLSearchParams(await request.text());
    const clientId = form.get("client_id") ?? "";
    const resolved = await resolveClient(clientId);
    if (!resolved.ok) return tokenError("invalid_client", resolved.message, 401);
    const grant = form.get("grant_type");
    if (grant === "authorization_code") {
      const code = codes.get(form.get("code") ?? "");
      codes.delete(form.get("code") ?? "");
      if (
        !code || code.clientId !== clientId || code.redirectUri !== form.get("redirect_uri")
      ) {
        return tokenError("invalid_grant", "unknown, used or mismatched code");
      }
      if (await s256(form.get("code_verifier") ?? "") !== code.challenge) {
        return tokenError("invalid_grant", "PKCE verification failed");
      }
      const family: Family = { id: random(), clientId, revoked: false, current: "" };
      return Response.json(issue(family), { headers: { "cache-control": "no-store" } });
    }
    if (grant === "refresh_token") {
      if (double.holdRefresh === "before") {
        await hold(request.signal);
        // Its client died while held: the request is dropped unread, as if never sent.
        if (request.signal.aborted) return tokenError("invalid_request", "client went away");
      }
      const presented = form.get("refresh_token") ?? "";
      const family = refreshTokens.get(presented);
      if (!family || family.clientId !== clientId || family.revoked) {
        return tokenError("invalid_grant", "unknown or revoked refresh token");
      }
      if (family.current !== presented) {
        // Reuse of a rotated token: someone holds a copy. Revoke the whole family.
        reuses++;
        family.revoked = true;
        return tokenError("invalid_grant", "refresh token reused: the grant is revoked");
      }
      refreshes++;
      const answer = issue(family);
      if (double.holdRefresh === "after") await hold(request.signal);
      return Response.json(answer, { headers: { "cache-control": "no-store" } });
    }
    return tokenError("unsupported_grant_type", `grant_type ${grant} is not supported`);
  };

  const double: OAuthDouble = {
    issuer: origin,
    accessTokenTtlSeconds: options.accessTokenTtlSeconds ?? 3600,
    get refreshes() {
      return refreshes;
    },
    get tokenRequests() {
      return tokenRequests;
    },
    issued,
    get reuses() {
      return reuses;
    },
    get metadataDocumentFetches() {
      return metadataDocumentFetches;
    },
    holdRefresh: null,
    get refreshArrived() {
      return arrived.promise;
    },
    release() {
      released.resolve();
      released = Promise.withResolvers<void>();
      arrived = Promise.withResolvers<void>();
    },
    revokeAccessToken(token) {
      accessTokens.delete(token);
    },
    accessAllowed(token) {
      const found = token ? accessTokens.get(token) : undefined;
      return !!found && !found.family.revoked && found.expiresAt > Date.now();
    },
    async handle(request, resourceUrl) {
      const url = new URL(request.url);
      const path = url.pathname;
      if (path.startsWith("/.well-known/oauth-protected-resource")) {
        return Response.json({
          resource: resourceUrl,
          authorization_servers: [origin],
          bearer_methods_supported: ["header"],
        });
      }
      if (path === "/.well-known/oauth-authorization-server") {
        return Response.json({
          issuer: origin,
          authorization_endpoint: `${origin}/authorize`,
          token_endpoint: `${origin}/token`,
          ...(registration.has("dynamic") ? { registration_endpoint: `${origin}/register` } : {}),
          ...(registration.has("metadata_document")
            ? { client_id_metadata_document_supported: true }
            : {}),
          response_types_supported: ["code"],
          grant_types_supported: ["authorization_code", "refresh_token"],
          code_challenge_methods_supported: ["S256"],
          token_endpoint_auth_methods_supported: ["none"],
        });
      }
      if (path === "/register" && request.method === "POST" && registration.has("dynamic")) {
        const body = await request.json().catch(() => null) as
          | { redirect_uris?: unknown }
          | null;
        const uris = body?.redirect_uris;
        if (
          !Array.isArray(uris) || uris.length === 0 || !uris.every((u) => typeof u === "string")
        ) {
          return Response.json({
            error: "invalid_redirect_uri",
            error_description: "redirect_uris is required",
          }, { status: 400 });
        }
        const clientId = `client-${random(9)}`;
        clients.set(clientId, { clientId, redirectUris: uris });
        return Response.json({
          ...body,
          client_id: clientId,
          client_id_issued_at: Math.floor(Date.now() / 1000),
          token_endpoint_auth_method: "none",
        }, { status: 201 });
      }
      if (path === "/authorize" && request.method === "GET") {
        return options.autoConsent === false
          ? await consentPage(url.searchParams)
          : await authorizeRedirect(url.searchParams);
      }
      if (path === "/authorize" && request.method === "POST") {
        return await authorizeRedirect(new URLSearchParams(await request.text()));
      }
      if (path === "/token" && request.method === "POST") return await token(request);
      return null;
    },
  };
  return double;
}

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll('"', "&quot;").replaceAll("<", "&lt;");
}
