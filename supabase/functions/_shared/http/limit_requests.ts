/**
 * `limitRequests`: after `requireUser`, takes one request from the caller's bucket for the
 * function's surface and answers 429 `rate_limited` with `Retry-After` when it is empty. The
 * bucket lives in Postgres, so the limit holds across every isolate serving the function.
 */
import type { MiddlewareHandler } from "hono";
import type { Sql } from "../db/client.ts";
import { consumeRequest, type RequestSurface } from "../request_buckets.ts";
import { HttpError } from "./errors.ts";
import type { UserEnv } from "./require_user.ts";

export function limitRequests(sql: Sql, surface: RequestSurface): MiddlewareHandler<UserEnv> {
  return async (c, next) => {
    const decision = await consumeRequest(sql, c.var.user.id, surface);
    if (!decision.allowed) {
      throw new HttpError(429, "rate_limited", "Too many requests: your request rate is used up", {
        headers: decision.retryAfterMs === undefined
          ? {}
          : { "Retry-After": String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000))) },
      });
    }
    await next();
  };
}
