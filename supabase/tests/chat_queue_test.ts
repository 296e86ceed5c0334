/**
 * Double-texting in SQL (20261207000100_double_texting.sql): agent_start_chat's policies
 * under the session's lock, the queue's order and RLS, agent_startable_chats and
 * agent_fail_queued_chat.
 */
import assert from "node:assert/strict";
import { startTurn, type TurnStart } from "../functions/_shared/agent/turn_store.ts";
import { as, connectTestDatabase, createUser } from "./support/database.ts";

function chat(sessionId: string, overrides: Partial<TurnStart> = {}): TurnStart {
  const turnId = crypto.randomUUID();
  const id = crypto.randomUUID();
  return {
    turnId,
    sessionId,
    title: "t",
    messages: [
      { id, role: "user", content: "hello", turn_id: turnId },
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
    completionTokens: 10,
    staleAfterMs: 10_000,
    frame: { type: "chat", id, content: "hello", session_id: sessionId },
    ...overrides,
  };
}

Deno.test("agent_start_chat: reject and enqueue on a busy session, the queue in order and private", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "queue-alice");
    const bob = await createUser(sql, "queue-bob");
    const sessionId = crypto.randomUUID();
    const first = await startTurn(sql, alice.claims, chat(sessionId));
    assert.equal(first.kind, "started");
    const running = (first as { turnId: string }).turnId;

    // The hard guard: a second running turn in the session, written past the functions.
    await assert.rejects(
      sql`insert into public.agent_turns (user_id, session_id, owner)
          values (${alice.id}, ${sessionId}, 'elsewhere')`,
      /agent_turns_one_running_per_session/,
    );

    const rejected = chat(sessionId, { title: null });
    assert.deepEqual(await startTurn(sql, alice.claims, rejected), {
      kind: "busy",
      turnId: running,
    });
    const [{ n }] = await sql`select count(*)::int as n from public.chat_history
                              where session_id = ${sessionId}`;
    assert.equal(n, 2, "a rejected chat stores nothing");

    const queued = [chat(sessionId, { title: null }), chat(sessionId, { title: null })];
    const outcomes = [];
    for (const start of queued) {
      outcomes.push(await startTurn(sql, alice.claims, { ...start, policy: "enqueue" }));
    }
    assert.deepEqual(outcomes, [
      { kind: "queued", turnId: queued[0].turnId, ahead: 0, runningTurnId: running },
      { kind: "queued", turnId: queued[1].turnId, ahead: 1, runningTurnId: running },
    ]);
    // Bob sees none of Alice's queue; Alice sees hers (authenticated's SELECT, under RLS).
    const seen = async (who: typeof alice) =>
      (await as(sql, who, (tx) => tx`select turn_id from public.agent_chat_queue`)).length;
    assert.equal(await seen(alice), 2);
    assert.equal(await seen(bob), 0);
    // Nothing starts while the session is busy.
    // As the agent calls them: as service_role.
    const asService = <T>(work: (tx: typeof sql) => Promise<T>) =>
      sql.begin(async (tx) => {
        await tx`set local role service_role`;
        return await work(tx as unknown as typeof sql);
      }) as Promise<T>;
    const startable = () =>
      asService((tx) =>
        tx`select turn_id from public.agent_startable_chats(${alice.id}, ${sessionId}, 10000)`
      );
    assert.equal((await startable()).length, 0);
    // The second in line may not jump the queue.
    assert.equal(
      (await startTurn(sql, alice.claims, { ...queued[1], policy: "queued" })).kind,
      "busy",
    );

    await sql`update public.agent_turns set state = 'complete' where id = ${running}`;
    assert.deepEqual((await startable()).map((r) => r.turn_id), [queued[0].turnId]);
    assert.equal(
      (await startTurn(sql, alice.claims, { ...queued[1], policy: "queued" })).kind,
      "busy",
      "with the session free, the second still waits for the first",
    );
    // The first fails to start (say its quota refused it): the second is next.
    await asService((tx) =>
      tx`select public.agent_fail_queued_chat(${alice.id}, ${queued[0].frame!.id},
        '{"code":"rate_limited","message":"no","retryable":true}'::jsonb)`
    );
    assert.deepEqual((await startable()).map((r) => r.turn_id), [queued[1].turnId]);
    assert.equal(
      (await startTurn(sql, alice.claims, { ...queued[1], policy: "queued" })).kind,
      "started",
    );
    assert.equal(
      (await startTurn(sql, alice.claims, { ...queued[1], policy: "queued" })).kind,
      "exists",
      "a second start of the same queued chat starts nothing",
    );
    const [{ waiting }] = await sql`select count(*)::int as waiting from public.agent_chat_queue
                                    where session_id = ${sessionId} and error is null`;
    assert.equal(waiting, 0);
  } finally {
    await sql.end();
  }
});

Deno.test("a parked turn holds its session: even enqueue is refused naming it, and chats queued before it wait", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "queue-parked");
    const sessionId = crypto.randomUUID();
    const first = await startTurn(sql, alice.claims, chat(sessionId));
    assert.equal(first.kind, "started");
    const turnId = (first as { turnId: string }).turnId;
    // Queued while the turn still ran; then the turn parks on an approval.
    const early = chat(sessionId, { title: null });
    assert.equal(
      (await startTurn(sql, alice.claims, { ...early, policy: "enqueue" })).kind,
      "queued",
    );
    await sql`update public.agent_turns
              set state = 'parked', parked_until = now() + interval '1 day',
                  awaiting_call_id = 'call_1', reserved_tokens = 0
              where id = ${turnId}`;

    for (const policy of ["reject", "enqueue"] as const) {
      assert.deepEqual(
        await startTurn(sql, alice.claims, { ...chat(sessionId, { title: null }), policy }),
        { kind: "busy", turnId, enqueueable: false },
        `${policy}: refused, naming the parked turn`,
      );
    }
    const [{ n }] = await sql`select count(*)::int as n from public.agent_chat_queue
                              where session_id = ${sessionId}`;
    assert.equal(n, 1, "nothing more was queued");
    const asService = <T>(work: (tx: typeof sql) => Promise<T>) =>
      sql.begin(async (tx) => {
        await tx`set local role service_role`;
        return await work(tx as unknown as typeof sql);
      }) as Promise<T>;
    const startable = await asService((tx) =>
      tx`select turn_id from public.agent_startable_chats(${alice.id}, ${sessionId}, 10000)`
    );
    assert.equal(startable.length, 0, "the chat queued before the park waits for the turn");
    assert.equal((await startTurn(sql, alice.claims, { ...early, policy: "queued" })).kind, "busy");

    // Answered: the turn runs again (the one running turn of its session), then ends; the
    // queued chat starts after it.
    const [{ outcome }] = await asService((tx) =>
      tx`select public.agent_answer_parked('iso-b', ${alice.id}::uuid, null, 'call_1',
         '{"decision":"allow"}'::jsonb) as outcome`
    );
    assert.equal(outcome.kind, "continue");
    await sql`update public.agent_turns set state = 'complete' where id = ${turnId}`;
    assert.equal(
      (await startTurn(sql, alice.claims, { ...early, policy: "queued" })).kind,
      "started",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("agent_sweep_queued_chats: heads of free sessions of any user, with the claims they were queued with", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "sweep-queue");
    const sessionId = crypto.randomUUID();
    const first = await startTurn(sql, alice.claims, chat(sessionId));
    const turnId = (first as { turnId: string }).turnId;
    const queued = chat(sessionId, { title: null });
    assert.equal(
      (await startTurn(sql, alice.claims, { ...queued, policy: "enqueue" })).kind,
      "queued",
    );
    const swept = () =>
      sql.begin(async (tx) => {
        await tx`set local role service_role`;
        return await tx`select q.user_id, q.session_id, q.claims
                        from public.agent_sweep_queued_chats(1000) q
                        where q.session_id = ${sessionId}`;
      });
    assert.equal((await swept()).length, 0, "a running turn holds the session");
    // Even one whose isolate stopped heartbeating: the sweep adopts it instead.
    await sql`update public.agent_turns set heartbeat_at = now() - interval '1 hour'
              where id = ${turnId}`;
    assert.equal((await swept()).length, 0);
    await sql`update public.agent_turns set state = 'parked', parked_until = now() + interval '1 day',
              awaiting_call_id = 'call_1', reserved_tokens = 0 where id = ${turnId}`;
    assert.equal((await swept()).length, 0, "a parked one too");
    await sql`update public.agent_turns set state = 'complete' where id = ${turnId}`;
    const [head] = await swept();
    assert.equal(head.user_id, alice.id);
    assert.equal(head.claims.sub, alice.id, "stored from the enqueuing transaction's claims");
    assert.deepEqual(head.claims, alice.claims);
    await assert.rejects(
      sql.begin(async (tx) => {
        await tx`set local role authenticated`;
        await tx`select * from public.agent_sweep_queued_chats(1)`;
      }),
      /permission denied/,
    );
  } finally {
    await sql.end();
  }
});
