/**
 * `/realtime/v1` of the local stand-in for `supabase start`: the Phoenix WebSocket Supabase
 * Realtime serves (postgres_changes with filters and RLS, broadcast) and its broadcast REST
 * API, for the unmodified `@supabase/supabase-js` client. See docs/realtime.md.
 *
 *   GET  /realtime/v1/websocket?apikey=…&vsn=2.0.0          WebSocket (vsn 1.0.0 or 2.0.0)
 *   POST /realtime/v1/api/broadcast                          202
 *   POST /realtime/v1/api/broadcast/<topic>/events/<event>   202
 */
import type { TokenVerifier } from "../token_verifier.ts";
import { type ApiKeys, roleOfApiKey, STANDARD_API_KEYS } from "../keys.ts";
import { createAuthorizer } from "./authorize.ts";
import { errorResponse, handleBroadcastBatch, handleBroadcastEvent } from "./broadcast.ts";
import { Catalog, openRealtimePool } from "./catalog.ts";
import { startChangeFeed } from "./change_feed.ts";
import { ChannelRegistry } from "./channels.ts";
import { createDispatcher } from "./dispatch.ts";
import { apikeyIdentity } from "./identity.ts";
import { isSupportedVsn } from "./phoenix.ts";
import { Session } from "./session.ts";

export interface RealtimeHandlerOptions {
  /** Superuser URL of the database (SUPABASE_DB_URL): it opens a replication connection. */
  databaseUrl: string;
  verifier: TokenVerifier;
  /** Which `apikey`s open it; the `sb_` keys by default. */
  apiKeys?: ApiKeys;
  /** Defaults to `supabase_realtime`. */
  publication?: string;
}

export interface RealtimeHandler {
  handle(request: Request): Response | Promise<Response>;
  close(): Promise<void>;
}

const BASE_PATH = "/realtime/v1";
/** Phoenix closes a socket that sent nothing (not even a heartbeat) for this long. */
const IDLE_TIMEOUT_MS = 60_000;
const IDLE_SWEEP_MS = 15_000;
const POOL_SIZE = 4;

/** Resolves once changes are being captured: every later commit is delivered. */
export async function createRealtimeHandler(
  options: RealtimeHandlerOptions,
): Promise<RealtimeHandler> {
  const publication = options.publication ?? "supabase_realtime";
  const apiKeys = options.apiKeys ?? STANDARD_API_KEYS;
  const pool = openRealtimePool(options.databaseUrl, POOL_SIZE);
  const catalog = new Catalog(pool, publication);
  const registry = new ChannelRegistry();
  const authorizer = createAuthorizer(pool);
  const sessions = new Set<Session>();

  let replicationDown: string | undefined;
  let feed;
  try {
    feed = await startChangeFeed({
      databaseUrl: options.databaseUrl,
      publication,
      catalog,
      onChanges: createDispatcher({ registry, catalog, authorizer }),
      onStatus(status, detail) {
        const message = status === "up"
          ? "Subscribed to PostgreSQL"
          : `Realtime lost its replication connection (${detail}); changes are not delivered until it is back`;
        replicationDown = status === "up" ? undefined : message;
        for (const session of sessions) {
          session.pushSystemToSubscribers(status === "up" ? "ok" : "error", message);
        }
      },
    });
  } catch (error) {
    await authorizer.close();
    await pool.end();
    throw error;
  }

  const idleSweep = setInterval(() => {
    const cutoff = Date.now() - IDLE_TIMEOUT_MS;
    for (const session of sessions) {
      if (session.lastSeen < cutoff) session.socket.close(1000, "idle timeout");
    }
  }, IDLE_SWEEP_MS);

  const upgrade = (request: Request, url: URL): Response => {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse(400, "websocket_required", "Connect with a WebSocket upgrade");
    }
    const role = roleOfApiKey(url.searchParams.get("apikey"), apiKeys);
    if (!role) {
      return errorResponse(
        401,
        "invalid_apikey",
        "The apikey query parameter is missing or unknown",
      );
    }
    // Phoenix speaks 1.0.0 to clients that do not say.
    const vsn = url.searchParams.get("vsn") ?? "1.0.0";
    if (!isSupportedVsn(vsn)) {
      return errorResponse(400, "unsupported_vsn", `Unsupported protocol version ${vsn}`);
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    const session = new Session(socket, vsn, {
      registry,
      catalog,
      verifier: options.verifier,
      apikey: apikeyIdentity(role),
      replicationDown: () => replicationDown,
    });
    sessions.add(session);
    socket.onmessage = (event) => session.receive(event.data);
    socket.onclose = () => {
      sessions.delete(session);
      session.dispose();
    };
    return response;
  };

  return {
    handle(request) {
      const url = new URL(request.url);
      const path = url.pathname.replace(/\/+$/, "");
      if (path === `${BASE_PATH}/websocket` && request.method === "GET") {
        return upgrade(request, url);
      }
      const broadcastContext = { registry, verifier: options.verifier, apiKeys };
      if (path === `${BASE_PATH}/api/broadcast` && request.method === "POST") {
        return handleBroadcastBatch(request, broadcastContext);
      }
      const event = /^\/realtime\/v1\/api\/broadcast\/([^/]+)\/events\/([^/]+)$/.exec(path);
      if (event && request.method === "POST") {
        return handleBroadcastEvent(
          request,
          decodeURIComponent(event[1]),
          decodeURIComponent(event[2]),
          broadcastContext,
        );
      }
      return errorResponse(404, "not_found", `No Realtime route for ${request.method} ${path}`);
    },

    async close() {
      clearInterval(idleSweep);
      for (const session of sessions) {
        session.dispose();
        session.socket.close(1001, "server shutting down");
      }
      sessions.clear();
      await feed.close();
      await authorizer.close();
      await pool.end({ timeout: 1 });
    },
  };
}
