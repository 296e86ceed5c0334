/**
 * The registry of the functions' HTTP error codes: the `code` of every
 * `{"error":{"code","message"}}` answer is one of these, and `HttpError` takes nothing else.
 * No imports, so clients (the web app among them) may import it too.
 */
/** Every `error.code` an HTTP answer of the functions can carry; clients branch on them. */
export const HTTP_ERROR_CODES = [
  // The request itself
  "bad_request",
  "bad_json",
  "payload_too_large",
  "unsupported_media_type",
  "invalid_request",
  "method_not_allowed",
  "not_found",
  "upgrade_required",
  "timeout",
  // Who is asking
  "missing_token",
  "invalid_token",
  "expired_token",
  "invalid_secret",
  "forbidden",
  "forbidden_host",
  "forbidden_origin",
  // What the request asked for
  "conflict",
  "rate_limited",
  // A server the caller connects (the connections function)
  "url_not_allowed",
  "server_unreachable",
  "server_timeout",
  "server_response_too_large",
  "not_an_mcp_server",
  "server_auth_failed",
  "oauth_unsupported",
  "oauth_failed",
  // The server
  "auth_unavailable",
  /** Postgres cannot be reached; `Retry-After` says when to try again. */
  "db_unavailable",
  "not_configured",
  "unavailable",
  "internal_error",
] as const;

export type HttpErrorCode = (typeof HTTP_ERROR_CODES)[number];
