/**
 * Durable turns in SQL (20261206000200_durable_turns.sql): leases and adoption, writes
 * conditional on the epoch, the recovery budget, parking (reservation settled, not counted as
 * running), answering a parked turn from anywhere, and expiry. Run as service_role, as the
 * agent function runs them.
 */
import assert from "node:assert/strict";
import type { Sql, Tx } from "../functions/_shared/db/client.ts";
import {
  appendMessages,
  as,
  connectTestDatabase,
  createUser,
  message,
  sqlState,
} from "./support/database.ts";

const SERVICE = { role: "service_role" };

const service = <T>(sql: Sql, work: (tx: Tx) => Promise<T>) => as(sql, SERVICE, work);

/** A running turn of `owner` with two stored frames, a partial answer and a reservation. */
async function storedTurn(sql: Sql, owner: string) {
  const user = await createUser(sql, "durable");
  const sessionId = crypto.randomUUID();
  const turnId = crypto.randomUUID();
  const [userRow, assistantRow] = await as(sql, user, (tx) =>
    appendMessages(tx, sessionId, [
      { ...message("question"), turn_id: turnId },
      { ...message("partial", "assistant"), status: "streaming", turn_id: turnId },
    ]));
  await sql`insert into public.user_limits (user_id) values (${user.id}) on conflict do nothing`;
  await sql`update public.user_limits set day_tokens = 500 where user_id = ${user.id}`;
  await sql`insert into public.agent_turns (id, user_id, session_id, user_message_id,
              assistant_message_id, owner, reserved_tokens)
            values (${turnId}, ${user.id}, ${sessionId}, ${userRow.id}, ${assistantRow.id},
              ${owner}, 500)`;
  await sql`insert into public.agent_turn_checkpoints (turn_id, progress, checkpoint)
            values (${turnId}, 1, ${sql.json({ progress: 1, step: 1 } as never)})`;
  await sql`insert into public.agent_turn_events (turn_id, seq, last_seq, user_id, frames)
            values (${turnId}, 1, 2, ${user.id}, ${sql.json(["a", "b"] as never)})`;
  return { user, turnId, assistantRowId: assistantRow.id as string };
}

function flush(tx: Tx, owner: string, turns: Record<string, unknown>[], events: unknown[] = []) {
  return tx`select f.id, f.state::text as state, f.approval_answer
            from public.agent_flush(${owner}, ${tx.json(turns as never)},
              '[]'::jsonb, ${tx.json(events as never)}) f`;
}

function adopt(tx: Tx, owner: string, turnId: string, budget = 3) {
  return tx`select r from public.agent_adopt_turns(${owner}, null, ${turnId}::uuid, 5, ${budget}) r`;
}

Deno.test("a live lease keeps a turn; once released, another isolate adopts it with a new epoch", async () => {
  const sql = connectTestDatabase(2);
  try {
    const a = `iso-a-${crypto.randomUUID()}`;
    const b = `iso-b-${crypto.randomUUID()}`;
    const { turnId } = await storedTurn(sql, a);
    await service(sql, (tx) => tx`select public.agent_renew_lease(${a}, 60000)`);
    assert.equal(
      (await service(sql, (tx) => adopt(tx, b, turnId))).length,
      0,
      "a live lease holds",
    );

    await service(sql, (tx) => tx`select public.agent_release_lease(${a})`);
    const [{ r: taken }] = await service(sql, (tx) => adopt(tx, b, turnId));
    assert.equal(taken.kind, "adopted");
    assert.equal(taken.epoch, 1);
    assert.equal(taken.last_seq, 2);
    assert.equal(taken.content, "partial");
    assert.deepEqual(taken.restarts, [{ epoch: 1, seq: 3 }]);
    assert.equal(taken.refusal, null);

    // The isolate that lost it writes nothing more; the adopter does.
    const frame = (seq: number) => ({
      turn_id: turnId,
      user_id: taken.user_id,
      seq,
      last_seq: seq,
      frames: ["x"],
    });
    const stale = await service(
      sql,
      (tx) => flush(tx, a, [{ id: turnId, epoch: 0, steps: 2 }], [frame(3)]),
    );
    assert.equal(stale.length, 0);
    const checkpoint = { progress: 2, step: 2, messages: [{ role: "system", content: "secret" }] };
    const owned = await service(
      sql,
      (tx) => flush(tx, b, [{ id: turnId, epoch: 1, steps: 2, checkpoint }], [frame(3)]),
    );
    assert.deepEqual(owned.map((row) => row.state), ["running"]);
    const [stored] = await sql`select progress, checkpoint from public.agent_turn_checkpoints
                               where turn_id = ${turnId}`;
    assert.deepEqual([stored.progress, stored.checkpoint], [2, checkpoint]);
    // The user reads his turn, not its checkpoint (the system prompt, grants, claims).
    const user = { role: "authenticated", sub: taken.user_id };
    const [turnRow] = await as(
      sql,
      user,
      (tx) => tx`select epoch from public.agent_turns where id = ${turnId}`,
    );
    assert.equal(turnRow.epoch, 1);
    assert.equal(
      await sqlState(as(sql, user, (tx) => tx`select 1 from public.agent_turn_checkpoints`)),
      "42501",
    );
    const [{ n }] = await sql`select count(*)::int as n from public.agent_turn_events
                              where turn_id = ${turnId}`;
    assert.equal(n, 2);
  } finally {
    await sql.end();
  }
});

Deno.test("past the recovery budget a turn ends interrupted, its reservation settled once", async () => {
  const sql = connectTestDatabase(2);
  try {
    const { user, turnId, assistantRowId } = await storedTurn(
      sql,
      `iso-dead-${crypto.randomUUID()}`,
    );
    const [{ r }] = await service(sql, (tx) => adopt(tx, "iso-c", turnId, 0));
    assert.deepEqual(r, { kind: "interrupted", turn_id: turnId });
    const [turn] = await sql`select state::text, reserved_tokens from public.agent_turns
                             where id = ${turnId}`;
    assert.deepEqual([turn.state, turn.reserved_tokens], ["interrupted", 0]);
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${user.id}`;
    assert.equal(Number(limits.day_tokens), 0, "the 500 reserved tokens came back");
    const [row] = await sql`select status::text from public.chat_history
                            where id = ${assistantRowId}`;
    assert.equal(row.status, "interrupted");
    // A restart first (a client may hold unstored frames past seq 2: they are dropped, the
    // stored text kept), then the ending.
    const [last] = await sql`select last_seq, frames from public.agent_turn_events
                             where turn_id = ${turnId} and seq = 3`;
    assert.equal(last.last_seq, 4);
    assert.deepEqual(
      last.frames.map((f: { type: string; code?: string; keep_chars?: number }) => [
        f.type,
        f.code ?? f.keep_chars,
      ]),
      [["restart_step", "partial".length], ["error", "interrupted"]],
    );
    const [ended] = await sql`select epoch, restarts from public.agent_turns where id = ${turnId}`;
    assert.deepEqual([ended.epoch, ended.restarts], [1, [{ epoch: 1, seq: 3 }]]);
  } finally {
    await sql.end();
  }
});

Deno.test("a parked turn holds no reservation, is answered from anywhere, and expires", async () => {
  const sql = connectTestDatabase(2);
  try {
    const a = `iso-a-${crypto.randomUUID()}`;
    const { user, turnId } = await storedTurn(sql, a);
    await sql`update public.agent_turns set awaiting_call_id = 'call_1' where id = ${turnId}`;
    const park = (owner: string, epoch: number, until = "2100-01-01T00:00:00Z") =>
      service(sql, (tx) =>
        flush(tx, owner, [{
          id: turnId,
          user_id: user.id,
          epoch,
          steps: 1,
          state: "parked",
          parked_until: until,
          used_tokens: 40,
          used_cost: 0,
        }]));
    assert.deepEqual((await park(a, 0)).map((row) => row.state), ["parked"]);
    const [parked] = await sql`select state::text, reserved_tokens from public.agent_turns
                               where id = ${turnId}`;
    assert.deepEqual([parked.state, parked.reserved_tokens], ["parked", 0]);
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${user.id}`;
    assert.equal(Number(limits.day_tokens), 40, "settled: only what was used counts");

    // Answered through another isolate: it takes the turn, with a new epoch.
    const [{ outcome }] = await service(
      sql,
      (tx) =>
        tx`select public.agent_answer_parked('iso-b', ${user.id}::uuid, null, 'call_1',
           '{"decision":"allow"}'::jsonb) as outcome`,
    );
    assert.equal(outcome.kind, "continue");
    assert.deepEqual(outcome.answer, { decision: "allow" });
    assert.equal(outcome.epoch, 1);
    // The same isolate with a stale epoch writes nothing (nor does the old owner).
    assert.equal((await park(a, 0)).length, 0);
    const staleEpoch = await service(sql, (tx) => flush(tx, "iso-b", [{ id: turnId, epoch: 0 }]));
    assert.equal(staleEpoch.length, 0);

    // An answer that comes before the park: the park does not happen, the answer is handed back.
    await sql`update public.agent_turns set awaiting_call_id = 'call_2' where id = ${turnId}`;
    const [{ outcome: left }] = await service(
      sql,
      (tx) =>
        tx`select public.agent_answer_parked('iso-c', ${user.id}::uuid, null, 'call_2',
           '{"decision":"deny"}'::jsonb) as outcome`,
    );
    assert.equal(left.kind, "left");
    const overtaken = await park("iso-b", 1);
    assert.deepEqual(overtaken.map((row) => [row.state, row.approval_answer]), [[
      "running",
      { decision: "deny" },
    ]]);

    // A wait that expired is taken by whoever sweeps, with the answer "expired".
    await sql`update public.agent_turns set approval_answer = null where id = ${turnId}`;
    await park("iso-b", 1, "2000-01-01T00:00:00Z");
    const [{ r: expired }] = await service(sql, (tx) => adopt(tx, "iso-b", turnId));
    assert.equal(expired.kind, "expired");
    assert.deepEqual(expired.answer, { decision: "expired" });
  } finally {
    await sql.end();
  }
});

Deno.test("an answer committed while the park's flush waits for the turn's row still overtakes the park", async () => {
  const sql = connectTestDatabase(3);
  try {
    const a = `iso-a-${crypto.randomUUID()}`;
    const { user, turnId } = await storedTurn(sql, a);
    await sql`update public.agent_turns set awaiting_call_id = 'call_1' where id = ${turnId}`;
    let answered!: () => void;
    const answerHeld = new Promise<void>((resolve) => answered = resolve);
    let commit!: () => void;
    const committing = new Promise<void>((resolve) => commit = resolve);
    // The answer's transaction holds the turn's row while the flush starts (the flush's
    // statement sees no answer yet), then commits while the flush waits for the row.
    const answer = service(sql, async (tx) => {
      const [{ outcome }] = await tx`select public.agent_answer_parked('iso-b',
        ${user.id}::uuid, null, 'call_1', '{"decision":"deny"}'::jsonb) as outcome`;
      answered();
      await committing;
      return outcome;
    });
    await answerHeld;
    // The flush's session is named, so the wait below is for its lock, not another test's.
    const parker = `park-${crypto.randomUUID()}`;
    const park = service(sql, async (tx) => {
      await tx`select set_config('application_name', ${parker}, true)`;
      return await flush(tx, a, [{
        id: turnId,
        user_id: user.id,
        epoch: 0,
        steps: 1,
        state: "parked",
        parked_until: "2100-01-01T00:00:00Z",
        used_tokens: 40,
        used_cost: 0,
      }]);
    });
    for (let waited = 0;; waited += 10) {
      const [{ waiting }] = await sql`select count(*)::int as waiting from pg_stat_activity
                                      where application_name = ${parker}
                                        and wait_event_type = 'Lock'`;
      if (waiting > 0) break;
      assert.ok(waited < 10_000, "the flush never waited for the answer's row lock");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    commit();
    assert.equal((await answer).kind, "left");
    assert.deepEqual((await park).map((row) => [row.state, row.approval_answer]), [[
      "running",
      { decision: "deny" },
    ]]);
    const [stored] = await sql`select state::text, reserved_tokens, parked_until
                               from public.agent_turns where id = ${turnId}`;
    assert.deepEqual(
      [stored.state, stored.reserved_tokens, stored.parked_until],
      ["running", 500, null],
      "not parked, nothing settled: the turn goes on with the answer",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("stored text of a continued answer is progress: the run of takeovers starts over", async () => {
  const sql = connectTestDatabase(2);
  try {
    const a = `iso-a-${crypto.randomUUID()}`;
    const b = `iso-b-${crypto.randomUUID()}`;
    const { user, turnId } = await storedTurn(sql, a);
    await service(sql, (tx) => tx`select public.agent_release_lease(${a})`);
    const [{ r: taken }] = await service(sql, (tx) => adopt(tx, b, turnId));
    assert.equal(taken.continues_partial, false, "the catalogue does not know its model");
    const recoveries = async () =>
      (await sql`select recoveries from public.agent_turns where id = ${turnId}`)[0].recoveries;
    assert.equal(await recoveries(), 1);
    const beat = (progressed: boolean) =>
      service(
        sql,
        (tx) => flush(tx, b, [{ id: turnId, user_id: user.id, epoch: 1, steps: 1, progressed }]),
      );
    await beat(false);
    assert.equal(await recoveries(), 1, "a heartbeat is no progress");
    await beat(true);
    assert.equal(await recoveries(), 0);
  } finally {
    await sql.end();
  }
});

Deno.test("a turn ended past its budget before any frame was stored starts with start", async () => {
  const sql = connectTestDatabase(2);
  try {
    const { turnId } = await storedTurn(sql, `iso-dead-${crypto.randomUUID()}`);
    await sql`delete from public.agent_turn_events where turn_id = ${turnId}`;
    await service(sql, (tx) => adopt(tx, "iso-c", turnId, 0));
    const [stored] = await sql`select seq, last_seq, frames from public.agent_turn_events
                               where turn_id = ${turnId}`;
    assert.deepEqual([stored.seq, stored.last_seq], [1, 3]);
    assert.deepEqual(stored.frames.map((f: { type: string }) => f.type), [
      "start",
      "restart_step",
      "error",
    ]);
    const [turn] = await sql`select t.session_id, t.model, a.client_id as message_id,
                               u.client_id as user_message_id
                             from public.agent_turns t
                             join public.chat_history a on a.id = t.assistant_message_id
                             join public.chat_history u on u.id = t.user_message_id
                             where t.id = ${turnId}`;
    assert.deepEqual(stored.frames[0], { type: "start", ...turn });
  } finally {
    await sql.end();
  }
});
