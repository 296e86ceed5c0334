/**
 * ES256 signing keys and access tokens shaped exactly like Supabase Auth's, for the local
 * stand-in of Auth and for tests. Asymmetric on purpose: the functions verify against a JWKS
 * and refuse HS256, the same as against hosted Supabase.
 */
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { dirname } from "node:path";

export interface SigningKey {
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
}

const ALG = "ES256";
const DEFAULT_EXPIRES_IN_SECONDS = 3600;

export async function generateSigningKey(): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(ALG, { extractable: true });
  const kid = crypto.randomUUID();
  const privateJwk: JWK = { ...(await exportJWK(privateKey)), kid, alg: ALG, use: "sig" };
  return { kid, privateJwk, publicJwk: publicPart(privateJwk) };
}

function publicPart(privateJwk: JWK): JWK {
  const { kty, crv, x, y, kid } = privateJwk;
  return { kty, crv, x, y, kid, alg: ALG, use: "sig" };
}

/**
 * The key stored at `path` (a private JWK, mode 0600), created on first use so that tokens
 * handed out before a restart still verify after it.
 */
export async function loadOrCreateSigningKey(path: string): Promise<SigningKey> {
  try {
    return signingKeyFromJson(await Deno.readTextFile(path), path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const key = await generateSigningKey();
  await Deno.mkdir(dirname(path), { recursive: true });
  try {
    // createNew: if another process won the race, its key is the one to use.
    await Deno.writeTextFile(path, JSON.stringify(key.privateJwk, null, 2) + "\n", {
      createNew: true,
      mode: 0o600,
    });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    return signingKeyFromJson(await Deno.readTextFile(path), path);
  }
  return key;
}

function signingKeyFromJson(json: string, path: string): SigningKey {
  const jwk = JSON.parse(json) as JWK;
  if (
    jwk.kty !== "EC" || jwk.crv !== "P-256" || typeof jwk.d !== "string" ||
    typeof jwk.kid !== "string" || jwk.kid === ""
  ) {
    throw new Error(`${path} does not hold a P-256 private JWK with a kid`);
  }
  const privateJwk: JWK = { ...jwk, alg: ALG, use: "sig" };
  return { kid: jwk.kid, privateJwk, publicJwk: publicPart(privateJwk) };
}

/** What the Auth server publishes at `/auth/v1/.well-known/jwks.json`. */
export function jwksOf(...keys: SigningKey[]): { keys: JWK[] } {
  return { keys: keys.map((key) => publicPart(key.publicJwk)) };
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
    imported = importJWK(key.privateJwk, ALG);
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
    .setProtectedHeader({ alg: ALG, kid: key.kid, typ: "JWT" })
    .sign(await privateKeyOf(key));
}
