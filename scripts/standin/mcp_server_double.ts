/**
 * A third-party MCP server for tests and local runs: the MCP SDK's server over Streamable HTTP
 * (stateless, one server per POST), on 127.0.0.1. Its tools:
 *
 *   echo        returns its `text` (structured and as text)
 *   slow        sends `steps` progress notifications, `delay_ms` apart, then answers
 *   fail        a tool error (isError) with the message it was given
 *   huge        an answer of `megabytes` MB (for the response size limit)
 *   hang        never answers (for the time limit)
 *   bad_schema  listed with an input schema that is not JSON Schema (`type: "banana"`)
 *
 * `changeToolsOnNextCall(tool, times)` plays a server whose tools change: the next tools/call adds
 * `tool` to the list and sends `notifications/tools/list_changed` (`times` times) on that call's
 * own stream before it answers; `listRequests` counts the tools/list requests that follow, and
 * `holdToolsList()` holds their answers until released.
 *
 * `requiredHeader` makes every request without that exact header a 401; `oauth` puts an OAuth 2.1
 * authorization server in front (oauth_server_double.ts): `/mcp` then wants one of its access
 * tokens and answers 401 with `WWW-Authenticate: Bearer resource_metadata=…` (RFC 9728) without
 * one. Routes: `/mcp` speaks
 * MCP; `/html` is a web page (a URL that is not an MCP server); `/hang` never answers;
 * `/huge` answers 50 MB; `/redirect?to=<url>` redirects.
 *
 *   deno run -A scripts/standin/mcp_server_double.ts [--port 8790] [--oauth | --cimd]
 *
 * (`--cimd`: OAuth whose authorization server takes client-id metadata documents and offers no
 * registration.)
 */
// @ts-types="@modelcontextprotocol/sdk/server/index"
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import {
  createOAuthDouble,
  type OAuthDouble,
  type OAuthDoubleOptions,
} from "./oauth_server_double.ts";

export interface McpDoubleOptions {
  port?: number;
  requiredHeader?: { name: string; value: string };
  /** Sign-in with OAuth 2.1 in front of `/mcp` (true: the defaults). */
  oauth?: OAuthDoubleOptions | true;
}

export interface McpServerDouble {
  /** The MCP endpoint, as a user would connect it. */
  url: string;
  origin: string;
  /** Every tools/call received: name and arguments, and the headers it came with. */
  calls: Array<{ name: string; args: unknown; headers: Headers }>;
  /** How many HTTP requests reached the server. */
  requests: number;
  /** What tools/list answers: change it to play a server whose tools change. */
  tools: Array<Record<string, unknown>>;
  /** How many tools/list requests reached the server. */
  listRequests: number;
  /**
   * Fault point: the next tools/call adds `tool` to `tools` and sends
   * `notifications/tools/list_changed` `times` times (default 1) before its answer.
   */
  changeToolsOnNextCall(tool: Record<string, unknown>, times?: number): void;
  /** Holds every tools/list answer until the returned function is called (or `close`). */
  holdToolsList(): () => void;
  /** The most tools/call running at once so far. */
  maxConcurrentCalls: number;
  /** The authorization server, when started with `oauth`. */
  oauth?: OAuthDouble;
  close(): Promise<void>;
}

const OBJECT = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: "object",
  properties,
  required,
});

export const DOUBLE_TOOLS = [
  {
    name: "echo",
    description: "Echoes its text.",
    inputSchema: OBJECT({ text: { type: "string" } }, ["text"]),
    annotations: { readOnlyHint: true },
  },
  {
    name: "slow",
    description: "Reports progress, then answers.",
    inputSchema: OBJECT({ steps: { type: "integer" }, delay_ms: { type: "integer" } }),
  },
  {
    name: "fail",
    description: "Always fails.",
    inputSchema: OBJECT({ message: { type: "string" } }),
  },
  {
    name: "huge",
    description: "Answers with megabytes of text.",
    inputSchema: OBJECT({ megabytes: { type: "number" } }),
  },
  { name: "hang", description: "Never answers.", inputSchema: OBJECT({}) },
  {
    name: "bad_schema",
    description: "Listed with an input schema that is not JSON Schema.",
    inputSchema: { type: "object", properties: { x: { type: "banana" } } },
  },
];

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

export function startMcpServerDouble(options: McpDoubleOptions = {}): McpServerDouble {
  const calls: McpServerDouble["calls"] = [];
  let requests = 0;
  let listRequests = 0;
  let toolChange: { tool: Record<string, unknown>; times: number } | undefined;
  let listHold: Promise<void> | undefined;
  const tools: Array<Record<string, unknown>> = [...DOUBLE_TOOLS];
  let running = 0;
  let maxConcurrentCalls = 0;
  const hung = new Set<() => void>();

  const handleMcp = async (request: Request): Promise<Response> => {
    const server = new Server({ name: "mcp-double", version: "1.0.0" }, {
      capabilities: { tools: { listChanged: true } },
    });
    server.setRequestHandler(ListToolsRequestSchema, async () => {
      listRequests++;
      await listHold;
      return { tools };
    });
    server.setRequestHandler(CallToolRequestSchema, async (call, extra) => {
      running++;
      maxConcurrentCalls = Math.max(maxConcurrentCalls, running);
      try {
        const change = toolChange;
        toolChange = undefined;
        if (change) {
          tools.push(change.tool);
          for (let i = 0; i < change.times; i++) {
            await extra.sendNotification({ method: "notifications/tools/list_changed" });
          }
        }
        return await callTool(call, extra);
      } finally {
        running--;
      }
    });
    // deno-lint-ignore no-explicit-any
    const callTool = async (call: any, extra: any) => {
      const args = (call.params.arguments ?? {}) as Record<string, unknown>;
      calls.push({ name: call.params.name, args, headers: request.headers });
      const text = (value: string) => ({ content: [{ type: "text" as const, text: value }] });
      switch (call.params.name) {
        case "echo":
          return { ...text(String(args.text)), structuredContent: { text: String(args.text) } };
        case "slow": {
          const steps = Number(args.steps ?? 3);
          const token = call.params._meta?.progressToken;
          for (let step = 1; step <= steps; step++) {
            await sleep(Number(args.delay_ms ?? 10), extra.signal);
            if (token !== undefined) {
              await extra.sendNotification({
                method: "notifications/progress",
                params: {
                  progressToken: token,
                  progress: step,
                  total: steps,
                  message: `step ${step}`,
                },
              });
            }
          }
          return text(`done after ${steps} steps`);
        }
        case "fail":
          return { ...text(String(args.message ?? "it failed")), isError: true };
        case "huge":
          return text("x".repeat(Math.round(Number(args.megabytes ?? 50) * 1024 * 1024)));
        case "hang":
          await new Promise<void>((resolve) => {
            hung.add(resolve);
            extra.signal.addEventListener("abort", () => resolve(), { once: true });
          });
          return text("released");
        default:
          return { ...text(`unknown tool ${call.params.name}`), isError: true };
      }
    };
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: false,
    });
    await server.connect(transport);
    return await transport.handleRequest(request);
  };

  // Aborting it closes every connection, also a stream whose client went away mid-answer.
  const stop = new AbortController();
  let oauth: OAuthDouble | undefined;
  let origin = "";
  const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve(
    { port: options.port ?? 0, hostname: "127.0.0.1", onListen: () => {}, signal: stop.signal },
    async (request): Promise<Response> => {
      requests++;
      const url = new URL(request.url);
      if (oauth) {
        const answered = await oauth.handle(request, `${origin}/mcp`);
        if (answered) return answered;
      }
      if (url.pathname === "/html") {
        return new Response("<html><body>Not MCP</body></html>", {
          headers: { "content-type": "text/html" },
        });
      }
      if (url.pathname === "/hang") {
        // Released by close(); the client gives up long before.
        await new Promise<void>((resolve) => hung.add(resolve));
        return new Response("late");
      }
      if (url.pathname === "/huge") {
        const chunk = new Uint8Array(1024 * 1024).fill(120);
        let sent = 0;
        return new Response(
          new ReadableStream({
            pull(controller) {
              if (sent++ >= 50) controller.close();
              else controller.enqueue(chunk);
            },
          }),
          { headers: { "content-type": "application/json" } },
        );
      }
      if (url.pathname === "/redirect") {
        return new Response(null, {
          status: 307,
          headers: { location: url.searchParams.get("to") ?? "/mcp" },
        });
      }
      if (url.pathname !== "/mcp") return new Response("not found", { status: 404 });
      const required = options.requiredHeader;
      if (required && request.headers.get(required.name) !== required.value) {
        return Response.json({ error: "unauthorized" }, { status: 401 });
      }
      const bearer = request.headers.get("authorization")?.match(/^Bearer (.+)$/)?.[1] ?? null;
      if (oauth && !oauth.accessAllowed(bearer)) {
        const metadata = `${origin}/.well-known/oauth-protected-resource/mcp`;
        return Response.json({ error: "invalid_token" }, {
          status: 401,
          headers: {
            "www-authenticate": `Bearer resource_metadata="${metadata}"` +
              (bearer ? `, error="invalid_token"` : ""),
          },
        });
      }
      return await handleMcp(request);
    },
  );
  origin = `http://127.0.0.1:${server.addr.port}`;
  if (options.oauth) {
    oauth = createOAuthDouble(origin, options.oauth === true ? {} : options.oauth);
  }
  return {
    oauth,
    url: `${origin}/mcp`,
    origin,
    calls,
    tools,
    get requests() {
      return requests;
    },
    get listRequests() {
      return listRequests;
    },
    changeToolsOnNextCall(tool, times = 1) {
      toolChange = { tool, times };
    },
    holdToolsList() {
      let release!: () => void;
      listHold = new Promise<void>((resolve) => release = resolve);
      hung.add(release);
      return () => {
        listHold = undefined;
        release();
      };
    },
    get maxConcurrentCalls() {
      return maxConcurrentCalls;
    },
    async close() {
      for (const release of hung) release();
      oauth?.release();
      stop.abort();
      await server.finished;
    },
  };
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--port");
  const double = startMcpServerDouble({
    port: at >= 0 ? Number(Deno.args[at + 1]) : 8790,
    ...(Deno.args.includes("--oauth") || Deno.args.includes("--cimd")
      ? {
        oauth: {
          autoConsent: false,
          // --cimd: clients identify themselves only by a client-id metadata document, which the
          // local stack serves over plain http on 127.0.0.1.
          ...(Deno.args.includes("--cimd")
            ? { clientRegistration: ["metadata_document" as const], allowLoopbackClientIds: true }
            : {}),
        },
      }
      : {}),
  });
  console.log(`MCP server double at ${double.url}`);
}
