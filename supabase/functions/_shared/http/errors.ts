/**
 * The error boundary of every function: one envelope, `{"error":{"code","message"}}` (plus
 * `path` when one input field is to blame), stable string codes, and handlers for Hono's
 * `onError` / `notFound` / 405 that never put a stack trace or a database message the client
 * did not cause into a response.
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import postgres from "postgres";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { DATABASE_RETRY_AFTER_SECONDS, isDatabaseUnavailable } from "../db/unavailable.ts";
import { describeError, log } from "../log.ts";
import type { HttpErrorCode } from "./error_codes.ts";

export interface ErrorDetail {
  /** Stable, machine-readable: clients branch on it. */
  code: HttpErrorCode;
  /** For humans; may change between versions. */
  message: string;
  /** The offending input field, e.g. `messages[3].role` or `limit`. */
  path?: string;
  /** The request's id (`x-request-id`), to quote when reporting a problem. */
  request_id?: string;
}

export interface ErrorEnvelope {
  error: ErrorDetail;
}

export interface HttpErrorOptions {
  path?: string;
  headers?: Record<string, string>;
  cause?: unknown;
}

/** An error the client caused (or may retry), with the status and code it is answered with. */
export class HttpError extends Error {
  readonly status: ContentfulStatusCode;
  readonly code: HttpErrorCode;
  readonly path?: string;
  readonly headers: Record<string, string>;

  constructor(
    status: ContentfulStatusCode,
    code: HttpErrorCode,
    message: string,
    options: HttpErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.path = options.path;
    this.headers = options.headers ?? {};
  }

  get detail(): ErrorDetail {
    const detail: ErrorDetail = { code: this.code, message: this.message };
    if (this.path !== undefined) detail.path = this.path;
    return detail;
  }

  toResponse(): Response {
    return errorResponse(this.status, this.detail, this.headers);
  }
}

export function errorResponse(
  status: ContentfulStatusCode,
  detail: ErrorDetail,
  headers: Record<string, string> = {},
): Response {
  const body: ErrorEnvelope = { error: detail };
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...headers, "Content-Type": "application/json; charset=utf-8" },
  });
}

/** Codes for the statuses Hono's own middleware throws as `HTTPException`. */
const CODE_OF_STATUS: Partial<Record<number, HttpErrorCode>> = {
  400: "bad_request",
  401: "invalid_token",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  408: "timeout",
  413: "payload_too_large",
  415: "unsupported_media_type",
  422: "invalid_request",
  429: "rate_limited",
  503: "unavailable",
};

/**
 * For `app.onError`. Client errors keep their code and message; anything unexpected is
 * logged here, with its stack, and answered with a generic 500 so internals stay internal.
 * (Hono copies the headers middleware already set, CORS included, onto the returned response.)
 */
export function handleError(error: unknown, c: Context): Response {
  const requestId = c.get("requestId") as string | undefined;
  const answer = (
    status: ContentfulStatusCode,
    detail: ErrorDetail,
    headers: Record<string, string> = {},
  ) => {
    c.set("errorCode", detail.code);
    return errorResponse(
      status,
      requestId ? { ...detail, request_id: requestId } : detail,
      headers,
    );
  };
  if (error instanceof HttpError) return answer(error.status, error.detail, error.headers);
  if (error instanceof HTTPException && error.status < 500) {
    const status = error.status as ContentfulStatusCode;
    const code = CODE_OF_STATUS[status] ?? "bad_request";
    return answer(status, { code, message: error.message || code });
  }
  if (isMissingUser(error)) {
    return answer(401, {
      code: "invalid_token",
      message: "The token's user no longer exists",
    }, { "WWW-Authenticate": `Bearer error="invalid_token"` });
  }
  if (isDatabaseUnavailable(error)) {
    log("warn", "db_unavailable", {
      request_id: requestId,
      route: `${c.req.method} ${c.req.path}`,
      error: describeError(error),
    });
    return answer(503, {
      code: "db_unavailable",
      message: "The database cannot be reached right now; try again shortly",
    }, { "Retry-After": String(DATABASE_RETRY_AFTER_SECONDS) });
  }
  log("error", "failure", {
    request_id: requestId,
    route: `${c.req.method} ${c.req.path}`,
    error: describeError(error),
    stack: error instanceof Error ? error.stack?.slice(0, 2000) : undefined,
  });
  return answer(500, { code: "internal_error", message: "Internal server error" });
}

/**
 * A write for a user Auth has deleted: his token stays valid until `exp`, but every row of
 * his references `auth.users` (as `<table>_user_id_fkey`, Postgres's name for each such key).
 */
function isMissingUser(error: unknown): boolean {
  return error instanceof postgres.PostgresError && error.code === "23503" &&
    /_user_id_fkey$/.test(error.constraint_name ?? "");
}

/** For `app.notFound`. */
export function handleNotFound(c: Context): Response {
  return errorResponse(404, {
    code: "not_found",
    message: `No route for ${c.req.method} ${c.req.path}`,
  });
}

/** For `methodNotAllowed({ app, onMethodNotAllowed })` from `hono/method-not-allowed`. */
export function handleMethodNotAllowed(c: Context, allowedMethods: string[]): Response {
  const allow = allowedMethods.join(", ");
  return errorResponse(
    405,
    { code: "method_not_allowed", message: `${c.req.method} is not allowed here; use ${allow}` },
    { Allow: allow },
  );
}
