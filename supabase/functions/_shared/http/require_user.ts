/**
 * `requireUser`: the one place a function reads and verifies a user's access token. It takes
 * the token from `Authorization: Bearer`, and where a function allows it (browsers cannot set
 * headers on a WebSocket) from a `<prefix><token>` entry of `Sec-WebSocket-Protocol` or a
 * `?jwt=` query parameter. It answers 401 with an RFC 6750 `WWW-Authenticate` challenge
 * (naming the RFC 9728 metadata where the function has it) and 503 `auth_unavailable` when the
 * token cannot be judged (keys or, for a legacy project, Auth out of reach); otherwise the handler finds the caller in `c.var.user`.
 */
import type { MiddlewareHandler } from "hono";
import type { AuthErrorCode, TokenVerifier, VerifiedUser } from "../auth.ts";
import { describeError, log } from "../log.ts";
import { HttpError } from "./errors.ts";

export interface RequireUserOptions {
  verifier: TokenVerifier;
  /**
   * Also accept the token as a WebSocket subprotocol `<prefix><token>`; the offered entry is
   * kept in `c.var.tokenProtocol`, for the upgrade to echo back as browsers require.
   */
  subprotocolPrefix?: string;
  /** Also accept `?jwt=<token>` (it ends up in access logs, so only where nothing else works). */
  queryParameter?: boolean;
  /**
   * The RFC 9728 protected-resource metadata URL, named in every 401 challenge; a function of
   * the request where the URL depends on the host the client used.
   */
  resourceMetadataUrl?: string | ((request: Request) => string);
}

/** What `requireUser` leaves for the handlers after it. */
export interface UserVariables {
  user: VerifiedUser;
  /** The token as sent; for handing on (e.g. to the MCP SDK's `authInfo`), never for logs. */
  accessToken: string;
  /** The `Sec-WebSocket-Protocol` entry the token came in, when it came that way. */
  tokenProtocol?: string;
}

export type UserEnv = { Variables: UserVariables };

/** The only role a user-facing function accepts from a token. */
export const USER_ROLE = "authenticated";

export function requireUser(options: RequireUserOptions): MiddlewareHandler<UserEnv> {
  const { verifier, resourceMetadataUrl } = options;
  const missingMessage = howToSendToken(options);

  return async (c, next) => {
    const metadataUrl = typeof resourceMetadataUrl === "function"
      ? resourceMetadataUrl(c.req.raw)
      : resourceMetadataUrl;
    const metadata = metadataUrl ? `resource_metadata="${metadataUrl}"` : "";
    const credentials = credentialsOf(c.req.raw, options);
    const failed = (code: string) =>
      log("warn", "sign_in_failed", { request_id: c.var.requestId, route: c.req.path, code });
    if (!credentials.token) {
      failed("missing_token");
      throw new HttpError(401, "missing_token", missingMessage, {
        headers: { "WWW-Authenticate": metadata ? `Bearer ${metadata}` : "Bearer" },
      });
    }
    let result;
    try {
      result = await verifier.verify(credentials.token);
    } catch (error) {
      // The verifier rejects only when the keys or Auth cannot be had: our fault, not the token's.
      log("error", "failure", {
        request_id: c.var.requestId,
        route: c.req.path,
        code: "auth_unavailable",
        error: describeError(error),
      });
      throw new HttpError(
        503,
        "auth_unavailable",
        "Access tokens cannot be verified right now; try again shortly",
        { cause: error },
      );
    }
    // RFC 6750 §3: a bad token is "invalid_token"; the description must be a quoted-string.
    const refuse = (code: AuthErrorCode, message: string) => {
      failed(code);
      const description = message.replace(/["\\]/g, "'");
      const challenge = [`error="invalid_token"`, `error_description="${description}"`];
      if (metadata) challenge.push(metadata);
      return new HttpError(401, code, message, {
        headers: { "WWW-Authenticate": `Bearer ${challenge.join(", ")}` },
      });
    };
    if (!result.ok) throw refuse(result.code, result.message);
    // Functions scope every query by the token's role (`set local role`). A token the project
    // signed for another role (service_role, or any role its issuer names) would bypass RLS:
    // user-facing functions take signed-in users only.
    if (result.user.role !== USER_ROLE) {
      throw refuse(
        "invalid_token",
        `This function takes a signed-in user's access token (role "${USER_ROLE}"), not a ` +
          `token for the role "${result.user.role}"`,
      );
    }
    c.set("user", result.user);
    c.set("accessToken", credentials.token);
    if (credentials.protocol) c.set("tokenProtocol", credentials.protocol);
    await next();
  };
}

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive). */
export function bearerToken(request: Request): string | undefined {
  const header = request.headers.get("Authorization");
  const match = header?.match(/^Bearer[ \t]+(\S+)[ \t]*$/i);
  return match?.[1];
}

interface Credentials {
  token?: string;
  protocol?: string;
}

/** The token from the header, else the subprotocol, else the query string. */
function credentialsOf(request: Request, options: RequireUserOptions): Credentials {
  const prefix = options.subprotocolPrefix;
  const offered = prefix === undefined ? undefined : (
    request.headers.get("sec-websocket-protocol") ?? ""
  ).split(",").map((entry) => entry.trim()).find((entry) => entry.startsWith(prefix));
  const protocol = prefix !== undefined && offered && offered.length > prefix.length
    ? offered
    : undefined;
  const fromQuery = options.queryParameter
    ? new URL(request.url).searchParams.get("jwt") || undefined
    : undefined;
  const token = bearerToken(request) ?? protocol?.slice(prefix!.length) ?? fromQuery;
  return { ...(token ? { token } : {}), ...(protocol ? { protocol } : {}) };
}

function howToSendToken(options: RequireUserOptions): string {
  const ways = ["Authorization: Bearer <token>"];
  if (options.subprotocolPrefix !== undefined) {
    ways.push(`the WebSocket subprotocol "${options.subprotocolPrefix}<token>"`);
  }
  if (options.queryParameter) ways.push("?jwt=<token>");
  const listed = ways.length === 1
    ? ways[0]
    : `${ways.slice(0, -1).join(", ")}, or ${ways[ways.length - 1]}`;
  return `Send an access token: ${listed}`;
}
