/**
 * `requireSecret`: the guard of operator routes (a sweep, metrics), which no user token opens.
 * The caller sends the secret as `Authorization: Bearer <secret>`; it is compared in constant
 * time. A route whose secret is not configured stays shut (503 `not_configured`), so forgetting
 * the secret never leaves it open.
 */
import type { MiddlewareHandler } from "hono";
import { HttpError } from "./errors.ts";
import { bearerToken } from "./require_user.ts";

export interface RequireSecretOptions {
  /** The configured secret; undefined or empty keeps the route shut. */
  secret: string | undefined;
  /** The setting that holds it, named in the error an operator sees when it is missing. */
  settingName: string;
}

export function requireSecret(options: RequireSecretOptions): MiddlewareHandler {
  const expected = options.secret ? digest(options.secret) : undefined;
  return async (c, next) => {
    if (!expected) {
      throw new HttpError(
        503,
        "not_configured",
        `This route is disabled until ${options.settingName} is set`,
      );
    }
    const given = bearerToken(c.req.raw);
    if (!given || !sameBytes(await digest(given), await expected)) {
      throw new HttpError(401, "invalid_secret", "Send Authorization: Bearer <secret>", {
        headers: { "WWW-Authenticate": "Bearer" },
      });
    }
    await next();
  };
}

/** Digests have a fixed length, so comparing them leaks neither the secret nor its length. */
async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  let difference = a.length ^ b.length;
  for (let i = 0; i < a.length && i < b.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}
