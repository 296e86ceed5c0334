/**
 * The `connections` Edge Function: the MCP servers a user connects for the agent.
 *
 *   GET    /connections       the caller's servers, each with its tools, status and warnings
 *   POST   /connections       connect one: {url, slug, display_name?, auth?}; the server is
 *                             reached, its tools listed and checked, then everything is stored
 *                             in one transaction (nothing half-way) → 201 with the server
 *                             With {"auth":{"type":"oauth"}}: 202 with the authorization URL
 *                             to open (a popup); the server is stored by the callback
 *   GET    /connections/oauth/callback   the authorization server sends the user back here
 *                             (the only route without a token: bound to its flow by `state`,
 *                             once, before it expires); a small page tells the web app
 *   GET    /connections/oauth/client-metadata.json   this function's client-id metadata
 *                             document (no token, cacheable): its URL is the client_id an
 *                             authorization server that takes such documents fetches it by
 *   POST   /connections/:id/sign-in   an OAuth server that needs a new sign-in: 202 as above
 *   POST   /connections/:id/refresh   its tools listed again (after tools/list_changed)
 *   DELETE /connections/:id   204; its tools and credential go with it
 *
 * `auth`: {"type":"none"} (default), {"type":"bearer","token"}, {"type":"header","name",
 * "value"} or {"type":"oauth"}; the secret (the tokens) is encrypted in the function
 * (credentials.ts) and never shown again.
 * Errors: 401 without a token, 409 conflict (slug in use), 422 invalid_request (names the
 * field) or url_not_allowed (not https, a private address…), 502 server_unreachable /
 * not_an_mcp_server / server_auth_failed / server_response_too_large, 504 server_timeout,
 * 503 not_configured (a credential given but MCP_CREDENTIALS_KEY not set), 429 rate_limited.
 */
import type { Context } from "hono";
import { methodNotAllowed } from "hono/method-not-allowed";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import type { TokenVerifier } from "../auth.ts";
import type { Sql } from "../db/client.ts";
import { fieldPath } from "../field_path.ts";
import { handleMethodNotAllowed, HttpError } from "../http/errors.ts";
import type { HttpErrorCode } from "../http/error_codes.ts";
import { createFunctionApp } from "../http/function_app.ts";
import { addOperatorRoutes } from "../http/operator_routes.ts";
import type { HostPolicy } from "../http/host_policy.ts";
import { readJsonBody } from "../http/json_body.ts";
import { limitRequests } from "../http/limit_requests.ts";
import { requireUser, type UserEnv } from "../http/require_user.ts";
import {
  type Credential,
  type CredentialKey,
  decryptCredential,
  encryptCredential,
  headersOf,
  seal,
  unseal,
} from "./credentials.ts";
import {
  beginSignIn,
  clientMetadataDocument,
  finishSignIn,
  FlowSecret,
  type OAuthSettings,
} from "./oauth.ts";
import { insertFlow, replaceOAuthCredential, storeOAuthServer, takeFlow } from "./oauth_store.ts";
import { callbackPage } from "./oauth_callback_page.ts";
import { discoverServerTools } from "./discovery.ts";
import type { RemoteErrorCode, RemoteSettings } from "./remote.ts";
import { deleteServer, listServers, loadSecret, replaceTools, storeServer } from "./store.ts";
import { loadGrants, resolvePermission } from "../permissions.ts";
import type { JwtClaims } from "../db/client.ts";
import type { ServerView } from "./protocol.ts";
import { SLUG_PATTERN } from "./tool_names.ts";

export interface ConnectionsAppDependencies {
  sql: Sql;
  verifier: TokenVerifier;
  remote: RemoteSettings;
  /** From `MCP_CREDENTIALS_KEY`; without it only servers without a credential can be added. */
  credentialKey?: CredentialKey;
  /** Signing in with OAuth; without it (no callback URL) `auth: oauth` is not offered. */
  oauth?: OAuthSettings;
  hostPolicy?: HostPolicy;
  /** Opens `/metrics` to this bearer token (`METRICS_TOKEN`). */
  metricsToken?: string;
}

/** Headers the transport sets itself: a credential may not replace them. */
const RESERVED_HEADERS = new Set([
  "host",
  "content-length",
  "content-type",
  "accept",
  "connection",
  "transfer-encoding",
  "mcp-session-id",
  "mcp-protocol-version",
  "last-event-id",
]);

const HEADER_NAME = z.string().regex(/^[A-Za-z0-9-]{1,100}$/, "must be an HTTP header name")
  .refine((name) => !RESERVED_HEADERS.has(name.toLowerCase()), "is set by the MCP transport");
// Printable ASCII without CR/LF: what an HTTP header value may carry.
const HEADER_VALUE = z.string().min(1).max(8192).regex(/^[\x20-\x7e]+$/, "must be printable ASCII");

export const AddServerBody = z.strictObject({
  url: z.string().min(1).max(2048),
  slug: z.string().regex(SLUG_PATTERN, "must match [a-z][a-z0-9]{0,15}"),
  display_name: z.string().trim().min(1).max(100).optional(),
  auth: z.discriminatedUnion("type", [
    z.strictObject({ type: z.literal("none") }),
    z.strictObject({ type: z.literal("bearer"), token: HEADER_VALUE }),
    z.strictObject({ type: z.literal("header"), name: HEADER_NAME, value: HEADER_VALUE }),
    z.strictObject({ type: z.literal("oauth") }),
  ]).default({ type: "none" }),
});
export type AddServerBody = z.infer<typeof AddServerBody>;

const STATUS_OF: Record<RemoteErrorCode, ContentfulStatusCode> = {
  url_not_allowed: 422,
  server_unreachable: 502,
  not_an_mcp_server: 502,
  server_auth_failed: 502,
  server_response_too_large: 502,
  server_timeout: 504,
  oauth_unsupported: 502,
  oauth_failed: 502,
};

export function credentialOf(auth: AddServerBody["auth"]): Credential | null {
  switch (auth.type) {
    case "none":
    case "oauth":
      return null;
    case "bearer":
      return { kind: "header", name: "Authorization", value: `Bearer ${auth.token}` };
    case "header":
      return { kind: "header", name: auth.name, value: auth.value };
  }
}

/** 32 random bytes, base64url: a sign-in's `state`, unguessable and unique. */
function randomState(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))
    .replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

export function createConnectionsApp(deps: ConnectionsAppDependencies) {
  const { sql, verifier } = deps;
  const app = createFunctionApp<UserEnv>("connections", {
    corsMethods: ["GET", "POST", "DELETE"],
    hostPolicy: deps.hostPolicy,
  });
  app.use(methodNotAllowed({ app, onMethodNotAllowed: handleMethodNotAllowed }));
  const signedIn = requireUser({ verifier });
  const limited = limitRequests(sql, "connections");

  addOperatorRoutes(app, { sql, verifier, metricsToken: deps.metricsToken });

  /** The caller's servers, each tool with the grant that decides it (permissions.ts). */
  const serversOf = async (claims: JwtClaims): Promise<ServerView[]> => {
    const [servers, grants] = await Promise.all([
      listServers(sql, claims),
      loadGrants(sql, claims),
    ]);
    return servers.map((server) => ({
      ...server,
      tools: server.tools.map((tool) => ({
        ...tool,
        approval_mode: resolvePermission(grants, tool.name)?.mode ?? null,
      })),
    }));
  };

  app.get("/", signedIn, limited, async (c) => {
    return c.json({ servers: await serversOf(c.var.user.claims) });
  });

  app.post("/", signedIn, limited, async (c) => {
    const parsed = AddServerBody.safeParse(await readJsonBody(c.req.raw));
    if (!parsed.success) {
      const [issue] = parsed.error.issues;
      const path = fieldPath(issue.path);
      throw new HttpError(
        422,
        "invalid_request",
        path ? `${path}: ${issue.message}` : issue.message,
        {
          ...(path ? { path } : {}),
        },
      );
    }
    const body = parsed.data;
    if (body.auth.type === "oauth") return await startSignIn(c, body);
    const credential = credentialOf(body.auth);
    if (credential && !deps.credentialKey) {
      throw new HttpError(
        503,
        "not_configured",
        "Servers with a credential need the MCP_CREDENTIALS_KEY secret, which is not set",
      );
    }
    const headers: Record<string, string> = credential ? headersOf(credential) : {};
    const { tools, warnings } = await discover(body.url, body.slug, headers);
    const id = crypto.randomUUID();
    const stored = await storeServer(sql, {
      id,
      userId: c.var.user.id,
      slug: body.slug,
      displayName: body.display_name ?? null,
      url: body.url,
      authMode: credential ? "header" : "none",
      secret: credential ? await encryptCredential(deps.credentialKey!, id, credential) : null,
      tools,
      warnings,
    });
    if (!stored.ok) {
      throw new HttpError(409, "conflict", `You already use the slug "${body.slug}"`, {
        path: "slug",
      });
    }
    const servers = await serversOf(c.var.user.claims);
    return c.json({ server: servers.find((s) => s.id === id) }, 201);
  });

  // A server's tools again, as it lists them now (its tools changed: tools/list_changed).
  app.post("/:id/refresh", signedIn, limited, async (c) => {
    const id = c.req.param("id");
    const server = z.uuid().safeParse(id).success
      ? (await listServers(sql, c.var.user.claims)).find((s) => s.id === id)
      : undefined;
    if (!server) throw new HttpError(404, "not_found", "No server of yours has this id");
    let headers: Record<string, string> = {};
    if (server.auth_mode !== "none") {
      const secret = await loadSecret(sql, c.var.user.id, id);
      if (!deps.credentialKey || !secret) {
        throw new HttpError(503, "not_configured", "The server's credential cannot be read");
      }
      headers = headersOf(await decryptCredential(deps.credentialKey, id, secret));
    }
    const { tools, warnings } = await discover(server.url, server.slug, headers);
    if (!await replaceTools(sql, id, c.var.user.id, tools, warnings)) {
      throw new HttpError(404, "not_found", "No server of yours has this id");
    }
    const servers = await serversOf(c.var.user.claims);
    return c.json({ server: servers.find((s) => s.id === id) });
  });

  /** The server's tools as it lists them, named for the agent; an unusable server throws. */
  async function discover(url: string, slug: string, headers: Record<string, string>) {
    const discovered = await discoverServerTools({ url, headers }, slug, deps.remote);
    if (!discovered.ok) {
      const { code, message } = discovered.error;
      throw new HttpError(STATUS_OF[code], code as HttpErrorCode, message, { path: "url" });
    }
    return discovered.value;
  }

  /**
   * The sign-in's first half: the server's authorization server discovered, this function
   * registered there, the flow (state, sealed PKCE verifier, expiry) stored; 202 with the URL
   * the user opens. Nothing of the server is stored until the callback.
   */
  async function startSignIn(
    c: Context<UserEnv>,
    body: AddServerBody,
    /** A stored server of the user's that needs a new sign-in. */
    reconnect?: string,
  ) {
    const { credentialKey, oauth } = deps;
    if (!credentialKey || !oauth) {
      throw new HttpError(
        503,
        "not_configured",
        "Signing in with OAuth needs the MCP_CREDENTIALS_KEY secret and a callback URL " +
          "(SUPABASE_URL or MCP_OAUTH_REDIRECT_URL)",
      );
    }
    if (
      !reconnect &&
      (await listServers(sql, c.var.user.claims)).some((s) => s.slug === body.slug)
    ) {
      throw new HttpError(409, "conflict", `You already use the slug "${body.slug}"`, {
        path: "slug",
      });
    }
    const state = randomState();
    const begun = await beginSignIn(body.url, deps.remote, oauth, state);
    if (!begun.ok) {
      const { code, message } = begun.error;
      throw new HttpError(STATUS_OF[code], code as HttpErrorCode, message, { path: "url" });
    }
    const serverId = reconnect ?? crypto.randomUUID();
    const expiresAt = new Date(Date.now() + oauth.flowTtlMs);
    await insertFlow(sql, {
      state,
      userId: c.var.user.id,
      serverId,
      reconnect: reconnect !== undefined,
      slug: body.slug,
      displayName: body.display_name ?? null,
      url: body.url,
      // Passed the host policy: the web app's own origin, told when the sign-in ends.
      returnOrigin: c.req.header("origin") ?? null,
      secret: await seal(credentialKey, serverId, begun.value.flow),
      expiresAt,
    });
    return c.json({
      sign_in: {
        authorization_url: begun.value.authorizationUrl,
        expires_at: expiresAt.toISOString(),
      },
    }, 202);
  }

  // A new sign-in for an OAuth server that needs one ("needs sign-in"): 202 with the URL; the
  // callback replaces its token set and connects it again, its tools and grants kept.
  app.post("/:id/sign-in", signedIn, limited, async (c) => {
    const id = c.req.param("id");
    const server = z.uuid().safeParse(id).success
      ? (await listServers(sql, c.var.user.claims)).find((s) => s.id === id)
      : undefined;
    if (!server) throw new HttpError(404, "not_found", "No server of yours has this id");
    if (server.auth_mode !== "oauth") {
      throw new HttpError(422, "invalid_request", "This server does not sign in with OAuth");
    }
    return await startSignIn(c, {
      url: server.url,
      slug: server.slug,
      auth: { type: "oauth" },
    }, server.id);
  });

  // Fetched by authorization servers, which send no token: it is public, the same for every
  // user, and names only this function's callback. Its client_id is the configured URL, never
  // the request's (behind the gateway the function sees an internal one).
  app.get("/oauth/client-metadata.json", (c) => {
    if (!deps.oauth) {
      throw new HttpError(
        503,
        "not_configured",
        "Signing in with OAuth needs a callback URL (SUPABASE_URL or MCP_OAUTH_REDIRECT_URL)",
      );
    }
    c.header("cache-control", "public, max-age=3600");
    return c.json(clientMetadataDocument(deps.oauth.redirectUrl));
  });

  // The authorization server sends the user's browser here. No token: the flow's `state`, taken
  // once and only before it expires, says whose sign-in this is.
  const CallbackQuery = z.object({
    state: z.string().min(32).max(128),
    code: z.string().min(1).max(2048).optional(),
    error: z.string().max(200).optional(),
    error_description: z.string().max(1000).optional(),
  });
  app.get("/oauth/callback", async (c) => {
    const query = CallbackQuery.safeParse(c.req.query());
    if (!query.success) {
      return callbackPage(c, 400, { ok: false, code: "invalid_request", message: "No sign-in" });
    }
    const flow = await takeFlow(sql, query.data.state);
    if (!flow) {
      return callbackPage(c, 400, {
        ok: false,
        code: "invalid_request",
        message: "This sign-in expired or was already used: start it again from the app",
      });
    }
    const told = { returnOrigin: flow.returnOrigin, slug: flow.slug };
    const { code, error, error_description } = query.data;
    if (!code || !deps.credentialKey || !deps.oauth) {
      return callbackPage(c, 400, {
        ok: false,
        code: "server_auth_failed",
        message: `The sign-in was not completed: ${error_description ?? error ?? "no code"}`,
      }, told);
    }
    try {
      const secret = FlowSecret.parse(await unseal(deps.credentialKey, flow.serverId, flow.secret));
      const tokens = await finishSignIn(secret, code, deps.remote, deps.oauth);
      if (!tokens.ok) {
        throw new HttpError(
          STATUS_OF[tokens.error.code],
          tokens.error.code as HttpErrorCode,
          tokens.error.message,
        );
      }
      const sealed = await encryptCredential(
        deps.credentialKey,
        flow.serverId,
        tokens.value.credential,
      );
      if (flow.reconnect) {
        const replaced = await replaceOAuthCredential(
          sql,
          flow.serverId,
          flow.userId,
          sealed,
          tokens.value.expiresAt,
        );
        if (!replaced) throw new HttpError(404, "not_found", "The server was removed meanwhile");
        return callbackPage(c, 200, { ok: true, server_id: flow.serverId }, told);
      }
      const { tools, warnings } = await discover(
        flow.url,
        flow.slug,
        headersOf(tokens.value.credential),
      );
      const stored = await storeOAuthServer(sql, {
        id: flow.serverId,
        userId: flow.userId,
        slug: flow.slug,
        displayName: flow.displayName,
        url: flow.url,
        secret: sealed,
        expiresAt: tokens.value.expiresAt,
        tools,
        warnings,
      });
      if (!stored.ok) {
        throw new HttpError(409, "conflict", `You already use the slug "${flow.slug}"`);
      }
      return callbackPage(c, 200, { ok: true, server_id: flow.serverId }, told);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      return callbackPage(c, error.status as ContentfulStatusCode, {
        ok: false,
        code: error.code,
        message: error.message,
      }, told);
    }
  });

  app.delete("/:id", signedIn, limited, async (c) => {
    const id = c.req.param("id");
    if (!z.uuid().safeParse(id).success) {
      throw new HttpError(404, "not_found", "No server of yours has this id");
    }
    if (!await deleteServer(sql, c.var.user.claims, id)) {
      throw new HttpError(404, "not_found", "No server of yours has this id");
    }
    return c.body(null, 204);
  });

  return app;
}
