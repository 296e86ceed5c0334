/**
 * The `mcp` Edge Function: the tool registry served over MCP Streamable HTTP, stateless.
 *
 * Every POST gets a new low-level `Server` and a new transport (the SDK refuses to reuse either),
 * responses are SSE streams so progress notifications reach the client, and GET/DELETE answer
 * 405 because a stateless server has no stream to offer and no session to end. Its tools are
 * `tools/list` and `tools/call` handlers (`./tools.ts`) running each call through `invokeTool`;
 * the server declares `tools: {}` without `listChanged`, a notification a stateless server
 * could never send.
 *
 * Auth: a Supabase user access token as `Authorization: Bearer`, verified against the JWKS.
 * Without one the answer is 401 with `WWW-Authenticate: Bearer resource_metadata=…` pointing
 * at the RFC 9728 document this function serves under its own path (Edge Functions cannot
 * serve the root `/.well-known`). The document names this function's public URL
 * (`MCP_FUNCTION_URL`, else the host the client used: `SUPABASE_URL` can be an internal
 * address such as `http://kong:8000`), and an authorization server only when
 * `AUTH_ISSUER_URL` names one that publishes RFC 8414 metadata: Supabase Auth issues
 * tokens, but unless its OAuth server is enabled no client can be sent there to get one.
 *
 * Origin: a browser page may call only from the project's own origin or `ALLOWED_ORIGINS`
 * (403 `forbidden_origin`), so a hostile page cannot drive a local server (DNS rebinding).
 *
 * Cancellation: a client cancels with a `notifications/cancelled` POST, which in stateless
 * mode reaches a new server that knows nothing of the call. Calls still running in this
 * isolate are therefore kept by (user, auth session, request id) and the cancellation is
 * handed to the server running them, whose handler sees its signal abort. A cancellation that
 * lands on another isolate cannot reach the call; the call then still ends when its client
 * drops the response stream, or at the tool's own timeout.
 */
// The SDK's wildcard export gives `<path>.js` the types `<path>.js.d.ts`, which it does not ship;
// Deno 2.1.4 (the hosted Edge Runtime's) then fails the type check. Each import therefore takes
// its types from `<path>` without `.js`, which the same export maps to `<path>.d.ts`.
// @ts-types="@modelcontextprotocol/sdk/server/index"
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
// @ts-types="@modelcontextprotocol/sdk/validation/ajv-provider"
import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv-provider.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import { CallToolRequestSchema, type RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { TokenVerifier, VerifiedUser } from "../auth.ts";
import type { Sql } from "../db/client.ts";
import { errorResponse, HttpError } from "../http/errors.ts";
import { createFunctionApp } from "../http/function_app.ts";
import { addOperatorRoutes } from "../http/operator_routes.ts";
import { checkOrigin, type HostPolicy, LOOPBACK_ONLY, publicOrigin } from "../http/host_policy.ts";
import { authorizationServerOf } from "./authorization_server.ts";
import { readJsonBody } from "../http/json_body.ts";
import { requireUser, type UserEnv } from "../http/require_user.ts";
import { createGrantsReader, type PermissionGrant } from "../permissions.ts";
import { recordToolUsage, type ToolScope } from "../tools/invoke.ts";
import { mcpToolListing, serveTools } from "./tools.ts";
import { createToolRegistry } from "../tools/registry.ts";
import type { ToolDefinition } from "../tools/types.ts";
import { workflowConfigFromEnv } from "../tools/execute_workflow.ts";
import { createUsageWriter } from "../usage.ts";
import { consumeToolCalls } from "../tool_limits.ts";
import { limitRequests } from "../http/limit_requests.ts";
import { contextFromTraceparent } from "../tracing/genai.ts";

export interface McpAppOptions {
  sql: Sql;
  verifier: TokenVerifier;
  /** This function's public URL; defaults to `<origin the client used>/functions/v1/mcp`. */
  functionUrl?: string;
  /** `AUTH_ISSUER_URL`: named as authorization server when it serves RFC 8414 metadata. */
  authIssuerUrl?: string;
  /** The hosts answered and the browser origins accepted; loopback only by default. */
  hostPolicy?: HostPolicy;
  /** Defaults to the registry with workflow settings from the environment. */
  tools?: readonly ToolDefinition[];
  serverInfo?: { name: string; version: string };
  /** Opens `/metrics` to this bearer token (`METRICS_TOKEN`). */
  metricsToken?: string;
}

const FUNCTION_NAME = "mcp";
const METADATA_PATH = "/.well-known/oauth-protected-resource";
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** Messages per POST: each may be a tool call, so one request's work stays small. */
export const MCP_MAX_BATCH = 20;
const DEFAULT_SERVER_INFO = { name: "supabase-agent-tools", version: "1.0.0" };

export function createMcpApp(options: McpAppOptions) {
  const { sql, verifier } = options;
  const fixedFunctionUrl = options.functionUrl?.replace(/\/+$/, "");
  const functionUrlFor = (request: Request) =>
    fixedFunctionUrl ?? `${publicOrigin(request)}/functions/v1/${FUNCTION_NAME}`;
  const hostPolicy = options.hostPolicy ?? LOOPBACK_ONLY;
  const tools = options.tools ?? createToolRegistry({ workflow: workflowConfigFromEnv() });
  const toolNames = new Set(tools.map((tool) => tool.name));
  const listing = mcpToolListing(tools);
  const serverInfo = options.serverInfo ?? DEFAULT_SERVER_INFO;
  const running = new RunningCalls();
  // The SDK builds a JSON Schema validator (Ajv) per server unless given one; compiling its
  // vocabulary on every request costs more than the rest of a ping.
  const jsonSchemaValidator = new AjvJsonSchemaValidator();
  // Calls settling at the same time share one insert (each still waits for its own row).
  const writeUsage = createUsageWriter(sql);
  // Parallel calls with one token share grant reads (each read starts after its callers came).
  const readGrants = createGrantsReader(sql);

  const app = createFunctionApp<UserEnv>(FUNCTION_NAME, {
    corsMethods: ["POST", "GET", "DELETE"],
    corsHeaders: ["Accept", "Mcp-Protocol-Version", "Mcp-Session-Id", "Last-Event-ID"],
    corsExposeHeaders: ["WWW-Authenticate", "Mcp-Session-Id"],
    hostPolicy,
  });
  const signedIn = requireUser({
    verifier,
    resourceMetadataUrl: (request) => functionUrlFor(request) + METADATA_PATH,
  });
  app.use("/", checkOrigin(hostPolicy));

  addOperatorRoutes(app, { sql, verifier, metricsToken: options.metricsToken });

  // RFC 9728 protected resource metadata: what this resource is and who issues its tokens.
  app.get(METADATA_PATH, async (c) => {
    const authorizationServer = options.authIssuerUrl
      ? await authorizationServerOf(options.authIssuerUrl)
      : undefined;
    return c.json(
      {
        resource: functionUrlFor(c.req.raw),
        ...(authorizationServer ? { authorization_servers: [authorizationServer] } : {}),
        bearer_methods_supported: ["header"],
        resource_name: "Supabase agent tools (MCP)",
      },
      200,
      // Built from the request's host unless MCP_FUNCTION_URL fixes it: no shared caching.
      fixedFunctionUrl
        ? { "Cache-Control": "public, max-age=3600" }
        : { "Cache-Control": "private, max-age=3600", Vary: "Host, X-Forwarded-Host" },
    );
  });

  // Every POST takes one from the caller's MCP request bucket; its tool calls are metered too.
  app.post("/", signedIn, limitRequests(sql, "mcp"), async (c) => {
    const request = c.req.raw;
    const { user, accessToken: token } = c.var;

    const body = await readJsonRpcBody(request);
    if (!body.ok) return body.response;
    if (Array.isArray(body.value) && body.value.length === 0) {
      return jsonRpcError(400, -32600, "Invalid Request: the batch is empty");
    }
    if (Array.isArray(body.value) && body.value.length > MCP_MAX_BATCH) {
      return jsonRpcError(
        400,
        -32600,
        `Invalid Request: at most ${MCP_MAX_BATCH} messages per batch, got ${body.value.length}`,
      );
    }
    const messages = (Array.isArray(body.value) ? body.value : [body.value]) as unknown[];

    for (const requestId of cancelledRequestIds(messages)) {
      running.cancel(callKey(user, requestId), "Cancelled by the client");
    }
    // Every tool call of the request counts against the caller's request rate and token quota,
    // all admitted or none: a refused request runs nothing.
    const callCount = toolCallsIn(messages).length;
    if (callCount > 0) {
      const decision = await consumeToolCalls(sql, user.id, callCount);
      if (!decision.allowed) return toolCallsRefused(decision.reason, decision.retryAfterMs);
    }
    const calls = toolCallsIn(messages).filter((call) => toolNames.has(call.name));
    const needsGrants = calls.length > 0 || messages.some((m) => methodOf(m) === "tools/list");
    const grants = needsGrants ? await readGrants(user.claims) : [];
    // A call the SDK refuses before any handler (malformed params) still counts as a call.
    await Promise.all(
      calls.filter((call) => !call.wellFormed).map((call) =>
        recordToolUsage(
          { caller: user, recordUsage: writeUsage, source: "mcp" },
          call.name,
          "error",
          0,
        )
      ),
    );
    return await exchange({
      request,
      body: body.value,
      user,
      token,
      calls,
      grants,
      requestId: c.var.requestId,
    });
  });

  /** One POST through a new server and transport; each tool call leaves its usage row. */
  async function exchange({ request, body, user, token, calls, grants, requestId }: Exchange) {
    const server = new Server(serverInfo, { capabilities: { tools: {} }, jsonSchemaValidator });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
    });
    // Only calls that reach a handler settle, so only they are kept as running.
    const handled = calls.filter((call) => call.wellFormed);
    // A client that traces its requests gets our tool spans in its trace.
    const parent = contextFromTraceparent(request.headers.get("traceparent"));
    const scope = (signal: AbortSignal): ToolScope => ({
      caller: { id: user.id, claims: user.claims },
      sql,
      grants,
      signal,
      recordUsage: writeUsage,
      source: "mcp",
      requestId,
      ...(parent ? { trace: parent } : {}),
    });
    const unsettled = new Set(handled.map((call) => call.id));
    let cancelledAny = false;
    serveTools(server, {
      tools,
      listing,
      grants,
      scope,
      onSettled: (requestId, cancelled) => {
        running.remove(callKey(user, requestId));
        unsettled.delete(requestId);
        cancelledAny ||= cancelled;
        // A cancelled call never gets a response, so its stream would stay open for good.
        // Closed a macrotask later: the SDK sends the other calls' answers after their
        // handlers return, and those must go out first.
        if (cancelledAny && unsettled.size === 0) setTimeout(() => void transport.close(), 0);
      },
    });

    await server.connect(transport);
    for (const call of handled) {
      running.add(callKey(user, call.id), (reason) => {
        transport.onmessage?.({
          jsonrpc: "2.0",
          method: "notifications/cancelled",
          params: { requestId: call.id, reason },
        });
      });
    }
    const response = await transport.handleRequest(request, {
      parsedBody: body,
      authInfo: {
        token,
        clientId: user.id,
        scopes: [],
        expiresAt: typeof user.claims.exp === "number" ? user.claims.exp : undefined,
        extra: { userId: user.id },
      },
    });
    if (!response.headers.get("Content-Type")?.startsWith("text/event-stream")) {
      // Refused before any call ran (e.g. a bad protocol version): nothing is running.
      for (const call of handled) running.remove(callKey(user, call.id));
      return response;
    }
    // A client that drops the stream cancels whatever it was waiting for.
    return onStreamCancel(response, () => void transport.close());
  }

  app.on(["GET", "DELETE", "PUT", "PATCH"], "/", () =>
    errorResponse(405, {
      code: "method_not_allowed",
      message:
        "This MCP server is stateless: POST JSON-RPC messages; there is no stream or session",
    }, { Allow: "POST, OPTIONS" }));

  return app;
}

interface Exchange {
  request: Request;
  body: unknown;
  user: VerifiedUser;
  token: string;
  /** The registry tools this POST calls. */
  calls: ToolCall[];
  grants: PermissionGrant[];
  requestId: string;
}

/** The same response, calling `onCancel` when the client stops reading its body. */
function onStreamCancel(response: Response, onCancel: () => void): Response {
  const source = response.body;
  if (!source) return response;
  const reader = source.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      onCancel();
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

/** Calls running in this isolate, by `callKey`, with the way to cancel each. */
class RunningCalls {
  #calls = new Map<string, (reason: string) => void>();
  add(key: string, cancel: (reason: string) => void) {
    this.#calls.set(key, cancel);
  }
  remove(key: string) {
    this.#calls.delete(key);
  }
  cancel(key: string, reason: string) {
    const cancel = this.#calls.get(key);
    this.#calls.delete(key);
    cancel?.(reason);
  }
}

/**
 * Request ids are only unique per client connection; scoping them by user and by the auth
 * session (Supabase puts `session_id` in every access token) keeps one client from cancelling
 * another's call.
 */
function callKey(user: VerifiedUser, requestId: RequestId): string {
  const session = typeof user.claims.session_id === "string" ? user.claims.session_id : "";
  return JSON.stringify([user.id, session, requestId]);
}

function methodOf(message: unknown): unknown {
  return typeof message === "object" && message !== null
    ? (message as { method?: unknown }).method
    : undefined;
}

function isRequestId(value: unknown): value is RequestId {
  return typeof value === "string" || (typeof value === "number" && Number.isInteger(value));
}

interface ToolCall {
  id: RequestId;
  name: string;
  /** Whether the SDK will take it (else it answers an error without running anything). */
  wellFormed: boolean;
}

/** The `tools/call` requests in a POST body (the transport validates the rest). */
function toolCallsIn(messages: unknown[]): ToolCall[] {
  const calls: ToolCall[] = [];
  for (const message of messages) {
    if (methodOf(message) !== "tools/call") continue;
    const { id, params } = message as { id?: unknown; params?: { name?: unknown } };
    if (isRequestId(id) && typeof params?.name === "string") {
      const wellFormed = CallToolRequestSchema.safeParse(message).success;
      calls.push({ id, name: params.name, wellFormed });
    }
  }
  return calls;
}

function cancelledRequestIds(messages: unknown[]): RequestId[] {
  const ids: RequestId[] = [];
  for (const message of messages) {
    if (methodOf(message) !== "notifications/cancelled") continue;
    const requestId = (message as { params?: { requestId?: unknown } }).params?.requestId;
    if (isRequestId(requestId)) ids.push(requestId);
  }
  return ids;
}

type JsonRpcBody = { ok: true; value: unknown } | { ok: false; response: Response };

/**
 * The POST body as JSON, read with a size limit (the SDK's own limit does not apply to a body
 * handed to it parsed); a body that is too large or not JSON is answered as the SDK transport
 * answers errors about the JSON-RPC envelope itself.
 */
async function readJsonRpcBody(request: Request): Promise<JsonRpcBody> {
  try {
    return { ok: true, value: await readJsonBody(request, MAX_BODY_BYTES) };
  } catch (error) {
    if (!(error instanceof HttpError)) throw error;
    const response = error.code === "payload_too_large"
      ? jsonRpcError(413, -32000, error.message)
      : jsonRpcError(400, -32700, "Parse error: Invalid JSON");
    return { ok: false, response };
  }
}

/** Errors about the JSON-RPC envelope itself, answered the way the SDK transport does. */
/** 429 `rate_limited`, with `Retry-After` (whole seconds) when the limit says when to retry. */
function toolCallsRefused(reason: string, retryAfterMs: number | undefined): Response {
  const message = reason === "request_rate"
    ? "Too many tool calls: your request rate is used up"
    : `Your quota does not hold these tool calls (${reason})`;
  return errorResponse(
    429,
    { code: "rate_limited", message },
    retryAfterMs === undefined
      ? {}
      : { "Retry-After": String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
  );
}

function jsonRpcError(status: number, code: number, message: string): Response {
  return Response.json({ jsonrpc: "2.0", error: { code, message }, id: null }, { status });
}
