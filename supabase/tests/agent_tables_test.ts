/**
 * The agent's tables and SQL functions (migration 20261122000700_agent.sql): who may read and
 * write turn frames, connections and remembered approvals, the connection registry's
 * eviction under concurrency, marking dead isolates' turns interrupted, one turn per user
 * message, and starting a turn in one call (20261122000800_agent_start_turn.sql). Every policy of the migration is exercised by an allowed case here.
 */
import assert from "node:assert/strict";
import { startTurn, type TurnStart } from "../functions/_shared/agent/turn_store.ts";
import type { Sql } from "../functions/_shared/db/client.ts";
import {
  appendMessages,
  as,
  connectTestDatabase,
  createUser,
  message,
  sqlState,
  type TestUser,
} from "./support/database.ts";

interface Turn {
  sessionId: string;
  turnId: string;
  userRowId: string;
  assistantRowId: string;
}

/** A session with a user message, a streaming assistant message and a running turn. */
async function runningTurn(
  sql: Sql,
  user: TestUser,
  heartbeatAgo = "0 seconds",
): Promise<Turn> {
  const sessionId = crypto.randomUUID();
  const turnId = crypto.randomUUID();
  const [userRow, assistantRow] = await as(
    sql,
    user,
    (tx) =>
      appendMessages(tx, sessionId, [
        { ...message("question"), turn_id: turnId },
        {
          ...message("partial ans", "assistant"),
          status: "streaming",
          turn_id: turnId,
        },
      ]),
  );
  await sql`insert into public.agent_turns (id, user_id, session_id, user_message_id,
              assistant_message_id, owner, heartbeat_at)
            values (${turnId}, ${user.id}, ${sessionId}, ${userRow.id}, ${assistantRow.id},
              'isolate-test', now() - ${heartbeatAgo}::interval)`;
  await sql`insert into public.agent_turn_events (turn_id, seq, last_seq, user_id, frames)
            values (${turnId}, 1, 2, ${user.id}, ${
    sql.json([
      { type: "start", turn_id: turnId, seq: 1 },
      { type: "token", turn_id: turnId, seq: 2, delta: "partial ans" },
    ] as never)
  })`;
  return {
    sessionId,
    turnId,
    userRowId: userRow.id,
    assistantRowId: assistantRow.id,
  };
}

function count(sql: Sql, who: TestUser, query: string): Promise<number> {
  return as(sql, who, async (tx) => {
    const [row] = await tx.unsafe(`select count(*)::int as n from ${query}`);
    return row.n as number;
  });
}

Deno.test("users read their own turn frames and connections, nobody else's", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "alice");
    const bob = await createUser(sql, "bob");
    const turn = await runningTurn(sql, alice);
    await sql`insert into public.agent_connections (id, user_id, isolate_id)
              values (${crypto.randomUUID()}, ${alice.id}, 'isolate-test')`;

    const frames = await as(
      sql,
      alice,
      (tx) => tx`select frames from public.agent_turn_events where turn_id = ${turn.turnId}`,
    );
    assert.equal(frames.length, 1);
    assert.equal(frames[0].frames[1].delta, "partial ans");
    assert.equal(await count(sql, alice, "public.agent_connections"), 1);

    assert.equal(await count(sql, bob, "public.agent_turn_events"), 0);
    assert.equal(await count(sql, bob, "public.agent_connections"), 0);
  } finally {
    await sql.end();
  }
});

Deno.test("users cannot write turn frames or connections", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "alice");
    const turn = await runningTurn(sql, alice);
    assert.equal(
      await sqlState(
        as(
          sql,
          alice,
          (tx) =>
            tx`insert into public.agent_turn_events (turn_id, seq, last_seq, user_id, frames)
           values (${turn.turnId}, 3, 3, ${alice.id}, '[]')`,
        ),
      ),
      "42501",
    );
    assert.equal(
      await sqlState(
        as(
          sql,
          alice,
          (tx) =>
            tx`update public.agent_turn_events set frames = '[]' where turn_id = ${turn.turnId}`,
        ),
      ),
      "42501",
    );
    assert.equal(
      await sqlState(
        as(
          sql,
          alice,
          (tx) =>
            tx`insert into public.agent_connections (id, user_id, isolate_id)
           values (${crypto.randomUUID()}, ${alice.id}, 'forged')`,
        ),
      ),
      "42501",
    );
    assert.equal(
      await sqlState(
        as(
          sql,
          alice,
          (tx) =>
            tx`update public.agent_turns set cancel_requested_at = now()
           where id = ${turn.turnId}`,
        ),
      ),
      "42501",
    );
    for (
      const call of [
        (tx: Parameters<Parameters<typeof as>[2]>[0]) =>
          tx`select * from public.agent_register_connection(${crypto.randomUUID()}, ${alice.id},
             'x', 1000)`,
        (tx: Parameters<Parameters<typeof as>[2]>[0]) =>
          tx`select * from public.agent_interrupt_stale_turns(${alice.id}, 1000)`,
        (tx: Parameters<Parameters<typeof as>[2]>[0]) =>
          tx`select public.agent_start_turn(${crypto.randomUUID()}, ${crypto.randomUUID()},
             null, '[]', 'x', 'm', 0, 1, null)`,
        (tx: Parameters<Parameters<typeof as>[2]>[0]) =>
          tx`select public.agent_reserve_step(${turn.turnId}, 0, 1)`,
      ]
    ) {
      assert.equal(await sqlState(as(sql, alice, call)), "42501");
    }
  } finally {
    await sql.end();
  }
});

Deno.test("users remember, read and forget approvals for their own sessions only", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "alice");
    const bob = await createUser(sql, "bob");
    const turn = await runningTurn(sql, alice);

    const inserted = await as(
      sql,
      alice,
      (tx) =>
        tx`insert into public.tool_approvals (session_id, tool)
         values (${turn.sessionId}, 'calculator') returning user_id`,
    );
    assert.equal(inserted[0].user_id, alice.id);
    assert.equal(await count(sql, alice, "public.tool_approvals"), 1);
    assert.equal(await count(sql, bob, "public.tool_approvals"), 0);

    // Bob can neither approve in Alice's session nor as Alice, nor forget her approvals.
    const intoForeignSession = await sqlState(
      as(
        sql,
        bob,
        (tx) =>
          tx`insert into public.tool_approvals (session_id, tool)
         values (${turn.sessionId}, 'calculator')`,
      ),
    );
    assert.ok(intoForeignSession === "23503" || intoForeignSession === "42501");
    assert.equal(
      await sqlState(
        as(
          sql,
          bob,
          (tx) =>
            tx`insert into public.tool_approvals (user_id, session_id, tool)
           values (${alice.id}, ${turn.sessionId}, 'query_table')`,
        ),
      ),
      "42501",
    );
    const bobDeletes = await as(
      sql,
      bob,
      (tx) => tx`delete from public.tool_approvals where session_id = ${turn.sessionId}`,
    );
    assert.equal(bobDeletes.count, 0);
    assert.equal(
      await sqlState(
        as(
          sql,
          alice,
          (tx) =>
            tx`update public.tool_approvals set tool = 'query_table'
           where session_id = ${turn.sessionId}`,
        ),
      ),
      "42501",
    );

    const aliceDeletes = await as(
      sql,
      alice,
      (tx) => tx`delete from public.tool_approvals where session_id = ${turn.sessionId}`,
    );
    assert.equal(aliceDeletes.count, 1);
  } finally {
    await sql.end();
  }
});

Deno.test("parallel registrations keep exactly max_connections, evicting the oldest", async () => {
  const sql = connectTestDatabase(12);
  try {
    const alice = await createUser(sql, "alice");
    const register = (id: string) =>
      sql<{ max_connections: number; evicted: string[] }[]>`
        select * from public.agent_register_connection(${id}, ${alice.id}, 'isolate-test',
          60000)`;
    const oldest = crypto.randomUUID();
    await register(oldest);
    const ids = Array.from({ length: 10 }, () => crypto.randomUUID());
    const results = await Promise.all(ids.map(register));
    assert.ok(results.every(([row]) => row.max_connections === 3));
    const evicted = results.flatMap(([row]) => row.evicted);
    assert.equal(evicted.length, 8, "11 registered, 3 allowed");
    assert.equal(new Set(evicted).size, 8);
    assert.ok(evicted.includes(oldest));
    const live = await sql`select id from public.agent_connections
                           where user_id = ${alice.id} and evicted_at is null
                           order by created_at`;
    assert.equal(live.length, 3);
    assert.ok(live.every((row) => !evicted.includes(row.id)));
  } finally {
    await sql.end();
  }
});

Deno.test("stale running turns become interrupted with a final frame, fresh ones do not", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "alice");
    const stale = await runningTurn(sql, alice, "10 seconds");
    const fresh = await runningTurn(sql, alice);
    const interrupted = await sql<{ turn_id: string }[]>`
      select turn_id from public.agent_interrupt_stale_turns(${alice.id}, 5000)`;
    assert.deepEqual(interrupted.map((row) => row.turn_id), [stale.turnId]);

    const turns = await sql`select id, state, error from public.agent_turns
                            where user_id = ${alice.id}`;
    const stateOf = (id: string) => turns.find((turn) => turn.id === id)?.state;
    assert.equal(stateOf(stale.turnId), "interrupted");
    assert.equal(stateOf(fresh.turnId), "running");
    const [message] = await sql`select status, content from public.chat_history
                                where id = ${stale.assistantRowId}`;
    assert.deepEqual([message.status, message.content], [
      "interrupted",
      "partial ans",
    ]);
    const [last] = await sql`select seq, last_seq, frames from public.agent_turn_events
                             where turn_id = ${stale.turnId} order by seq desc limit 1`;
    assert.deepEqual([last.seq, last.last_seq], [3, 3]);
    assert.equal(last.frames[0].type, "error");
    assert.equal(last.frames[0].code, "interrupted");
    assert.equal(last.frames[0].seq, 3);

    const again = await sql`select turn_id from public.agent_interrupt_stale_turns(
                              ${alice.id}, 5000)`;
    assert.equal(again.length, 0, "an interrupted turn is interrupted once");
  } finally {
    await sql.end();
  }
});

Deno.test("a user message is answered by at most one turn", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "alice");
    const turn = await runningTurn(sql, alice);
    assert.equal(
      await sqlState(
        sql`insert into public.agent_turns (user_id, session_id, user_message_id, owner)
                         values (${alice.id}, ${turn.sessionId}, ${turn.userRowId}, 'other')`,
      ),
      "23505",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("agent_start_turn stores reservation, messages and turn as one; the messages as the user", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "start-alice");
    const bob = await createUser(sql, "start-bob");
    const chat = (overrides: Partial<TurnStart> = {}): TurnStart => {
      const turnId = crypto.randomUUID();
      return {
        turnId,
        sessionId: crypto.randomUUID(),
        title: "a title",
        messages: [
          { id: crypto.randomUUID(), role: "user", content: "hello", turn_id: turnId },
          {
            id: crypto.randomUUID(),
            role: "assistant",
            content: "",
            status: "streaming",
            turn_id: turnId,
          },
        ],
        owner: "isolate-test",
        model: "openai/gpt-4o-mini",
        promptTokens: 0,
        completionTokens: 500,
        ...overrides,
      };
    };
    const dayTokens = async (user: TestUser) =>
      Number(
        (await sql`select day_tokens from public.user_limits
                        where user_id = ${user.id}`)[0].day_tokens,
      );

    const start = chat();
    const started = await startTurn(sql, alice.claims, start);
    assert.equal(started.kind, "started");
    assert.ok(started.kind === "started");
    const rows = await sql`select h.id, h.user_id, h.role::text as role, h.turn_id, s.title
                           from public.chat_history h join public.chat_sessions s
                             on s.id = h.session_id
                           where h.session_id = ${start.sessionId} order by h.seq`;
    assert.deepEqual(rows.map((r) => [r.user_id, r.role, r.turn_id, r.title]), [
      [alice.id, "user", start.turnId, "a title"],
      [alice.id, "assistant", start.turnId, "a title"],
    ]);
    const [turn] = await sql`select user_id, user_message_id, assistant_message_id,
                               reserved_tokens, state::text as state
                             from public.agent_turns where id = ${start.turnId}`;
    assert.deepEqual(
      [turn.user_id, turn.user_message_id, turn.assistant_message_id, turn.reserved_tokens],
      [alice.id, rows[0].id, rows[1].id, 500],
    );
    assert.deepEqual(
      [started.userRowId, started.assistantRowId, turn.state],
      [rows[0].id, rows[1].id, "running"],
    );
    assert.equal(await dayTokens(alice), 500);

    // The same chat again: its turn exists, so it is followed and the reservation given back.
    assert.deepEqual(
      await startTurn(sql, alice.claims, { ...start, turnId: crypto.randomUUID() }),
      {
        kind: "exists",
        turnId: start.turnId,
      },
    );
    assert.equal(await dayTokens(alice), 500);

    // Bob's session is not Alice's to write to: RLS hides it (AG404), and nothing stays behind,
    // not even the reservation.
    const bobs = chat();
    assert.equal((await startTurn(sql, bob.claims, bobs)).kind, "started");
    const intruder = chat({ sessionId: bobs.sessionId, title: null });
    assert.equal(await sqlState(startTurn(sql, alice.claims, intruder)), "AG404");
    assert.equal(await dayTokens(alice), 500);
    const [{ n }] = await sql`select count(*)::int as n from public.agent_turns
                              where id = ${intruder.turnId}`;
    assert.equal(n, 0);

    // A refused reservation stores nothing.
    const greedy = chat({ promptTokens: 0, completionTokens: 10_000_000 });
    assert.deepEqual(await startTurn(sql, alice.claims, greedy), {
      kind: "refused",
      reason: "exceeds_capacity",
    });
    const [{ stored }] = await sql`select count(*)::int as stored from public.chat_sessions
                                   where id = ${greedy.sessionId}`;
    assert.equal(stored, 0);
  } finally {
    await sql.end();
  }
});
