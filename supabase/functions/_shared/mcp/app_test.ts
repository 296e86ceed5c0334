/**
 * The `mcp` function served over HTTP (Deno.serve on port 0) against the test database, driven
 * by the MCP SDK's own client: what a real MCP client sees, end to end.
 */
import assert from "node:assert/strict";
import type { z } from "zod";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import {
  generateSigningKey,
  issueAccessToken,
  jwksOf,
} from "../../../../scripts/standin/signing_keys.ts";
import {
  startWebhookDouble,
  type WebhookCall,
  type WebhookDouble,
} from "../../../../scripts/standin/webhook_double.ts";
import {
  appendMessages,
  as,
  connectFunctionDatabase,
  createUser,
  message,
  type TestUser,
} from "../../../tests/support/database.ts";
import { createTokenVerifier } from "../auth.ts";
import type { Sql } from "../db/client.ts";
import { createMcpApp, MCP_MAX_BATCH } from "./app.ts";
import { createToolRegistry } from "../tools/registry.ts";
import { getUsageTool } from "../tools/get_usage.ts";
import { OtlpTracer, tracer, useTracer } from "../tracing/otlp.ts";
import { startOtlpDouble } from "../../../tests/support/otlp_double.ts";
import type { WorkflowConfig } from "../tools/execute_workflow.ts";

const SUPABASE_URL = "https://project-ref.supabase.test";
const FUNCTION_URL = `${SUPABASE_URL}/functions/v1/mcp`;
const METADATA_URL = `${FUNCTION_URL}/.well-known/oauth-protected-resource`;
const signingKey = await generateSigningKey();

interface Fixture {
  sql: Sql;
  /** The MCP endpoint as served locally. */
  endpoint: URL;
  webhook: WebhookDouble;
  tokenFor(user: TestUser): Promise<string>;
  connect(user: TestUser): Promise<Client>;
}

interface FixtureOptions {
  workflow?: Partial<WorkflowConfig>;
  webhook?: (call: WebhookCall) => Response | Promise<Response>;
}

/** The function served on a free port, a webhook double, and a pool on the test database. */
async function withMcp(
  options: FixtureOptions,
  test: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const sql = connectFunctionDatabase(10);
  const webhook = startWebhookDouble(
    options.webhook ?? ((call) => Response.json({ echoed: call.body })),
  );
  const app = createMcpApp({
    sql,
    verifier: createTokenVerifier({ jwks: jwksOf(signingKey) }),
    functionUrl: FUNCTION_URL,
    tools: createToolRegistry({
      workflow: { baseUrl: webhook.url, progressIntervalMs: 20, ...options.workflow },
    }),
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  const endpoint = new URL(`http://127.0.0.1:${server.addr.port}/mcp`);
  const clients: Client[] = [];
  const tokenFor = (user: TestUser) =>
    issueAccessToken(signingKey, {
      userId: user.id,
      email: user.email,
      issuer: `${SUPABASE_URL}/auth/v1`,
    });
  try {
    await test({
      sql,
      endpoint,
      webhook,
      tokenFor,
      async connect(user) {
        const client = new Client({ name: "mcp-test", version: "1.0.0" });
        const transport = new StreamableHTTPClientTransport(endpoint, {
          requestInit: { headers: { Authorization: `Bearer ${await tokenFor(user)}` } },
        });
        await client.connect(transport);
        clients.push(client);
        return client;
      },
    });
  } finally {
    for (const client of clients) await client.close();
    await server.shutdown();
    await webhook.close();
    await sql.end();
  }
}

async function grant(
  sql: Sql,
  user: TestUser,
  tool: string,
  mode: "auto" | "ask" | "deny",
  constraints: Record<string, unknown> = {},
) {
  await sql`
    insert into public.permissions (user_id, tool, approval_mode, constraints)
    values (${user.id}, ${tool}, ${mode}, ${sql.json(constraints as never)})
    on conflict (user_id, tool) do update
      set approval_mode = excluded.approval_mode, constraints = excluded.constraints`;
}

interface JsonSchema {
  type?: string;
  required?: string[];
  properties?: Record<string, JsonSchema>;
  enum?: unknown[];
  maximum?: number;
}

interface ListedTool {
  name: string;
  title?: string;
  inputSchema: JsonSchema;
  outputSchema?: JsonSchema;
  annotations?: Record<string, unknown>;
}

type UsageReport = z.output<typeof getUsageTool.output>;

async function toolNames(client: Client): Promise<string[]> {
  const { tools } = await client.listTools();
  return tools.map((tool: { name: string }) => tool.name).sort();
}

async function call(client: Client, name: string, args: Record<string, unknown>) {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

function errorOf(result: CallToolResult): { code: string; message: string } {
  assert.equal(result.isError, true, `expected a tool error, got ${JSON.stringify(result)}`);
  const [content] = result.content;
  assert.equal(content.type, "text");
  const text = (content as { text: string }).text;
  return JSON.parse(text).error;
}

interface UsageRow {
  name: string;
  source: string;
  kind: string;
  status: string;
  latency_ms: number;
}

function usageOf(sql: Sql, user: TestUser): Promise<UsageRow[]> {
  return sql<UsageRow[]>`
    select name, source, kind, status, latency_ms from public.usage_metrics
    where user_id = ${user.id} order by id`;
}

Deno.test("initialize and tools/list for a default user: the four default tools", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-default");
    const client = await connect(user);
    assert.equal(client.getServerVersion()?.name, "supabase-agent-tools");
    assert.ok(client.getServerCapabilities()?.tools);
    assert.deepEqual(await toolNames(client), [
      "calculator",
      "get_usage",
      "query_table",
      "search_history",
    ]);
  });
});

Deno.test("tools/list follows each user's permissions", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const withWorkflows = await createUser(sql, "mcp-workflows");
    await grant(sql, withWorkflows, "execute_workflow", "auto", { workflow_ids: ["report"] });
    const noQueries = await createUser(sql, "mcp-no-queries");
    await grant(sql, noQueries, "query_table", "deny");
    const asksForCalculator = await createUser(sql, "mcp-ask");
    await grant(sql, asksForCalculator, "calculator", "ask");
    const everythingButSearch = await createUser(sql, "mcp-wildcard");
    await sql`delete from public.permissions where user_id = ${everythingButSearch.id}`;
    await grant(sql, everythingButSearch, "*", "auto");
    await grant(sql, everythingButSearch, "search_history", "deny");

    assert.deepEqual(await toolNames(await connect(withWorkflows)), [
      "calculator",
      "execute_workflow",
      "get_usage",
      "query_table",
      "search_history",
    ]);
    assert.deepEqual(await toolNames(await connect(noQueries)), [
      "calculator",
      "get_usage",
      "search_history",
    ]);
    assert.deepEqual(await toolNames(await connect(asksForCalculator)), [
      "get_usage",
      "query_table",
      "search_history",
    ]);
    assert.deepEqual(await toolNames(await connect(everythingButSearch)), [
      "calculator",
      "execute_workflow",
      "get_usage",
      "query_table",
    ]);
  });
});

Deno.test("listed tools carry title, JSON schemas and annotations from the registry", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-schemas");
    await grant(sql, user, "execute_workflow", "auto", { workflow_ids: ["report"] });
    const { tools } = await (await connect(user)).listTools();
    const byName = new Map((tools as ListedTool[]).map((tool) => [tool.name, tool]));
    const calculator = byName.get("calculator")!;
    assert.equal(calculator.title, "Calculator");
    assert.equal(calculator.inputSchema.type, "object");
    assert.deepEqual(calculator.inputSchema.required, ["expression"]);
    assert.equal(calculator.inputSchema.properties?.expression.type, "string");
    assert.deepEqual(Object.keys(calculator.outputSchema?.properties ?? {}).sort(), [
      "exact",
      "fraction",
      "value",
    ]);
    assert.equal(calculator.annotations?.readOnlyHint, true);
    const workflow = byName.get("execute_workflow")!;
    assert.equal(workflow.annotations?.readOnlyHint, false);
    assert.equal(workflow.annotations?.openWorldHint, true);
    const queryTable = byName.get("query_table")!;
    assert.deepEqual(queryTable.inputSchema.properties?.table.enum, [
      "chat_sessions",
      "chat_history",
      "usage_metrics",
      "permissions",
    ]);
    assert.equal(queryTable.inputSchema.properties?.limit.maximum, 100);
  });
});

Deno.test("calculator: exact result, bad argument, engine error with its code", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const client = await connect(await createUser(sql, "mcp-calc"));
    const ok = await call(client, "calculator", { expression: "(0.1 + 0.2) * 3 - 1/3" });
    assert.notEqual(ok.isError, true);
    assert.deepEqual(ok.structuredContent, {
      value: "0.566666666666666666666666666667",
      fraction: "17/30",
      exact: false,
    });
    assert.deepEqual(
      JSON.parse((ok.content[0] as { text: string }).text),
      ok.structuredContent,
    );

    const badArgument = await call(client, "calculator", { expression: 42 });
    assert.equal(badArgument.isError, true);
    assert.match((badArgument.content[0] as { text: string }).text, /expression/);

    const divisionByZero = errorOf(await call(client, "calculator", { expression: "1 / (2 - 2)" }));
    assert.equal(divisionByZero.code, "division_by_zero");
  });
});

Deno.test("search_history finds the caller's own messages with snippets and sessions", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-search");
    const other = await createUser(sql, "mcp-search-other");
    const sessionA = crypto.randomUUID();
    const sessionB = crypto.randomUUID();
    await as(sql, user, async (tx) => {
      await appendMessages(tx, sessionA, [
        message("How do penguins keep their eggs warm in the Antarctic winter?"),
        message("Emperor penguins balance the egg on their feet.", "assistant"),
      ]);
      await appendMessages(tx, sessionB, [message("A recipe for lemon cake, please")]);
    });
    await as(
      sql,
      other,
      (tx) => appendMessages(tx, crypto.randomUUID(), [message("penguins are my favourite birds")]),
    );

    const client = await connect(user);
    const result = await call(client, "search_history", { query: "penguin egg" });
    assert.notEqual(result.isError, true, JSON.stringify(result));
    const found = result.structuredContent as {
      results: { session_id: string; role: string; snippet: string; rank: number }[];
      session_ids: string[];
    };
    assert.equal(found.results.length, 2);
    assert.deepEqual(found.session_ids, [sessionA]);
    assert.ok(found.results.every((r) => r.session_id === sessionA));
    assert.ok(
      found.results.every((r) => /<mark>penguins<\/mark>/i.test(r.snippet)),
      found.results[0].snippet,
    );
    assert.ok(found.results[0].rank >= found.results[1].rank);

    const phrase = await call(client, "search_history", { query: '"lemon cake"', limit: 5 });
    assert.deepEqual((phrase.structuredContent as { session_ids: string[] }).session_ids, [
      sessionB,
    ]);

    const empty = await call(client, "search_history", { query: "   " });
    assert.equal(empty.isError, true);
    const tooMany = await call(client, "search_history", { query: "penguin", limit: 1000 });
    assert.equal(tooMany.isError, true);
  });
});

Deno.test("get_usage sums the caller's usage by day and name and computes the quota", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-usage");
    const today = new Date().toISOString().slice(0, 10);
    await sql`
      insert into public.usage_metrics
        (user_id, kind, name, source, prompt_tokens, completion_tokens, cost_usd, latency_ms,
         status, created_at)
      values
        (${user.id}, 'llm', 'model-a', 'agent', 100, 50, 0.25, 400, 'ok', now()),
        (${user.id}, 'llm', 'model-a', 'agent', 10, 5, 0.5, 600, 'error', now()),
        (${user.id}, 'llm', 'model-b', 'agent', 1, 1, 0, 10, 'ok', now() - interval '3 days'),
        (${user.id}, 'llm', 'model-old', 'agent', 1, 1, 0, 10, 'ok', now() - interval '30 days')`;
    await sql`
      update public.user_limits
      set bucket_capacity = 10000, refill_per_minute = 60, bucket_tokens = 1000,
          bucket_updated_at = now() - interval '10 minutes',
          daily_token_cap = 5000, day_tokens = 1200, daily_cost_cap_usd = 2,
          day_cost_usd = 0.75, usage_day = (now() at time zone 'utc')::date
      where user_id = ${user.id}`;

    const client = await connect(user);
    const result = await call(client, "get_usage", {});
    assert.notEqual(result.isError, true, JSON.stringify(result));
    const usage = result.structuredContent as UsageReport;
    assert.equal(usage.to, today);
    assert.equal(usage.by_day.length, 7);
    assert.equal(usage.by_day[6].day, today);
    assert.equal(usage.by_day[6].calls, 2);
    assert.equal(usage.by_day[6].total_tokens, 165);
    assert.equal(usage.by_day[6].cost_usd, 0.75);
    assert.equal(usage.by_day[3].calls, 1);
    assert.deepEqual(usage.by_name.map((r) => r.name), ["model-a", "model-b"]);
    assert.equal(usage.by_name[0].errors, 1);
    assert.equal(usage.by_name[0].latency_ms_avg, 500);
    assert.equal(usage.totals.calls, 3);
    assert.equal(usage.totals.prompt_tokens, 111);
    // 1000 tokens + 10 minutes × 60 per minute, under the capacity, less the 100 tokens this
    // very tool call cost.
    const quota = usage.quota!;
    assert.ok(quota.bucket_tokens >= 1500 && quota.bucket_tokens < 1600, `${quota.bucket_tokens}`);
    assert.equal(quota.daily_tokens_left, 3700);
    assert.equal(quota.daily_cost_left_usd, 1.25);

    const month = await call(client, "get_usage", {
      from: new Date(Date.now() - 40 * 86_400_000).toISOString().slice(0, 10),
    });
    assert.ok(
      (month.structuredContent as UsageReport).by_name.some((r) => r.name === "model-old"),
    );

    const reversed = errorOf(await call(client, "get_usage", { from: today, to: "2020-01-01" }));
    assert.equal(reversed.code, "invalid_range");
    const badDate = await call(client, "get_usage", { from: "2024-13-40" });
    assert.equal(badDate.isError, true);
  });
});

Deno.test("query_table reads only the caller's rows, with filters, order and limit", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-query");
    const other = await createUser(sql, "mcp-query-other");
    const session = crypto.randomUUID();
    await as(
      sql,
      user,
      (tx) =>
        appendMessages(tx, session, [
          message("one"),
          message("two", "assistant"),
          message("three"),
        ]),
    );
    await as(sql, other, (tx) => appendMessages(tx, crypto.randomUUID(), [message("secret")]));

    const client = await connect(user);
    const all = await call(client, "query_table", { table: "chat_history" });
    assert.notEqual(all.isError, true, JSON.stringify(all));
    const rows = (all.structuredContent as { rows: { content: string }[] }).rows;
    assert.deepEqual(rows.map((r) => r.content).sort(), ["one", "three", "two"]);

    const filtered = await call(client, "query_table", {
      table: "chat_history",
      columns: ["seq", "content"],
      filters: { session_id: session, role: "user" },
      order_by: [{ column: "seq", direction: "asc" }],
      limit: 1,
    });
    assert.deepEqual(filtered.structuredContent, {
      table: "chat_history",
      columns: ["seq", "content"],
      rows: [{ seq: 1, content: "one" }],
      count: 1,
    });

    const grants = await call(client, "query_table", {
      table: "permissions",
      columns: ["tool", "approval_mode"],
    });
    assert.deepEqual(
      (grants.structuredContent as { rows: { tool: string }[] }).rows.map((r) => r.tool),
      ["calculator", "get_usage", "query_table", "search_history"],
    );

    const injected = errorOf(
      await call(client, "query_table", {
        table: "chat_history",
        columns: ["content from public.chat_history; --"],
      }),
    );
    assert.equal(injected.code, "unknown_column");
    const badTable = await call(client, "query_table", { table: "auth.users" });
    assert.equal(badTable.isError, true);
    const overLimit = await call(client, "query_table", { table: "chat_history", limit: 101 });
    assert.equal(overLimit.isError, true);
    const badValue = errorOf(
      await call(client, "query_table", { table: "chat_history", filters: { id: "not-a-uuid" } }),
    );
    assert.equal(badValue.code, "invalid_filter_value");
  });
});

Deno.test("a tool the caller may not use is a tool error naming the permission", async () => {
  await withMcp({}, async ({ sql, connect, webhook }) => {
    const user = await createUser(sql, "mcp-denied");
    await grant(sql, user, "query_table", "deny");
    await grant(sql, user, "calculator", "ask");
    const client = await connect(user);

    const noGrant = errorOf(
      await call(client, "execute_workflow", { workflow_id: "report", payload: {} }),
    );
    assert.equal(noGrant.code, "permission_denied");
    assert.match(noGrant.message, /"execute_workflow" permission/);
    assert.equal(webhook.calls.length, 0);

    const denied = errorOf(await call(client, "query_table", { table: "chat_history" }));
    assert.equal(denied.code, "permission_denied");
    assert.match(denied.message, /"query_table" permission, which is set to deny/);

    const asks = errorOf(await call(client, "calculator", { expression: "1+1" }));
    assert.equal(asks.code, "approval_required");
    assert.match(asks.message, /"calculator" permission/);

    const usage = await usageOf(sql, user);
    assert.deepEqual(usage.map((u) => [u.name, u.status]), [
      ["execute_workflow", "denied"],
      ["query_table", "denied"],
      ["calculator", "denied"],
    ]);
  });
});

Deno.test("execute_workflow posts the payload with the auth header and returns the JSON", async () => {
  await withMcp({
    workflow: { authHeader: { name: "X-N8N-Key", value: "s3cret" } },
    webhook: (call) => Response.json({ ran: call.workflowId, got: call.body }),
  }, async ({ sql, connect, webhook }) => {
    const user = await createUser(sql, "mcp-workflow");
    await grant(sql, user, "execute_workflow", "auto", { workflow_ids: ["daily-report"] });
    const client = await connect(user);

    const result = await call(client, "execute_workflow", {
      workflow_id: "daily-report",
      payload: { day: "2026-01-02", items: [1, 2] },
    });
    assert.notEqual(result.isError, true, JSON.stringify(result));
    const output = result.structuredContent as Record<string, unknown>;
    assert.equal(output.workflow_id, "daily-report");
    assert.equal(output.status, 200);
    assert.deepEqual(output.result, {
      ran: "daily-report",
      got: { day: "2026-01-02", items: [1, 2] },
    });
    assert.equal(webhook.calls.length, 1);
    assert.equal(webhook.calls[0].headers.get("X-N8N-Key"), "s3cret");
    assert.equal(webhook.calls[0].headers.get("Content-Type"), "application/json");

    const notAllowed = errorOf(
      await call(client, "execute_workflow", { workflow_id: "wipe-everything", payload: {} }),
    );
    assert.equal(notAllowed.code, "workflow_not_allowed");
    const badId = await call(client, "execute_workflow", { workflow_id: "../admin" });
    assert.equal(badId.isError, true);
    assert.equal(webhook.calls.length, 1);
  });
});

Deno.test("execute_workflow with a grant but no workflow_ids may run nothing", async () => {
  await withMcp({}, async ({ sql, connect, webhook }) => {
    const user = await createUser(sql, "mcp-workflow-none");
    await grant(sql, user, "execute_workflow", "auto");
    const result = errorOf(
      await call(await connect(user), "execute_workflow", { workflow_id: "report" }),
    );
    assert.equal(result.code, "workflow_not_allowed");
    assert.equal(webhook.calls.length, 0);
  });
});

Deno.test("execute_workflow reports progress while the workflow runs", async () => {
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  await withMcp({
    webhook: async () => {
      await released;
      return Response.json({ done: true });
    },
  }, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-progress");
    await grant(sql, user, "execute_workflow", "auto", { workflow_ids: ["slow"] });
    const client = await connect(user);
    const progress: { progress: number; message?: string }[] = [];
    const result = await client.callTool(
      { name: "execute_workflow", arguments: { workflow_id: "slow" } },
      undefined,
      {
        onprogress: (p: { progress: number; message?: string }) => {
          progress.push(p);
          // The workflow answers only once the client has seen progress: no timing guesswork.
          if (progress.length === 3) release();
        },
      },
    ) as CallToolResult;
    assert.notEqual(result.isError, true, JSON.stringify(result));
    assert.deepEqual((result.structuredContent as { result: unknown }).result, { done: true });
    assert.ok(progress.length >= 3);
    for (let i = 1; i < progress.length; i++) {
      assert.ok(progress[i].progress > progress[i - 1].progress, "progress increases");
    }
    assert.match(progress[0].message ?? "", /Waiting for workflow "slow"/);
  });
});

Deno.test("execute_workflow: a timeout, a 500 and a non-JSON answer are tool errors", async () => {
  const aborted: string[] = [];
  await withMcp({
    workflow: { timeoutMs: 300 },
    webhook: (call) => {
      if (call.workflowId === "broken") return new Response("boom", { status: 500 });
      if (call.workflowId === "html") return new Response("<html>hi</html>", { status: 200 });
      return new Promise((resolve) =>
        call.signal.addEventListener("abort", () => {
          aborted.push(call.workflowId);
          resolve(new Response(null, { status: 499 }));
        })
      );
    },
  }, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-workflow-errors");
    await grant(sql, user, "execute_workflow", "auto", {
      workflow_ids: ["hangs", "broken", "html"],
    });
    const client = await connect(user);

    const timeout = errorOf(await call(client, "execute_workflow", { workflow_id: "hangs" }));
    assert.equal(timeout.code, "workflow_timeout");
    assert.match(timeout.message, /300 ms/);
    const broken = errorOf(await call(client, "execute_workflow", { workflow_id: "broken" }));
    assert.equal(broken.code, "workflow_http_error");
    assert.match(broken.message, /HTTP 500: boom/);
    const html = errorOf(await call(client, "execute_workflow", { workflow_id: "html" }));
    assert.equal(html.code, "workflow_invalid_response");

    const usage = await usageOf(sql, user);
    assert.deepEqual(usage.map((u) => u.status), ["error", "error", "error"]);
    // The timed-out request was really abandoned, not left running.
    for (let i = 0; i < 100 && aborted.length === 0; i++) await delay(20);
    assert.deepEqual(aborted, ["hangs"]);
  });
});

Deno.test("cancelling a call aborts the workflow request and records it as cancelled", async () => {
  let webhookAborted!: () => void;
  const webhookSawAbort = new Promise<void>((resolve) => webhookAborted = resolve);
  await withMcp({
    webhook: (call) =>
      new Promise((resolve) =>
        call.signal.addEventListener("abort", () => {
          webhookAborted();
          resolve(new Response(null, { status: 499 }));
        })
      ),
  }, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-cancel");
    await grant(sql, user, "execute_workflow", "auto", { workflow_ids: ["forever"] });
    const client = await connect(user);
    const controller = new AbortController();
    const pending = client.callTool(
      { name: "execute_workflow", arguments: { workflow_id: "forever" } },
      undefined,
      { signal: controller.signal, onprogress: () => controller.abort("changed my mind") },
    );
    await assert.rejects(pending);
    // Resolves only if the handler's signal fired and the tool dropped the webhook request.
    await webhookSawAbort;
    const usage = await waitForUsage(sql, user, 1);
    assert.deepEqual(usage.map((u) => [u.name, u.status]), [["execute_workflow", "cancelled"]]);

    // The client is still usable afterwards.
    const after = await call(client, "calculator", { expression: "2^10" });
    assert.equal((after.structuredContent as { value: string }).value, "1024");
  });
});

Deno.test("every call writes one usage row with its status", async () => {
  await withMcp({}, async ({ sql, connect }) => {
    const user = await createUser(sql, "mcp-usage-rows");
    const client = await connect(user);
    await client.listTools();
    await call(client, "calculator", { expression: "6*7" });
    await call(client, "calculator", { expression: "1/0" });
    await call(client, "calculator", {});
    await call(client, "search_history", { query: "anything" });
    await call(client, "no_such_tool", {});
    const usage = await usageOf(sql, user);
    assert.deepEqual(usage.map((u) => [u.name, u.status]), [
      ["calculator", "ok"],
      ["calculator", "error"],
      ["calculator", "error"],
      ["search_history", "ok"],
    ]);
    assert.ok(usage.every((u) => u.kind === "tool" && u.source === "mcp" && u.latency_ms >= 0));
  });
});

Deno.test("without a valid token: 401 with the resource metadata challenge", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const initialize = JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "raw", version: "1" },
      },
    });
    const headers = {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
    };

    const missing = await fetch(endpoint, { method: "POST", headers, body: initialize });
    assert.equal(missing.status, 401);
    assert.equal(
      missing.headers.get("WWW-Authenticate"),
      `Bearer resource_metadata="${METADATA_URL}"`,
    );
    assert.equal((await missing.json()).error.code, "missing_token");

    const otherKey = await generateSigningKey();
    const user = await createUser(sql, "mcp-401");
    const forged = await issueAccessToken(otherKey, {
      userId: user.id,
      issuer: `${SUPABASE_URL}/auth/v1`,
    });
    const invalid = await fetch(endpoint, {
      method: "POST",
      headers: { ...headers, Authorization: `Bearer ${forged}` },
      body: initialize,
    });
    assert.equal(invalid.status, 401);
    const challenge = invalid.headers.get("WWW-Authenticate") ?? "";
    assert.match(challenge, /^Bearer error="invalid_token"/);
    assert.ok(challenge.includes(`resource_metadata="${METADATA_URL}"`));
    assert.equal((await invalid.json()).error.code, "invalid_token");

    const good = await fetch(endpoint, {
      method: "POST",
      headers: { ...headers, Authorization: `Bearer ${await tokenFor(user)}` },
      body: initialize,
    });
    assert.equal(good.status, 200);
    assert.match(good.headers.get("Content-Type") ?? "", /^text\/event-stream/);
    assert.match(await good.text(), /"serverInfo"/);
  });
});

Deno.test("the protected resource metadata document (RFC 9728)", async () => {
  await withMcp({}, async ({ endpoint }) => {
    const response = await fetch(`${endpoint}/.well-known/oauth-protected-resource`);
    assert.equal(response.status, 200);
    // No AUTH_ISSUER_URL: no authorization server to send a client to, bearer tokens only.
    assert.deepEqual(await response.json(), {
      resource: FUNCTION_URL,
      bearer_methods_supported: ["header"],
      resource_name: "Supabase agent tools (MCP)",
    });
  });
});

Deno.test("GET and DELETE are 405: no stream and no session in stateless mode", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const token = await tokenFor(await createUser(sql, "mcp-405"));
    for (const method of ["GET", "DELETE"]) {
      const response = await fetch(endpoint, {
        method,
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
      });
      assert.equal(response.status, 405, method);
      assert.equal(response.headers.get("Allow"), "POST, OPTIONS");
      assert.equal((await response.json()).error.code, "method_not_allowed");
    }
  });
});

async function waitForUsage(sql: Sql, user: TestUser, count: number): Promise<UsageRow[]> {
  for (let attempt = 0; attempt < 250; attempt++) {
    const rows = await usageOf(sql, user);
    if (rows.length >= count) return rows;
    await delay(20);
  }
  return await usageOf(sql, user);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("a client that drops the response stream cancels its call", async () => {
  let webhookAborted!: () => void;
  const webhookSawAbort = new Promise<void>((resolve) => webhookAborted = resolve);
  await withMcp({
    webhook: (call) =>
      new Promise((resolve) =>
        call.signal.addEventListener("abort", () => {
          webhookAborted();
          resolve(new Response(null, { status: 499 }));
        })
      ),
  }, async ({ sql, endpoint, tokenFor }) => {
    const user = await createUser(sql, "mcp-disconnect");
    await grant(sql, user, "execute_workflow", "auto", { workflow_ids: ["forever"] });
    // A raw HTTP/1.1 client over TCP, so that dropping the stream means exactly this: the
    // socket closes once the first progress event has arrived (an in-process fetch's abort
    // does not always close its connection at once).
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: 7,
      method: "tools/call",
      params: {
        name: "execute_workflow",
        arguments: { workflow_id: "forever" },
        _meta: { progressToken: "p" },
      },
    });
    const connection = await Deno.connect({ hostname: endpoint.hostname, port: +endpoint.port });
    await connection.write(new TextEncoder().encode(
      `POST ${endpoint.pathname} HTTP/1.1\r\nHost: ${endpoint.host}\r\n` +
        `Authorization: Bearer ${await tokenFor(user)}\r\n` +
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n" +
        "MCP-Protocol-Version: 2025-06-18\r\n" +
        `Content-Length: ${new TextEncoder().encode(body).length}\r\n\r\n${body}`,
    ));
    let received = "";
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(4096);
    while (!received.includes("notifications/progress")) {
      const read = await connection.read(buffer);
      if (read === null) throw new Error(`the server closed first: ${received}`);
      received += decoder.decode(buffer.subarray(0, read), { stream: true });
    }
    assert.match(received, /^HTTP\/1\.1 200/);
    connection.close();

    await webhookSawAbort;
    const usage = await waitForUsage(sql, user, 1);
    assert.deepEqual(usage.map((u) => [u.name, u.status]), [["execute_workflow", "cancelled"]]);
  });
});

Deno.test("a call the SDK refuses before any handler still leaves a usage row", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const user = await createUser(sql, "mcp-refused-call");
    const response = await fetch(endpoint, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, text/event-stream",
        "Mcp-Protocol-Version": "2025-06-18",
        Authorization: `Bearer ${await tokenFor(user)}`,
      },
      // `arguments` must be an object: the SDK answers an error without calling the tool.
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 7,
        method: "tools/call",
        params: { name: "calculator", arguments: "1+1" },
      }),
    });
    assert.equal(response.status, 200);
    const answer = await response.text();
    assert.match(answer, /"error":\{"code":-326\d\d/);
    assert.match(answer, /arguments/);
    const usage = await usageOf(sql, user);
    assert.deepEqual(usage.map((u) => [u.name, u.status, u.source]), [
      ["calculator", "error", "mcp"],
    ]);
  });
});

Deno.test("a body that is not JSON or too large is a JSON-RPC error, after sign-in", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const user = await createUser(sql, "mcp-bad-body");
    const headers = {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      Authorization: `Bearer ${await tokenFor(user)}`,
    };
    const notJson = await fetch(endpoint, { method: "POST", headers, body: "{nope" });
    assert.equal(notJson.status, 400);
    assert.equal((await notJson.json()).error.code, -32700);

    const tooLarge = await fetch(endpoint, {
      method: "POST",
      headers,
      body: JSON.stringify({ padding: "x".repeat(4 * 1024 * 1024) }),
    });
    assert.equal(tooLarge.status, 413);
    assert.equal((await tooLarge.json()).error.code, -32000);

    const anonymous = await fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{nope",
    });
    assert.equal(anonymous.status, 401, "no body is read before the caller is known");
  });
});

Deno.test("an empty batch and a batch over the cap are 400 Invalid Request; nothing runs", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const user = await createUser(sql, "mcp-batch");
    const headers = {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      Authorization: `Bearer ${await tokenFor(user)}`,
    };
    const empty = await fetch(endpoint, { method: "POST", headers, body: "[]" });
    assert.equal(empty.status, 400);
    assert.equal((await empty.json()).error.code, -32600);

    const call = (id: number) => ({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name: "calculator", arguments: { expression: "1+1" } },
    });
    const tooMany = await fetch(endpoint, {
      method: "POST",
      headers,
      body: JSON.stringify(Array.from({ length: MCP_MAX_BATCH + 1 }, (_, i) => call(i))),
    });
    assert.equal(tooMany.status, 400);
    const error = (await tooMany.json()).error;
    assert.equal(error.code, -32600);
    assert.match(error.message, new RegExp(`at most ${MCP_MAX_BATCH}`));
    const [{ n }] = await sql`select count(*)::int as n from public.usage_metrics
                              where user_id = ${user.id}`;
    assert.equal(n, 0, "no call of a refused batch ran");
  });
});

Deno.test("tool calls over the caller's request rate are 429 with Retry-After; none of them runs", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const user = await createUser(sql, "mcp-rate");
    await sql`update public.user_limits
              set tool_call_capacity = 3, tool_call_tokens = 3, tool_calls_per_minute = 1,
                  tool_call_updated_at = now()
              where user_id = ${user.id}`;
    const headers = {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      Authorization: `Bearer ${await tokenFor(user)}`,
    };
    const calls = (ids: number[]) =>
      JSON.stringify(ids.map((id) => ({
        jsonrpc: "2.0",
        id,
        method: "tools/call",
        params: { name: "calculator", arguments: { expression: "1+1" } },
      })));
    const admitted = await fetch(endpoint, { method: "POST", headers, body: calls([1, 2, 3]) });
    assert.equal(admitted.status, 200);
    await admitted.text();

    const refused = await fetch(endpoint, { method: "POST", headers, body: calls([4]) });
    assert.equal(refused.status, 429);
    const retryAfter = Number(refused.headers.get("Retry-After"));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    assert.equal((await refused.json()).error.code, "rate_limited");

    const [{ n }] = await sql`select count(*)::int as n from public.usage_metrics
                              where user_id = ${user.id} and source = 'mcp'`;
    assert.equal(n, 3, "only the admitted calls ran");
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${user.id}`;
    assert.equal(Number(limits.day_tokens), 300, "each admitted call cost its tokens");
  });
});

Deno.test("every POST takes one from the caller's MCP request bucket, tool call or not", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const user = await createUser(sql, "mcp-requests");
    await sql`update public.user_limits set request_capacity = 2, requests_per_minute = 1
              where user_id = ${user.id}`;
    const headers = {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      Authorization: `Bearer ${await tokenFor(user)}`,
    };
    const list = (id: number) =>
      fetch(endpoint, {
        method: "POST",
        headers,
        body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/list" }),
      });
    const statuses = [];
    for (let id = 1; id <= 3; id++) {
      const response = await list(id);
      statuses.push(response.status);
      if (id < 3) await response.text();
      else {
        assert.equal((await response.json()).error.code, "rate_limited");
        const retryAfter = Number(response.headers.get("Retry-After"));
        assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
      }
    }
    assert.deepEqual(statuses, [200, 200, 429]);
  });
});

Deno.test("a deleted user's still-valid token is 401 invalid_token", async () => {
  await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
    const user = await createUser(sql, "mcp-deleted");
    const token = await tokenFor(user);
    await sql`delete from auth.users where id = ${user.id}`;
    const response = await fetch(endpoint, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, text/event-stream",
        Authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    assert.equal(response.status, 401);
    assert.equal((await response.json()).error.code, "invalid_token");
  });
});

Deno.test("a tools/call is an execute_tool span in the caller's trace (traceparent), its trace id on its usage row", async () => {
  const collector = startOtlpDouble();
  const previous = tracer();
  const traced = new OtlpTracer({ url: collector.url, headers: {}, serviceName: "mcp" });
  useTracer(traced);
  try {
    await withMcp({}, async ({ sql, endpoint, tokenFor }) => {
      const user = await createUser(sql, "mcp-traced-call");
      const traceId = crypto.randomUUID().replaceAll("-", "");
      const parentSpanId = traceId.slice(0, 16);
      const response = await fetch(endpoint, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json, text/event-stream",
          "Mcp-Protocol-Version": "2025-06-18",
          Authorization: `Bearer ${await tokenFor(user)}`,
          traceparent: `00-${traceId}-${parentSpanId}-01`,
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 8,
          method: "tools/call",
          params: { name: "calculator", arguments: { expression: "6*7" } },
        }),
      });
      assert.equal(response.status, 200);
      await response.text();
      const [row] = await sql`select trace_id from public.usage_metrics
                              where user_id = ${user.id}`;
      assert.equal(row.trace_id, traceId);
      await traced.flush();
      await collector.waitFor((spans) => spans.some((span) => span.traceId === traceId));
      const [span] = collector.spans.filter((s) => s.traceId === traceId);
      assert.deepEqual(
        [span.name, span.parentSpanId, span.service, span.attributes["gen_ai.tool.name"]],
        ["execute_tool calculator", parentSpanId, "mcp", "calculator"],
      );
      assert.equal(span.attributes["agent.tool.status"], "ok");
    });
  } finally {
    useTracer(previous);
    await collector.close();
  }
});
