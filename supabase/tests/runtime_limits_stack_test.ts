/**
 * The real functions under the Edge Runtime's wall clock, through the stand-in (Free plan, the
 * wall clock shortened to 8 s so a test can outlive a worker): the agent's worker is retired at
 * half, a socket opened later lands on a fresh worker, and at the wall clock the old one hears
 * `beforeunload` — the agent stores what its running turn has, gives up its lease and closes
 * its socket; the fresh worker adopts the turn and streams it on — while a history write
 * acknowledged before the retirement stays stored. Time only drives the limit here.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import postgres from "postgres";
import type { TurnFrame } from "../functions/_shared/agent_protocol.ts";
import { startStack } from "../../scripts/standin/stack.ts";
import type { FunctionPool, WorkerEvent } from "../../scripts/standin/worker_pool.ts";
import { AgentClient, eventually } from "./support/agent_world.ts";
import { assertNothingSecretIn, secretsOf } from "./support/log_scan.ts";

const WALL_CLOCK_MS = 8_000;

function eventOf(pool: FunctionPool, pid: number, kind: WorkerEvent["kind"]) {
  return eventually(
    () => Promise.resolve(pool.events.find((e) => e.pid === pid && e.kind === kind)),
    `worker ${pid} ${kind}`,
    WALL_CLOCK_MS * 2,
  );
}

Deno.test("at its wall clock the agent's worker hears beforeunload and leaves its turn to a fresh worker; nothing acknowledged is lost", async () => {
  const logs: string[] = [];
  const stack = await startStack({
    ephemeral: true,
    limits: { plan: "free", wallClockMs: WALL_CLOCK_MS },
    log: (line) => logs.push(line),
  });
  const secrets = secretsOf(stack);
  const supabase = createClient(stack.apiUrl, stack.publishableKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  const sql = postgres(stack.dbUrl, { max: 1, onnotice: () => {} });
  const clients: AgentClient[] = [];
  try {
    const { data, error } = await supabase.auth.signInWithPassword({
      email: "alice@example.com",
      password: "password123",
    });
    assert.equal(error, null);
    const token = data.session!.access_token;
    secrets.push(token);
    const agent = stack.functions.get("agent")!;
    const history = stack.functions.get("history")!;
    const firstAgent = agent.current!.pid;
    const firstHistory = history.current!.pid;

    // Acknowledged by the first history worker, before it is retired.
    const sessionId = crypto.randomUUID();
    const posted = await supabase.functions.invoke("history/messages", {
      body: {
        session_id: sessionId,
        title: "Before the wall clock",
        messages: [{ id: crypto.randomUUID(), role: "user", content: "keep me" }],
      },
    });
    assert.equal(posted.error, null);
    assert.ok(!history.events.some((e) => e.pid === firstHistory && e.kind === "retired"));

    const agentUrl = `${stack.apiUrl.replace(/^http/, "ws")}/functions/v1/agent`;
    const open = async () => {
      const client = await AgentClient.open(agentUrl, { protocols: [`jwt-${token}`] });
      clients.push(client);
      await client.takeType("ready");
      return client;
    };
    const early = await open();
    const id = crypto.randomUUID();
    // Long enough to be running when the worker's wall clock comes.
    early.send({ type: "chat", id, content: "[[fixture:slow count=2000 delay=20]] go on" });
    const start = await early.take((f) => f.type === "start" && f.user_message_id === id);
    const turnId = (start as Extract<TurnFrame, { type: "start" }>).turn_id;
    await early.takeType("token", turnId);

    assert.match((await eventOf(agent, firstAgent, "retired")).reason, /^wall clock half/);
    const late = await open();
    const secondAgent = agent.current?.pid;
    assert.ok(secondAgent !== undefined && secondAgent !== firstAgent, "a fresh worker");

    // The old worker's socket outlives the retirement, until the wall clock: then the agent's
    // `beforeunload` handler stores the turn's output, gives up its lease and closes the
    // socket with its shutdown reason. The turn is not ended.
    const closed = await early.closed;
    assert.ok((await eventOf(agent, firstAgent, "unloading")).ageMs >= WALL_CLOCK_MS);
    assert.equal(closed.reason, "[1001] the server is shutting down; reconnect and resume");
    const seen = early.frames.filter((f) => (f as TurnFrame).turn_id === turnId) as TurnFrame[];
    assert.ok(seen.every((f) => f.type !== "error"), "nothing ended the turn");

    // The socket on the fresh worker is still served; the turn goes on there.
    assert.equal(late.isClosed, false);
    late.send({ type: "resume", turn_id: turnId, after_seq: seen.at(-1)!.seq });
    const restart = await late.takeType("restart_step", turnId);
    await late.takeType("token", turnId);
    const [turn] = await sql`select state, epoch, owner from public.agent_turns
                             where id = ${turnId}`;
    assert.deepEqual([turn.state, turn.epoch], ["running", restart.epoch]);
    late.send({ type: "cancel", turn_id: turnId });
    const resumed = await late.turnFrames(turnId);
    const last = resumed.at(-1);
    assert.equal(last?.type === "error" ? last.code : last?.type, "cancelled");

    // The history row acknowledged by the first worker is there, read by another one.
    await eventOf(history, firstHistory, "exited");
    const listed = await fetch(`${stack.apiUrl}/functions/v1/history/sessions`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(listed.status, 200);
    const { sessions } = await listed.json();
    assert.ok(sessions.some((s: { id: string }) => s.id === sessionId));
    assert.notEqual(history.current?.pid, firstHistory);
  } finally {
    for (const client of clients) client.close();
    await sql.end();
    await stack.stop();
  }
  // After the stop: the retired workers' last lines are in.
  assertNothingSecretIn(logs, { secrets, contents: ["keep me", "Before the wall clock"] });
});
