/**
 * A connected server's tools listed again when it says they changed: a client the hub opens
 * (remote.ts `withServer`, one per use) that receives `notifications/tools/list_changed` — on
 * a tool call's own stream, say — hands the server here, and its tools are discovered and
 * replaced exactly as `POST /connections/<id>/refresh` does (discovery.ts, then
 * `mcp_replace_tools` in one transaction: a tool with an invalid schema is skipped with a
 * warning, nothing is stored half-way).
 *
 * The refresh runs after the notification, never in the call's way (under
 * `EdgeRuntime.waitUntil`, so the worker is not retired under it). It is bounded: one refresh
 * per server at a time in an isolate, and refreshes of one server start at least
 * `minIntervalMs` apart, the notifications of an interval folded into one more refresh, so a
 * server that sends the notification in a loop (or with every call) costs one `tools/list` per
 * interval, not one per notification. That
 * bookkeeping is per isolate on purpose: it only bounds this isolate's work; what the tools
 * are lives in Postgres.
 */
import { abortableSleep } from "../abortable_sleep.ts";
import type { Sql } from "../db/client.ts";
import { log, logFailure } from "../log.ts";
import { discoverServerTools } from "./discovery.ts";
import type { RemoteSettings } from "./remote.ts";
import { replaceTools } from "./store.ts";
import { waitUntil } from "../wait_until.ts";

/** A server whose tools changed, and how to reach it for the user who was calling it. */
export interface ChangedServer {
  id: string;
  userId: string;
  slug: string;
  url: string;
  /** Its headers now (a credential read, an OAuth token refreshed if need be). */
  headers(): Promise<
    { ok: true; value: Record<string, string> } | {
      ok: false;
      error: { code: string; message: string };
    }
  >;
}

/** Told of a server's `tools/list_changed`; returns at once. */
export type ToolsChanged = (server: ChangedServer) => void;

export interface ToolRefreshDependencies {
  sql: Sql;
  remote: RemoteSettings;
  /** Refreshes of one server start at least this far apart (default 5000 ms). */
  minIntervalMs?: number;
  /** Keeps the worker alive for a refresh (default: `EdgeRuntime.waitUntil` where it exists). */
  waitUntil?: (promise: Promise<unknown>) => void;
}

export function createToolRefresher(deps: ToolRefreshDependencies): ToolsChanged {
  const minIntervalMs = deps.minIntervalMs ?? 5_000;
  const keepAlive = deps.waitUntil ?? waitUntil;
  /** Servers being refreshed, each with the notification that came meanwhile, if any. */
  const refreshing = new Map<string, { again?: ChangedServer }>();

  async function refreshWhileChanged(first: ChangedServer): Promise<void> {
    let next: ChangedServer | undefined = first;
    while (next) {
      const started = Date.now();
      await refreshOnce(next).catch((error: unknown) => {
        logFailure("mcp_tools_refresh", error, { server: first.slug, user_id: first.userId });
      });
      // Notifications until the interval is over (during this refresh or after it, from this
      // call or the next ones) fold into one more refresh then.
      await abortableSleep(started + minIntervalMs - Date.now());
      const state = refreshing.get(first.id)!;
      next = state.again;
      state.again = undefined;
    }
    refreshing.delete(first.id);
  }

  async function refreshOnce(server: ChangedServer): Promise<void> {
    const headers = await server.headers();
    if (!headers.ok) {
      log("warn", "tools_refreshed", {
        server: server.slug,
        user_id: server.userId,
        code: headers.error.code,
      });
      return;
    }
    const found = await discoverServerTools(
      { url: server.url, headers: headers.value },
      server.slug,
      deps.remote,
    );
    if (!found.ok) {
      log("warn", "tools_refreshed", {
        server: server.slug,
        user_id: server.userId,
        code: found.error.code,
      });
      return;
    }
    const { tools, warnings } = found.value;
    // False: the server was deleted meanwhile; nothing to store.
    const replaced = await replaceTools(deps.sql, server.id, server.userId, tools, warnings);
    log("info", "tools_refreshed", {
      server: server.slug,
      user_id: server.userId,
      tools: tools.length,
      warnings: warnings.length,
      stored: replaced,
    });
  }

  return (server) => {
    const state = refreshing.get(server.id);
    if (state) {
      state.again = server;
      return;
    }
    refreshing.set(server.id, {});
    keepAlive(refreshWhileChanged(server));
  };
}
