/**
 * A connected server's tools as the agent's registry holds them, run directly against the MCP
 * server double: the stored credential is sent, calls to one server are bounded per isolate,
 * and an answer too large or too late is a tool error with a stable code.
 */
import assert from "node:assert/strict";
import { startMcpServerDouble } from "../../../../scripts/standin/mcp_server_double.ts";
import { connectFunctionDatabase, createUser } from "../../../tests/support/database.ts";
import type { ToolContext, ToolDefinition } from "../tools/types.ts";
import { invokeTool, refusal, type ToolInvocation, type ToolScope } from "../tools/invoke.ts";
import type { UsageRecord } from "../usage.ts";
import { encryptCredential, importCredentialKey } from "./credentials.ts";
import { createConnectedToolsLoader } from "./server_tools.ts";
import { storeServer } from "./store.ts";
import { loadToken } from "./oauth_store.ts";
import { oauthAccessToken } from "./oauth_tokens.ts";
import { signInWithOAuth, TEST_CREDENTIALS_KEY } from "../../../tests/support/oauth_sign_in.ts";
import { generateSigningKey, issueAccessToken } from "../../../../scripts/standin/signing_keys.ts";

const LOCAL = {
  allowLoopback: true,
  resolveDns: (h: string, t: "A" | "AAAA") => Deno.resolveDns(h, t),
};

function contextFor(caller: { id: string; claims: ToolContext["caller"]["claims"] }): ToolContext {
  return {
    caller,
    db: () => Promise.reject(new Error("not used")),
    progress: () => Promise.resolve(),
    signal: new AbortController().signal,
    permission: { tool: "x", grantedBy: "*", mode: "auto", constraints: {} },
  };
}

Deno.test("server tools: the credential is sent, calls per server are bounded, big and late answers are tool errors", async () => {
  const double = startMcpServerDouble({ requiredHeader: { name: "X-Key", value: "sesame" } });
  const sql = connectFunctionDatabase(3);
  const credentialKey = await importCredentialKey(
    btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
  );
  try {
    const user = await createUser(sql, "tools");
    const id = crypto.randomUUID();
    const spec = (name: string) => ({
      name: `dbl__${name}`,
      original_name: name,
      title: null,
      description: name,
      input_schema: { type: "object" },
      output_schema: null,
      annotations: {},
    });
    await storeServer(sql, {
      id,
      userId: user.id,
      slug: "dbl",
      displayName: null,
      url: double.url,
      authMode: "header",
      secret: await encryptCredential(credentialKey, id, {
        kind: "header",
        name: "X-Key",
        value: "sesame",
      }),
      tools: ["echo", "slow", "huge", "hang"].map(spec),
      warnings: [],
    });
    const load = createConnectedToolsLoader({
      sql,
      credentialKey,
      remote: {
        policy: LOCAL,
        requestTimeoutMs: 1_000,
        limits: { maxResponseBytes: 256 * 1024, headersTimeoutMs: 1_000 },
      },
      perServerConcurrency: 2,
    });
    const tools = await load({ id: user.id, claims: user.claims });
    const tool = (name: string) => tools.find((t) => t.name === `dbl__${name}`) as ToolDefinition;
    const context = contextFor({ id: user.id, claims: user.claims });

    assert.deepEqual(await tool("echo").run({ text: "hi" }, context), {
      ok: true,
      output: { text: "hi" },
    });

    const slow = await Promise.all(
      Array.from({ length: 5 }, () => tool("slow").run({ steps: 1, delay_ms: 40 }, context)),
    );
    assert.ok(slow.every((r) => r.ok), JSON.stringify(slow));
    assert.equal(double.maxConcurrentCalls, 2, "at most 2 calls to one server at once");

    const huge = await tool("huge").run({ megabytes: 1 }, context);
    assert.equal(huge.ok ? "ok" : huge.error.code, "mcp_server_response_too_large");
    const hang = await tool("hang").run({}, context);
    assert.equal(hang.ok ? "ok" : hang.error.code, "mcp_server_timeout");
  } finally {
    await sql.end();
    await double.close();
  }
});

Deno.test("server tools: with an auto grant the client connects while the policy decides; a refused call never calls the tool", async () => {
  const double = startMcpServerDouble();
  const sql = connectFunctionDatabase(2);
  try {
    const user = await createUser(sql, "prepared");
    await storeServer(sql, {
      id: crypto.randomUUID(),
      userId: user.id,
      slug: "dbl",
      displayName: null,
      url: double.url,
      authMode: "none",
      secret: null,
      tools: [{
        name: "dbl__echo",
        original_name: "echo",
        title: null,
        description: "echo",
        input_schema: { type: "object" },
        output_schema: null,
        annotations: {},
      }],
      warnings: [],
    });
    const caller = { id: user.id, claims: user.claims };
    const tools = await createConnectedToolsLoader({
      sql,
      remote: { policy: LOCAL, requestTimeoutMs: 2_000 },
    })(caller);
    const usage: UsageRecord[] = [];
    const scope = (mode: "auto" | "ask"): ToolScope => ({
      caller,
      sql,
      grants: [{ tool: "dbl__*", approval_mode: mode, constraints: {} }],
      signal: new AbortController().signal,
      recordUsage: (row) => {
        usage.push(row);
        return Promise.resolve();
      },
      source: "agent",
    });
    /** A policy that decides once the server has been reached (or after 2 s, refusing). */
    const decideOnceReached = (verdict: "admit" | "refuse"): ToolInvocation["policy"] => {
      const before = double.requests;
      return async () => {
        for (let i = 0; i < 200 && double.requests === before; i++) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        if (double.requests === before) return refusal("not_reached", "never reached", "denied");
        return verdict === "admit" ? undefined : refusal("rate_limited", "no calls left", "denied");
      };
    };
    const call = (policy: ToolInvocation["policy"]): ToolInvocation => ({
      name: "dbl__echo",
      args: { ok: true, value: { text: "hi" } },
      policy,
      progress: () => Promise.resolve(),
    });

    // Admitted: the connection was already open when the policy said yes.
    const admitted = await invokeTool(tools, scope("auto"), call(decideOnceReached("admit")));
    assert.deepEqual(admitted, { result: { ok: true, output: { text: "hi" } }, status: "ok" });
    assert.deepEqual(double.calls.map((c) => c.name), ["echo"]);

    // Refused after the server was reached: initialize went out, tools/call never did.
    const refused = await invokeTool(tools, scope("auto"), call(decideOnceReached("refuse")));
    assert.equal(refused.result.ok ? "ok" : refused.result.error.code, "rate_limited");
    // An `ask` grant waits for a human: nothing goes out before the answer.
    const asked = await invokeTool(tools, scope("ask"), call(decideOnceReached("admit")));
    assert.equal(asked.result.ok ? "ok" : asked.result.error.code, "not_reached");
    // A later admitted call is the only other one the server ran.
    await invokeTool(tools, scope("auto"), call(() => Promise.resolve(undefined)));
    assert.deepEqual(double.calls.map((c) => c.name), ["echo", "echo"]);
    assert.deepEqual(usage.map((u) => u.status), ["ok", "denied", "denied", "ok"]);
  } finally {
    await sql.end();
    await double.close();
  }
});

Deno.test("server tools: an OAuth server's token is read once while it is fresh; one the server refuses is read again", async () => {
  const double = startMcpServerDouble({ oauth: true });
  const sql = connectFunctionDatabase(2);
  try {
    const user = await createUser(sql, "token-cache");
    const key = await generateSigningKey();
    const signedIn = await issueAccessToken(key, {
      userId: user.id,
      email: user.email,
      sessionId: user.sessionId,
      issuer: "http://127.0.0.1/auth/v1",
    });
    const serverId = await signInWithOAuth(key, signedIn, double.url, "sso");
    const caller = { id: user.id, claims: user.claims };
    const remote = { policy: LOCAL, requestTimeoutMs: 2_000 };
    const credentialKey = await importCredentialKey(TEST_CREDENTIALS_KEY);
    const oauth = { refreshMarginMs: 1_000, leaseMs: 2_000 };
    const tools = await createConnectedToolsLoader({ sql, remote, credentialKey, oauth })(caller);
    const call = () =>
      invokeTool(tools, {
        caller,
        sql,
        grants: [{ tool: "sso__*", approval_mode: "auto", constraints: {} }],
        signal: new AbortController().signal,
        recordUsage: () => Promise.resolve(),
        source: "agent",
      }, {
        name: "sso__echo",
        args: { ok: true, value: { text: "hi" } },
        policy: () => Promise.resolve(undefined),
        progress: () => Promise.resolve(),
      });
    const bearers = () => double.calls.map((c) => c.headers.get("authorization"));

    assert.equal((await call()).status, "ok");
    const [first] = bearers();
    // Another isolate refreshes: Postgres holds a new token; the first is still good.
    const stored = await loadToken(sql, user.id, serverId);
    const refreshed = await oauthAccessToken(
      { sql, credentialKey, remote, oauth },
      user.id,
      serverId,
      "sso",
      { refused: stored!.version },
    );
    assert.ok(refreshed.ok);
    assert.equal(double.oauth!.refreshes, 1);
    // Read once: this call goes out with the token it read before, not the stored one.
    assert.equal((await call()).status, "ok");
    assert.deepEqual(bearers(), [first, first]);
    // The server refuses it: dropped, read again (the newer one), no refresh of its own.
    double.oauth!.revokeAccessToken(first!.slice("Bearer ".length));
    assert.equal((await call()).status, "ok");
    assert.equal((await call()).status, "ok");
    const second = `Bearer ${refreshed.token}`;
    assert.notEqual(second, first);
    assert.deepEqual(bearers(), [first, first, second, second]);
    assert.equal(double.oauth!.refreshes, 1);
  } finally {
    await sql.end();
    await double.close();
  }
});
