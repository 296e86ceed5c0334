/**
 * Surviving disconnects: partial output is flushed while streaming, a closed socket does not
 * stop its turn, `resume` on the same or another isolate delivers what was missed and then
 * the live rest, `cancel` stops the upstream request (from any isolate), and a turn whose
 * isolate was killed is marked interrupted with its partial text kept.
 */
import assert from "node:assert/strict";
import type { TurnFrame } from "../_shared/agent_protocol.ts";
import {
  AgentClient,
  eventually,
  startAgentProcess,
  tokensOf,
  withWorld,
} from "../../tests/support/agent_world.ts";

type Start = Extract<TurnFrame, { type: "start" }>;

const SLOW = "[[fixture:slow count=40 delay=25]] take your time";

/** Starts a slow turn and waits until `tokens` of its tokens arrived. */
async function slowTurn(client: AgentClient, tokens = 3): Promise<Start> {
  const id = crypto.randomUUID();
  client.send({ type: "chat", id, content: SLOW });
  const start = await client.take((f) => f.type === "start" && f.user_message_id === id) as Start;
  for (let i = 0; i < tokens; i++) {
    await client.takeType("token", start.turn_id);
  }
  return start;
}

/** Every frame of the turn this client received, taken or not. */
function receivedOf(client: AgentClient, turnId: string): TurnFrame[] {
  return client.frames.filter((f) => (f as TurnFrame).turn_id === turnId) as TurnFrame[];
}

function assertWholeTurn(frames: TurnFrame[]): void {
  assert.deepEqual(
    frames.map((frame) => frame.seq),
    frames.map((_, i) => i + 1),
  );
  assert.equal(frames[0].type, "start");
  assert.equal(frames.at(-1)?.type, "complete");
  assert.equal(
    tokensOf(frames),
    Array.from({ length: 40 }, (_, i) => `word${i} `).join(""),
  );
}

Deno.test("partial output reaches the assistant row while the turn streams", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const client = await connect(await user());
    const start = await slowTurn(client);
    // The answer takes a second to stream; flushes every 50 ms show it growing row by row.
    const partials = new Set<string>();
    const partial = await eventually(async () => {
      const [row] = await sql`select content, status from public.chat_history
                              where client_id = ${start.message_id}`;
      if (row.status === "streaming" && row.content !== "") partials.add(row.content);
      return partials.size >= 3 ? row.content as string : undefined;
    }, "three successive partial answers");
    assert.match(partial, /^word0 /);
    const growing = [...partials];
    growing.slice(1).forEach((text, i) => assert.ok(text.startsWith(growing[i])));
    await client.turnFrames(start.turn_id);
    const [row] = await sql`select content, status from public.chat_history
                            where client_id = ${start.message_id}`;
    assert.equal(row.status, "complete");
    assert.ok(
      row.content.startsWith(partial) && row.content.length > partial.length,
    );
    assert.equal(row.content, tokensOf(receivedOf(client, start.turn_id)));
  });
});

Deno.test("resume on the same isolate: what was missed, then the live rest", async () => {
  await withWorld({}, async ({ connect, user, sql }) => {
    const alice = await user();
    const first = await connect(alice);
    const start = await slowTurn(first, 5);
    const seen = receivedOf(first, start.turn_id);
    first.close();
    await first.closed;

    const second = await connect(alice);
    const lastSeen = seen.at(-1)!.seq;
    second.send({
      type: "resume",
      turn_id: start.turn_id,
      after_seq: lastSeen,
    });
    const rest = await second.turnFrames(start.turn_id);
    assert.equal(rest[0].seq, lastSeen + 1);
    assertWholeTurn([...seen, ...rest]);
    const [turn] = await sql`select state from public.agent_turns where id = ${start.turn_id}`;
    assert.equal(
      turn.state,
      "complete",
      "closing the socket did not cancel the turn",
    );
  });
});

Deno.test("resume on another isolate: stored frames, then polled live ones", async () => {
  await withWorld({}, async ({ connect, user, startInstance }) => {
    const alice = await user();
    const first = await connect(alice);
    const start = await slowTurn(first, 5);
    const seen = receivedOf(first, start.turn_id);
    first.close();

    const otherIsolate = await startInstance();
    const second = await connect(alice, otherIsolate);
    const lastSeen = seen.at(-1)!.seq;
    second.send({
      type: "resume",
      turn_id: start.turn_id,
      after_seq: lastSeen,
    });
    const rest = await second.turnFrames(start.turn_id);
    assertWholeTurn([...seen, ...rest]);

    // Once the turn is over, any isolate replays it from storage, from any seq.
    const third = await connect(alice, otherIsolate);
    third.send({ type: "resume", turn_id: start.turn_id, after_seq: 0 });
    assertWholeTurn(await third.turnFrames(start.turn_id));
    third.send({ type: "resume", turn_id: start.turn_id, after_seq: 10 });
    const tail = await third.turnFrames(start.turn_id);
    assert.equal(tail[0].seq, 11);
  });
});

Deno.test("a turn of another user cannot be resumed or cancelled", async () => {
  await withWorld({}, async ({ connect, user }) => {
    const alice = await connect(await user("alice"));
    const start = await slowTurn(alice);
    const mallory = await connect(await user("mallory"));
    mallory.send({ type: "resume", turn_id: start.turn_id, after_seq: 0 });
    assert.equal((await mallory.takeType("error")).code, "not_found");
    mallory.send({ type: "cancel", turn_id: start.turn_id });
    assert.equal((await mallory.takeType("error")).code, "not_running");
    const frames = await alice.turnFrames(start.turn_id);
    assert.equal(frames.at(-1)?.type, "complete");
  });
});

Deno.test("cancel stops the upstream request and stores the partial answer", async () => {
  await withWorld({}, async ({ sql, connect, user, fixture }) => {
    const alice = await user();
    const client = await connect(alice);
    const start = await slowTurn(client, 3);
    client.send({ type: "cancel", turn_id: start.turn_id });
    await client.turnFrames(start.turn_id);
    const frames = receivedOf(client, start.turn_id);
    const last = frames.at(-1)!;
    assert.ok(
      last.type === "error" && last.code === "cancelled",
      JSON.stringify(last),
    );
    assert.equal(
      await fixture.waitForAbortedRequests(1),
      1,
      "the upstream saw the cancel",
    );

    const [turn] = await sql`select state from public.agent_turns where id = ${start.turn_id}`;
    assert.equal(turn.state, "cancelled");
    const [row] = await sql`select content, status from public.chat_history
                            where client_id = ${start.message_id}`;
    assert.equal(row.status, "stopped", "a stopped answer reads Stopped, not Interrupted");
    assert.equal(row.content, tokensOf(frames));
    assert.ok(row.content.length > 0 && !row.content.includes("word39"));
    const [usage] = await sql`select status from public.usage_metrics
                              where turn_id = ${start.turn_id} and kind = 'llm'`;
    assert.equal(usage.status, "cancelled");
  });
});

Deno.test("cancel through another isolate reaches the one running the turn", async () => {
  await withWorld(
    {},
    async ({ sql, connect, user, fixture, startInstance }) => {
      const alice = await user();
      const owner = await connect(alice);
      const start = await slowTurn(owner, 2);
      const elsewhere = await connect(alice, await startInstance());
      elsewhere.send({ type: "cancel", turn_id: start.turn_id });
      const frames = await owner.turnFrames(start.turn_id);
      const last = frames.at(-1)!;
      assert.ok(
        last.type === "error" && last.code === "cancelled",
        JSON.stringify(last),
      );
      assert.equal(await fixture.waitForAbortedRequests(1), 1);
      const [turn] = await sql`select state from public.agent_turns where id = ${start.turn_id}`;
      assert.equal(turn.state, "cancelled");
    },
  );
});

Deno.test("past its recovery budget, a killed isolate's turn ends interrupted with its partial text", async () => {
  await withWorld(
    {},
    async ({ sql, key, fixture, user, tokenFor, connect, startInstance }) => {
      const alice = await user();
      const worker = await startAgentProcess({ key, fixture }, {
        AGENT_HEARTBEAT_MS: "200",
        AGENT_FLUSH_MS: "50",
        AGENT_LEASE_MS: "600",
        AGENT_LEASE_RENEW_MS: "200",
        AGENT_TEXT_FLUSH_MS: "50",
      });
      let start: Start;
      const doomed = await AgentClient.open(
        `${worker.origin.replace("http", "ws")}/agent`,
        {
          headers: { Authorization: `Bearer ${await tokenFor(alice)}` },
        },
      );
      try {
        await doomed.takeType("ready");
        start = await slowTurn(doomed, 5);
        await eventually(async () => {
          const [row] = await sql`select content from public.chat_history
                                where client_id = ${start.message_id}`;
          return row.content.length > 0 ? true : undefined;
        }, "a flushed partial answer");
        worker.kill("SIGKILL");
        await worker.exited;
      } finally {
        doomed.close();
        await doomed.closed;
        await worker.stop();
      }
      const [before] = await sql`select state from public.agent_turns where id = ${start.turn_id}`;
      assert.equal(before.state, "running", "nobody has looked at it yet");

      // Another isolate notices on the user's next connection, once the lease lapsed; with no
      // recoveries left (the budget is 0 here) it ends the turn instead of adopting it.
      const survivor = await startInstance({ maxRecoveries: 0 });
      const [{ partial }] = await sql`select content as partial from public.chat_history
                                    where client_id = ${start.message_id}`;
      await eventually(async () => {
        const client = await connect(alice, survivor);
        const [turn] = await sql`select state from public.agent_turns where id = ${start.turn_id}`;
        client.close();
        return turn.state === "interrupted" ? true : undefined;
      }, "the turn marked interrupted");
      const [row] = await sql`select content, status from public.chat_history
                            where client_id = ${start.message_id}`;
      assert.deepEqual([row.status, row.content], ["interrupted", partial]);
      assert.match(partial, /^word0 /);

      const client = await connect(alice, survivor);
      client.send({ type: "resume", turn_id: start.turn_id, after_seq: 0 });
      const frames = await client.turnFrames(start.turn_id);
      assert.deepEqual(
        frames.map((frame) => frame.seq),
        frames.map((_, i) => i + 1),
      );
      const last = frames.at(-1)!;
      assert.ok(
        last.type === "error" && last.code === "interrupted",
        JSON.stringify(last),
      );
      assert.equal(last.retryable, true);
      // The row's text is rewritten less often than frames are stored (AGENT_TEXT_FLUSH_MS,
      // doubling), so it may lag behind them, never disagree.
      assert.ok(
        tokensOf(frames).startsWith(partial),
        "the stored text is the start of what the stored frames hold",
      );
    },
  );
});

Deno.test("a follower holding frames a dead isolate never stored gets the takeover that replaced them", async () => {
  await withWorld({}, async ({ sql, key, fixture, user, tokenFor, connect, startInstance }) => {
    const alice = await user();
    const worker = await startAgentProcess({ key, fixture }, {
      AGENT_FLUSH_MS: "50",
      // Long enough that the resume below finds the lease still held.
      AGENT_LEASE_MS: "3000",
      AGENT_LEASE_RENEW_MS: "200",
    });
    let start: Start;
    const doomed = await AgentClient.open(`${worker.origin.replace("http", "ws")}/agent`, {
      headers: { Authorization: `Bearer ${await tokenFor(alice)}` },
    });
    try {
      await doomed.takeType("ready");
      start = await slowTurn(doomed, 5);
      worker.kill("SIGKILL");
      await worker.exited;
    } finally {
      doomed.close();
      await doomed.closed;
      await worker.stop();
    }
    const [{ stored }] = await sql`select max(last_seq) as stored from public.agent_turn_events
                                   where turn_id = ${start.turn_id}`;
    // The client holds three frames past the stored ones (sent, then the isolate died). It
    // follows the turn from another isolate while the dead one's lease still holds; when the
    // lease lapses that isolate takes the turn over (here: ends it, no recoveries left) with
    // frames numbered from the stored ones on, which replace the three.
    const follower = await connect(alice, await startInstance({ maxRecoveries: 0 }));
    follower.send({ type: "resume", turn_id: start.turn_id, after_seq: stored + 3 });
    const restart = await follower.takeType("restart_step", start.turn_id);
    assert.equal(restart.seq, stored + 1);
    const ending = await follower.takeType("error", start.turn_id);
    assert.deepEqual([ending.seq, ending.code], [stored + 2, "interrupted"]);
  });
});

Deno.test("an isolate shutting down leaves its running turns to another, which finishes them", async () => {
  await withWorld({}, async ({ sql, connect, user, startInstance }) => {
    const alice = await user();
    const instance = await startInstance();
    const client = await connect(alice, instance);
    const start = await slowTurn(client, 3);
    await instance.app.close();
    // The close comes after every frame sent before it.
    assert.equal((await client.closed).code, 1001);
    const seen = receivedOf(client, start.turn_id);
    assert.ok(seen.every((frame) => frame.type !== "error"), "nothing ended the turn");
    const [released] = await sql`select state from public.agent_turns where id = ${start.turn_id}`;
    assert.equal(released.state, "running");

    // The lease was given up: the next isolate adopts the turn at once and finishes it.
    const next = await connect(alice, await startInstance());
    next.send({ type: "resume", turn_id: start.turn_id, after_seq: seen.at(-1)!.seq });
    const rest = await next.turnFrames(start.turn_id);
    const restart = rest.find((frame) => frame.type === "restart_step");
    assert.ok(restart?.type === "restart_step", "told to drop the step's partial text");
    assert.equal(restart.keep_chars, 0);
    const after = rest.slice(rest.indexOf(restart));
    assert.deepEqual(after.map((frame) => frame.seq), after.map((_, i) => restart.seq + i));
    assert.equal(rest.at(-1)?.type, "complete");
    assert.equal(tokensOf(after), Array.from({ length: 40 }, (_, i) => `word${i} `).join(""));
    const [row] = await sql`select content, status from public.chat_history
                            where client_id = ${start.message_id}`;
    assert.deepEqual([row.status, row.content], ["complete", tokensOf(after)]);
  });
});
