/**
 * A connected MCP server's tool call through the agent's tool pipeline versus the MCP SDK's
 * client calling the same server directly, in the same run. Target: added p50 ≤ 2 ms.
 *
 * Both sides do what a call costs on the wire: a fresh SDK client over Streamable HTTP
 * (initialize, `tools/call` of the double's `echo`, close) to the MCP server double. The
 * agent's side adds what the agent does around it: `invokeTool` with the connected tool as
 * the registry holds it (grant resolved from `<slug>__*`, the URL checked, the guarded fetch),
 * the call metered (`consume_tool_calls`) and its usage row written. Reading the user's
 * connected tools happens once per chat, not per call, and is left out. The double runs in
 * this process, so both sides share its CPU alike.
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
import { measure } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

export async function hubBench(ctx: BenchContext): Promise<BenchResult[]> {
  const calls = ctx.smoke ? 10 : 1_000;
  const warmup = ctx.smoke ? 3 : 100;
  const double = startMcpServerDouble();
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
    const grants = await loadGrants(sql, user.claims);
    const recordUsage = createUsageWriter(sql);
    const args = { text: "hello" };

    const direct = async () => {
      const client = new Client({ name: "bench", version: "1" }, { capabilities: {} });
      await client.connect(new StreamableHTTPClientTransport(new URL(double.url)));
      try {
        const result = await client.callTool({ name: "echo", arguments: args });
        if (result.isError) throw new Error("echo failed");
      } finally {
        await client.close();
      }
    };
    const viaAgent = async () => {
      const { result } = await invokeTool(registry, {
        caller,
        sql,
        grants,
        signal: new AbortController().signal,
        recordUsage,
        source: "agent",
      }, {
        name: "dbl__echo",
        args: { ok: true, value: args },
        policy: async () => {
          const decision = await consumeToolCalls(sql, user.id, 1);
          return decision.allowed ? undefined : refusal("rate_limited", decision.reason);
        },
        progress: () => Promise.resolve(),
      });
      if (!result.ok) throw new Error(`${result.error.code}: ${result.error.message}`);
    };

    for (let i = 0; i < warmup; i++) {
      await direct();
      await viaAgent();
    }
    // Alternate halves so neither side gets a warmer machine.
    const half = Math.ceil(calls / 2);
    const a1 = await measure(half, 1, direct);
    const b1 = await measure(half, 1, viaAgent);
    const b2 = await measure(half, 1, viaAgent);
    const a2 = await measure(half, 1, direct);
    const p50Direct = (a1.p50 + a2.p50) / 2;
    const p50Agent = (b1.p50 + b2.p50) / 2;
    const added = p50Agent - p50Direct;
    return [
      {
        name: "connected tool call, SDK client direct",
        value: p50Direct,
        unit: "ms p50",
        detail: `p99 ${Math.max(a1.p99, a2.p99).toFixed(2)} ms, ${a1.count + a2.count} calls`,
      },
      {
        name: "connected tool call, through the agent's pipeline",
        value: p50Agent,
        unit: "ms p50",
        detail: `p99 ${Math.max(b1.p99, b2.p99).toFixed(2)} ms, ${b1.count + b2.count} calls`,
      },
      {
        name: "connected tool call, added by the agent (p50)",
        value: added,
        unit: "ms",
        target: "<= 2",
        pass: added <= 2,
      },
    ];
  } finally {
    await sql.end();
    await double.close();
  }
}
