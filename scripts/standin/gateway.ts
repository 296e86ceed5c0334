/**
 * One port in front of everything, like Supabase's API gateway:
 *   /functions/v1/<name>/…  → that function's worker, which sees `/<name>/…` (WebSockets too)
 *   /auth/v1/…              → the Auth stand-in
 *   /realtime/v1/…          → the Realtime stand-in
 *   /rest/v1/…              → the REST (PostgREST) stand-in
 * Functions with `verify_jwt = true` in config.toml get their caller's JWT checked here, as
 * Supabase does; ours verify tokens themselves and set it to false.
 */
import { bearerToken, type TokenVerifier } from "./token_verifier.ts";

export type Handler = (request: Request) => Response | Promise<Response>;

/**
 * Function name → the origin (http://127.0.0.1:port) of a worker that takes this request: a
 * plain map, or the stack's worker pools (worker_pool.ts), which may start a worker first or
 * say why none can be had.
 */
export interface FunctionDirectory {
  has(name: string): boolean;
  get(name: string): string | undefined | Promise<string | { unavailable: string } | undefined>;
}

export interface GatewayRoutes {
  functions: FunctionDirectory;
  /** Function name → verify_jwt from config.toml (default true, as on Supabase). */
  verifyJwt: Map<string, boolean>;
  verifier: TokenVerifier;
  auth?: Handler;
  realtime?: Handler;
  rest?: Handler;
  /** Where bridged function WebSockets are kept, so a test can cut them (`dropAll`). */
  sockets?: ProxiedSockets;
}

/**
 * The function WebSockets the gateway bridges. `dropAll` cuts every one of them at once, as a
 * network failure between the browser and the gateway would: clients must reconnect and
 * resume (the browser tests use it through `RunningStack.dropFunctionWebSockets`).
 */
export class ProxiedSockets {
  readonly #pairs = new Set<{ client: WebSocket; upstream: WebSocket }>();

  add(pair: { client: WebSocket; upstream: WebSocket }): () => void {
    this.#pairs.add(pair);
    return () => this.#pairs.delete(pair);
  }

  /** Closes both sides of every bridged socket; returns how many pairs there were. */
  dropAll(): number {
    const pairs = [...this.#pairs];
    this.#pairs.clear();
    for (const { client, upstream } of pairs) {
      closeWith(client, 1012, "dropped by the gateway");
      closeWith(upstream, 1001, "client connection dropped");
    }
    return pairs.length;
  }
}

const FUNCTIONS_PREFIX = "/functions/v1/";
/** Hop-by-hop headers a proxy must not forward. */
const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
];

export function createGateway(routes: GatewayRoutes): Handler {
  return async (request) => {
    const url = new URL(request.url);
    if (url.pathname.startsWith(FUNCTIONS_PREFIX)) return await routeToFunction(request, routes);
    if (url.pathname.startsWith("/auth/v1/") && routes.auth) return await routes.auth(request);
    if (url.pathname.startsWith("/realtime/v1/") && routes.realtime) {
      return await routes.realtime(request);
    }
    if (url.pathname.startsWith("/rest/v1/") && routes.rest) return await routes.rest(request);
    return gatewayError(404, "no Route matched with those values");
  };
}

async function routeToFunction(request: Request, routes: GatewayRoutes): Promise<Response> {
  const url = new URL(request.url);
  const functionPath = url.pathname.slice(FUNCTIONS_PREFIX.length - 1); // "/<name>/…"
  const name = functionPath.split("/")[1];
  if (!routes.functions.has(name)) {
    return gatewayError(404, "Requested function was not found");
  }

  if (request.method !== "OPTIONS" && (routes.verifyJwt.get(name) ?? true)) {
    const token = bearerToken(request);
    const verdict = token ? await routes.verifier.verify(token) : undefined;
    if (!verdict?.ok) return gatewayError(401, "Invalid JWT");
  }
  // Only now, after the JWT check, is a worker taken: a refused request costs it nothing.
  const origin = await routes.functions.get(name);
  if (!origin) return gatewayError(404, "Requested function was not found");
  if (typeof origin !== "string") {
    // The Edge Runtime's answer when a worker cannot boot.
    console.error(`gateway: ${origin.unavailable}`);
    return Response.json(
      { code: "BOOT_ERROR", message: "Worker failed to boot (please check logs)" },
      { status: 503 },
    );
  }

  const target = new URL(functionPath + url.search, origin);
  if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
    return await proxyWebSocket(request, target, routes.sockets);
  }
  try {
    // No abort signal: a client that goes away cancels the body stream, and the cancel
    // travels on to the worker's response.
    return await fetch(target, {
      method: request.method,
      headers: forwardedHeaders(request.headers),
      body: request.body,
      redirect: "manual",
    });
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    return gatewayError(502, `function ${name} is not reachable: ${error.message}`);
  }
}

/**
 * Bridges a client WebSocket to the worker's. The upstream socket opens first, so the
 * client is upgraded with the subprotocol the function chose; when the function refuses the
 * upgrade (401 before upgrading, say), the same request without the upgrade is replayed to
 * learn the status and body the function answers with.
 */
async function proxyWebSocket(
  request: Request,
  target: URL,
  sockets?: ProxiedSockets,
): Promise<Response> {
  const protocols = (request.headers.get("sec-websocket-protocol") ?? "")
    .split(",").map((p) => p.trim()).filter(Boolean);
  const headers = forwardedHeaders(request.headers);
  for (const name of [...headers.keys()]) {
    if (name.startsWith("sec-websocket-")) headers.delete(name);
  }
  target.protocol = target.protocol === "https:" ? "wss:" : "ws:";

  const upstream = new DenoWebSocket(target, { protocols, headers });
  upstream.binaryType = "arraybuffer";
  const opened = await new Promise<boolean>((resolve) => {
    upstream.onopen = () => resolve(true);
    upstream.onerror = () => resolve(false);
  });
  if (!opened) {
    target.protocol = target.protocol === "wss:" ? "https:" : "http:";
    const refusal = await fetch(target, { headers });
    return new Response(refusal.body, { status: refusal.status, headers: refusal.headers });
  }

  const { socket: client, response } = Deno.upgradeWebSocket(request, {
    protocol: upstream.protocol || undefined,
    idleTimeout: 0,
  });
  const pending: (string | ArrayBuffer)[] = [];
  // The function may close before the client's side is open (a socket it refuses at once, after
  // one frame): Deno drops a close asked of a socket still connecting, so it waits for the open.
  let closeOnOpen: { code: number; reason: string } | undefined;
  client.onopen = () => {
    for (const message of pending.splice(0)) client.send(message);
    if (closeOnOpen) closeWith(client, closeOnOpen.code, closeOnOpen.reason);
  };
  upstream.onmessage = (event) => {
    if (client.readyState === WebSocket.OPEN) client.send(event.data);
    else if (client.readyState === WebSocket.CONNECTING) pending.push(event.data);
  };
  client.onmessage = (event) => {
    if (upstream.readyState === WebSocket.OPEN) upstream.send(event.data);
  };
  const forget = sockets?.add({ client, upstream });
  upstream.onclose = (event) => {
    forget?.();
    if (client.readyState === WebSocket.CONNECTING) {
      closeOnOpen = { code: event.code, reason: event.reason };
    } else closeWith(client, event.code, event.reason);
  };
  client.onclose = (event) => {
    forget?.();
    closeWith(upstream, event.code, event.reason);
  };
  upstream.onerror = () => closeWith(client, 1011, "function connection failed");
  client.onerror = () => closeWith(upstream, 1001, "client connection failed");
  return response;
}

/** Deno's WebSocket also takes request headers, which the DOM typing does not declare. */
const DenoWebSocket = WebSocket as unknown as new (
  url: URL,
  options: { protocols?: string[]; headers?: HeadersInit },
) => WebSocket;

/**
 * Passes a close on. Deno's WebSocket, on both ends here, may only send 1000 or 3000–4999 (the
 * WHATWG rule; anything else throws and would take the gateway down): another code — 1001 from
 * a browser tab that closed, a function shutting down — travels as 1000 with the code in the
 * reason, so the other side still learns why.
 */
function closeWith(socket: WebSocket, code: number, reason: string) {
  if (socket.readyState === WebSocket.CLOSING || socket.readyState === WebSocket.CLOSED) return;
  const sendable = code === 1000 || (code >= 3000 && code <= 4999);
  const text = sendable ? reason : `[${code}]${reason ? ` ${reason}` : ""}`;
  socket.close(sendable ? code : 1000, fitCloseReason(text));
}

/** A close reason may hold 123 bytes of UTF-8: cut at a character boundary below that. */
function fitCloseReason(text: string): string {
  const encoder = new TextEncoder();
  let fitted = "";
  for (const character of text) {
    if (encoder.encode(fitted + character).byteLength > 123) break;
    fitted += character;
  }
  return fitted;
}

function forwardedHeaders(incoming: Headers): Headers {
  const headers = new Headers(incoming);
  for (const name of HOP_BY_HOP) headers.delete(name);
  // As Supabase's gateway (and Kong) do: the function learns the host and scheme the client
  // used, set here whatever the client sent in these headers.
  const host = incoming.get("host");
  if (host) headers.set("x-forwarded-host", host);
  else headers.delete("x-forwarded-host");
  headers.set("x-forwarded-proto", "http");
  headers.delete("host");
  return headers;
}

/** Errors in the shape Supabase's gateway uses for its own refusals. */
function gatewayError(status: number, message: string): Response {
  return Response.json({ code: status, message }, { status });
}
