/**
 * Verification of Supabase Auth access tokens inside Edge Functions, for every kind of project:
 *
 * - asymmetric signing keys (ES256, RS256): the public halves come in the JWKS;
 * - a shared-secret signing key (HS256): Supabase puts it in the functions' `SUPABASE_JWKS` as an
 *   `oct` JWK with a `kid` (the public JWKS never shows it);
 * - the legacy JWT secret: the JWKS is empty (`{"keys":[]}`) and the function has no secret to
 *   check with, so the token goes to Auth's `GET /auth/v1/user`, the check Supabase documents
 *   for such projects. Answers are cached, refusals too, so a stream of forged tokens costs
 *   Auth one request per distinct token.
 *
 * Every key is used for one algorithm only, its own (the JWK's `alg`, else its type's): a token
 * whose header names another is refused before any signature check. That is what makes
 * algorithm confusion impossible: an HS256 token "signed" with a public key's bytes, `alg:
 * none`, or a `kid` that points at a key of the wrong type never reaches a verification.
 *
 * Why jose and not `@supabase/server` (1.8.1), which verifies ES256/RS256 through the JWKS and
 * HS256 `oct` keys by kid just as this does: its `core` entry statically imports
 * `@supabase/supabase-js`, so every function would load supabase-js (~70 ms more module
 * evaluation per cold isolate here, against ~9 ms for jose) to check a signature; it passes no
 * algorithm allowlist for asymmetric keys (a JWK without `alg` accepts any algorithm of its
 * type), does not require `exp`, and refuses the legacy tokens outright (no `kid`). What it
 * would save is the ~40 lines of key selection below. Tests check that both agree.
 */
import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  jwtVerify,
} from "jose";
import type { JwtClaims } from "./db/client.ts";
import type { Env } from "./env.ts";
import { ExpiringCache } from "./expiring_cache.ts";

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

/** Where a legacy project's tokens are checked: its Auth server. */
export interface AuthServerOptions {
  /** Auth's base URL, e.g. `https://<ref>.supabase.co/auth/v1`. */
  url: string | URL;
  /** The project's publishable (or legacy anon) key, sent as `apikey`. */
  apiKey: string;
  /** How long to wait for Auth before counting it as down; default 5 s. */
  timeoutMs?: number;
  /** For tests. */
  fetch?: typeof fetch;
}

export interface TokenVerifierOptions {
  /** The keys themselves; wins over `jwksUrl`. May be empty (a legacy project). */
  jwks?: JSONWebKeySet;
  jwksUrl?: string | URL;
  /**
   * Asked about HS256 tokens when the key set is empty (a project on the legacy JWT secret).
   * Without it such tokens are refused.
   */
  authServer?: AuthServerOptions;
  /** Checked only when given. */
  issuer?: string;
  /** Defaults to "authenticated", the audience Supabase Auth puts in user tokens. */
  audience?: string;
  /**
   * How many tokens to remember, verified or refused by Auth, by their exact text: a request
   * repeating one skips the signature check (the bulk of its CPU time) or Auth's round trip.
   * 0: none.
   */
  cacheSize?: number;
  /** The clock, in epoch milliseconds; for tests. */
  now?: () => number;
}

export interface TokenVerifier {
  /**
   * Resolves to an error value for anything the caller sent wrong. Rejects only when the
   * token cannot be judged (JWKS endpoint down or malformed, Auth down or failing): that is a
   * server fault, not a reason to tell the client its token is bad.
   */
  verify(token: string): Promise<AuthResult>;
  /**
   * Whether the keys can be had, for `/health`: when the JWKS (or, for a legacy project,
   * Auth) last answered. Fetches only what is stale, so probing it costs nothing most times.
   */
  health?(): Promise<KeysHealth>;
}

export interface KeysHealth {
  ok: boolean;
  /** Where keys come from: the environment, the JWKS URL, or Auth (legacy JWT secret). */
  source: "environment" | "jwks_url" | "auth";
  /** Seconds since the JWKS or Auth last answered; null for keys from the environment. */
  age_s: number | null;
  error?: string;
}

/** Auth is asked for its health when it has not answered a token check for this long. */
const AUTH_HEALTH_STALE_MS = 60 * 1000;

/** The only algorithms Supabase Auth signs with, each bound to the key type that can do it. */
const ALGORITHM_OF_KEY_TYPE: Record<string, string> = { EC: "ES256", RSA: "RS256", oct: "HS256" };
const DEFAULT_AUDIENCE = "authenticated";
const DEFAULT_CACHE_SIZE = 1000;
const REQUIRED_CLAIMS = ["sub", "role", "exp"];
/**
 * The longest a verification is trusted without checking the signature again: jose's remote
 * key set keeps keys this long too, so a key withdrawn from the JWKS stops being honoured
 * about as soon as it would without the cache.
 */
const MAX_CACHE_AGE_MS = 10 * 60 * 1000;
/** How long Auth's "no" to a token stands: long enough that a replayed forgery costs Auth
 * one request per half minute, short enough that a wrong answer heals by itself. */
const REFUSAL_CACHE_MS = 30 * 1000;
const DEFAULT_AUTH_TIMEOUT_MS = 5000;

/** Where the keys come from: fixed, or a JWKS URL jose fetches and keeps. */
interface KeySource {
  keys(): Promise<JWK[]>;
  /** The keys again after a fetch, when a `kid` is unknown (a rotation); fixed sets: same. */
  refreshed(): Promise<JWK[]>;
  /** When the JWKS last answered (epoch ms); undefined for fixed keys or before any answer. */
  answeredAt(): number | undefined;
  readonly remote: boolean;
}

function fixedKeys(jwks: JSONWebKeySet): KeySource {
  const keys = Promise.resolve(jwks.keys);
  return { keys: () => keys, refreshed: () => keys, answeredAt: () => undefined, remote: false };
}

/**
 * One remote key set per URL for the whole isolate: it only caches public keys, and sharing it
 * spares a JWKS fetch on every request.
 */
const remoteKeySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
/** When each of them last fetched its keys (epoch ms). */
const remoteAnsweredAt = new Map<string, number>();

function remoteKeys(url: string | URL): KeySource {
  const href = new URL(url).href;
  let set = remoteKeySets.get(href);
  if (!set) {
    set = createRemoteJWKSet(new URL(href));
    remoteKeySets.set(href, set);
  }
  const remote = set;
  const current = () => remote.jwks()?.keys ?? [];
  const reload = async () => {
    await remote.reload();
    remoteAnsweredAt.set(href, Date.now());
  };
  return {
    async keys() {
      if (!remote.jwks() || !remote.fresh) await reload();
      return current();
    },
    async refreshed() {
      // jose's cooldown (30 s) keeps a stream of unknown kids from refetching every time.
      if (!remote.coolingDown) await reload();
      return current();
    },
    answeredAt: () => remoteAnsweredAt.get(href),
    remote: true,
  };
}

export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  let source: KeySource;
  if (options.jwks) source = fixedKeys(options.jwks);
  else if (options.jwksUrl) source = remoteKeys(options.jwksUrl);
  else throw new Error("createTokenVerifier needs `jwks` or `jwksUrl`");

  const audience = options.audience ?? DEFAULT_AUDIENCE;
  const issuer = options.issuer;
  const now = options.now ?? Date.now;
  const capacity = options.cacheSize ?? DEFAULT_CACHE_SIZE;
  const verified = new ExpiringCache<Readonly<Record<string, unknown>>>(capacity);
  const refused = new ExpiringCache<AuthResult & { ok: false }>(capacity);
  const authState: AuthServerState = {};
  const askAuth = options.authServer ? authServerCheck(options.authServer, authState) : undefined;
  /** Auth questions in flight, so a burst of one token asks Auth once. */
  const asking = new Map<string, Promise<AuthResult>>();

  const checkWithAuth = async (token: string, at: number): Promise<AuthResult> => {
    // Unverified claims may only ever refuse; they spare Auth a question it would answer no.
    let claims: JWTPayload;
    try {
      claims = decodeJwt(token);
    } catch {
      return invalid("its claims cannot be read");
    }
    const precheck = checkClaims(claims, { audience, issuer, at });
    if (precheck) return precheck;
    let pending = asking.get(token);
    if (!pending) {
      pending = askAuth!(token, claims).finally(() => asking.delete(token));
      asking.set(token, pending);
    }
    const result = await pending;
    if (result.ok) verified.set(token, result.user.claims, cacheUntil(claims, at));
    else refused.set(token, result, at + REFUSAL_CACHE_MS);
    return result;
  };

  const ageSeconds = (at: number | undefined) =>
    at === undefined ? null : Math.max(0, Math.round((now() - at) / 1000));

  return {
    async health(): Promise<KeysHealth> {
      let keys: JWK[];
      try {
        keys = await source.keys();
      } catch (error) {
        return {
          ok: false,
          source: "jwks_url",
          age_s: ageSeconds(source.answeredAt()),
          error: "the JWKS cannot be fetched: " + (error instanceof Error ? error.message : ""),
        };
      }
      if (keys.length > 0 || !options.authServer) {
        return source.remote
          ? { ok: true, source: "jwks_url", age_s: ageSeconds(source.answeredAt()) }
          : { ok: keys.length > 0, source: "environment", age_s: null };
      }
      // A legacy project: its tokens are only as good as Auth's answers.
      const last = authState.answeredAt;
      if (last === undefined || now() - last > AUTH_HEALTH_STALE_MS) {
        try {
          await askAuthHealth(options.authServer, authState);
        } catch (error) {
          return {
            ok: false,
            source: "auth",
            age_s: ageSeconds(authState.answeredAt),
            error: "Auth does not answer: " + (error instanceof Error ? error.message : ""),
          };
        }
      }
      return { ok: true, source: "auth", age_s: ageSeconds(authState.answeredAt) };
    },

    async verify(token: string): Promise<AuthResult> {
      if (!token) return { ok: false, code: "missing_token", message: "No access token" };
      const at = now();
      const cached = verified.get(token, at);
      if (cached) return userFromClaims(cached);
      const refusal = refused.get(token, at);
      if (refusal) return refusal;

      let header;
      try {
        header = decodeProtectedHeader(token);
      } catch {
        // jose throws a bare TypeError here; whatever it says, the token is not a JWS.
        return invalid("it is not a JWT");
      }
      const { alg, kid } = header;
      if (typeof alg !== "string" || !Object.values(ALGORITHM_OF_KEY_TYPE).includes(alg)) {
        return invalid(`the algorithm "${String(alg)}" is not accepted`);
      }
      let keys = await source.keys();
      if (keys.length === 0) {
        if (alg === "HS256" && askAuth) return await checkWithAuth(token, at);
        return invalid("the project publishes no signing key to check it with");
      }
      // With keys at hand a token must name one of them: never Auth's word instead.
      if (typeof kid !== "string" || kid === "") return invalid('the token names no key ("kid")');
      let jwk = keys.find((key) => key.kid === kid);
      if (!jwk) {
        keys = await source.refreshed();
        jwk = keys.find((key) => key.kid === kid);
      }
      if (!jwk) return invalid(`no signing key has the kid "${kid}"`);
      const pinned = algorithmOfKey(jwk);
      if (pinned !== alg) {
        return invalid(
          `the key "${kid}" signs with ${pinned ?? "no accepted algorithm"}, not ${alg}`,
        );
      }

      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, await importKey(jwk, pinned), {
          algorithms: [pinned],
          audience,
          issuer,
          requiredClaims: REQUIRED_CLAIMS,
          currentDate: new Date(at),
        }));
      } catch (error) {
        return { ok: false, ...classify(error) };
      }
      const result = userFromClaims(payload);
      if (result.ok) verified.set(token, deepFreeze(payload), cacheUntil(payload, at));
      return result;
    },
  };
}

function invalid(reason: string): AuthResult & { ok: false } {
  return { ok: false, code: "invalid_token", message: `Invalid access token: ${reason}` };
}

/** The one algorithm a key is used with; undefined when it is none Supabase signs with. */
function algorithmOfKey(jwk: JWK): string | undefined {
  const byType = jwk.kty === "EC" && jwk.crv !== "P-256"
    ? undefined
    : ALGORITHM_OF_KEY_TYPE[jwk.kty ?? ""];
  if (jwk.alg !== undefined && jwk.alg !== byType) return undefined;
  return byType;
}

/**
 * Imported keys by their JWK's text: importing costs about as much as a verification, and jose's
 * remote set hands out a fresh copy of its keys at every call. A handful of keys per project;
 * the bound only guards against a JWKS that keeps changing.
 */
const importedKeys = new Map<string, Promise<CryptoKey | Uint8Array>>();
const IMPORTED_KEYS_MAX = 64;

function importKey(jwk: JWK, alg: string): Promise<CryptoKey | Uint8Array> {
  const text = JSON.stringify(jwk);
  let imported = importedKeys.get(text);
  if (!imported) {
    if (importedKeys.size >= IMPORTED_KEYS_MAX) importedKeys.clear();
    imported = importJWK(jwk, alg);
    importedKeys.set(text, imported);
  }
  return imported;
}

/**
 * The checks jose makes on a verified token, made on the unverified claims of a token bound for
 * Auth. They can only refuse: a token that passes them still needs Auth's yes.
 */
function checkClaims(
  claims: JWTPayload,
  expected: { audience: string; issuer?: string; at: number },
): (AuthResult & { ok: false }) | undefined {
  if (typeof claims.exp !== "number") return invalid('the "exp" claim is missing');
  if (claims.exp * 1000 <= expected.at) {
    return { ok: false, code: "expired_token", message: "The access token has expired" };
  }
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(expected.audience)) return invalid('unexpected "aud" claim value');
  if (expected.issuer !== undefined && claims.iss !== expected.issuer) {
    return invalid('unexpected "iss" claim value');
  }
  const user = userFromClaims(claims);
  return user.ok ? undefined : user;
}

/**
 * `GET /user` on the project's Auth: 200 means Auth verified the token (signature, expiry,
 * session); 400/401/403/404 mean it did not; anything else, or no answer, means Auth cannot say
 * right now, which rejects so the edge answers 503.
 */
interface AuthServerState {
  /** When Auth last answered anything (epoch ms). */
  answeredAt?: number;
}

/** `GET /health` on Auth (GoTrue's liveness route); rejects unless it answers 200. */
async function askAuthHealth(options: AuthServerOptions, state: AuthServerState): Promise<void> {
  const base = String(options.url).replace(/\/+$/, "");
  const response = await (options.fetch ?? fetch)(`${base}/health`, {
    headers: { apikey: options.apiKey },
    signal: AbortSignal.timeout(options.timeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS),
  });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`GET /health answered ${response.status}`);
  state.answeredAt = Date.now();
}

function authServerCheck(
  options: AuthServerOptions,
  state: AuthServerState,
): (token: string, claims: JWTPayload) => Promise<AuthResult> {
  const base = String(options.url).replace(/\/+$/, "");
  const userUrl = `${base}/user`;
  const fetchImpl = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS;
  return async (token, claims) => {
    const response = await fetchImpl(userUrl, {
      headers: { Authorization: `Bearer ${token}`, apikey: options.apiKey },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.status < 500) state.answeredAt = Date.now();
    if (response.ok) {
      const user = await response.json() as { id?: unknown };
      // Auth vouched for the token, and the token names this user: its claims are the caller's.
      if (user.id !== claims.sub) return invalid("Auth knows the token as another user");
      return userFromClaims(deepFreeze(claims));
    }
    const body = await response.text();
    if ([400, 401, 403, 404].includes(response.status)) {
      return invalid(`Auth refused it (${response.status}${errorCodeOf(body)})`);
    }
    throw new Error(`Auth answered ${response.status} to GET ${userUrl}: ${body.slice(0, 200)}`);
  };
}

/** GoTrue's `error_code` (or `code`), for the message; empty when the body has none. */
function errorCodeOf(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error_code?: unknown; code?: unknown };
    const code = parsed.error_code ?? parsed.code;
    return typeof code === "string" ? ` ${code}` : "";
  } catch {
    // Not JSON: the status says enough.
    return "";
  }
}

/**
 * A verification is a pure function of the token, the keys and the clock; it is therefore kept
 * no longer than the token's `exp` (jose's rule: valid while `exp` > now, in whole seconds),
 * nor than `MAX_CACHE_AGE_MS`.
 */
function cacheUntil(claims: JWTPayload, at: number): number {
  return typeof claims.exp === "number" ? Math.min(claims.exp * 1000, at + MAX_CACHE_AGE_MS) : at;
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
 * The verifier a function gets from its environment, i.e. from what Supabase injects.
 *
 * Keys: `SUPABASE_JWKS` (`{"keys":[...]}` or a bare array; asymmetric public keys and any
 * shared-secret `oct` key), else `SUPABASE_JWKS_URL`, else the Auth server's JWKS endpoint under
 * `SUPABASE_URL`. Auth itself (`SUPABASE_URL` + `/auth/v1`, with the first of
 * `SUPABASE_PUBLISHABLE_KEYS` — `default` preferred — else `SUPABASE_ANON_KEY` as `apikey`)
 * answers for legacy tokens when the key set is empty.
 *
 * The issuer is checked only when `AUTH_ISSUER_URL` is set (a user secret; hosted refuses
 * secrets named `SUPABASE_…`): the `SUPABASE_URL` a function sees can be an internal address
 * (e.g. `http://kong:8000` locally) that differs from the public URL Auth writes into `iss`,
 * so deriving the issuer from it would reject good tokens. The signature and audience already
 * bind the token to this project's keys.
 */
export function tokenVerifierFromEnv(env: Env = Deno.env): TokenVerifier {
  const issuer = nonEmpty(env.get("AUTH_ISSUER_URL"));
  const supabaseUrl = nonEmpty(env.get("SUPABASE_URL"));
  const base = supabaseUrl && (supabaseUrl.endsWith("/") ? supabaseUrl : `${supabaseUrl}/`);
  const apiKey = publishableKeyOf(env) ?? nonEmpty(env.get("SUPABASE_ANON_KEY"));
  const authServer = base && apiKey ? { url: new URL("auth/v1", base), apiKey } : undefined;
  const common = { issuer, authServer };

  const jwksJson = nonEmpty(env.get("SUPABASE_JWKS"));
  if (jwksJson) return createTokenVerifier({ jwks: parseJwks(jwksJson), ...common });

  const jwksUrl = nonEmpty(env.get("SUPABASE_JWKS_URL"));
  if (jwksUrl) return createTokenVerifier({ jwksUrl, ...common });

  if (base) {
    return createTokenVerifier({
      jwksUrl: new URL("auth/v1/.well-known/jwks.json", base),
      ...common,
    });
  }
  throw new Error(
    "No JWKS source for verifying access tokens: set SUPABASE_JWKS, SUPABASE_JWKS_URL or SUPABASE_URL",
  );
}

/** `SUPABASE_PUBLISHABLE_KEYS` is `{"<name>": "sb_publishable_…", …}`, as Supabase injects it. */
function publishableKeyOf(env: Env): string | undefined {
  const json = nonEmpty(env.get("SUPABASE_PUBLISHABLE_KEYS"));
  if (!json) return nonEmpty(env.get("SUPABASE_PUBLISHABLE_KEY"));
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (cause) {
    throw new Error("SUPABASE_PUBLISHABLE_KEYS is not valid JSON", { cause });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error('SUPABASE_PUBLISHABLE_KEYS must be {"<name>": "<key>", ...}');
  }
  const keys = parsed as Record<string, unknown>;
  const key = keys.default ?? Object.values(keys)[0];
  return typeof key === "string" ? nonEmpty(key) : undefined;
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
