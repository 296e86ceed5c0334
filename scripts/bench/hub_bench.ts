/**
 * A connected MCP server's tool call through the agent's tool pipeline versus the MCP SDK's
 * client calling the same server directly, in the same run. Target: added p50 ≤ 2 ms.
 *
 * Both sides do what a call costs on the wire: a fresh SDK client over Streamable HTTP
 * (initialize, `tools/call` of the double's `echo`, close) to the MCP server double. The
 * agent's side adds what the agent does around it: `invokeTool` with the connected tool as
 * the registry holds it (grant resolved from `<slug>__*`, the URL checked, the guarded fetch),
 * the call metered (`consume_tool_calls`) and its usage row written — handed off as the agent
 * hands it (`deferUsage`: the turn goes on while the row commits; every row is awaited and
 * counted at the end). Its grant is `auto`, so,
 * as in the agent, the client connects (initialize) while the call is metered and `tools/call`
 * goes out once it is admitted (`ToolDefinition.prepare`). Reading the user's
 * connected tools happens once per chat, not per call, and is left out. The double runs in
 * this process, so both sides share its CPU alike.
 *
 * The same again for a server signed in with OAuth (the double's authorization server, a token
 * far from expiry): the agent's side reads and opens the sealed token set (one service-role
 * select, AES-GCM) before it can connect, once per isolate while the token is fresh (its
 * `TokenCache`, as in the agent); both sides send the bearer token.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { loadGrants } from "../../supabase/functions/_shared/permissions.ts";
import { createConnectedToolsLoader } from "../../supabase/functions/_shared/mcp_servers/server_tools.ts";
import { storeServer } from "../../supabase/functions/_shared/mcp_servers/store.ts";
import { consumeToolCalls } from "../../supabase/functions/_shared/tool_limits.ts";
import { invokeTool, refusal } from "../../supabase/functions/_shared/tools/invoke.ts";
import { createUsageWriter } from "../../supabase/functions/_shared/usage.ts";
import { connect } from "../../supabase/functions/_shared/db/client.ts";
import { createUser, liftRequestLimits } from "../../supabase/tests/support/database.ts";
import { startMcpServerDouble } from "../standin/mcp_server_double.ts";
import { generateSigningKey, issueAccessToken } from "../standin/signing_keys.ts";
import { importCredentialKey } from "../../supabase/functions/_shared/mcp_servers/credentials.ts";
import { loadToken } from "../../supabase/functions/_shared/mcp_servers/oauth_store.ts";
import { decryptCredential } from "../../supabase/functions/_shared/mcp_servers/credentials.ts";
import {
  signInWithOAuth,
  TEST_CREDENTIALS_KEY,
} from "../../supabase/tests/support/oauth_sign_in.ts";
import { measure } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

export async function hubBench(ctx: BenchContext): Promise<BenchResult[]> {
  const calls = ctx.smoke ? 10 : 1_000;
  const warmup = ctx.smoke ? 3 : 100;
  const double = startMcpServerDouble();
  const oauthDouble = startMcpServerDouble({ oauth: true });
  const sql = connect(ctx.databaseUrl, { max: ctx.pools.agent });
  try {
    const user = await createUser(ctx.sql, "hub-bench");
    await liftRequestLimits(ctx.sql, user.id);
    await storeServer(ctx.sql, {
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
        description: "Echoes its text.",
        input_schema: { type: "object", properties: { text: { type: "string" } } },
        output_schema: null,
        annotations: {},
      }],
      warnings: [],
    });
    await ctx.sql`update public.permissions set approval_mode = 'auto'
                  where user_id = ${user.id} and tool = 'dbl__*'`;
    const remote = {
      policy: { allowLoopback: true, resolveDns: Deno.resolveDns },
      requestTimeoutMs: 10_000,
    };
    const caller = { id: user.id, claims: user.claims };
    const registry = await createConnectedToolsLoader({ sql, remote })(caller);
    let grants = await loadGrants(sql, user.claims);
    const recordUsage = createUsageWriter(sql);
    const usageWrites: Promise<void>[] = [];
    /** Every call through the agent has its usage row, committed. */
    const usageRowsOf = async (tool: string) => {
      await Promise.all(usageWrites.splice(0));
      const [{ rows }] = await ctx.sql<{ rows: number }[]>`
        select count(*)::int as rows from public.usage_metrics
        where user_id = ${user.id} and kind = 'tool' and name = ${tool}`;
      return rows;
    };
    const agentCalls = warmup + 2 * Math.ceil(calls / 2);
    const args = { text: "hello" };

    const directTo = (url: string, headers: Record<string, string>) => async () => {
      const client = new Client({ name: "bench", version: "1" }, { capabilities: {} });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }),
      );
      try {
        const result = await client.callTool({ name: "echo", arguments: args });
        if (result.isError) throw new Error("echo failed");
      } finally {
        await client.close();
      }
    };
    const viaAgentTo = (
      tools: Awaited<ReturnType<ReturnType<typeof createConnectedToolsLoader>>>,
      name: string,
    ) =>
    async () => {
      const { result } = await invokeTool(tools, {
        caller,
        sql,
        grants,
        signal: new AbortController().signal,
        recordUsage,
        deferUsage: (write) => void usageWrites.push(write),
        source: "agent",
      }, {
        name,
        args: { ok: true, value: args },
        policy: async () => {
          const decision = await consumeToolCalls(sql, user.id, 1);
          return decision.allowed ? undefined : refusal("rate_limited", decision.reason);
        },
        progress: () => Promise.resolve(),
      });
      if (!result.ok) throw new Error(`${result.error.code}: ${result.error.message}`);
    };

    /** p50 of each side, halves alternated so neither side gets a warmer machine. */
    const compare = async (direct: () => Promise<void>, viaAgent: () => Promise<void>) => {
      for (let i = 0; i < warmup; i++) {
        await direct();
        await viaAgent();
      }
      const half = Math.ceil(calls / 2);
      const a1 = await measure(half, 1, direct);
      const b1 = await measure(half, 1, viaAgent);
      const b2 = await measure(half, 1, viaAgent);
      const a2 = await measure(half, 1, direct);
      return {
        direct: (a1.p50 + a2.p50) / 2,
        agent: (b1.p50 + b2.p50) / 2,
        directDetail: `p99 ${Math.max(a1.p99, a2.p99).toFixed(2)} ms, ${a1.count + a2.count} calls`,
        agentDetail: `p99 ${Math.max(b1.p99, b2.p99).toFixed(2)} ms, ${b1.count + b2.count} calls`,
      };
    };

    const plain = await compare(directTo(double.url, {}), viaAgentTo(registry, "dbl__echo"));
    const added = plain.agent - plain.direct;
    const plainRows = await usageRowsOf("dbl__echo");

    // The OAuth server: signed in through the connections app, its first token long-lived.
    const key = await generateSigningKey();
    const token = await issueAccessToken(key, {
      userId: user.id,
      email: user.email,
      sessionId: user.sessionId,
      issuer: "http://127.0.0.1/auth/v1",
    });
    const serverId = await signInWithOAuth(key, token, oauthDouble.url, "sso", ctx.databaseUrl);
    await ctx.sql`update public.permissions set approval_mode = 'auto'
                  where user_id = ${user.id} and tool = 'sso__*'`;
    grants = await loadGrants(sql, user.claims);
    const credentialKey = await importCredentialKey(TEST_CREDENTIALS_KEY);
    const stored = await loadToken(sql, user.id, serverId);
    const sealed = await decryptCredential(credentialKey, serverId, stored!.secret);
    const bearer = sealed.kind === "oauth" ? sealed.access_token : "";
    const oauthTools = await createConnectedToolsLoader({ sql, remote, credentialKey })(caller);
    const signedIn = await compare(
      directTo(oauthDouble.url, { Authorization: `Bearer ${bearer}` }),
      viaAgentTo(oauthTools, "sso__echo"),
    );
    const addedOAuth = signedIn.agent - signedIn.direct;
    const oauthRows = await usageRowsOf("sso__echo");
    return [
      {
        name: "connected tool call, SDK client direct",
        value: plain.direct,
        unit: "ms p50",
        detail: plain.directDetail,
      },
      {
        name: "connected tool call, through the agent's pipeline",
        value: plain.agent,
        unit: "ms p50",
        detail: plain.agentDetail,
      },
      {
        name: "connected tool call, added by the agent (p50)",
        value: added,
        unit: "ms",
        target: "<= 2",
        pass: added <= 2 && plainRows === agentCalls,
        detail: `usage rows ${plainRows} of ${agentCalls} calls`,
      },
      {
        name: "OAuth server's tool call, added by the agent (p50)",
        value: addedOAuth,
        unit: "ms",
        target: "<= 2",
        pass: addedOAuth <= 2 && oauthRows === agentCalls,
        detail: `direct ${signedIn.direct.toFixed(2)} ms, agent ${
          signedIn.agent.toFixed(2)
        } ms; usage rows ${oauthRows} of ${agentCalls} calls`,
      },
    ];
  } finally {
    await sql.end();
    await double.close();
    await oauthDouble.close();
  }
}
