/**
 * A connected server's tools as registry tools: each stored `mcp_tools` row becomes a
 * `ToolDefinition` named `<slug>__<name>`, so the agent offers, permits, approves, meters,
 * cancels and records it through the one pipeline every tool goes through (`invokeTool`).
 * Its input is the server's own JSON Schema (handed to the model as is; the server validates
 * its arguments); its run opens a client to the server through the guarded fetch, calls the
 * tool by its original name, forwards progress, and maps every failure to a stable code.
 *
 * The project's own `mcp` function, connected as a server, is called with the caller's
 * current access token (never a stored one) and meters and records the call itself: the
 * agent then writes no usage row and takes no tool call of its own for it (`meteredBy`).
 */
import { z } from "zod";
import type { Sql } from "../db/client.ts";
import type {
  ToolAnnotations,
  ToolCaller,
  ToolContext,
  ToolDefinition,
  ToolResult,
} from "../tools/types.ts";
import { ConcurrencyLimit } from "../concurrency_limit.ts";
import { type CredentialKey, decryptCredential, headersOf } from "./credentials.ts";
import type { OAuthSettings } from "./oauth.ts";
import { oauthAccessToken } from "./oauth_tokens.ts";
import { type RemoteSettings, withServer } from "./remote.ts";
import { loadSecret, loadServerTools, type ServerTool } from "./store.ts";

export interface ServerToolsDependencies {
  sql: Sql;
  remote: RemoteSettings;
  credentialKey?: CredentialKey;
  /** When OAuth tokens are refreshed, and the refresh lease (oauth_tokens.ts). */
  oauth?: Pick<OAuthSettings, "refreshMarginMs" | "leaseMs">;
  /** The project's own `mcp` function URL: called with the caller's access token. */
  ownMcpUrl?: string;
  /** Calls to one server under way at once from this isolate, at most (default 4). */
  perServerConcurrency?: number;
  /** One tool call's limit, progress or not (default 5 minutes). */
  callTimeoutMs?: number;
}

/** Reads the caller's connected tools; what the agent's runtime calls for each chat. */
export type ConnectedToolsLoader = (caller: ToolCaller) => Promise<ToolDefinition[]>;

// The server validates its own arguments: any object passes here.
const ANY_INPUT = z.looseObject({});
const ANY_OUTPUT = z.looseObject({});

/** MCP's defaults for a hint a server leaves out (the spec's cautious reading). */
const DEFAULT_HINTS: ToolAnnotations = {
  readOnlyHint: false,
  destructiveHint: true,
  idempotentHint: false,
  openWorldHint: true,
};

export function createConnectedToolsLoader(deps: ServerToolsDependencies): ConnectedToolsLoader {
  // Per isolate, a bound on this isolate's sockets to one server, not a shared truth: a
  // server's own rate limits stay its business.
  const limits = new Map<string, ConcurrencyLimit>();
  const limitFor = (serverId: string) => {
    let limit = limits.get(serverId);
    if (!limit) {
      limit = new ConcurrencyLimit(deps.perServerConcurrency ?? 4);
      limits.set(serverId, limit);
    }
    return limit;
  };
  return async (caller) => {
    const rows = await loadServerTools(deps.sql, caller.claims);
    return rows.map((row) => serverTool(row, deps, limitFor));
  };
}

function serverTool(
  row: ServerTool,
  deps: ServerToolsDependencies,
  limitFor: (serverId: string) => ConcurrencyLimit,
): ToolDefinition {
  const { $schema: _schema, ...inputSchema } = row.input_schema;
  const own = deps.ownMcpUrl !== undefined && sameEndpoint(row.url, deps.ownMcpUrl);
  return {
    name: row.name,
    title: row.title ?? row.original_name,
    description: row.description || `${row.original_name} on the ${row.slug} server`,
    input: ANY_INPUT,
    inputJsonSchema: inputSchema,
    output: ANY_OUTPUT,
    annotations: { ...DEFAULT_HINTS, ...pickHints(row.annotations) },
    permission: row.name,
    ...(own ? { meteredBy: "server" as const } : {}),
    async run(input, context) {
      const limit = limitFor(row.server_id);
      const first = await headersFor(row, deps, context, own);
      if (!first.ok) return first;
      const result = await limit.run(() => callRemote(row, deps, first.value, input, context));
      if (
        first.version === undefined || result.ok || result.error.code !== "mcp_reauth_required"
      ) {
        return result;
      }
      // The server refused an OAuth token that had not expired (revoked early, clocks apart):
      // refreshed once, and the call tried once more. A 401 comes before the tool runs.
      const again = await headersFor(row, deps, context, own, first.version);
      if (!again.ok) return again;
      return await limit.run(() => callRemote(row, deps, again.value, input, context));
    },
  };
}

type Headers = { ok: true; value: Record<string, string>; version?: number } | {
  ok: false;
  error: { code: string; message: string };
};

async function headersFor(
  row: ServerTool,
  deps: ServerToolsDependencies,
  context: ToolContext,
  own: boolean,
  /** The OAuth token version the server refused: refresh it. */
  refused?: number,
): Promise<Headers> {
  const caller = context.caller;
  if (own) {
    const token = caller.accessToken?.();
    if (!token) {
      return fail("mcp_reauth_required", "The user's session ended; he must sign in again");
    }
    return { ok: true, value: { Authorization: `Bearer ${token}` } };
  }
  if (row.status === "needs_sign_in") {
    return fail("mcp_reauth_required", `The ${row.slug} server needs the user to sign in again`);
  }
  if (row.auth_mode === "none") return { ok: true, value: {} };
  if (!deps.credentialKey) {
    return fail("mcp_not_configured", "MCP_CREDENTIALS_KEY is not set: credentials cannot be read");
  }
  if (row.auth_mode === "oauth") {
    const access = await oauthAccessToken(
      {
        sql: deps.sql,
        credentialKey: deps.credentialKey,
        remote: deps.remote,
        oauth: deps.oauth ?? DEFAULT_OAUTH,
      },
      caller.id,
      row.server_id,
      row.slug,
      { refused, signal: context.signal },
    );
    if (!access.ok) return access;
    return {
      ok: true,
      value: { Authorization: `Bearer ${access.token}` },
      version: refused === undefined ? access.version : undefined,
    };
  }
  const secret = await loadSecret(deps.sql, caller.id, row.server_id);
  if (!secret) return fail("mcp_reauth_required", `No credential is stored for ${row.slug}`);
  const credential = await decryptCredential(deps.credentialKey, row.server_id, secret);
  return { ok: true, value: headersOf(credential) };
}

const DEFAULT_OAUTH = { refreshMarginMs: 60_000, leaseMs: 30_000 };

async function callRemote(
  row: ServerTool,
  deps: ServerToolsDependencies,
  headers: Record<string, string>,
  input: Record<string, unknown>,
  context: ToolContext,
): Promise<ToolResult<Record<string, unknown>>> {
  const called = await withServer(
    { url: row.url, headers },
    deps.remote,
    (client) =>
      client.callTool({ name: row.original_name, arguments: input }, undefined, {
        signal: context.signal,
        timeout: deps.remote.requestTimeoutMs,
        resetTimeoutOnProgress: true,
        maxTotalTimeout: deps.callTimeoutMs ?? 300_000,
        onprogress: ({ progress, total, message }) => {
          void context.progress(progress, total, message);
        },
      }),
    context.signal,
  );
  if (!called.ok) {
    const { code, message } = called.error;
    return fail(
      code === "server_auth_failed" ? "mcp_reauth_required" : `mcp_${code}`,
      `${row.slug}: ${message}`,
    );
  }
  const result = called.value as {
    content?: unknown[];
    structuredContent?: Record<string, unknown>;
    isError?: boolean;
  };
  if (result.isError) {
    return fail("mcp_tool_error", textOf(result.content) || `${row.original_name} failed`);
  }
  return {
    ok: true,
    output: result.structuredContent ?? { content: result.content ?? [] },
  };
}

function fail(
  code: string,
  message: string,
): { ok: false; error: { code: string; message: string } } {
  return { ok: false, error: { code, message } };
}

function textOf(content: unknown[] | undefined): string {
  return (content ?? [])
    .flatMap((block) => {
      const b = block as { type?: unknown; text?: unknown };
      return b.type === "text" && typeof b.text === "string" ? [b.text] : [];
    })
    .join("\n")
    .slice(0, 2000);
}

function pickHints(annotations: Record<string, unknown>): Partial<ToolAnnotations> {
  const hints: Partial<ToolAnnotations> = {};
  for (const key of Object.keys(DEFAULT_HINTS) as (keyof ToolAnnotations)[]) {
    if (typeof annotations[key] === "boolean") hints[key] = annotations[key] as boolean;
  }
  return hints;
}

function sameEndpoint(a: string, b: string): boolean {
  try {
    const x = new URL(a);
    const y = new URL(b);
    return x.origin === y.origin && x.pathname.replace(/\/$/, "") === y.pathname.replace(/\/$/, "");
  } catch {
    return false;
  }
}

/** The project's own `mcp` function: `MCP_FUNCTION_URL`, else `$SUPABASE_URL/functions/v1/mcp`. */
export function ownMcpUrlFromEnv(env: Pick<typeof Deno.env, "get"> = Deno.env): string | undefined {
  const explicit = env.get("MCP_FUNCTION_URL");
  if (explicit) return explicit;
  const base = env.get("SUPABASE_URL");
  return base ? `${base.replace(/\/$/, "")}/functions/v1/mcp` : undefined;
}
