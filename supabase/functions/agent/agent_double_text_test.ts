/**
 * Double-texting: a chat to a session whose turn still runs is refused (`reject`, the
 * default) or queued (`enqueue`) and started in order when the session is free — by the
 * isolate that ends the running turn, whichever isolate the chat was sent to.
 */
import assert from "node:assert/strict";
import type { ServerFrame, TurnFrame } from "../_shared/agent_protocol.ts";
import { startTurn } from "../_shared/agent/turn_store.ts";
import { eventually, withWorld } from "../../tests/support/agent_world.ts";

const SLOW = "[[fixture:slow count=30 delay=40]]";

Deno.test("a chat to a busy session is refused with session_busy naming the running turn", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await user("alice");
    const client = await connect(alice);
    client.send({
      type: "chat",
      id: crypto.randomUUID(),
      content: `${SLOW} first`,
    });
    const start = await client.takeType("start");
    const second = crypto.randomUUID();
    client.send({
      type: "chat",
      id: second,
      session_id: start.session_id,
      content: "[[fixture:text]] second",
    });
    const refusal = await client.take((f) => f.type === "error" && f.ref === second);
    assert.equal(refusal.type, "error");
    assert.equal(refusal.code, "session_busy");
    assert.equal(refusal.running_turn_id, start.turn_id);
    assert.equal(refusal.turn_id, undefined, "the refusal ends no turn");
    const end = await client.take((f) =>
      (f.type === "complete" || f.type === "error") &&
      f.turn_id === start.turn_id
    );
    assert.equal(end.type, "complete", "the running turn goes on");
    const stored = await sql`select count(*)::int as n from public.chat_history
                             where session_id = ${start.session_id}`;
    assert.equal(stored[0].n, 2, "the refused chat stored nothing");
  });
});

Deno.test("enqueued chats start in order after the running turn, whichever isolate stored them", async () => {
  await withWorld({}, async ({ sql, connect, user, startInstance }) => {
    const alice = await user("alice");
    const owner = await connect(alice);
    owner.send({
      type: "chat",
      id: crypto.randomUUID(),
      content: `${SLOW} first`,
    });
    const start = await owner.takeType("start");
    // The next chats go to another isolate, which only stores them.
    const other = await connect(alice, await startInstance());
    const ids = [crypto.randomUUID(), crypto.randomUUID()];
    for (const [i, id] of ids.entries()) {
      other.send({
        type: "chat",
        id,
        session_id: start.session_id,
        policy: "enqueue",
        content: `[[fixture:slow count=5 delay=20]] queued ${i}`,
      });
    }
    const queued = [];
    for (const id of ids) {
      const frame = await other.take((f) => f.type === "queued" && f.ref === id);
      assert.ok(frame.type === "queued");
      queued.push(frame);
    }
    assert.deepEqual(queued.map((f) => f.ahead), [0, 1]);
    assert.equal(queued[0].running_turn_id, start.turn_id);
    // A retried enqueue is stored once.
    other.send({
      type: "chat",
      id: ids[0],
      session_id: start.session_id,
      policy: "enqueue",
      content: "[[fixture:slow count=5 delay=20]] queued 0",
    });
    const again = await other.take((f) => f.type === "queued" && f.ref === ids[0]);
    assert.ok(again.type === "queued");
    assert.equal(again.turn_id, queued[0].turn_id);

    // The enqueuing connection follows each queued turn from its start to its end.
    const turns: TurnFrame[][] = [];
    for (const frame of queued) {
      turns.push(await other.turnFrames(frame.turn_id));
    }
    for (const [i, frames] of turns.entries()) {
      assert.equal(frames[0].type, "start");
      assert.equal(
        frames.at(-1)?.type,
        "complete",
        JSON.stringify(frames.at(-1)),
      );
      assert.deepEqual(frames.map((f) => f.seq), frames.map((_, n) => n + 1));
      assert.equal(
        (frames[0] as Extract<ServerFrame, { type: "start" }>).user_message_id,
        ids[i],
      );
    }
    const order = await sql`
      select h.role, h.client_id, t.id as turn_id, t.created_at, t.finished_at, t.owner
      from public.chat_history h left join public.agent_turns t on t.id = h.turn_id
      where h.session_id = ${start.session_id} order by h.seq`;
    assert.deepEqual(
      order.filter((r) => r.role === "user").slice(1).map((r) => r.client_id),
      ids,
      "stored in the order they were queued",
    );
    const byTurn = [start.turn_id, ...queued.map((f) => f.turn_id)].map((id) =>
      order.find((r) => r.turn_id === id)
    );
    for (let i = 1; i < byTurn.length; i++) {
      assert.ok(
        byTurn[i]!.created_at >= byTurn[i - 1]!.finished_at,
        "each queued turn started after the one before it ended",
      );
    }
    const [{ left }] = await sql`select count(*)::int as left from public.agent_chat_queue
                                 where user_id = ${alice.id}`;
    assert.equal(left, 0, "the queue is empty");
  });
});

Deno.test("no two turns of one session run at once, even written past the functions", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const client = await connect(await user());
    client.send({
      type: "chat",
      id: crypto.randomUUID(),
      content: `${SLOW} first`,
    });
    const start = await client.takeType("start");
    await assert.rejects(
      sql`insert into public.agent_turns (user_id, session_id, owner)
          select user_id, session_id, 'elsewhere' from public.agent_turns
          where id = ${start.turn_id}`,
      /agent_turns_one_running_per_session/,
    );
    await client.turnFrames(start.turn_id);
  });
});

Deno.test("the sweep starts a queue whose running turn ended on an isolate that died before starting it, once", async () => {
  const secret = crypto.randomUUID();
  await withWorld({ sweepSecret: secret }, async ({ sql, user, agent, startInstance }) => {
    const alice = await user("alice");
    const sessionId = crypto.randomUUID();
    const pair = (turnId: string, content: string) => {
      const id = crypto.randomUUID();
      return {
        turnId,
        sessionId,
        messages: [
          { id, role: "user", content, turn_id: turnId },
          { id: crypto.randomUUID(), role: "assistant", content: "", status: "streaming" },
        ] as const,
        owner: "isolate-that-died",
        model: "fixture-model",
        promptTokens: 0,
        completionTokens: 10,
        staleAfterMs: 10_000,
        frame: { type: "chat" as const, id, content, session_id: sessionId },
      };
    };
    const first = await startTurn(sql, alice.claims, {
      ...pair(crypto.randomUUID(), "first"),
      title: "t",
    });
    assert.equal(first.kind, "started");
    const queued = pair(crypto.randomUUID(), "[[fixture:text]] queued");
    const outcome = await startTurn(sql, alice.claims, {
      ...queued,
      title: null,
      policy: "enqueue",
    });
    assert.equal(outcome.kind, "queued");
    // Its isolate stored the turn's ending, then died before starting the queue; nobody is
    // connected to start it either.
    await sql`update public.agent_turns set state = 'complete', finished_at = now()
              where session_id = ${sessionId}`;

    // Two isolates sweep at once: the chat starts once.
    const other = await startInstance();
    const sweep = (instance: typeof agent) =>
      fetch(`${instance.httpUrl}/sweep`, {
        method: "POST",
        headers: { Authorization: `Bearer ${secret}` },
      }).then((response) => response.json());
    await Promise.all([sweep(agent), sweep(other)]);
    const [answer] = await eventually(async () => {
      const rows = await sql`select h.status::text, h.content from public.chat_history h
                             join public.agent_turns t on t.assistant_message_id = h.id
                             where t.id = ${queued.turnId}`;
      return rows[0]?.status === "complete" ? rows : undefined;
    }, "the queued chat answered");
    assert.ok(answer.content.length > 0);
    const [{ turns, users, waiting }] = await sql`select
        (select count(*)::int from public.agent_turns where session_id = ${sessionId}) as turns,
        (select count(*)::int from public.chat_history
         where session_id = ${sessionId} and role = 'user') as users,
        (select count(*)::int from public.agent_chat_queue where session_id = ${sessionId})
          as waiting`;
    assert.deepEqual({ turns, users, waiting }, { turns: 2, users: 2, waiting: 0 });
  });
});
