/**
 * The stand-in's own check of the access tokens it issues (gateway, Auth, REST, Realtime).
 * Deliberately not the product's verifier (`supabase/functions/_shared/auth.ts`): the
 * stand-in plays Supabase's servers, and a bug in the product's verifier must not be hidden
 * by the stand-in sharing it. Supabase's servers accept a token when its signature matches a
 * project key, `aud` is "authenticated" and it has not expired. They hold every key, secrets
 * included, so this takes the signing keys themselves: ES256 and HS256 tokens by `kid`, and
 * kid-less HS256 tokens by the legacy secret.
 */
import {
  createLocalJWKSet,
  errors,
  importJWK,
  type JSONWebKeySet,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";
import type { JwtClaims } from "../../supabase/functions/_shared/db/client.ts";

export interface VerifiedUser {
  /** The `sub` claim. */
  id: string;
  role: string;
  claims: JwtClaims;
}

export type Verdict =
  | { ok: true; user: VerifiedUser }
  | { ok: false; code: "missing_token" | "invalid_token" | "expired_token"; message: string };

export interface TokenVerifier {
  verify(token: string): Promise<Verdict>;
}

export function createTokenVerifier(options: {
  /**
   * The project's keys as Auth holds them: asymmetric ones by their public JWK, shared secrets
   * by their `oct` JWK (`serverKeysOf` in signing_keys.ts), the legacy one without `kid`.
   */
  jwks: JSONWebKeySet;
  /** Checked only when given. */
  issuer?: string;
}): TokenVerifier {
  const withKid = createLocalJWKSet({ keys: options.jwks.keys.filter((key) => key.kid) });
  const legacy = options.jwks.keys.find((key) => key.kty === "oct" && !key.kid);
  const legacySecret = legacy && importJWK(legacy, "HS256");
  const keys: JWTVerifyGetKey = (header, token) =>
    !header.kid && header.alg === "HS256" && legacySecret ? legacySecret : withKid(header, token);
  return {
    async verify(token) {
      if (!token) return { ok: false, code: "missing_token", message: "No access token" };
      try {
        const { payload } = await jwtVerify(token, keys, {
          algorithms: ["ES256", "HS256"],
          audience: "authenticated",
          issuer: options.issuer,
          requiredClaims: ["sub", "role", "exp"],
        });
        const { sub, role } = payload as Record<string, unknown>;
        if (typeof sub !== "string" || sub === "" || typeof role !== "string" || role === "") {
          return { ok: false, code: "invalid_token", message: "sub and role must be strings" };
        }
        return { ok: true, user: { id: sub, role, claims: payload as JwtClaims } };
      } catch (error) {
        if (error instanceof errors.JWTExpired) {
          return { ok: false, code: "expired_token", message: "The access token has expired" };
        }
        if (error instanceof errors.JOSEError) {
          return {
            ok: false,
            code: "invalid_token",
            message: `Invalid access token: ${error.message}`,
          };
        }
        throw error;
      }
    },
  };
}

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive). */
export function bearerToken(request: Request): string | undefined {
  return request.headers.get("Authorization")?.match(/^Bearer[ \t]+(\S+)[ \t]*$/i)?.[1];
}
