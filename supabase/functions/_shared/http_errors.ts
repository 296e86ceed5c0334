/**
 * The HTTP error boundary shared by the JSON functions (history, mcp): one envelope,
 * `{"error":{"code","message"}}` (plus `path` when one input field is to blame), stable string
 * codes, and handlers for Hono's `onError` / `notFound` / 405 that never put a stack trace or
 * a database message the client did not cause into a response.
 *
 * Request bodies are read here too, because "too large" and "not JSON" are the first two
 * errors every JSON endpoint answers, and both must be the same everywhere.
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";

export interface ErrorDetail {
  /** Stable, machine-readable: clients branch on it. */
  code: string;
  /** For humans; may change between versions. */
  message: string;
  /** The offending input field, e.g. `messages[3].role` or `limit`. */
  path?: string;
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
  readonly code: string;
  readonly path?: string;
  readonly headers: Record<string, string>;

  constructor(
    status: ContentfulStatusCode,
    code: string,
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
const CODE_OF_STATUS: Partial<Record<number, string>> = {
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
  if (error instanceof HttpError) return error.toResponse();
  if (error instanceof HTTPException && error.status < 500) {
    const status = error.status as ContentfulStatusCode;
    const code = CODE_OF_STATUS[status] ?? "bad_request";
    return errorResponse(status, { code, message: error.message || code });
  }
  console.error(`${c.req.method} ${c.req.path} failed:`, error);
  return errorResponse(500, { code: "internal_error", message: "Internal server error" });
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

export const MAX_JSON_BODY_BYTES = 1024 * 1024;

/**
 * The request body parsed as JSON, read at most `maxBytes` far. A declared Content-Length over
 * the limit is refused before reading; a chunked body (no Content-Length) is counted as it
 * arrives and abandoned as soon as it passes the limit, so an endless body costs nothing.
 *
 * Throws `HttpError` 413 `payload_too_large` or 400 `bad_json`.
 */
export async function readJsonBody(
  request: Request,
  maxBytes: number = MAX_JSON_BODY_BYTES,
): Promise<unknown> {
  const declared = request.headers.get("Content-Length");
  if (declared !== null && Number(declared) > maxBytes) {
    throw tooLarge(maxBytes);
  }
  const bytes = await readAtMost(request.body, maxBytes);
  if (bytes.byteLength === 0) {
    throw new HttpError(400, "bad_json", "The request body is empty; expected a JSON document");
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    throw new HttpError(400, "bad_json", "The request body is not valid UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    throw new HttpError(400, "bad_json", `The request body is not valid JSON: ${error.message}`);
  }
}

async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel("request body over the size limit");
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    "payload_too_large",
    `The request body is larger than ${maxBytes} bytes`,
  );
}
