/**
 * A connected MCP server's tools through the agent, against the MCP server double over real
 * HTTP: offered to the model as `<slug>__<name>` with the server's own schema, asking first
 * (`<slug>__*` is `ask`), approved, run with progress forwarded, failing with the server's
 * message, cancelled, metered and recorded — one usage row per call, exactly like a built-in
 * tool.
 */
import assert from "node:assert/strict";
import { fixtureArg } from "../../../scripts/standin/llm_fixture.ts";
import { DOUBLE_TOOLS, startMcpServerDouble } from "../../../scripts/standin/mcp_server_double.ts";
import type { TurnFrame } from "../_shared/agent_protocol.ts";
import { createConnectedToolsLoader } from "../_shared/mcp_servers/server_tools.ts";
import { storeServer } from "../_shared/mcp_servers/store.ts";
import type { Sql } from "../_shared/db/client.ts";
import type { TestUser } from "../../tests/support/database.ts";
import { eventually, withWorld } from "../../tests/support/agent_world.ts";
import { connectFunctionDatabase } from "../../tests/support/database.ts";
import { createTokenVerifier } from "../_shared/auth.ts";
import { createMcpApp } from "../_shared/mcp/app.ts";
import { createToolRegistry } from "../_shared/tools/registry.ts";
import { jwksOf } from "../../../scripts/standin/signing_keys.ts";
import { loadGrants, resolvePermission } from "../_shared/permissions.ts";

type Frame<T extends TurnFrame["type"]> = Extract<TurnFrame, { type: T }>;

const LOCAL = {
  allowLoopback: true,
  resolveDns: (h: string, t: "A" | "AAAA") => Deno.resolveDns(h, t),
};
const connectedTools = (sql: Sql) =>
  createConnectedToolsLoader({
    sql,
    remote: { policy: LOCAL, requestTimeoutMs: 5_000 },
  });

function toolCall(tool: string, args: unknown): string {
  return `[[fixture:tool_call tool=${tool} args=${fixtureArg(JSON.stringify(args))}]]`;
}

function ofType<T extends TurnFrame["type"]>(
  frames: TurnFrame[],
  type: T,
): Frame<T>[] {
  return frames.filter((frame): frame is Frame<T> => frame.type === type);
}

interface ServerToolSpec {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
  annotations?: Record<string, unknown>;
}

/** Connects a server for `user` (the double as `dbl` by default), as POST /connections would. */
async function connectDouble(
  sql: Sql,
  user: TestUser,
  url: string,
  slug = "dbl",
  tools: ServerToolSpec[] = DOUBLE_TOOLS.filter((t) => t.name !== "bad_schema"),
): Promise<void> {
  const stored = await storeServer(sql, {
    id: crypto.randomUUID(),
    userId: user.id,
    slug,
    displayName: "Double",
    url,
    authMode: "none",
    secret: null,
    tools: tools.map((t) => ({
      name: `${slug}__${t.name}`,
      original_name: t.name,
      title: null,
      description: t.description,
      input_schema: t.inputSchema,
      output_schema: null,
      annotations: t.annotations ?? {},
    })),
    warnings: [],
  });
  assert.deepEqual(stored, { ok: true });
}

Deno.test("a connected server's tool: offered with its schema, asks, runs with progress, one usage row, metered", async () => {
  const double = startMcpServerDouble();
  try {
    await withWorld(
      { connectedTools },
      async ({ sql, connect, user, fixture }) => {
        const alice = await user("hub");
        await connectDouble(sql, alice, double.url);
        const client = await connect(alice);
        const [before] = await sql`select tool_call_tokens from public.user_limits
                                 where user_id = ${alice.id}`;

        const id = crypto.randomUUID();
        client.send({
          type: "chat",
          id,
          content: `${toolCall("dbl__slow", { steps: 2, delay_ms: 5 })} go`,
        });
        const start = await client.take((f) => f.type === "start" && f.user_message_id === id);
        const ask = await client.takeType(
          "approval_required",
          (start as Frame<"start">).turn_id,
        );
        assert.equal(ask.tool, "dbl__slow");
        client.send({
          type: "approve",
          call_id: ask.call_id,
          decision: "allow",
        });
        const frames = await client.turnFrames(
          (start as Frame<"start">).turn_id,
        );

        assert.deepEqual(
          ofType(frames, "progress").map((
            p,
          ) => [p.progress, p.total, p.message]),
          [[1, 2, "step 1"], [2, 2, "step 2"]],
        );
        const [result] = ofType(frames, "tool_result");
        assert.equal(result.is_error, false);
        assert.deepEqual(result.result, {
          content: [{ type: "text", text: "done after 2 steps" }],
        });
        assert.equal(frames.at(-1)?.type, "complete");
        assert.deepEqual(double.calls.map((c) => [c.name, c.args]), [
          ["slow", { steps: 2, delay_ms: 5 }],
        ]);

        // The model saw the server's tools under their offered names, with the server's schema.
        const offered = (fixture.requests[0].body as {
          tools: { function: { name: string; parameters: unknown } }[];
        }).tools;
        const echo = offered.find((t) => t.function.name === "dbl__echo");
        assert.deepEqual(
          echo?.function.parameters,
          DOUBLE_TOOLS[0].inputSchema,
        );
        assert.ok(offered.some((t) => t.function.name === "calculator"));

        const usage = await sql`select name, status, source from public.usage_metrics
                              where user_id = ${alice.id} and kind = 'tool'`;
        assert.deepEqual(usage.map((u) => [u.name, u.status, u.source]), [
          ["dbl__slow", "ok", "agent"],
        ]);
        const [after] = await sql`select tool_call_tokens from public.user_limits
                                where user_id = ${alice.id}`;
        assert.ok(
          after.tool_call_tokens < before.tool_call_tokens,
          "the call took from the bucket",
        );
      },
    );
  } finally {
    await double.close();
  }
});

Deno.test("a server's tools/list_changed during a chat's call: its tools are refreshed after the call, which waits for nothing; a burst is one refresh and one more", async () => {
  const double = startMcpServerDouble();
  const refreshes: Promise<unknown>[] = [];
  const refreshingTools = (sql: Sql) =>
    createConnectedToolsLoader({
      sql,
      remote: { policy: LOCAL, requestTimeoutMs: 5_000 },
      toolRefreshIntervalMs: 20,
      waitUntil: (promise) => refreshes.push(promise),
    });
  try {
    await withWorld({ connectedTools: refreshingTools }, async ({ sql, connect, user }) => {
      const alice = await user("hub");
      await connectDouble(sql, alice, double.url);
      const client = await connect(alice);
      const [connected] = await sql`select updated_at from public.mcp_servers
                                    where user_id = ${alice.id}`;
      // The refresh's tools/list is held: the call's answer cannot wait for it.
      const releaseLists = double.holdToolsList();
      double.changeToolsOnNextCall({
        name: "Added Tool",
        description: "Listed once the server changed.",
        inputSchema: { type: "object", properties: { n: { type: "integer" } } },
      }, 20);

      const id = crypto.randomUUID();
      client.send({
        type: "chat",
        id,
        content: `${toolCall("dbl__echo", { text: "same as ever" })} go`,
      });
      const start = await client.take((f) => f.type === "start" && f.user_message_id === id);
      const turnId = (start as Frame<"start">).turn_id;
      const ask = await client.takeType("approval_required", turnId);
      client.send({ type: "approve", call_id: ask.call_id, decision: "allow" });
      const frames = await client.turnFrames(turnId);
      const [result] = ofType(frames, "tool_result");
      assert.deepEqual([result.is_error, result.result], [false, { text: "same as ever" }]);
      assert.equal(frames.at(-1)?.type, "complete");
      const toolsNow = async () =>
        (await sql`select name from public.mcp_tools where user_id = ${alice.id} order by name`)
          .map((t) => t.name as string);
      assert.ok(
        !(await toolsNow()).includes("dbl__added_tool"),
        "not stored before the call ended",
      );

      releaseLists();
      // One refresh for the first notification, one more for the 19 that came meanwhile.
      for (let settled = 0; settled < refreshes.length;) {
        await Promise.all(refreshes.slice(settled));
        settled = refreshes.length;
      }
      assert.equal(refreshes.length, 1);
      assert.equal(double.listRequests, 2);
      assert.deepEqual(
        await toolsNow(),
        [
          "dbl__added_tool",
          ...DOUBLE_TOOLS.filter((t) => t.name !== "bad_schema")
            .map((t) => `dbl__${t.name}`).sort(),
        ].sort(),
      );
      const [added] = await sql`select original_name from public.mcp_tools
                                where user_id = ${alice.id} and name = 'dbl__added_tool'`;
      assert.equal(added.original_name, "Added Tool");
      // The server's invalid tool is skipped again, with its warning; the new tool asks first.
      const [server] = await sql`select warnings, updated_at from public.mcp_servers
                                 where user_id = ${alice.id}`;
      assert.match(JSON.stringify(server.warnings), /bad_schema skipped/);
      // The server's row moved: the web app, watching mcp_servers over Realtime, reloads it.
      assert.ok(server.updated_at > connected.updated_at);
      const grant = resolvePermission(await loadGrants(sql, alice.claims), "dbl__added_tool");
      assert.equal(grant?.mode, "ask");
    });
  } finally {
    await double.close();
  }
});

Deno.test("a connected server's tool error, and a cancelled call that hangs, each end the call cleanly", async () => {
  const double = startMcpServerDouble();
  try {
    await withWorld({ connectedTools }, async ({ sql, connect, user }) => {
      const alice = await user("hub");
      await connectDouble(sql, alice, double.url);
      await sql`insert into public.permissions (user_id, tool, approval_mode)
                values (${alice.id}, 'dbl__fail', 'auto'), (${alice.id}, 'dbl__hang', 'auto')`;
      const client = await connect(alice);

      const failed = await client.chat(
        `${toolCall("dbl__fail", { message: "out of paper" })} go`,
      );
      const [error] = ofType(failed, "tool_result");
      assert.equal(error.is_error, true);
      assert.deepEqual(error.result, {
        code: "mcp_tool_error",
        message: "out of paper",
      });

      const id = crypto.randomUUID();
      client.send({
        type: "chat",
        id,
        content: `${toolCall("dbl__hang", {})} go`,
      });
      const start = await client.take((f) => f.type === "start" && f.user_message_id === id);
      const turnId = (start as Frame<"start">).turn_id;
      await client.takeType("tool_call", turnId);
      while (!double.calls.some((c) => c.name === "hang")) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      client.send({ type: "cancel", turn_id: turnId });
      const frames = await client.turnFrames(turnId);
      const last = frames.at(-1) as Frame<"error">;
      assert.equal(
        `${last.type}:${last.code}`,
        "error:cancelled",
        JSON.stringify(last),
      );

      const usage = await sql`select name, status from public.usage_metrics
                              where user_id = ${alice.id} and kind = 'tool' order by id`;
      assert.deepEqual(usage.map((u) => [u.name, u.status]), [
        ["dbl__fail", "error"],
        ["dbl__hang", "cancelled"],
      ]);
    });
  } finally {
    await double.close();
  }
});

Deno.test("edited arguments of a connected server's tool are checked against its schema at approve time", async () => {
  const double = startMcpServerDouble();
  try {
    await withWorld({ connectedTools }, async ({ sql, connect, user }) => {
      const alice = await user("hub");
      await connectDouble(sql, alice, double.url);
      const client = await connect(alice);
      const id = crypto.randomUUID();
      client.send({
        type: "chat",
        id,
        content: `${toolCall("dbl__echo", { text: "as asked" })} go`,
      });
      const start = await client.take((f) => f.type === "start" && f.user_message_id === id);
      const turnId = (start as Frame<"start">).turn_id;
      const ask = await client.takeType("approval_required", turnId);
      const refusals = [];
      for (const args of [{ text: 42 }, { other: "x" }]) {
        client.send({ type: "approve", call_id: ask.call_id, decision: "allow", args });
        refusals.push(await client.take((f) => f.type === "error" && f.ref === ask.call_id));
      }
      assert.deepEqual(
        refusals.map((f) => f.type === "error" && [f.code, f.path]),
        [["bad_request", "args.text"], ["bad_request", "args.text"]],
      );
      assert.match((refusals[0] as { message: string }).message, /^args\.text: .*string/);
      // Still waiting: an edit that fits runs.
      client.send({
        type: "approve",
        call_id: ask.call_id,
        decision: "allow",
        args: { text: "edited" },
      });
      const frames = await client.turnFrames(turnId);
      assert.equal(frames.at(-1)?.type, "complete");
      assert.deepEqual(double.calls.map((c) => [c.name, c.args]), [["echo", { text: "edited" }]]);
    });
  } finally {
    await double.close();
  }
});

Deno.test("the project's own mcp function as a server: called with the caller's token; only mcp's usage row", async () => {
  // The mcp function checks tokens with the world's key, known only inside it: served here
  // first, its app plugged in below.
  let mcpFetch: (request: Request) => Response | Promise<Response> = () =>
    new Response(null, { status: 503 });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) => mcpFetch(request),
  );
  const ownMcpUrl = `http://127.0.0.1:${server.addr.port}/mcp`;
  const mcpSql = connectFunctionDatabase(2);
  try {
    await withWorld({
      connectedTools: (sql) =>
        createConnectedToolsLoader({
          sql,
          remote: { policy: LOCAL, requestTimeoutMs: 5_000 },
          ownMcpUrl,
        }),
    }, async ({ sql, connect, user, key, startInstance }) => {
      mcpFetch = createMcpApp({
        sql: mcpSql,
        verifier: createTokenVerifier({ jwks: jwksOf(key) }),
        tools: createToolRegistry({ workflow: {} }),
      }).fetch;
      const alice = await user("self");
      await connectDouble(sql, alice, ownMcpUrl, "self", [{
        name: "calculator",
        description: "Exact arithmetic.",
        inputSchema: {
          type: "object",
          properties: { expression: { type: "string" } },
        },
        annotations: { readOnlyHint: true },
      }]);
      await sql`insert into public.permissions (user_id, tool, approval_mode)
                values (${alice.id}, 'self__calculator', 'auto')`;
      const client = await connect(alice);
      const frames = await client.chat(
        `${toolCall("self__calculator", { expression: "6*7" })} go`,
      );
      const [result] = ofType(frames, "tool_result");
      assert.equal(result.is_error, false, JSON.stringify(result));
      assert.deepEqual(result.result, {
        value: "42",
        fraction: "42",
        exact: true,
      });

      const usage = await sql`select name, status, source from public.usage_metrics
                              where user_id = ${alice.id} and kind = 'tool'`;
      assert.deepEqual(usage.map((u) => [u.name, u.status, u.source]), [
        ["calculator", "ok", "mcp"],
      ]);

      // Parked on an approval, its socket gone, answered through another isolate: the turn
      // goes on there with the answering socket's token (it holds none of its own).
      await sql`update public.permissions set approval_mode = 'ask'
                where user_id = ${alice.id} and tool = 'self__calculator'`;
      const id = crypto.randomUUID();
      client.send({
        type: "chat",
        id,
        content: `${toolCall("self__calculator", { expression: "6*8" })} go`,
      });
      const start = await client.take((f) => f.type === "start" && f.user_message_id === id);
      const turnId = (start as Frame<"start">).turn_id;
      const ask = await client.takeType("approval_required", turnId);
      await eventually(async () => {
        const [row] = await sql`select state from public.agent_turns where id = ${turnId}`;
        return row.state === "parked" ? true : undefined;
      }, "the turn parked");
      client.close();
      await client.closed;
      const elsewhere = await connect(alice, await startInstance());
      elsewhere.send({ type: "approve", call_id: ask.call_id, decision: "allow" });
      elsewhere.send({ type: "resume", turn_id: turnId, after_seq: ask.seq });
      const rest = await elsewhere.turnFrames(turnId);
      const [answered] = ofType(rest, "tool_result");
      assert.equal(answered.is_error, false, JSON.stringify(answered));
      assert.equal((answered.result as { value: string }).value, "48");
    });
  } finally {
    await server.shutdown();
    await mcpSql.end();
  }
});
