/**
 * Signing keys and access tokens shaped exactly like Supabase Auth's, for the local stand-in of
 * Auth and for tests, in each kind a project can have (`JwtMode`):
 *
 * - `es256`: an asymmetric key (today's default for new projects); the public JWKS and the
 *   functions' `SUPABASE_JWKS` carry its public half.
 * - `hs256`: a shared-secret signing key with a `kid`; the public JWKS never shows a symmetric
 *   key, only the functions' `SUPABASE_JWKS` carries it, as an `oct` JWK.
 * - `legacy`: the project's legacy JWT secret, tokens without `kid`; both JWKS are empty, so
 *   only Auth can tell a good token from a forged one.
 */
import { base64url, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { dirname } from "node:path";

export type JwtMode = "es256" | "hs256" | "legacy";
export const JWT_MODES: readonly JwtMode[] = ["es256", "hs256", "legacy"];

export interface SigningKey {
  alg: "ES256" | "HS256";
  /** Absent for the legacy JWT secret, whose tokens name no key. */
  kid?: string;
  /** The whole key: the EC private key, or the shared secret as an `oct` JWK. */
  privateJwk: JWK;
  /** What the public JWKS shows; none for a shared secret. */
  publicJwk?: JWK;
}

const DEFAULT_EXPIRES_IN_SECONDS = 3600;
/** `supabase start`'s legacy JWT secret (the CLI's well-known default). */
export const LEGACY_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long";

export async function generateSigningKey(alg: "ES256" | "HS256" = "ES256"): Promise<SigningKey> {
  const kid = crypto.randomUUID();
  if (alg === "HS256") {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    return { alg, kid, privateJwk: { kty: "oct", k: base64url.encode(secret), kid, alg } };
  }
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const privateJwk: JWK = { ...(await exportJWK(privateKey)), kid, alg, use: "sig" };
  return { alg, kid, privateJwk, publicJwk: publicPart(privateJwk) };
}

/** The legacy JWT secret as a signing key: HS256, no `kid`. */
export function legacySigningKey(secret = LEGACY_JWT_SECRET): SigningKey {
  const k = base64url.encode(new TextEncoder().encode(secret));
  return { alg: "HS256", privateJwk: { kty: "oct", k, alg: "HS256" } };
}

/** The key a stack in `mode` signs with, fresh (persisted ones: `loadOrCreateSigningKey`). */
export function signingKeyFor(mode: JwtMode): Promise<SigningKey> {
  if (mode === "legacy") return Promise.resolve(legacySigningKey());
  return generateSigningKey(mode === "hs256" ? "HS256" : "ES256");
}

function publicPart(privateJwk: JWK): JWK {
  const { kty, crv, x, y, kid } = privateJwk;
  return { kty, crv, x, y, kid, alg: "ES256", use: "sig" };
}

/**
 * The key stored at `path` (a private JWK, mode 0600), created on first use so that tokens
 * handed out before a restart still verify after it.
 */
export async function loadOrCreateSigningKey(
  path: string,
  alg: "ES256" | "HS256" = "ES256",
): Promise<SigningKey> {
  try {
    return signingKeyFromJson(await Deno.readTextFile(path), path, alg);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const key = await generateSigningKey(alg);
  await Deno.mkdir(dirname(path), { recursive: true });
  try {
    // createNew: if another process won the race, its key is the one to use.
    await Deno.writeTextFile(path, JSON.stringify(key.privateJwk, null, 2) + "\n", {
      createNew: true,
      mode: 0o600,
    });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    return signingKeyFromJson(await Deno.readTextFile(path), path, alg);
  }
  return key;
}

function signingKeyFromJson(json: string, path: string, alg: "ES256" | "HS256"): SigningKey {
  const jwk = JSON.parse(json) as JWK;
  const hasKid = typeof jwk.kid === "string" && jwk.kid !== "";
  if (alg === "HS256") {
    if (jwk.kty !== "oct" || typeof jwk.k !== "string" || !hasKid) {
      throw new Error(`${path} does not hold an HS256 oct JWK with a kid`);
    }
    return { alg, kid: jwk.kid, privateJwk: { kty: "oct", k: jwk.k, kid: jwk.kid, alg } };
  }
  if (jwk.kty !== "EC" || jwk.crv !== "P-256" || typeof jwk.d !== "string" || !hasKid) {
    throw new Error(`${path} does not hold a P-256 private JWK with a kid`);
  }
  const privateJwk: JWK = { ...jwk, alg, use: "sig" };
  return { alg, kid: jwk.kid, privateJwk, publicJwk: publicPart(privateJwk) };
}

/**
 * What the Auth server publishes at `/auth/v1/.well-known/jwks.json`: public keys only, never a
 * shared secret (so `{"keys":[]}` for a project on HS256).
 */
export function jwksOf(...keys: SigningKey[]): { keys: JWK[] } {
  return { keys: keys.flatMap((key) => key.publicJwk ? [publicPart(key.publicJwk)] : []) };
}

/**
 * What Supabase hands the functions as `SUPABASE_JWKS`: the public keys plus each shared-secret
 * signing key as an `oct` JWK. The legacy secret has no `kid` and is not among them.
 */
export function functionJwksOf(...keys: SigningKey[]): { keys: JWK[] } {
  return {
    keys: keys.flatMap((key) => {
      if (key.publicJwk) return [publicPart(key.publicJwk)];
      return key.kid ? [{ ...key.privateJwk }] : [];
    }),
  };
}

/** Every key as Auth itself holds it, secrets included: what the stand-in's servers check with. */
export function serverKeysOf(...keys: SigningKey[]): { keys: JWK[] } {
  return {
    keys: keys.map((key) => key.publicJwk ? publicPart(key.publicJwk) : { ...key.privateJwk }),
  };
}

export interface AccessTokenInput {
  userId: string;
  email?: string;
  /** Defaults to "authenticated". */
  role?: string;
  /** Defaults to a fresh uuid. */
  sessionId?: string;
  /** Lifetime in seconds; defaults to 3600, Supabase's default. */
  expiresIn?: number;
  /** `<SUPABASE_URL>/auth/v1`, as Supabase Auth writes it. */
  issuer: string;
  appMetadata?: object;
  userMetadata?: object;
  isAnonymous?: boolean;
  /** Issue time in seconds since the epoch (a JWT NumericDate); defaults to the clock. */
  now?: number;
}

const importedKeys = new WeakMap<SigningKey, Promise<CryptoKey | Uint8Array>>();

function privateKeyOf(key: SigningKey): Promise<CryptoKey | Uint8Array> {
  let imported = importedKeys.get(key);
  if (!imported) {
    imported = importJWK(key.privateJwk, key.alg);
    importedKeys.set(key, imported);
  }
  return imported;
}

/** An access token with the claim set Supabase Auth puts in its own. */
export async function issueAccessToken(key: SigningKey, input: AccessTokenInput): Promise<string> {
  const iat = input.now ?? Math.floor(Date.now() / 1000);
  const isAnonymous = input.isAnonymous ?? false;
  const claims = {
    iss: input.issuer,
    sub: input.userId,
    aud: "authenticated",
    exp: iat + (input.expiresIn ?? DEFAULT_EXPIRES_IN_SECONDS),
    iat,
    email: input.email ?? "",
    phone: "",
    role: input.role ?? "authenticated",
    aal: "aal1",
    // Supabase records how the session began; anonymous sign-ins say so.
    amr: [{ method: isAnonymous ? "anonymous" : "password", timestamp: iat }],
    session_id: input.sessionId ?? crypto.randomUUID(),
    is_anonymous: isAnonymous,
    app_metadata: input.appMetadata ?? {},
    user_metadata: input.userMetadata ?? {},
  };
  return await new SignJWT(claims)
    .setProtectedHeader(
      key.kid ? { alg: key.alg, kid: key.kid, typ: "JWT" } : {
        alg: key.alg,
        typ: "JWT",
      },
    )
    .sign(await privateKeyOf(key));
}

/**
 * A legacy JWT API key (`anon`, `service_role`) signed with the legacy secret, claims as
 * `supabase start` writes them; with the CLI's secret these are its well-known keys.
 */
export async function issueLegacyApiKey(
  key: SigningKey,
  role: "anon" | "service_role",
): Promise<string> {
  return await new SignJWT({ iss: "supabase-demo", role, exp: 1983812996 })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .sign(await privateKeyOf(key));
}
