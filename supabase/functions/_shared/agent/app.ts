/**
 * The `agent` Edge Function as a Hono app: `GET /agent` upgrades to the agent's WebSocket
 * (protocol in `../agent_protocol.ts`). The access token is verified against the JWKS before
 * the upgrade — from `Authorization: Bearer`, a `jwt-<token>` entry of
 * `Sec-WebSocket-Protocol` (echoed back, as browsers require), or `?jwt=` — and a request
 * without a valid one gets a 401 JSON error instead of a socket.
 *
 * Built from its dependencies, so tests serve it with `Deno.serve({ port: 0 })`, a local
 * JWKS, a scratch database and the LLM fixture; several instances in one process behave as
 * several isolates.
 */
import { CLOSE_CODES, TOKEN_SUBPROTOCOL_PREFIX } from "../agent_protocol.ts";
import { accountRefusals } from "../account_access.ts";
import type { TokenVerifier, VerifiedUser } from "../auth.ts";
import { asServiceRole, asUser, type Sql } from "../db/client.ts";
import { DATABASE_RETRY_AFTER_SECONDS, isDatabaseUnavailable } from "../db/unavailable.ts";
import { errorResponse } from "../http/errors.ts";
import { log, logFailure } from "../log.ts";
import { createFunctionApp } from "../http/function_app.ts";
import { addOperatorRoutes } from "../http/operator_routes.ts";
import { llmReachability } from "../llm_reachability.ts";
import type { HostPolicy } from "../http/host_policy.ts";
import { requireSecret } from "../http/require_secret.ts";
import { requireUser, type UserEnv } from "../http/require_user.ts";
import type { ToolDefinition } from "../tools/types.ts";
import { type AgentConfig, agentConfig } from "./config.ts";
import { AgentConnection } from "./connection.ts";
import { registerConnection, unregisterConnection } from "./connections.ts";
import { readLimits } from "./limits.ts";
import { AgentRuntime, type ConnectedTools } from "./runtime.ts";
import { startQueuedChats, startSweptQueues } from "./chat_queue.ts";
import type { LlmSettings } from "./turn_scope.ts";
import { renewLease } from "./turn_takeover.ts";

export interface AgentAppOptions {
  sql: Sql;
  /** A one-connection pool for flushes (see `RuntimeDependencies.flushSql`). */
  flushSql?: Sql;
  verifier: TokenVerifier;
  llm: LlmSettings;
  tools: readonly ToolDefinition[];
  /** The caller's connected MCP servers' tools, offered beside `tools` (see runtime.ts). */
  connectedTools?: ConnectedTools;
  config?: Partial<AgentConfig>;
  /** The hosts answered; loopback only unless given (`hostPolicyFromEnv`). */
  hostPolicy?: HostPolicy;
  /**
   * `AGENT_SWEEP_SECRET`: opens `POST /agent/sweep` to callers bearing it (a cron job); the
   * route stays shut without it.
   */
  sweepSecret?: string;
  /** Opens `/metrics` to this bearer token (`METRICS_TOKEN`). */
  metricsToken?: string;
}

export interface AgentApp {
  fetch: (request: Request) => Response | Promise<Response>;
  /** This instance's state; tests look at it, nothing else should. */
  runtime: AgentRuntime;
  /** Ends running turns (stored as interrupted), closes sockets, stops timers. */
  close(): Promise<void>;
}

const FUNCTION_NAME = "agent";

export function createAgentApp(options: AgentAppOptions): AgentApp {
  const config = agentConfig(options.config);
  const runtime = new AgentRuntime({
    sql: options.sql,
    ...(options.flushSql ? { flushSql: options.flushSql } : {}),
    llm: options.llm,
    config,
    registry: options.tools,
    ...(options.connectedTools ? { connectedTools: options.connectedTools } : {}),
  });
  // Double-texting: a session's next queued chat starts on the isolate that ended its turn.
  runtime.startQueuedChats = (caller, sessionId) => startQueuedChats(runtime, caller, sessionId);
  const app = createFunctionApp<UserEnv>(FUNCTION_NAME, {
    trailingSlashAgnostic: true,
    hostPolicy: options.hostPolicy,
  });
  const signedIn = requireUser({
    verifier: options.verifier,
    subprotocolPrefix: TOKEN_SUBPROTOCOL_PREFIX,
    queryParameter: true,
  });

  // The sweep: adopts turns nobody is connected to (their isolate died, or their approval
  // wait expired) and runs them in this isolate, then starts the queued chats of sessions
  // left free with nobody to start them. A cron job calls it every few seconds.
  app.post(
    "/sweep",
    requireSecret({ secret: options.sweepSecret, settingName: "AGENT_SWEEP_SECRET" }),
    async (c) => {
      if (runtime.closed) {
        return errorResponse(503, { code: "unavailable", message: "The server is shutting down" });
      }
      const { adopted } = await runtime.sweep();
      // A session with a turn, running (adopted just now included) or parked, is not swept:
      // that turn starts the queue when it ends.
      const queues = await startSweptQueues(runtime);
      return c.json({ adopted, queues });
    },
  );
  addOperatorRoutes(app, {
    sql: options.sql,
    verifier: options.verifier,
    llm: llmReachability({
      baseUrl: options.llm.baseUrl,
      ...(options.llm.apiKey ? { apiKey: options.llm.apiKey } : {}),
      ...(options.llm.fetch ? { fetch: options.llm.fetch } : {}),
    }),
    metricsToken: options.metricsToken,
  });

  app.get("/", signedIn, (c) => {
    const request = c.req.raw;
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse(426, {
        code: "upgrade_required",
        message: "This endpoint speaks WebSocket only",
      }, { Upgrade: "websocket" });
    }
    if (runtime.closed) {
      return errorResponse(503, {
        code: "unavailable",
        message: "The server is shutting down",
      });
    }
    const protocol = c.var.tokenProtocol;
    const { socket, response } = Deno.upgradeWebSocket(request, protocol ? { protocol } : {});
    serveSocket(
      runtime,
      c.var.user,
      socket,
      options.verifier,
      c.var.requestId,
      c.var.accessToken,
    );
    return response;
  });

  return { fetch: app.fetch, runtime, close: () => runtime.close() };
}

function serveSocket(
  runtime: AgentRuntime,
  user: VerifiedUser,
  socket: WebSocket,
  verifier: TokenVerifier,
  requestId: string,
  token: string,
): void {
  const connection = new AgentConnection(
    crypto.randomUUID(),
    user,
    socket,
    runtime,
    verifier,
    requestId,
    token,
  );
  const opened = performance.now();
  const { sql, config } = runtime.deps;
  let markClosed: () => void = () => {};
  // Pending until the socket closes: Supabase must not retire the worker under it.
  runtime.track(new Promise<void>((resolve) => markClosed = resolve));

  runtime.sockets.add(connection);
  socket.onopen = () => {
    runtime.track(
      greet(runtime, connection).catch((error) => {
        if (isDatabaseUnavailable(error)) {
          connection.sendError({
            code: "db_unavailable",
            message: "The database cannot be reached right now; reconnect shortly",
            retryable: true,
            retry_after_ms: DATABASE_RETRY_AFTER_SECONDS * 1000,
          });
          return connection.close(
            CLOSE_CODES.databaseUnavailable,
            "the database is unavailable; reconnect shortly",
          );
        }
        logFailure("connection_setup", error, { request_id: requestId });
        connection.close(1011, "the server could not set up this connection");
      }),
    );
    log("info", "socket_open", {
      request_id: requestId,
      connection_id: connection.id,
      user_id: user.id,
    });
  };
  socket.onmessage = (event) => connection.onMessage(event.data);
  socket.onerror = () => {
    // The close event follows; nothing else to do.
  };
  socket.onclose = (event) => {
    log("info", "socket_close", {
      request_id: requestId,
      connection_id: connection.id,
      user_id: user.id,
      close_code: event.code,
      latency_ms: Math.round(performance.now() - opened),
    });
    runtime.sockets.delete(connection);
    connection.closed()
      .catch((error) => logFailure("connection_unregister", error, { request_id: requestId }))
      .finally(markClosed);
  };

  async function greet(
    runtime: AgentRuntime,
    connection: AgentConnection,
  ): Promise<void> {
    // One transaction: check the user may still act (his token outlives a deletion, a ban or
    // a sign-out), register (evicting what this connection pushes over the limit) and renew
    // this isolate's lease (the turns it starts must not look orphaned).
    const registration = await asServiceRole(sql, async (tx) => {
      const refusals = await accountRefusals(tx, [
        { key: connection.id, userId: user.id, sessionId: connection.sessionId },
      ]);
      const refusal = refusals.get(connection.id);
      if (refusal) return { refusal };
      const [registered] = await Promise.all([
        registerConnection(tx, {
          id: connection.id,
          userId: user.id,
          isolateId: runtime.isolateId,
          staleAfterMs: config.staleAfterMs,
        }),
        renewLease(tx, runtime.isolateId, config.leaseMs),
      ]);
      return registered;
    });
    if ("refusal" in registration) return connection.revokeAccess(registration.refusal);
    // Closed while registering: its close handler found nothing to unregister yet.
    if (!connection.isOpen) return await unregisterConnection(sql, connection.id);
    // Heartbeats (and evictions through them) start once the row exists.
    runtime.addConnection(connection);
    runtime.evict(
      registration.evicted,
      `too many connections: at most ${registration.maxConnections} per user, and this is ` +
        "the oldest",
    );
    const limits = await asUser(
      sql,
      user.claims,
      (tx) => readLimits(tx, config),
    );
    connection.send({
      type: "ready",
      request_id: connection.requestId,
      user_id: user.id,
      connection_id: connection.id,
      limits,
    });
    // The user's turns whose isolate died go on here, for him to resume.
    await runtime.adopt({ userId: user.id });
    // Chats queued behind a turn whose isolate died before starting them start now; a
    // failure leaves them to the next look (a follower, a connection) and the socket open.
    runtime.track(
      runtime.startQueuedChats(user).catch((error) =>
        logFailure("start_queued_chats", error, { request_id: requestId })
      ),
    );
  }
}
