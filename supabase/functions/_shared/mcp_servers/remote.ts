/**
 * Talking to a connected MCP server, through the MCP SDK's client over Streamable HTTP and
 * only through `guardedFetch` (URL checks, redirects, size and time limits). Each use opens a
 * fresh client (initialize, the work, close): nothing about a server is kept in an isolate.
 * Failures come back as values with a stable code, never as a throw.
 */
// Types from `<path>` without `.js`, as in mcp/app.ts: Deno 2.1.4 (hosted) needs it.
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { logFailure } from "../log.ts";
import {
  DEFAULT_EGRESS_LIMITS,
  type EgressCode,
  type EgressLimits,
  guardedFetch,
} from "./egress.ts";
import { inputSchemaProblem, outputSchemaProblem } from "./json_schema.ts";
import { type UrlPolicy, urlPolicyFromEnv } from "./url_safety.ts";

export type RemoteErrorCode =
  | EgressCode
  | "not_an_mcp_server"
  | "server_auth_failed"
  // Signing in with OAuth: the server does not offer what it needs; it refused.
  | "oauth_unsupported"
  | "oauth_failed";

export interface RemoteError {
  code: RemoteErrorCode;
  message: string;
}

export type Remote<T> = { ok: true; value: T } | { ok: false; error: RemoteError };

export interface RemoteSettings {
  policy: UrlPolicy;
  limits?: EgressLimits;
  /** How long one MCP request (initialize, tools/list, a tool call between progress) may take. */
  requestTimeoutMs: number;
  /** Injected by tests that count requests; the real `fetch` otherwise. */
  fetch?: typeof fetch;
}

/** Where a server is and what to send it: the stored URL and the decrypted credential. */
export interface ServerAccess {
  url: string;
  headers: Record<string, string>;
  /**
   * The server sent `notifications/tools/list_changed` to this client (on any of its streams,
   * e.g. a tool call's): called at once, so it must only schedule work (tool_refresh.ts).
   */
  onToolsChanged?: () => void;
}

const CLIENT_INFO = { name: "supabase-agent-hub", version: "1.0.0" };
const MAX_PAGES = 10;
export const MAX_TOOLS_PER_SERVER = 200;

/** Runs `work` with a connected client; closes it whatever happens. */
export async function withServer<T>(
  access: ServerAccess,
  settings: RemoteSettings,
  work: (client: Client) => Promise<T>,
  signal?: AbortSignal,
): Promise<Remote<T>> {
  const client = new Client(CLIENT_INFO, { capabilities: {} });
  const { onToolsChanged } = access;
  if (onToolsChanged) {
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => onToolsChanged());
  }
  // A trip closes the client, so the request waiting on a cut stream ends now.
  const egress = guardedFetch(
    settings.policy,
    settings.limits ?? DEFAULT_EGRESS_LIMITS,
    settings.fetch,
    () => void client.close().catch(() => {}),
  );
  const transport = new StreamableHTTPClientTransport(new URL(access.url), {
    fetch: egress.fetch,
    requestInit: { headers: access.headers },
    // Redirects are followed, each target checked, by the guarded fetch.
    redirectPolicy: "follow",
    reconnectionOptions: {
      maxRetries: 0,
      initialReconnectionDelay: 1000,
      maxReconnectionDelay: 1000,
      reconnectionDelayGrowFactor: 1,
    },
  });
  try {
    await client.connect(transport, { timeout: settings.requestTimeoutMs, signal });
    return { ok: true, value: await work(client) };
  } catch (error) {
    if (signal?.aborted) throw error;
    return { ok: false, error: classify(error, egress.trip, settings.requestTimeoutMs) };
  } finally {
    await client.close().catch((error: unknown) => {
      logFailure("mcp_client_close", error, {}, "warn");
    });
  }
}

function classify(
  error: unknown,
  trip: { code: EgressCode; message: string } | undefined,
  timeoutMs: number,
): RemoteError {
  if (trip) return trip;
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown }).code;
  if (code === -32001) {
    return { code: "server_timeout", message: `the server did not answer within ${timeoutMs} ms` };
  }
  if (code === 401 || code === 403 || /\b(401|403)\b/.test(message)) {
    return {
      code: "server_auth_failed",
      message: `the server refused the credentials: ${message}`,
    };
  }
  return {
    code: "not_an_mcp_server",
    message: `the server does not speak MCP over Streamable HTTP: ${message.slice(0, 300)}`,
  };
}

/** A tool as tools/list described it, checked; `original` is the server's own entry. */
export interface DiscoveredTool {
  originalName: string;
  title?: string;
  description: string;
  inputSchema: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
  annotations: Record<string, unknown>;
}

export interface Discovery {
  tools: DiscoveredTool[];
  /** Tools left out, each with the reason (shown to the user). */
  warnings: string[];
}

const ListPage = z.looseObject({
  tools: z.array(z.unknown()),
  nextCursor: z.string().optional(),
});

const ToolEntry = z.looseObject({
  name: z.string().min(1).max(256),
  title: z.string().max(1000).optional(),
  description: z.string().max(20_000).optional(),
  inputSchema: z.unknown(),
  outputSchema: z.unknown().optional(),
  annotations: z.record(z.string(), z.unknown()).optional(),
});

/** Every tool the server lists (paged), each checked on its own. */
export async function discoverTools(client: Client, timeoutMs: number): Promise<Discovery> {
  const tools: DiscoveredTool[] = [];
  const warnings: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const listed = await client.request(
      { method: "tools/list", params: cursor ? { cursor } : {} },
      ListPage,
      { timeout: timeoutMs },
    );
    for (const [index, raw] of listed.tools.entries()) {
      const entry = ToolEntry.safeParse(raw);
      if (!entry.success) {
        warnings.push(`tool #${tools.length + index + 1} skipped: not a valid tool entry`);
        continue;
      }
      const { name } = entry.data;
      const problem = inputSchemaProblem(entry.data.inputSchema) ??
        outputSchemaProblem(entry.data.outputSchema);
      if (problem) {
        warnings.push(`${name} skipped: its schema is not valid JSON Schema (${problem})`);
        continue;
      }
      if (tools.length >= MAX_TOOLS_PER_SERVER) {
        warnings.push(`${name} skipped: more than ${MAX_TOOLS_PER_SERVER} tools`);
        continue;
      }
      tools.push({
        originalName: name,
        ...(entry.data.title ? { title: entry.data.title } : {}),
        description: entry.data.description ?? "",
        inputSchema: entry.data.inputSchema as Record<string, unknown>,
        ...(entry.data.outputSchema
          ? { outputSchema: entry.data.outputSchema as Record<string, unknown> }
          : {}),
        annotations: entry.data.annotations ?? {},
      });
    }
    cursor = listed.nextCursor;
    if (!cursor) break;
  }
  return { tools, warnings };
}

/** Settings from the function's secrets: `MCP_ALLOW_LOOPBACK`, `MCP_REQUEST_TIMEOUT_MS`. */
export function remoteSettingsFromEnv(
  env: Pick<typeof Deno.env, "get"> = Deno.env,
): RemoteSettings {
  const timeout = Number(env.get("MCP_REQUEST_TIMEOUT_MS") ?? "");
  return {
    policy: urlPolicyFromEnv(env),
    requestTimeoutMs: Number.isInteger(timeout) && timeout > 0 ? timeout : 30_000,
  };
}
