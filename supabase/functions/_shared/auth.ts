/**
 * Verification of Supabase Auth access tokens inside Edge Functions.
 *
 * Supabase signs access tokens with asymmetric keys (ES256 or RS256) and publishes the public
 * halves as a JWKS, so a function can verify a token without any secret. The legacy shared
 * HS256 secret is refused on purpose: accepting it would let anyone holding that secret mint
 * tokens, and `@supabase/server` refuses it too.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  type JSONWebKeySet,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";
import type { JwtClaims } from "./db/client.ts";
import type { Env } from "./env.ts";

export interface VerifiedUser {
  /** The `sub` claim: the user's id in `auth.users`. */
  id: string;
  email?: string;
  role: string;
  claims: JwtClaims;
}

export type AuthErrorCode = "missing_token" | "invalid_token" | "expired_token";

export type AuthResult =
  | { ok: true; user: VerifiedUser }
  | { ok: false; code: AuthErrorCode; message: string };

export interface TokenVerifierOptions {
  /** The public keys themselves; wins over `jwksUrl`. */
  jwks?: JSONWebKeySet;
  jwksUrl?: string | URL;
  /** Checked only when given. */
  issuer?: string;
  /** Defaults to "authenticated", the audience Supabase Auth puts in user tokens. */
  audience?: string;
  /** How many verified tokens to remember (see `VerifiedTokenCache`); 0 turns it off. */
  cacheSize?: number;
  /** The clock, in epoch milliseconds; for tests. */
  now?: () => number;
}

export interface TokenVerifier {
  /**
   * Resolves to an error value for anything the caller sent wrong. Rejects only when the
   * keys themselves cannot be had (JWKS endpoint down or malformed): that is a server fault,
   * not a reason to tell the client its token is bad.
   */
  verify(token: string): Promise<AuthResult>;
}

const ACCEPTED_ALGORITHMS = ["ES256", "RS256"];
const DEFAULT_AUDIENCE = "authenticated";
const DEFAULT_CACHE_SIZE = 1000;
/**
 * The longest a verification is trusted without checking the signature again: jose's remote
 * key set keeps keys this long too, so a key withdrawn from the JWKS stops being honoured
 * about as soon as it would without the cache.
 */
const MAX_CACHE_AGE_MS = 10 * 60 * 1000;

/**
 * One key set per URL for the whole isolate: it only caches public keys, and sharing it
 * spares a JWKS fetch on every request (jose refetches by itself on an unknown `kid`).
 */
const remoteKeySets = new Map<string, JWTVerifyGetKey>();

function remoteKeySet(url: string | URL): JWTVerifyGetKey {
  const href = new URL(url).href;
  let keySet = remoteKeySets.get(href);
  if (!keySet) {
    keySet = createRemoteJWKSet(new URL(href));
    remoteKeySets.set(href, keySet);
  }
  return keySet;
}

export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  let keySet: JWTVerifyGetKey;
  if (options.jwks) keySet = createLocalJWKSet(options.jwks);
  else if (options.jwksUrl) keySet = remoteKeySet(options.jwksUrl);
  else throw new Error("createTokenVerifier needs `jwks` or `jwksUrl`");

  const audience = options.audience ?? DEFAULT_AUDIENCE;
  const issuer = options.issuer;
  const now = options.now ?? Date.now;
  const cache = new VerifiedTokenCache(options.cacheSize ?? DEFAULT_CACHE_SIZE);

  return {
    async verify(token: string): Promise<AuthResult> {
      if (!token) return { ok: false, code: "missing_token", message: "No access token" };
      const at = now();
      const cached = cache.get(token, at);
      if (cached) return userFromClaims(cached);
      let payload: Record<string, unknown>;
      try {
        ({ payload } = await jwtVerify(token, keySet, {
          algorithms: ACCEPTED_ALGORITHMS,
          audience,
          issuer,
          requiredClaims: ["sub", "role", "exp"],
          currentDate: new Date(at),
        }));
      } catch (error) {
        return { ok: false, ...classify(error) };
      }
      const result = userFromClaims(payload);
      if (result.ok) cache.set(token, deepFreeze(payload), at);
      return result;
    },
  };
}

/**
 * Verified tokens by their exact text, so a request repeating a token skips the ECDSA check
 * (the bulk of an authenticated request's CPU time). Verification is a pure function of the
 * token, the keys and the clock; an entry is therefore kept no longer than the token's `exp`
 * (jose's rule: valid while `exp` > now, in whole seconds), nor than `MAX_CACHE_AGE_MS`.
 * Only successes are kept, and the map is bounded, least recently used out first.
 */
class VerifiedTokenCache {
  #entries = new Map<string, { payload: Readonly<Record<string, unknown>>; until: number }>();
  constructor(readonly capacity: number) {}

  get(token: string, at: number): Readonly<Record<string, unknown>> | undefined {
    const entry = this.#entries.get(token);
    if (!entry) return undefined;
    this.#entries.delete(token);
    if (at >= entry.until) return undefined;
    this.#entries.set(token, entry);
    return entry.payload;
  }

  set(token: string, payload: Readonly<Record<string, unknown>>, at: number) {
    if (this.capacity <= 0 || typeof payload.exp !== "number") return;
    const until = Math.min(payload.exp * 1000, at + MAX_CACHE_AGE_MS);
    this.#entries.delete(token);
    this.#entries.set(token, { payload, until });
    while (this.#entries.size > this.capacity) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }
}

/** Claims are shared by every request that repeats the token: nobody may change them. */
function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

function userFromClaims(payload: Record<string, unknown>): AuthResult {
  const { sub, role, email } = payload;
  if (typeof sub !== "string" || sub === "") {
    return { ok: false, code: "invalid_token", message: 'The "sub" claim must be a string' };
  }
  if (typeof role !== "string" || role === "") {
    return { ok: false, code: "invalid_token", message: 'The "role" claim must be a string' };
  }
  const claims = payload as JwtClaims;
  // Supabase writes `email: ""` for phone and anonymous users; that is no email.
  const user: VerifiedUser = { id: sub, role, claims };
  if (typeof email === "string" && email !== "") user.email = email;
  return { ok: true, user };
}

/** Errors that mean "this token is not acceptable"; anything else is rethrown. */
const INVALID_TOKEN_ERRORS = [
  errors.JWSInvalid,
  errors.JWTInvalid,
  errors.JWTClaimValidationFailed,
  errors.JOSEAlgNotAllowed,
  errors.JOSENotSupported,
  errors.JWKSNoMatchingKey,
  errors.JWKSMultipleMatchingKeys,
  errors.JWSSignatureVerificationFailed,
];

function classify(error: unknown): { code: AuthErrorCode; message: string } {
  if (error instanceof errors.JWTExpired) {
    return { code: "expired_token", message: "The access token has expired" };
  }
  if (INVALID_TOKEN_ERRORS.some((kind) => error instanceof kind)) {
    return { code: "invalid_token", message: `Invalid access token: ${(error as Error).message}` };
  }
  throw error;
}

/**
 * The verifier a function gets from its environment. Keys: `SUPABASE_JWKS` (set by Supabase
 * in Edge Functions; `{"keys":[...]}` or a bare array), else `SUPABASE_JWKS_URL`, else the
 * Auth server's JWKS endpoint under `SUPABASE_URL`.
 *
 * The issuer is checked only when `SUPABASE_JWT_ISSUER` is set: the `SUPABASE_URL` a function
 * sees can be an internal address (e.g. `http://kong:8000` locally) that differs from the
 * public URL Auth writes into `iss`, so deriving the issuer from it would reject good tokens.
 * The signature and audience already bind the token to this project's keys.
 */
export function tokenVerifierFromEnv(env: Env = Deno.env): TokenVerifier {
  const issuer = nonEmpty(env.get("SUPABASE_JWT_ISSUER"));
  const jwksJson = nonEmpty(env.get("SUPABASE_JWKS"));
  if (jwksJson) return createTokenVerifier({ jwks: parseJwks(jwksJson), issuer });

  const jwksUrl = nonEmpty(env.get("SUPABASE_JWKS_URL"));
  if (jwksUrl) return createTokenVerifier({ jwksUrl, issuer });

  const supabaseUrl = nonEmpty(env.get("SUPABASE_URL"));
  if (supabaseUrl) {
    const base = supabaseUrl.endsWith("/") ? supabaseUrl : `${supabaseUrl}/`;
    return createTokenVerifier({ jwksUrl: new URL("auth/v1/.well-known/jwks.json", base), issuer });
  }
  throw new Error(
    "No JWKS source for verifying access tokens: set SUPABASE_JWKS, SUPABASE_JWKS_URL or SUPABASE_URL",
  );
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}

function parseJwks(json: string): JSONWebKeySet {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (cause) {
    throw new Error("SUPABASE_JWKS is not valid JSON", { cause });
  }
  if (Array.isArray(parsed)) return { keys: parsed };
  if (
    typeof parsed === "object" && parsed !== null &&
    Array.isArray((parsed as { keys?: unknown }).keys)
  ) {
    return parsed as JSONWebKeySet;
  }
  throw new Error('SUPABASE_JWKS must be {"keys":[...]} or an array of JWKs');
}
