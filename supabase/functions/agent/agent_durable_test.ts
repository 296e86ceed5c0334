/**
 * Durable turns: a turn outlives the worker running it (killed without `beforeunload`: another
 * worker adopts it from its last checkpoint), and a turn waiting for an approval is parked in
 * Postgres, answered from any connection on any worker, or denied when its wait expires.
 * The workers that die are real processes (the function as the local runtime runs it).
 */
import assert from "node:assert/strict";
import { abortableSleep } from "../_shared/abortable_sleep.ts";
import type { TurnFrame } from "../_shared/agent_protocol.ts";
import type { FunctionWorker } from "../../../scripts/standin/function_workers.ts";
import { startWebhookDouble, type WebhookCall } from "../../../scripts/standin/webhook_double.ts";
import { createToolRegistry } from "../_shared/tools/registry.ts";
import type { TestUser } from "../../tests/support/database.ts";
import {
  AgentClient,
  eventually,
  grant,
  startAgentProcess,
  withWorld,
  type World,
} from "../../tests/support/agent_world.ts";

const base64url = (text: string) =>
  btoa(text).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");

/** A worker process of the agent function, its lease short, so its death is noticed soon. */
function agentWorker(
  world: World,
  env: Record<string, string> = {},
): Promise<FunctionWorker> {
  return startAgentProcess(world, {
    AGENT_FLUSH_MS: "50",
    AGENT_HEARTBEAT_MS: "200",
    AGENT_POLL_MS: "50",
    AGENT_LEASE_MS: "1500",
    AGENT_LEASE_RENEW_MS: "300",
    ...env,
  });
}

async function connectTo(world: World, worker: FunctionWorker, user: TestUser) {
  const client = await AgentClient.open(
    `${worker.origin.replace("http", "ws")}/agent`,
    {
      headers: { Authorization: `Bearer ${await world.tokenFor(user)}` },
    },
  );
  await client.take((frame) => frame.type === "ready");
  return client;
}

async function kill(
  worker: FunctionWorker,
  client: AgentClient,
): Promise<void> {
  worker.kill("SIGKILL");
  await worker.exited;
  await client.closed;
}

function turnFramesOf(client: AgentClient, turnId: string): TurnFrame[] {
  return client.frames.filter((f) => (f as TurnFrame).turn_id === turnId) as TurnFrame[];
}

/**
 * What a client makes of the frames it received, in order, following the protocol: a
 * `restart_step` replaces every frame from its seq on and cuts the text to `keep_chars`; a
 * frame it already holds (resent on resume) is skipped. Fails on any gap in seq.
 */
function assemble(
  received: readonly TurnFrame[],
): { frames: TurnFrame[]; text: string } {
  let kept: TurnFrame[] = [];
  for (const frame of received) {
    const last = kept.at(-1)?.seq ?? 0;
    if (frame.type === "restart_step") {
      assert.ok(
        frame.seq <= last + 1,
        `restart_step ${frame.seq} after ${last}: a gap`,
      );
      kept = kept.filter((k) => k.seq < frame.seq);
      kept.push(frame);
      continue;
    }
    if (frame.seq <= last) continue;
    assert.equal(
      frame.seq,
      last + 1,
      `frame ${frame.type} ${frame.seq} after ${last}: a gap`,
    );
    kept.push(frame);
  }
  let text = "";
  for (const frame of kept) {
    if (frame.type === "token") text += frame.delta;
    if (frame.type === "restart_step") text = text.slice(0, frame.keep_chars);
  }
  return { frames: kept, text };
}

Deno.test("a four-step tool turn survives SIGKILL at step 2 and mid-token of step 3", async () => {
  // The second workflow call hangs: its worker is killed while it runs.
  const secondCallArrived = Promise.withResolvers<void>();
  const webhook = startWebhookDouble(async (call: WebhookCall) => {
    if (webhook.calls.length === 2) {
      secondCallArrived.resolve();
      await abortableSleep(10_000, call.signal).catch(() => {});
    }
    return Response.json({ ok: true, n: webhook.calls.length });
  });
  const workers: FunctionWorker[] = [];
  try {
    const tools = createToolRegistry({ workflow: { baseUrl: webhook.url } });
    await withWorld({ tools }, async (world) => {
      const { sql } = world;
      const alice = await world.user("alice");
      await grant(sql, alice, "execute_workflow", "auto", {
        workflow_ids: ["count"],
      });
      const env = { N8N_BASE_URL: webhook.url };
      const args = base64url(
        JSON.stringify({ workflow_id: "count", payload: {} }),
      );
      const content = `[[fixture:multi_step steps=4 tool=execute_workflow args=${args} ` +
        "delay=60 words=5 final=20]] go";

      // Worker A: steps 1 and 2; killed while the step-2 workflow call runs.
      const a = await agentWorker(world, env);
      workers.push(a);
      const first = await connectTo(world, a, alice);
      const chatId = crypto.randomUUID();
      first.send({
        type: "chat",
        id: chatId,
        content,
        tools: ["execute_workflow"],
      });
      const start = await first.take((f) => f.type === "start") as Extract<
        TurnFrame,
        { type: "start" }
      >;
      const turnId = start.turn_id;
      await secondCallArrived.promise;
      await kill(a, first);

      // Worker B adopts it (call 2's outcome is unknown: not run again), streams step 3 and
      // is killed mid-token.
      const b = await agentWorker(world, env);
      workers.push(b);
      const second = await connectTo(world, b, alice);
      const seenByFirst = turnFramesOf(first, turnId);
      second.send({
        type: "resume",
        turn_id: turnId,
        after_seq: seenByFirst.at(-1)!.seq,
      });
      await second.take((f) => f.type === "token" && f.delta === "s3w2 ");
      await kill(b, second);

      // Worker C (any isolate) adopts it again and finishes it.
      const c = await world.startInstance({
        leaseMs: 1_500,
        leaseRenewMs: 300,
      });
      const third = await world.connect(alice, c);
      const seenBySecond = turnFramesOf(second, turnId);
      const epoch = Math.max(
        0,
        ...seenBySecond.map((f) => f.type === "restart_step" ? f.epoch : 0),
      );
      third.send({
        type: "resume",
        turn_id: turnId,
        after_seq: seenBySecond.at(-1)!.seq,
        epoch,
      });
      await third.turnFrames(turnId);

      const received = [
        ...seenByFirst,
        ...seenBySecond,
        ...turnFramesOf(third, turnId),
      ];
      const { frames, text } = assemble(received);
      const last = frames.at(-1)!;
      assert.equal(last.type, "complete", JSON.stringify(last));
      assert.equal(frames.filter((f) => f.type === "restart_step").length, 2);
      const response = frames.find((f) => f.type === "response");
      assert.ok(response?.type === "response");
      assert.equal(response.content, text);
      assert.match(
        text,
        /^s1w0 .*s2w4 .*s3w0 s3w1 s3w2 s3w3 s3w4 final0 .*final19 $/,
      );
      assert.equal(
        text.match(/s3w0/g)?.length,
        1,
        "the restarted step's partial text is gone",
      );

      // Each workflow call ran once: call 2 was running when A died, and it is not idempotent.
      assert.equal(webhook.calls.length, 3);
      const answers = await sql`select content, status, tool_calls from public.chat_history
                                where session_id = ${start.session_id} and role = 'assistant'`;
      assert.equal(answers.length, 1, "one stored answer");
      assert.equal(answers[0].status, "complete");
      assert.equal(answers[0].content, text);
      const calls = answers[0].tool_calls as {
        outcome?: string;
        is_error?: boolean;
      }[];
      assert.deepEqual(calls.map((call) => call.outcome ?? "known"), [
        "known",
        "unknown",
        "known",
      ]);

      // The reservation was carried over and settled once: what the day counts is what the
      // turn's LLM calls used, plus the three metered tool calls.
      const [turn] = await sql`select state, reserved_tokens, epoch from public.agent_turns
                               where id = ${turnId}`;
      assert.deepEqual([turn.state, turn.reserved_tokens, turn.epoch], [
        "complete",
        0,
        2,
      ]);
      const [{ used }] = await sql`
        select coalesce(sum(prompt_tokens + completion_tokens), 0)::integer as used
        from public.usage_metrics where turn_id = ${turnId} and kind = 'llm'`;
      const [limits] = await sql`select day_tokens, tool_call_token_cost from public.user_limits
                                 where user_id = ${alice.id}`;
      assert.equal(
        Number(limits.day_tokens),
        used + 3 * limits.tool_call_token_cost,
      );
    });
  } finally {
    for (const worker of workers) await worker.stop();
    await webhook.close();
  }
});

Deno.test("a model that continues partial answers goes on from the stored text after SIGKILL", async () => {
  const workers: FunctionWorker[] = [];
  try {
    await withWorld({}, async (world) => {
      const { sql } = world;
      await sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token,
                  continues_partial_answers)
                values ('prefill-model', 0, 0, true) on conflict (id) do nothing`;
      const alice = await world.user("alice");
      const env = { LLM_MODEL: "prefill-model" };
      const words = Array.from({ length: 40 }, (_, i) => `final${i} `);

      const a = await agentWorker(world, env);
      workers.push(a);
      const first = await connectTo(world, a, alice);
      first.send({
        type: "chat",
        id: crypto.randomUUID(),
        content: "[[fixture:multi_step steps=1 final=40 delay=40]] go",
      });
      const start = await first.take((f) => f.type === "start") as Extract<
        TurnFrame,
        { type: "start" }
      >;
      const turnId = start.turn_id;
      await first.take((f) => f.type === "token" && f.delta === "final12 ");
      await kill(a, first);

      const b = await agentWorker(world, env);
      workers.push(b);
      const second = await connectTo(world, b, alice);
      const seenByFirst = turnFramesOf(first, turnId);
      second.send({ type: "resume", turn_id: turnId, after_seq: seenByFirst.at(-1)!.seq });
      await second.turnFrames(turnId);

      const { frames, text } = assemble([...seenByFirst, ...turnFramesOf(second, turnId)]);
      assert.equal(frames.at(-1)?.type, "complete", JSON.stringify(frames.at(-1)));
      assert.equal(text, words.join(""), "every word once, in order");
      const restarts = frames.filter((f) => f.type === "restart_step");
      assert.equal(restarts.length, 1);
      const kept = restarts[0].type === "restart_step" ? restarts[0].keep_chars : 0;
      assert.ok(kept > 0, "the stored partial text is kept");

      // The model was asked to go on from exactly that text.
      const asked = world.fixture.requests.at(-1)?.body as {
        messages: { role: string; content: string }[];
      };
      assert.deepEqual(asked.messages.at(-1), {
        role: "assistant",
        content: text.slice(0, kept),
      });
      const [answer] = await sql`select content, status from public.chat_history
                                 where id = (select assistant_message_id from public.agent_turns
                                             where id = ${turnId})`;
      assert.deepEqual([answer.content, answer.status], [text, "complete"]);
      const [turn] = await sql`select state, recoveries, epoch from public.agent_turns
                               where id = ${turnId}`;
      assert.deepEqual(
        [turn.state, turn.recoveries, turn.epoch],
        ["complete", 0, 1],
        "the continued text was progress: the recovery count starts over",
      );
    });
  } finally {
    for (const worker of workers) await worker.stop();
  }
});

Deno.test("a turn whose worker died before storing a frame starts again with start for a retried chat", async () => {
  const workers: FunctionWorker[] = [];
  try {
    await withWorld({}, async (world) => {
      const alice = await world.user("alice");
      // Nothing is stored before the kill: the first flush comes half a second after the
      // turn's start (the longest interval allowed), no heartbeat before that.
      const a = await agentWorker(world, { AGENT_FLUSH_MS: "500", AGENT_HEARTBEAT_MS: "5000" });
      workers.push(a);
      const first = await connectTo(world, a, alice);
      const chat = {
        type: "chat",
        id: crypto.randomUUID(),
        content: "[[fixture:multi_step steps=1 final=10 delay=20]] go",
      };
      first.send(chat);
      const start = await first.take((f) => f.type === "start") as Extract<
        TurnFrame,
        { type: "start" }
      >;
      await kill(a, first);

      // The client never learnt whether its chat was taken: it sends it again, elsewhere.
      const second = await world.connect(alice, await world.startInstance({ leaseMs: 1_500 }));
      second.send(chat);
      const frames = await second.turnFrames(start.turn_id);
      assert.deepEqual(frames.slice(0, 2).map((f) => [f.type, f.seq]), [
        ["start", 1],
        ["restart_step", 2],
      ]);
      const again = frames[0] as typeof start;
      assert.deepEqual(
        [again.session_id, again.message_id, again.user_message_id],
        [start.session_id, start.message_id, start.user_message_id],
      );
      assert.equal(frames.at(-1)?.type, "complete");
    });
  } finally {
    for (const worker of workers) await worker.stop();
  }
});

Deno.test("a parked approval survives every worker and is approved, edited, on a fresh one", async () => {
  const workers: FunctionWorker[] = [];
  try {
    await withWorld({}, async (world) => {
      const { sql, fixture } = world;
      const alice = await world.user("alice");
      await grant(sql, alice, "calculator", "ask");
      const a = await agentWorker(world);
      workers.push(a);
      const first = await connectTo(world, a, alice);
      const args = base64url('{"expression":"2+2"}');
      first.send({
        type: "chat",
        id: crypto.randomUUID(),
        content: `[[fixture:tool_call tool=calculator args=${args}]] add`,
      });
      const asked = await first.takeType("approval_required");
      assert.equal(
        asked.timeout_ms,
        24 * 3600 * 1000,
        "the default wait is a day",
      );
      const parked = await eventually(async () => {
        const [row] = await sql`select state, reserved_tokens from public.agent_turns
                                where id = ${asked.turn_id}`;
        return row.state === "parked" ? row : undefined;
      }, "the turn parked");
      assert.equal(
        parked.reserved_tokens,
        0,
        "a parked turn holds no reservation",
      );
      await kill(a, first);

      const b = await agentWorker(world);
      workers.push(b);
      const second = await connectTo(world, b, alice);
      second.send({
        type: "approve",
        call_id: asked.call_id,
        decision: "allow",
        args: { expression: 42 },
      });
      const refused = await second.takeType("error");
      assert.equal(refused.code, "bad_request", "edited arguments are checked");
      second.send({
        type: "approve",
        call_id: asked.call_id,
        decision: "allow",
        args: { expression: "3*3" },
      });
      second.send({
        type: "resume",
        turn_id: asked.turn_id,
        after_seq: asked.seq,
      });
      const rest = await second.turnFrames(asked.turn_id);
      const result = rest.find((f) => f.type === "tool_result");
      assert.ok(result?.type === "tool_result");
      assert.equal(
        (result.result as { value: string }).value,
        "9",
        "ran with the edit",
      );
      assert.equal(rest.at(-1)?.type, "complete");
      assert.equal(rest[0].seq, asked.seq + 1);

      const [answer] = await sql`select h.tool_calls from public.chat_history h
                                 join public.agent_turns t on t.assistant_message_id = h.id
                                 where t.id = ${asked.turn_id}`;
      const [call] = answer.tool_calls as {
        arguments: string;
        edited_arguments: string;
      }[];
      assert.deepEqual(
        [JSON.parse(call.arguments), JSON.parse(call.edited_arguments)],
        [{ expression: "2+2" }, { expression: "3*3" }],
        "the edit is stored beside the original",
      );
      const toolMessages = fixture.requests.flatMap((r) =>
        ((r.body as { messages?: { role: string; content: string }[] })
          ?.messages ?? [])
          .filter((m) => m.role === "tool")
      );
      assert.ok(toolMessages.some((m) => m.content.includes('"9"')));
    });
  } finally {
    for (const worker of workers) await worker.stop();
  }
});

Deno.test("an approval wait that expires denies the call, and the model is told", async () => {
  await withWorld({}, async ({ sql, connect, user, fixture }) => {
    const alice = await user("alice");
    await grant(sql, alice, "calculator", "ask", {
      approval_timeout_ms: 2_000,
    });
    const client = await connect(alice);
    const frames = await client.chat("[[fixture:tool_call]] add");
    const asked = frames.find((f) => f.type === "approval_required");
    assert.ok(asked?.type === "approval_required");
    assert.equal(asked.timeout_ms, 2_000, "the grant's own wait");
    const result = frames.find((f) => f.type === "tool_result");
    assert.ok(result?.type === "tool_result" && result.is_error);
    assert.equal((result.result as { code: string }).code, "approval_timeout");
    assert.equal(frames.at(-1)?.type, "complete");
    const last = fixture.requests.at(-1)!.body as {
      messages: { role: string; content: string }[];
    };
    assert.match(last.messages.at(-1)!.content, /approval_timeout/);
  });
});

Deno.test("the sweep finishes a turn whose worker died while nobody is connected", async () => {
  const secret = crypto.randomUUID();
  const workers: FunctionWorker[] = [];
  try {
    await withWorld({ sweepSecret: secret }, async (world) => {
      const { sql, agent } = world;
      const alice = await world.user("alice");
      const a = await agentWorker(world);
      workers.push(a);
      const client = await connectTo(world, a, alice);
      client.send({
        type: "chat",
        id: crypto.randomUUID(),
        content: "[[fixture:slow count=30 delay=25]] go",
      });
      const start = await client.takeType("start");
      // A chat queued behind it: its start is the ending isolate's job, here the sweeper's.
      const queuedId = crypto.randomUUID();
      client.send({
        type: "chat",
        id: queuedId,
        session_id: start.session_id,
        policy: "enqueue",
        content: "[[fixture:text]] next",
      });
      const queued = await client.take((f) => f.type === "queued" && f.ref === queuedId);
      await client.takeType("token", start.turn_id);
      await kill(a, client);

      const sweep = (token: string) =>
        fetch(`${agent.httpUrl}/sweep`, {
          method: "POST",
          headers: { Authorization: `Bearer ${token}` },
        });
      const refused = await sweep("not-the-secret");
      assert.equal(refused.status, 401);
      await refused.body?.cancel();
      await eventually(async () => {
        const response = await sweep(secret);
        const { adopted } = await response.json();
        return adopted > 0 ? true : undefined;
      }, "the sweep adopting the orphaned turn");
      const [row] = await eventually(async () => {
        const rows = await sql`select h.status::text, h.content from public.chat_history h
                               join public.agent_turns t on t.assistant_message_id = h.id
                               where t.id = ${start.turn_id}`;
        return rows[0].status === "complete" ? rows : undefined;
      }, "the turn finished by the sweeping isolate");
      assert.equal(
        row.content,
        Array.from({ length: 30 }, (_, i) => `word${i} `).join(""),
      );
      assert.ok(queued.type === "queued");
      await eventually(async () => {
        const rows = await sql`select h.status::text from public.chat_history h
                               join public.agent_turns t on t.assistant_message_id = h.id
                               where t.id = ${queued.turn_id}`;
        return rows[0]?.status === "complete" ? true : undefined;
      }, "the queued chat answered after the adopted turn ended");
    });
  } finally {
    for (const worker of workers) await worker.stop();
  }
});
