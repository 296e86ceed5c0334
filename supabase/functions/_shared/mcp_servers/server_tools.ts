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
  PreparedCall,
  ToolAnnotations,
  ToolCaller,
  ToolContext,
  ToolDefinition,
  ToolResult,
} from "../tools/types.ts";
import { ConcurrencyLimit } from "../concurrency_limit.ts";
import { ExpiringCache } from "../expiring_cache.ts";
import { logFailure } from "../log.ts";
import { type CredentialKey, decryptCredential, headersOf } from "./credentials.ts";
import type { OAuthSettings } from "./oauth.ts";
import { oauthAccessToken, storedAccessToken } from "./oauth_tokens.ts";
import { type RemoteSettings, withServer } from "./remote.ts";
import { createToolRefresher, type ToolsChanged } from "./tool_refresh.ts";
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
  /** Refreshes of one server after `tools/list_changed` start this far apart (tool_refresh.ts). */
  toolRefreshIntervalMs?: number;
  /** Keeps the worker alive for such a refresh (default: `EdgeRuntime.waitUntil`). */
  waitUntil?: (promise: Promise<unknown>) => void;
}

/**
 * The dependencies of a call, with this isolate's refresher for `tools/list_changed` and its
 * OAuth access tokens read lately.
 */
type CallDeps = ServerToolsDependencies & { toolsChanged: ToolsChanged; tokens: TokenCache };

/**
 * OAuth access tokens this isolate read, by server: a call of a server signed in with OAuth
 * otherwise reads and opens its token before it can connect, the one step of a call that
 * cannot overlap its metering. A cache, not the truth: an entry is used only while its token
 * is farther than the refresh margin from its expiry (and 5 minutes at most), and is dropped
 * when the server refuses it; a refresh (single-flight, in Postgres) is found by the next read.
 */
type TokenCache = ExpiringCache<{ token: string; version: number }>;
const TOKEN_CACHE_ENTRIES = 1_000;
const TOKEN_CACHE_MAX_AGE_MS = 5 * 60_000;

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
  const callDeps: CallDeps = {
    ...deps,
    tokens: new ExpiringCache(TOKEN_CACHE_ENTRIES),
    toolsChanged: createToolRefresher({
      sql: deps.sql,
      remote: deps.remote,
      ...(deps.toolRefreshIntervalMs === undefined
        ? {}
        : { minIntervalMs: deps.toolRefreshIntervalMs }),
      ...(deps.waitUntil ? { waitUntil: deps.waitUntil } : {}),
    }),
  };
  return async (caller) => {
    const rows = await loadServerTools(deps.sql, caller.claims);
    return rows.map((row) => serverTool(row, callDeps, limitFor));
  };
}

function serverTool(
  row: ServerTool,
  deps: CallDeps,
  limitFor: (serverId: string) => ConcurrencyLimit,
): ToolDefinition {
  const { $schema: _schema, ...inputSchema } = row.input_schema;
  const own = isOwn(row, deps);
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
    run: (input, context) => runCall(row, deps, limitFor(row.server_id), input, context, own),
    // Our own `mcp` function meters and records on its side: nothing goes to it before the
    // call is admitted, not even an initialize.
    ...(own
      ? {}
      : { prepare: (input, context) => prepareCall(row, deps, limitFor, input, context) }),
  };
}

/**
 * The call begun before it is admitted: its credential read (never refreshed: that waits for
 * admission) and the client connected (initialize), beside the policy's metering; `tools/call`
 * goes out only once `run` says the call was admitted. A discarded call closes the client
 * having called nothing.
 */
function prepareCall(
  row: ServerTool,
  deps: CallDeps,
  limitFor: (serverId: string) => ConcurrencyLimit,
  input: Record<string, unknown>,
  context: ToolContext,
): PreparedCall<Record<string, unknown>> {
  let admit!: (admitted: boolean) => void;
  const admitted = new Promise<boolean>((resolve) => admit = resolve);
  const limit = limitFor(row.server_id);
  // Settled into a value at once: a failure before `run` or `discard` is not unhandled.
  const begun = (async () => {
    const first = await headersBeforeAdmission(row, deps, context);
    if (!first) return undefined;
    if (!first.ok) return { first, result: first };
    const result = await limit.run(() =>
      callRemote(row, deps, first.value, input, context, admitted)
    );
    return { first, result };
  })().then((value) => ({ value }), (error: unknown) => ({ error }));
  return {
    async run() {
      admit(true);
      const settled = await begun;
      if ("error" in settled) throw settled.error;
      const done = settled.value;
      // A token that needs a refresh is refreshed now, the call admitted: the plain path.
      if (!done) return await runCall(row, deps, limit, input, context, false);
      if (!done.first.ok) return done.first;
      return await retryRefused(row, deps, limit, done.first, done.result, input, context, false);
    },
    discard() {
      admit(false);
      void begun.then((settled) => {
        if ("error" in settled && !context.signal.aborted) {
          logFailure("mcp_prepared_call", settled.error, { server: row.slug });
        }
      });
    },
  };
}

/** The call, admitted: its credential (refreshed if need be), then the server. */
async function runCall(
  row: ServerTool,
  deps: CallDeps,
  limit: ConcurrencyLimit,
  input: Record<string, unknown>,
  context: ToolContext,
  own: boolean,
): Promise<ToolResult<Record<string, unknown>>> {
  const first = await headersFor(row, deps, context, own);
  if (!first.ok) return first;
  const result = await limit.run(() => callRemote(row, deps, first.value, input, context));
  return await retryRefused(row, deps, limit, first, result, input, context, own);
}

/**
 * The server refused an OAuth token that had not expired (revoked early, clocks apart): it is
 * refreshed once, and the call tried once more. A 401 comes before the tool runs.
 */
async function retryRefused(
  row: ServerTool,
  deps: CallDeps,
  limit: ConcurrencyLimit,
  first: Extract<Headers, { ok: true }>,
  result: ToolResult<Record<string, unknown>>,
  input: Record<string, unknown>,
  context: ToolContext,
  own: boolean,
): Promise<ToolResult<Record<string, unknown>>> {
  if (first.version === undefined || result.ok || result.error.code !== "mcp_reauth_required") {
    return result;
  }
  deps.tokens.delete(row.server_id);
  const again = await headersFor(row, deps, context, own, first.version);
  if (!again.ok) return again;
  return await limit.run(() => callRemote(row, deps, again.value, input, context));
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

/**
 * The headers a call can have before it is admitted, reading only: an OAuth token that needs
 * a refresh gives undefined (the refresh waits for admission).
 */
async function headersBeforeAdmission(
  row: ServerTool,
  deps: CallDeps,
  context: ToolContext,
): Promise<Headers | undefined> {
  if (row.auth_mode !== "oauth" || row.status === "needs_sign_in" || !deps.credentialKey) {
    return await headersFor(row, deps, context, false);
  }
  const oauth = deps.oauth ?? DEFAULT_OAUTH;
  const now = Date.now();
  const stored = deps.tokens.get(row.server_id, now) ?? await storedAccessToken(
    { sql: deps.sql, credentialKey: deps.credentialKey, oauth },
    context.caller.id,
    row.server_id,
  ).then((read) => {
    if (read) {
      const until = Math.min(read.expiresAt - oauth.refreshMarginMs, now + TOKEN_CACHE_MAX_AGE_MS);
      deps.tokens.set(row.server_id, { token: read.token, version: read.version }, until);
    }
    return read;
  });
  if (!stored) return undefined;
  return { ok: true, value: { Authorization: `Bearer ${stored.token}` }, version: stored.version };
}

const DEFAULT_OAUTH = { refreshMarginMs: 60_000, leaseMs: 30_000 };

async function callRemote(
  row: ServerTool,
  deps: CallDeps,
  headers: Record<string, string>,
  input: Record<string, unknown>,
  context: ToolContext,
  /** Connected before the call was admitted: `tools/call` waits for this to say yes. */
  admitted?: Promise<boolean>,
): Promise<ToolResult<Record<string, unknown>>> {
  const changed = () =>
    deps.toolsChanged({
      id: row.server_id,
      userId: context.caller.id,
      slug: row.slug,
      url: row.url,
      headers: () => headersFor(row, deps, context, isOwn(row, deps)),
    });
  const called = await withServer(
    { url: row.url, headers, onToolsChanged: changed },
    deps.remote,
    async (client) => {
      if (admitted && !await admitted) return NOT_ADMITTED;
      return await client.callTool({ name: row.original_name, arguments: input }, undefined, {
        signal: context.signal,
        timeout: deps.remote.requestTimeoutMs,
        resetTimeoutOnProgress: true,
        maxTotalTimeout: deps.callTimeoutMs ?? 300_000,
        onprogress: ({ progress, total, message }) => {
          void context.progress(progress, total, message);
        },
      });
    },
    context.signal,
  );
  if (!called.ok) {
    const { code, message } = called.error;
    return fail(
      code === "server_auth_failed" ? "mcp_reauth_required" : `mcp_${code}`,
      `${row.slug}: ${message}`,
    );
  }
  if (called.value === NOT_ADMITTED) {
    return fail("cancelled", `${row.original_name} was not admitted: it was not called`);
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

const NOT_ADMITTED = Symbol("not admitted");

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

/** The project's own `mcp` function, connected as a server. */
function isOwn(row: ServerTool, deps: ServerToolsDependencies): boolean {
  return deps.ownMcpUrl !== undefined && sameEndpoint(row.url, deps.ownMcpUrl);
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
