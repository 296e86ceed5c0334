/**
 * The first middleware of every function: gives the request its id (`requestIdOf`), echoes it
 * as `x-request-id` on the answer (and `handleError` in error bodies), and writes the one
 * `request` log line when the answer is ready: method, route, status, the error code when
 * there is one, latency, and the caller (hashed) once `requireUser` knew him.
 */
import type { MiddlewareHandler } from "hono";
import { log, requestIdOf } from "../log.ts";

declare module "hono" {
  interface ContextVariableMap {
    requestId: string;
    /** The `code` of the error answer, set by `handleError`, for the request's log line. */
    errorCode: string;
  }
}

export function requestContext(functionName: string): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    const requestId = requestIdOf(c.req.raw);
    c.set("requestId", requestId);
    await next();
    // A WebSocket upgrade's headers belong to Deno; everything else says its id.
    if (c.res.status !== 101) {
      try {
        c.res.headers.set("x-request-id", requestId);
      } catch (error) {
        // A response with immutable headers (one passed through from a fetch) keeps its own.
        if (!(error instanceof TypeError)) throw error;
      }
    }
    const user = (c.var as { user?: { id: string } }).user;
    const status = c.res.status;
    log(status >= 500 ? "error" : status >= 400 ? "warn" : "info", "request", {
      request_id: requestId,
      fn: functionName,
      method: c.req.method,
      route: c.req.routePath,
      status,
      ...(c.var.errorCode ? { code: c.var.errorCode } : {}),
      latency_ms: Math.round(performance.now() - started),
      ...(user ? { user_id: user.id } : {}),
    });
  };
}
