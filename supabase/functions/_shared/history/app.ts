/**
 * The `history` Edge Function as a Hono app: chat history over JSON for the web client.
 * Built from its dependencies so tests serve it with a local JWKS and a scratch database.
 *
 *   POST   /history/messages                  append a batch (idempotent, all or nothing)
 *   GET    /history/sessions?limit=&before=   newest first, cursor `next_before`
 *   GET    /history/sessions/:id/messages?after_seq=&limit=   seq order, `next_after_seq`
 *   GET    /history/search?q=&limit=          full-text over the caller's own messages
 *   DELETE /history/sessions/:id              204
 *
 * Errors are `{"error":{"code","message","path"?}}`: 400 bad_json, 401 missing_token /
 * invalid_token / expired_token, 403 forbidden, 404 not_found (also for another user's
 * session: its existence is not revealed), 405 method_not_allowed, 409 conflict, 413
 * payload_too_large (a body over 1 MiB), 422 invalid_request (names the field; also a batch
 * of more than 500 messages: the body is well-formed, its content breaks a rule), 429
 * rate_limited with Retry-After (the caller's history request bucket, 30 at once and 120 a
 * minute by default, is empty), 503 auth_unavailable (the signing keys cannot be had).
 */
import { z } from "zod";
import { readOperatorMetrics } from "../metrics.ts";
import type { Context } from "hono";
import { methodNotAllowed } from "hono/method-not-allowed";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { TokenVerifier } from "../auth.ts";
import { asUser, type Sql, type Tx } from "../db/client.ts";
import { appendMessages } from "./append.ts";
import type { AppendInput } from "./input.ts";
import type { AdminSummary, HistoryError, HistoryErrorCode, HistoryResult } from "./protocol.ts";
import { searchMessages } from "./search.ts";
import { deleteSession, listMessages, listSessions } from "./sessions.ts";
import { handleMethodNotAllowed, HttpError } from "../http/errors.ts";
import { createFunctionApp } from "../http/function_app.ts";
import { addOperatorRoutes } from "../http/operator_routes.ts";
import type { HostPolicy } from "../http/host_policy.ts";
import { MAX_JSON_BODY_BYTES, readJsonBody } from "../http/json_body.ts";
import { limitRequests } from "../http/limit_requests.ts";
import { requireUser, type UserEnv } from "../http/require_user.ts";

export interface HistoryAppDependencies {
  sql: Sql;
  verifier: TokenVerifier;
  /** The hosts answered; loopback only unless given (`hostPolicyFromEnv`). */
  hostPolicy?: HostPolicy;
  /** Opens `/metrics` to this bearer token (`METRICS_TOKEN`). */
  metricsToken?: string;
}

const AdminWindowSchema = z.coerce.number().int().min(60).max(86400).default(3600);

const STATUS_OF: Record<HistoryErrorCode, ContentfulStatusCode> = {
  invalid_request: 422,
  not_found: 404,
  conflict: 409,
  forbidden: 403,
};

export function createHistoryApp(
  { sql, verifier, hostPolicy, metricsToken }: HistoryAppDependencies,
) {
  const app = createFunctionApp<UserEnv>("history", {
    corsMethods: ["GET", "HEAD", "POST", "DELETE"],
    hostPolicy,
  });
  app.use(methodNotAllowed({ app, onMethodNotAllowed: handleMethodNotAllowed }));
  const signedIn = requireUser({ verifier });
  // Every request of a signed-in caller takes one from his history request bucket.
  const limited = limitRequests(sql, "history");

  addOperatorRoutes(app, { sql, verifier, metricsToken });

  /** One transaction as the caller; an error value becomes the HTTP error it stands for. */
  const asCaller = async <T>(
    c: Context<UserEnv>,
    work: (tx: Tx) => Promise<HistoryResult<T>>,
  ): Promise<T> => {
    const result = await asUser(sql, c.var.user.claims, work);
    if (!result.ok) throw httpErrorOf(result);
    return result.value;
  };

  // The operator's numbers for the web app's admin page: /metrics as JSON, for users whose
  // app_metadata (which only the service role can set) makes them admins.
  app.get("/admin/summary", signedIn, limited, async (c) => {
    const appMetadata = c.var.user.claims.app_metadata as { role?: unknown } | undefined;
    if (appMetadata?.role !== "admin") {
      throw new HttpError(403, "forbidden", "Only admins (app_metadata.role) see this summary");
    }
    const window = AdminWindowSchema.safeParse(c.req.query("window"));
    if (!window.success) {
      throw new HttpError(422, "invalid_request", "window: seconds, from 60 to 86400", {
        path: "window",
      });
    }
    const summary: AdminSummary = await readOperatorMetrics(sql, window.data, 30);
    return c.json(summary, 200, { "Cache-Control": "no-store" });
  });

  app.post("/messages", signedIn, limited, async (c) => {
    const body = await readJsonBody(c.req.raw, MAX_JSON_BODY_BYTES);
    // appendMessages validates the body itself (once; a 500-message batch takes ~1.5 ms)
    // before any statement runs, and answers a bad one with a value naming the field.
    const appended = await asCaller(c, (tx) => appendMessages(tx, body as AppendInput));
    return c.json({
      session_id: appended.session_id,
      messages: appended.messages.map(({ id, seq, created_at, inserted }) => (
        { id, seq, created_at, inserted }
      )),
    }, appended.inserted ? 201 : 200);
  });

  app.get("/sessions", signedIn, limited, async (c) => {
    const limit = integerParam(c, "limit");
    const before = c.req.query("before");
    return c.json(await asCaller(c, (tx) => listSessions(tx, { limit, before })));
  });

  app.get("/sessions/:id/messages", signedIn, limited, async (c) => {
    const limit = integerParam(c, "limit");
    const afterSeq = integerParam(c, "after_seq");
    const sessionId = c.req.param("id");
    return c.json(await asCaller(c, (tx) => listMessages(tx, sessionId, { limit, afterSeq })));
  });

  app.delete("/sessions/:id", signedIn, limited, async (c) => {
    const sessionId = c.req.param("id");
    await asCaller(c, (tx) => deleteSession(tx, sessionId));
    return c.body(null, 204);
  });

  app.get("/search", signedIn, limited, async (c) => {
    const limit = integerParam(c, "limit");
    const q = c.req.query("q") ?? "";
    return c.json({ results: await asCaller(c, (tx) => searchMessages(tx, q, { limit })) });
  });

  return app;
}

/** A query parameter that must be a non-negative integer when present. */
function integerParam(c: Context, name: string): number | undefined {
  const raw = c.req.query(name);
  if (raw === undefined) return undefined;
  if (!/^\d{1,10}$/.test(raw)) {
    throw new HttpError(422, "invalid_request", `${name}: must be a non-negative integer`, {
      path: name,
    });
  }
  return Number(raw);
}

function httpErrorOf(error: HistoryError): HttpError {
  return new HttpError(STATUS_OF[error.code], error.code, error.message, { path: error.path });
}
