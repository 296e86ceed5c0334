/**
 * Whether an issuer can be named as this resource's authorization server: only when it
 * publishes RFC 8414 metadata whose `issuer` is itself. Supabase Auth always issues the
 * tokens, but unless the project enabled its OAuth 2.1 server there is no metadata, no
 * authorization endpoint and no consent page, and a client sent there would fail; the
 * resource then names none and clients bring a bearer token.
 *
 * Answers are kept per isolate (a cache: losing it costs one fetch): a yes for 10 minutes,
 * a no for one, so a metadata request never waits on Auth more than once in a while.
 */
import { logFailure } from "../log.ts";

const FOUND_TTL_MS = 10 * 60 * 1000;
const MISSING_TTL_MS = 60 * 1000;
const FETCH_TIMEOUT_MS = 2000;

const known = new Map<string, { server: string | undefined; until: number }>();

export async function authorizationServerOf(
  issuer: string,
  options: { fetch?: typeof fetch; now?: () => number } = {},
): Promise<string | undefined> {
  const now = options.now ?? Date.now;
  const cached = known.get(issuer);
  if (cached && cached.until > now()) return cached.server;
  const server = await discover(issuer, options.fetch ?? fetch);
  known.set(issuer, { server, until: now() + (server ? FOUND_TTL_MS : MISSING_TTL_MS) });
  return server;
}

/** RFC 8414 §3: the well-known segment goes between the host and the issuer's path. */
export function metadataUrlOf(issuer: string): URL {
  const url = new URL(issuer);
  const path = url.pathname.replace(/\/+$/, "");
  return new URL(`/.well-known/oauth-authorization-server${path}`, url.origin);
}

async function discover(issuer: string, fetcher: typeof fetch): Promise<string | undefined> {
  let response: Response;
  try {
    response = await fetcher(metadataUrlOf(issuer), {
      headers: { Accept: "application/json" },
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
  } catch (error) {
    logFailure("authorization_server_metadata", error, { issuer }, "warn");
    return undefined;
  }
  if (!response.ok) {
    await response.body?.cancel();
    return undefined;
  }
  let metadata: { issuer?: unknown };
  try {
    metadata = await response.json();
  } catch (error) {
    logFailure("authorization_server_metadata", error, { issuer }, "warn");
    return undefined;
  }
  // §3.3: metadata for another issuer must not be used.
  return metadata?.issuer === issuer ? issuer : undefined;
}
