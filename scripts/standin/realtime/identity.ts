/**
 * Who a channel acts as: the claims Postgres gets in `request.jwt.claims` and the role it
 * switches to. A user access token is verified against the JWKS; no token, or an `sb_…`
 * key in its place, means "the socket's apikey" (anon for the publishable key,
 * service_role for the secret key), as Realtime does.
 */
import type { TokenVerifier } from "../token_verifier.ts";

export interface Identity {
  role: string;
  /** The claims as JSON text, also the identity's grouping key. */
  claims: string;
  /** The token it came from; `undefined` for the apikey. */
  token?: string;
  /** Expiry in seconds since the epoch; `undefined` for the apikey. */
  expiresAt?: number;
}

export type IdentityResult = { ok: true; identity: Identity } | {
  ok: false;
  code: "invalid_token" | "expired_token" | "missing_token";
  /** Realtime-style reason, e.g. `InvalidJWTToken: The access token has expired`. */
  reason: string;
};

export function apikeyIdentity(role: "anon" | "service_role"): Identity {
  return { role, claims: JSON.stringify({ role }) };
}

export function usesApikey(token: unknown): boolean {
  return typeof token !== "string" || token === "" || token.startsWith("sb_");
}

/**
 * Verifies `token`. Rejects only when the keys cannot be had (JWKS unreachable), which is
 * the server's fault and not a reason to tell the client its token is bad.
 */
export async function resolveIdentity(
  token: unknown,
  apikey: Identity,
  verifier: TokenVerifier,
): Promise<IdentityResult> {
  if (usesApikey(token)) return { ok: true, identity: apikey };
  const result = await verifier.verify(token as string);
  if (!result.ok) {
    return { ok: false, code: result.code, reason: `InvalidJWTToken: ${result.message}` };
  }
  const claims = result.user.claims;
  return {
    ok: true,
    identity: {
      role: result.user.role,
      claims: JSON.stringify(claims),
      token: token as string,
      expiresAt: typeof claims.exp === "number" ? claims.exp : undefined,
    },
  };
}
