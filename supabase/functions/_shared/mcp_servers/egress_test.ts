/**
 * The guarded fetch across one use of a server: every request's URL is checked, but a name is
 * resolved once per use (not once per request), and a redirect to another name is resolved
 * and checked on its own.
 */
import assert from "node:assert/strict";
import { startMcpServerDouble } from "../../../../scripts/standin/mcp_server_double.ts";
import { withServer } from "./remote.ts";

Deno.test("one use of a server resolves its name once; a redirect's new name is resolved and checked", async () => {
  const double = startMcpServerDouble();
  try {
    const lookups: string[] = [];
    const answers: Record<string, string> = { "mcp.test": "127.0.0.1", "evil.test": "10.0.0.7" };
    const port = new URL(double.url).port;
    const settings = {
      policy: {
        allowLoopback: true,
        resolveDns: (host: string, type: "A" | "AAAA") => {
          lookups.push(`${type} ${host}`);
          return Promise.resolve(type === "A" && answers[host] ? [answers[host]] : []);
        },
      },
      requestTimeoutMs: 2_000,
      // The names exist only for the check: the request itself goes to the double.
      fetch: ((input: RequestInfo | URL, init?: RequestInit) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        url.hostname = "127.0.0.1";
        return fetch(url, init);
      }) as typeof fetch,
    };
    let requestsBefore = double.requests;
    const used = await withServer(
      { url: `http://mcp.test:${port}/mcp`, headers: {} },
      settings,
      (client) => client.callTool({ name: "echo", arguments: { text: "hi" } }),
    );
    assert.equal(used.ok, true, JSON.stringify(used));
    assert.ok(double.requests - requestsBefore >= 3, "initialize, initialized and the call");
    assert.deepEqual(lookups.sort(), ["A mcp.test", "AAAA mcp.test"]);

    lookups.length = 0;
    requestsBefore = double.requests;
    const redirected = await withServer(
      {
        url: `http://mcp.test:${port}/redirect?to=${
          encodeURIComponent(`http://evil.test:${port}/mcp`)
        }`,
        headers: {},
      },
      settings,
      (client) => client.callTool({ name: "echo", arguments: { text: "hi" } }),
    );
    assert.deepEqual(redirected.ok ? "ok" : redirected.error.code, "url_not_allowed");
    assert.deepEqual(lookups.sort(), [
      "A evil.test",
      "A mcp.test",
      "AAAA evil.test",
      "AAAA mcp.test",
    ]);
    assert.equal(double.requests - requestsBefore, 1, "only the redirect reached the server");
  } finally {
    await double.close();
  }
});
