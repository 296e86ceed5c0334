/**
 * The database goes away under traffic and comes back: Postgres is SIGKILLed, as a crash or
 * the OOM killer would end it, and started again on the same data directory and port, five
 * times in a row. Each time, work is caught in flight, held inside the database by locks the
 * test takes just before the kill: an MCP tools/call and an agent socket's set-up inside their
 * transactions, and an agent turn starting. The Realtime stand-in's visibility session, reserved
 * before the kill, is used again after it.
 *
 * The stack must stay up (the Auth, REST and Realtime stand-ins run in this process; no
 * function worker may crash and be replaced) and every client must recover without a restart:
 * the channel joined at the start hears the change feed go and come back and gets the next row,
 * a new channel joins and gets it too, the agent socket opened at the start runs a new turn with
 * a tool, MCP answers tools/call, Auth signs in and REST reads. What was in flight ends with an
 * error carrying its stable code, not a hang.
 *
 * And the outage is said plainly (docs/operations.md): while Postgres is down, `/health` answers
 * 503 naming `db`, an HTTP call 503 `db_unavailable` with `Retry-After`, a new agent socket
 * an `error` db_unavailable and the close code 4004, and a turn that streamed through the crash
 * a `notice` that its ending waits for the database; its `response` and `complete` follow once
 * Postgres is back. At the end the stack's output is scanned: every function log line is JSON,
 * one turn's lines share its request id, and no token, key or message content is in any line.
 */
import assert from "node:assert/strict";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import postgres from "postgres";
import { type RunningStack, startStack } from "../../scripts/standin/stack.ts";
import { CLOSE_CODES } from "../functions/_shared/agent_protocol.ts";
import { AgentClient, eventually } from "./support/agent_world.ts";
import { assertNothingSecretIn, secretsOf } from "./support/log_scan.ts";

const CYCLES = 5;
/** How long a client may take to come back; a bound on waiting, never a measured result. */
const RECOVERY_MS = 30_000;

Deno.test(`Postgres killed and restarted ${CYCLES} times under Realtime, agent and MCP traffic: the stack stays up, every client recovers`, async () => {
  const logs: string[] = [];
  const stack = await startStack({ ephemeral: true, log: (line) => logs.push(line) });
  const supabase = createClient(stack.apiUrl, stack.publishableKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  const clients: { close(): unknown }[] = [];
  let locks: Locks | undefined;
  try {
    const { data, error } = await supabase.auth.signInWithPassword({
      email: "alice@example.com",
      password: "password123",
    });
    assert.equal(error, null);
    const token = data.session!.access_token;
    await supabase.realtime.setAuth(token);

    const standing = watchInserts(supabase, "outage-standing");
    clients.push(standing);
    await standing.until(() => standing.subscribed >= 1, "the first join");
    const agent = await openAgent(stack, token);
    clients.push(agent);
    // Another socket, for a turn that streams through each crash.
    const streamer = await openAgent(stack, token);
    clients.push(streamer);
    await streamer.takeType("ready");
    await expectHealth(stack, "agent", 200);
    // MCP as another user: a turn held inside agent_start_chat (agent_start_turn) keeps its user's limits row
    // locked, which would hold up that user's tool calls before they reach their tool.
    const mcp = await openMcp(stack, await signIn(stack, "bob@example.com"));
    clients.push(mcp);

    // The first row makes the Realtime stand-in open its visibility session.
    await postMessage(supabase, "before any crash");
    await standing.until(() => standing.contents.includes("before any crash"), "the first row");

    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      const context = `cycle ${cycle}`;
      const failure = (what: string) => `${context}: ${what}\n${logs.slice(-60).join("\n")}`;

      // --- Work in flight when Postgres dies.
      const streaming = settle(
        streamer.chat(`[[fixture:slow count=40 delay=100]] streaming through crash ${cycle}`),
      );
      await within(streamer.takeType("token"), "the streaming turn's first token");
      locks = await holdLocks(stack.dbUrl);
      const inFlight = {
        mcp: settle(searchHistory(mcp)),
        turn: settle(agent.chat(`in flight at crash ${cycle}`)),
        greeting: openAgent(stack, token).then(async (client) => {
          clients.push(client);
          const first = await settle(client.take(() => true));
          return { first, close: await within(client.closed, "the greeting's socket to close") };
        }),
      };
      // Each of them waits inside the database, so the kill lands in the middle of it.
      const caught = [
        /agent_start_chat/,
        /agent_register_connection/,
        /join public\.chat_sessions/,
      ];
      let waiting: string[] = [];
      await eventually(
        async () => {
          waiting = await locks!.waiting();
          return caught.every((query) => waiting.some((text) => query.test(text))) || undefined;
        },
        `${context}: the turn's start, the greeting and search_history waiting on the test's locks`,
        RECOVERY_MS,
      ).catch((error) => {
        throw new Error(`${error.message}; waiting: ${JSON.stringify(waiting)}`);
      });
      const downBefore = standing.system.filter((s) => s.status === "error").length;
      const upBefore = standing.system.filter((s) => s.status === "ok").length;

      await stack.crashDatabase();
      await locks.forget();
      locks = undefined;

      await standing.until(
        () => standing.system.filter((s) => s.status === "error").length > downBefore,
        failure("Realtime telling the channel its feed is down"),
      );
      // What was in flight ends, with an error, while the database is still down. MCP: the
      // function's error envelope (HTTP 503, as the SDK reports it) or a tool error result,
      // either way with the code db_unavailable.
      const mcpOutcome = await inFlight.mcp;
      const mcpError = mcpOutcome.ok ? JSON.stringify(mcpOutcome.value) : `${mcpOutcome.error}`;
      assert.ok(
        mcpOutcome.ok
          ? mcpOutcome.value.isError
          : (mcpOutcome.error as { code?: number }).code === 503,
        failure(`the MCP call in flight: ${mcpError}`),
      );
      assert.match(mcpError, /db_unavailable/, failure(mcpError));
      const turnOutcome = await inFlight.turn;
      assert.ok(
        turnOutcome.ok,
        failure(`the turn in flight: ${!turnOutcome.ok && turnOutcome.error}`),
      );
      assert.deepEqual(
        turnOutcome.value.map((frame) => [frame.type, "code" in frame && frame.code]),
        [["error", "db_unavailable"]],
        failure(JSON.stringify(turnOutcome.value)),
      );
      // A socket whose set-up could not finish hears why and is closed with 4004.
      const greeting = await inFlight.greeting;
      assert.ok(greeting.first.ok, failure(`the greeting in flight: ${JSON.stringify(greeting)}`));
      assert.deepEqual(
        [greeting.first.value.type, "code" in greeting.first.value && greeting.first.value.code],
        ["error", "db_unavailable"],
      );
      assert.deepEqual(
        greeting.close,
        {
          code: CLOSE_CODES.databaseUnavailable,
          reason: "the database is unavailable; reconnect shortly",
        },
        failure(JSON.stringify(greeting.close)),
      );

      // --- While it is down, every surface says so.
      await expectHealth(stack, "agent", 503);
      if (cycle === 1) {
        await expectHealth(stack, "history", 503);
        await expectHealth(stack, "mcp", 503);
      }
      const refused = await within(
        fetch(`${stack.apiUrl}/functions/v1/history/sessions`, {
          headers: { Authorization: `Bearer ${token}`, "x-request-id": `outage-${cycle}` },
        }),
        "history during the outage",
      );
      assert.equal(refused.status, 503, failure("history during the outage"));
      assert.equal(refused.headers.get("retry-after"), "5");
      assert.deepEqual((await refused.json()).error.code, "db_unavailable");
      const late = await openAgent(stack, token);
      clients.push(late);
      const lateFirst = await within(late.take(() => true), "a new socket's first frame")
        .catch((error) => error);
      assert.equal(
        (lateFirst as { code?: string }).code,
        "db_unavailable",
        failure(JSON.stringify(lateFirst)),
      );
      assert.equal((await within(late.closed, "the new socket's close")).code, 4004);
      // The turn that streamed through the crash has ended; its client hears that the ending
      // waits for the database.
      await within(
        streamer.take((frame) => frame.type === "notice" && frame.code === "ending_delayed"),
        failure("the streaming turn's notice"),
      );

      await stack.restartDatabase();

      // --- Every client recovers.
      await standing.until(
        () => standing.system.filter((s) => s.status === "ok").length > upBefore,
        failure("Realtime telling the channel its feed is back"),
      );
      const joined = watchInserts(supabase, `outage-${cycle}`);
      await joined.until(() => joined.subscribed >= 1, failure("a new channel joining"));
      const content = `after crash ${cycle}`;
      await postMessage(supabase, content);
      await standing.until(() => standing.contents.includes(content), failure("standing row"));
      await joined.until(() => joined.contents.includes(content), failure("new channel row"));
      await supabase.removeChannel(joined.channel);

      // The streamed turn's ending is stored now, and its client gets it (after the notice).
      const streamed = await streaming;
      assert.ok(streamed.ok, failure(`the streaming turn: ${!streamed.ok && streamed.error}`));
      const types = streamed.value.map((frame) => frame.type);
      assert.deepEqual(types.slice(-2), ["response", "complete"], failure(`${types}`));
      const turnId = streamed.value[0].turn_id;
      const at = (type: string) =>
        streamer.frames.findIndex((frame) =>
          frame.type === type && (frame as { turn_id?: string }).turn_id === turnId
        );
      assert.ok(at("notice") >= 0 && at("notice") < at("complete"), failure("notice first"));
      await expectHealth(stack, "agent", 200);

      assert.ok(!agent.isClosed, failure("the agent socket opened at the start closed"));
      const turn = await agent.chat("What is (2+3)*4?");
      assert.equal(turn.at(-1)?.type, "complete", failure(JSON.stringify(turn.at(-1))));
      assert.ok(turn.some((frame) => frame.type === "tool_result"), failure("no tool result"));

      const found = await searchHistory(mcp);
      assert.ok(!found.isError, failure(JSON.stringify(found)));
      assert.equal(found.structuredContent?.query, "crash");

      await signIn(stack, "bob@example.com");
      const rows = await within(supabase.from("chat_sessions").select("id"), "REST reading");
      assert.equal(rows.error, null, failure("REST select"));
      assert.ok(rows.data!.length > 0);
    }

    // No function's worker crashed (and was replaced by a fresh one); the agent socket opened
    // at the start is still served by the worker that took it.
    for (const pool of stack.functions.values()) {
      const ended = pool.events.filter((e) => e.kind === "exited" || e.kind === "killed");
      assert.deepEqual(
        ended,
        [],
        `${pool.name}: ${JSON.stringify(pool.events)}\n${logs.join("\n")}`,
      );
    }
    assert.ok(!agent.isClosed);
    scanLogs(logs, {
      secrets: [token, ...secretsOf(stack)],
      contents: ["What is (2+3)*4?", "before any crash", "after crash", "in flight at crash"],
    });
  } finally {
    // Ends the test's lock-holding transaction first, or the stack's pools would wait on it.
    await locks?.forget();
    for (const client of clients) await client.close();
    await supabase.removeAllChannels();
    await stack.stop();
  }
});

interface ToolResult {
  isError?: boolean;
  content: unknown;
  structuredContent?: Record<string, unknown>;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** `promise`, or a rejection naming `what` once RECOVERY_MS have passed: a hang is a failure. */
function within<T>(promise: PromiseLike<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting for ${what}`)), RECOVERY_MS);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

function settle<T>(promise: Promise<T>): Promise<Outcome<T>> {
  return promise.then((value) => ({ ok: true, value }), (error) => ({ ok: false, error }));
}

/** Signs in with Auth (a sign-in reads and writes `auth`) and gives the access token. */
async function signIn(stack: RunningStack, email: string): Promise<string> {
  const client = createClient(stack.apiUrl, stack.publishableKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  const { data, error } = await within(
    client.auth.signInWithPassword({ email, password: "password123" }),
    `Auth signing ${email} in`,
  );
  assert.equal(error, null, `signing in ${email}: ${error}`);
  return data.session!.access_token;
}

async function openAgent(stack: RunningStack, token: string): Promise<AgentClient> {
  const url = `${stack.apiUrl.replace(/^http/, "ws")}/functions/v1/agent`;
  return await AgentClient.open(url, { protocols: [`jwt-${token}`] });
}

/** MCP's search_history: a tool that reads the database as its caller, in a transaction. */
function searchHistory(mcp: Client): Promise<ToolResult> {
  return mcp.callTool(
    { name: "search_history", arguments: { query: "crash" } },
    undefined,
    { timeout: RECOVERY_MS },
  ) as Promise<ToolResult>;
}

async function openMcp(stack: RunningStack, token: string): Promise<Client> {
  const client = new Client({ name: "outage-test", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${stack.apiUrl}/functions/v1/mcp`), {
      requestInit: { headers: { Authorization: `Bearer ${token}` } },
    }),
  );
  return client;
}

async function postMessage(supabase: SupabaseClient, content: string): Promise<void> {
  const { error } = await within(
    supabase.functions.invoke("history/messages", {
      body: { messages: [{ id: crypto.randomUUID(), role: "user", content }] },
    }),
    `the history function storing "${content}"`,
  );
  assert.equal(error, null, `posting "${content}": ${error}`);
}

interface Locks {
  /** The statements of the functions that wait for a lock. */
  waiting(): Promise<string[]>;
  /** Drops the client (and with it the locks) without waiting for anything. */
  forget(): Promise<void>;
}

/**
 * Locks that make the functions' next statements on these tables wait, inside their
 * transactions: MCP's search_history reads chat_sessions, a turn's start writes it, an agent
 * socket's greeting and the heartbeat write agent_connections. Taken on a client of the
 * test's own, which dies with the database.
 */
async function holdLocks(dbUrl: string): Promise<Locks> {
  const sql = postgres(dbUrl, { max: 2, onnotice: () => {} });
  const holder = await sql.reserve();
  await holder`begin`;
  await holder`lock table public.chat_sessions in access exclusive mode`;
  await holder`lock table public.agent_connections in share mode`;
  return {
    async waiting(): Promise<string[]> {
      const rows = await sql<{ query: string }[]>`
        select query from pg_stat_activity
        where wait_event_type = 'Lock' and application_name = 'supabase-agent'`;
      return rows.map((row) => row.query);
    },
    forget: () => sql.end({ timeout: 0 }),
  };
}

interface Watched {
  channel: ReturnType<SupabaseClient["channel"]>;
  contents: string[];
  statuses: string[];
  system: { status: string; message: string }[];
  readonly subscribed: number;
  until(done: () => boolean, what: string): Promise<void>;
  close(): Promise<unknown>;
}

/** A channel on chat_history INSERTs that keeps what it hears, with a way to wait for it. */
function watchInserts(supabase: SupabaseClient, topic: string): Watched {
  const waiters: (() => void)[] = [];
  const changed = () => waiters.splice(0).forEach((wake) => wake());
  const contents: string[] = [];
  const statuses: string[] = [];
  const system: { status: string; message: string }[] = [];
  const channel = supabase.channel(topic)
    .on(
      "postgres_changes",
      { event: "INSERT", schema: "public", table: "chat_history" },
      (payload) => {
        contents.push(String(payload.new.content));
        changed();
      },
    )
    .on("system", {}, (payload: { status: string; message: string }) => {
      system.push(payload);
      changed();
    })
    .subscribe((status) => {
      statuses.push(status);
      changed();
    });
  return {
    channel,
    contents,
    statuses,
    system,
    get subscribed() {
      return statuses.filter((status) => status === "SUBSCRIBED").length;
    },
    async until(done, what) {
      const deadline = Date.now() + RECOVERY_MS;
      while (!done()) {
        if (Date.now() > deadline) {
          throw new Error(
            `timed out waiting for ${what} on ${topic}: statuses ${statuses}, ` +
              `system ${JSON.stringify(system)}, rows ${JSON.stringify(contents)}`,
          );
        }
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
    },
    close: () => supabase.removeChannel(channel),
  };
}

/** `/health` of a function, without a token, answers `status` (eventually, once back). */
async function expectHealth(stack: RunningStack, name: string, status: 200 | 503) {
  let last: unknown;
  await eventually(
    async () => {
      const response = await fetch(`${stack.apiUrl}/functions/v1/${name}/health`);
      const body = await response.json();
      last = body;
      if (response.status !== status) return undefined;
      assert.equal(body.status, status === 200 ? "ok" : "failing");
      if (status === 503) assert.ok(body.failed.includes("db"), JSON.stringify(body));
      return true;
    },
    `${name}/health answering ${status}`,
    RECOVERY_MS,
  ).catch((error) => {
    throw new Error(`${error.message}: ${JSON.stringify(last)}`);
  });
}

/**
 * The stack's output, as an operator's log drain would get it: every line a function wrote
 * through the logger is JSON; a turn's lines share its request id; and nothing secret or
 * private is anywhere (tokens, keys, what users wrote).
 */
function scanLogs(logs: string[], forbidden: { secrets: string[]; contents: string[] }) {
  assertNothingSecretIn(logs, forbidden);
  const structured = logs
    .map((line) => line.match(/^\[(agent|mcp|history)\] (\{.*)$/)?.[2])
    .filter((json): json is string => json !== undefined)
    .map((json) => JSON.parse(json) as Record<string, unknown>);
  const events = new Set(structured.map((line) => line.event));
  for (const event of ["request", "socket_open", "socket_close", "turn_end", "tool_call"]) {
    assert.ok(events.has(event), `no ${event} line among ${[...events]}`);
  }
  // A turn that ran a tool: its end and its tool call carry the same request and turn ids,
  // those of the socket that started it.
  const ended = structured.filter((line) => line.event === "turn_end" && line.state === "complete");
  const withTool = ended.find((end) =>
    structured.some((line) => line.event === "tool_call" && line.turn_id === end.turn_id)
  );
  assert.ok(withTool, "a completed turn with a tool call");
  const call = structured.find((line) =>
    line.event === "tool_call" && line.turn_id === withTool.turn_id
  )!;
  assert.equal(call.request_id, withTool.request_id);
  assert.ok(
    structured.some((line) =>
      line.event === "socket_open" && line.request_id === withTool.request_id
    ),
  );
  assert.equal(call.user, withTool.user, "the same hashed user");
  assert.match(String(call.user), /^[0-9a-f]{16}$/);
}
