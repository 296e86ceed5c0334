/**
 * The `/auth/v1` part of the local stand-in for `supabase start`: enough of Supabase Auth
 * (GoTrue) for the unmodified `@supabase/supabase-js` — email sign-up (auto-confirmed),
 * password sign-in, rotating refresh tokens with reuse detection, the user and its update
 * (metadata and password), sign-out, and the JWKS that Edge Functions verify access tokens
 * against.
 *
 * State lives in the `auth` schema only (users, identities, sessions, refresh tokens), written
 * over the superuser connection, because this is Auth itself and not a user of the database.
 * The API gateway in front of it (Kong on Supabase, `gateway.ts` here) hands it the path
 * unchanged, so every route is matched under `/auth/v1/`.
 */
import { bearerToken, createTokenVerifier } from "./token_verifier.ts";
import type { Sql } from "../../supabase/functions/_shared/db/client.ts";
import {
  type Endpoint,
  type EndpointContext,
  getUser,
  health,
  jwks,
  logout,
  settings,
  signup,
  token,
  updateUserEndpoint,
} from "./auth/endpoints.ts";
import { AuthFailure, preflightResponse, unexpectedFailure } from "./auth/responses.ts";
import { type ApiKeys, roleOfApiKey, STANDARD_API_KEYS } from "./keys.ts";
import { serverKeysOf, type SigningKey } from "./signing_keys.ts";

export interface AuthHandlerOptions {
  /** A superuser pool: Auth writes the `auth` schema directly. */
  sql: Sql;
  /** What it signs with: ES256, an HS256 secret with a kid, or the legacy secret. */
  signingKey: SigningKey;
  /** Which `apikey`s open it; the `sb_` keys by default. */
  apiKeys?: ApiKeys;
  /** The API's public origin, e.g. `http://127.0.0.1:54321`; tokens say `<it>/auth/v1`. */
  publicUrl: string;
  /** Access-token lifetime; Supabase's default is one hour. */
  accessTokenTtlSeconds?: number;
  /**
   * How long a rotated refresh token may be replayed and get its child back (GoTrue's
   * `GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL`, 10 s by default). Later replays count as
   * theft: the whole session's tokens are revoked.
   */
  refreshTokenReuseIntervalSeconds?: number;
  /** The clock; tests move it to step past the reuse interval without waiting. */
  now?: () => Date;
}

export type AuthHandler = (request: Request) => Promise<Response>;

const PREFIX = "/auth/v1";

interface Route {
  methods: Partial<Record<string, Endpoint>>;
  /** Reachable without an API key: the JWKS is public, as on Supabase. */
  open?: boolean;
}

const ROUTES: Record<string, Route> = {
  "/signup": { methods: { POST: signup } },
  "/token": { methods: { POST: token } },
  "/user": { methods: { GET: getUser, PUT: updateUserEndpoint } },
  "/logout": { methods: { POST: logout } },
  "/.well-known/jwks.json": { methods: { GET: jwks }, open: true },
  "/settings": { methods: { GET: settings } },
  "/health": { methods: { GET: health } },
};

export function createAuthHandler(options: AuthHandlerOptions): AuthHandler {
  const publicUrl = options.publicUrl.replace(/\/+$/, "");
  const context: EndpointContext = {
    sql: options.sql,
    signingKey: options.signingKey,
    verifier: createTokenVerifier({ jwks: serverKeysOf(options.signingKey) }),
    issuer: `${publicUrl}${PREFIX}`,
    accessTokenTtlSeconds: options.accessTokenTtlSeconds ?? 3600,
    refreshTokenReuseIntervalSeconds: options.refreshTokenReuseIntervalSeconds ?? 10,
    now: options.now ?? (() => new Date()),
  };

  const apiKeys = options.apiKeys ?? STANDARD_API_KEYS;
  return async (request) => {
    try {
      return await route(context, request, apiKeys);
    } catch (error) {
      if (error instanceof AuthFailure) return error.toResponse();
      console.error("auth: unexpected failure", error);
      return unexpectedFailure();
    }
  };
}

async function route(
  context: EndpointContext,
  request: Request,
  apiKeys: ApiKeys,
): Promise<Response> {
  const url = new URL(request.url);
  if (!url.pathname.startsWith(`${PREFIX}/`)) {
    throw new AuthFailure(404, "not_found", "Not found");
  }
  // Browsers send preflights without credentials; they must pass before any key check.
  if (request.method === "OPTIONS") return preflightResponse();

  const found = ROUTES[url.pathname.slice(PREFIX.length)];
  if (!found) throw new AuthFailure(404, "not_found", "Not found");
  const endpoint = found.methods[request.method];
  if (!endpoint) {
    throw new AuthFailure(405, "method_not_allowed", `${request.method} is not allowed here`);
  }
  if (!found.open) checkApiKey(request, apiKeys);
  return await endpoint(context, request, url);
}

/**
 * The gateway's rule: a known project key in `apikey`, or an API key as the Bearer token. A
 * user JWT in Authorization does not replace the key.
 */
function checkApiKey(request: Request, apiKeys: ApiKeys): void {
  const bearer = bearerToken(request);
  const bearerIsKey = bearer?.startsWith("sb_") || roleOfApiKey(bearer, apiKeys) !== undefined;
  const key = request.headers.get("apikey") ?? (bearerIsKey ? bearer : undefined);
  if (key === undefined || key === "") {
    throw new AuthFailure(401, "no_api_key", "No API key found in request");
  }
  if (roleOfApiKey(key, apiKeys) === undefined) {
    throw new AuthFailure(401, "invalid_api_key", "Invalid API key");
  }
}
