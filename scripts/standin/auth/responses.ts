/**
 * What every answer of the Auth stand-in carries: the API version header, CORS for browsers,
 * and errors in a shape `@supabase/auth-js` turns into an `AuthApiError` with the right
 * `code` and `status`.
 *
 * GoTrue answers `{"code":"<error code>","message"}` to clients that send
 * `X-Supabase-Api-Version: 2024-01-01` and `{"code":<status>,"error_code","msg"}` to older
 * ones. Ours carries both at once (`code` and `error_code` the same string, `message` and
 * `msg` the same text): auth-js reads `code` when it can see the version header and
 * `error_code` when it cannot — a browser only sees the header because it is exposed below.
 */

export const API_VERSION_HEADER = "X-Supabase-Api-Version";
export const API_VERSION = "2024-01-01";

/** The headers supabase-js sends (its own `corsHeaders` list) plus the API version header. */
const ALLOWED_HEADERS = [
  "authorization",
  "x-client-info",
  "apikey",
  "content-type",
  "x-supabase-api-version",
  "x-retry-count",
  "traceparent",
  "tracestate",
  "baggage",
].join(", ");

const CORS_HEADERS: Record<string, string> = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Expose-Headers": API_VERSION_HEADER,
};

/** An error the client caused, answered with GoTrue's status and stable code. */
export class AuthFailure extends Error {
  readonly status: number;
  readonly code: string;
  /** Extra top-level fields GoTrue adds for some codes (e.g. `weak_password`). */
  readonly extra: Record<string, unknown>;

  constructor(status: number, code: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = "AuthFailure";
    this.status = status;
    this.code = code;
    this.extra = extra;
  }

  toResponse(): Response {
    return jsonResponse(
      {
        code: this.code,
        error_code: this.code,
        message: this.message,
        msg: this.message,
        ...this.extra,
      },
      this.status,
    );
  }
}

export function jsonResponse(
  body: unknown,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  return withCommonHeaders(Response.json(body, { status, headers }));
}

export function noContent(): Response {
  return withCommonHeaders(new Response(null, { status: 204 }));
}

export function preflightResponse(): Response {
  const response = new Response(null, { status: 204 });
  response.headers.set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
  response.headers.set("Access-Control-Allow-Headers", ALLOWED_HEADERS);
  response.headers.set("Access-Control-Max-Age", "86400");
  return withCommonHeaders(response);
}

function withCommonHeaders(response: Response): Response {
  for (const [name, value] of Object.entries(CORS_HEADERS)) response.headers.set(name, value);
  response.headers.set(API_VERSION_HEADER, API_VERSION);
  // Sessions and user objects must never sit in a shared cache; public answers (the JWKS)
  // say otherwise themselves.
  if (!response.headers.has("Cache-Control")) response.headers.set("Cache-Control", "no-store");
  return response;
}

/** The one answer for failures nobody anticipated; auth-js retries 5xx on refresh. */
export function unexpectedFailure(): Response {
  return new AuthFailure(
    500,
    "unexpected_failure",
    "Unexpected failure, please check server logs for more information",
  ).toResponse();
}
