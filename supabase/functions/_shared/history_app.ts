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
 * of more than 500 messages: the body is well-formed, its content breaks a rule).
 */
import { type Context, Hono, type MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { methodNotAllowed } from "hono/method-not-allowed";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { TokenVerifier, VerifiedUser } from "./auth.ts";
import { bearerToken } from "./auth.ts";
import { asUser, type Sql, type Tx } from "./db.ts";
import {
  type AppendInput,
  appendMessages,
  deleteSession,
  type HistoryError,
  type HistoryErrorCode,
  type HistoryResult,
  listMessages,
  listSessions,
  searchMessages,
} from "./history.ts";
import {
  handleError,
  handleMethodNotAllowed,
  handleNotFound,
  HttpError,
  MAX_JSON_BODY_BYTES,
  readJsonBody,
} from "./http_errors.ts";

export interface HistoryAppDependencies {
  sql: Sql;
  verifier: TokenVerifier;
}

type HistoryEnv = { Variables: { user: VerifiedUser } };

/** What supabase-js sends with every call; the browser asks before sending them. */
const CORS_ALLOWED_HEADERS = ["authorization", "x-client-info", "apikey", "content-type"];

const STATUS_OF: Record<HistoryErrorCode, ContentfulStatusCode> = {
  invalid_request: 422,
  not_found: 404,
  conflict: 409,
  forbidden: 403,
};

export function createHistoryApp({ sql, verifier }: HistoryAppDependencies): Hono<HistoryEnv> {
  const app = new Hono<HistoryEnv>().basePath("/history");
  app.onError(handleError);
  app.notFound(handleNotFound);
  app.use(cors({
    origin: "*",
    allowHeaders: CORS_ALLOWED_HEADERS,
    allowMethods: ["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
    maxAge: 86400,
  }));
  app.use(methodNotAllowed({ app, onMethodNotAllowed: handleMethodNotAllowed }));

  const requireUser = authenticate(verifier);
  /** One transaction as the caller; an error value becomes the HTTP error it stands for. */
  const asCaller = async <T>(
    c: Context<HistoryEnv>,
    work: (tx: Tx) => Promise<HistoryResult<T>>,
  ): Promise<T> => {
    const result = await asUser(sql, c.var.user.claims, work);
    if (!result.ok) throw httpErrorOf(result);
    return result.value;
  };

  app.post("/messages", requireUser, async (c) => {
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

  app.get("/sessions", requireUser, async (c) => {
    const limit = integerParam(c, "limit");
    const before = c.req.query("before");
    return c.json(await asCaller(c, (tx) => listSessions(tx, { limit, before })));
  });

  app.get("/sessions/:id/messages", requireUser, async (c) => {
    const limit = integerParam(c, "limit");
    const afterSeq = integerParam(c, "after_seq");
    const sessionId = c.req.param("id");
    return c.json(await asCaller(c, (tx) => listMessages(tx, sessionId, { limit, afterSeq })));
  });

  app.delete("/sessions/:id", requireUser, async (c) => {
    const sessionId = c.req.param("id");
    await asCaller(c, (tx) => deleteSession(tx, sessionId));
    return c.body(null, 204);
  });

  app.get("/search", requireUser, async (c) => {
    const limit = integerParam(c, "limit");
    const q = c.req.query("q") ?? "";
    return c.json({ results: await asCaller(c, (tx) => searchMessages(tx, q, { limit })) });
  });

  return app;
}

function authenticate(verifier: TokenVerifier): MiddlewareHandler<HistoryEnv> {
  return async (c, next) => {
    const token = bearerToken(c.req.raw);
    if (!token) {
      throw new HttpError(401, "missing_token", "Send Authorization: Bearer <access token>", {
        headers: { "WWW-Authenticate": "Bearer" },
      });
    }
    let result;
    try {
      result = await verifier.verify(token);
    } catch (error) {
      // The verifier rejects only when the keys cannot be had: our fault, not the token's.
      console.error("history: cannot verify access tokens:", error);
      throw new HttpError(503, "auth_unavailable", "Cannot verify access tokens right now", {
        cause: error,
      });
    }
    if (!result.ok) {
      throw new HttpError(401, result.code, result.message, {
        headers: { "WWW-Authenticate": `Bearer error="invalid_token"` },
      });
    }
    c.set("user", result.user);
    await next();
  };
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
