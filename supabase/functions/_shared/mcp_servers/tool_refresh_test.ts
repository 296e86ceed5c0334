/**
 * The refresher's bounds, without a server: a server that keeps announcing new tools, call
 * after call, is refreshed once per interval, not once per notification.
 */
import assert from "node:assert/strict";
import type { Sql } from "../db/client.ts";
import { type ChangedServer, createToolRefresher } from "./tool_refresh.ts";

Deno.test("notifications within the interval, during a refresh or after it, fold into one more refresh", async () => {
  const running: Promise<unknown>[] = [];
  const refresh = createToolRefresher({
    sql: {} as Sql,
    remote: {
      policy: { allowLoopback: false, resolveDns: () => Promise.resolve([]) },
      requestTimeoutMs: 1,
    },
    minIntervalMs: 300,
    waitUntil: (promise) => running.push(promise),
  });
  let started = 0;
  const server: ChangedServer = {
    id: "server-1",
    userId: "user-1",
    slug: "dbl",
    url: "https://mcp.example/mcp",
    // Each refresh begins by reading the headers: counted, then refused (no network here).
    headers: () => {
      started++;
      return Promise.resolve({ ok: false, error: { code: "mcp_reauth_required", message: "no" } });
    },
  };
  refresh(server);
  for (let i = 0; i < 50; i++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    refresh(server);
  }
  await Promise.all(running);
  assert.equal(running.length, 1, "one refresh loop for the server");
  assert.equal(started, 2, "the first notification, then one for the 50 that followed");
  // Once the interval is over, a new notification refreshes again.
  refresh(server);
  await Promise.all(running);
  assert.equal(started, 3);
});
