/**
 * Reservations that hold (20261203000200_turn_reservations.sql): every LLM call of a turn is
 * reserved at its worst case, in tokens and in cost, before it is made (the first by
 * agent_start_turn, the others by agent_reserve_step), so parallel multi-step turns cannot
 * together spend more than the user's bucket and daily cost cap. The turns here are driven
 * through the agent's own calls (startTurn, reserveStep, the flush's settlement), with every
 * call using its whole reservation: the worst case.
 */
import assert from "node:assert/strict";
import { settlementStatement } from "../functions/_shared/agent/limits.ts";
import { reserveStep, startTurn } from "../functions/_shared/agent/turn_store.ts";
import { queryAsServiceRole, type Sql } from "../functions/_shared/db/client.ts";
import { connectTestDatabase, createUser, type TestUser } from "./support/database.ts";

const PROMPT_TOKENS = 500;
const COMPLETION_TOKENS = 1000;
const CALL_TOKENS = PROMPT_TOKENS + COMPLETION_TOKENS;

interface Spent {
  calls: number;
  tokens: number;
  costUsd: number;
}

/**
 * One turn of up to `maxSteps` calls, each using exactly what it reserved; settled as the
 * flush settles it. Returns what it spent.
 */
async function worstCaseTurn(
  sql: Sql,
  user: TestUser,
  model: string,
  maxSteps: number,
): Promise<Spent> {
  const turnId = crypto.randomUUID();
  const started = await startTurn(sql, user.claims, {
    turnId,
    sessionId: crypto.randomUUID(),
    title: "reservations",
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
    model,
    promptTokens: PROMPT_TOKENS,
    completionTokens: COMPLETION_TOKENS,
  });
  if (started.kind !== "started") return { calls: 0, tokens: 0, costUsd: 0 };
  let calls = 1;
  let reservedTokens = started.reservedTokens;
  let reservedCostUsd = started.reservedCostUsd;
  const callCost = reservedCostUsd;
  while (calls < maxSteps) {
    const step = await reserveStep(sql, started.turnId, PROMPT_TOKENS, COMPLETION_TOKENS);
    if (!step.allowed) break;
    calls++;
    reservedTokens = step.reservedTokens;
    reservedCostUsd = step.reservedCostUsd;
  }
  const spent = { calls, tokens: calls * CALL_TOKENS, costUsd: calls * callCost };
  await queryAsServiceRole(
    sql,
    settlementStatement([{
      userId: user.id,
      reservedTokens,
      reservedCostUsd,
      usedTokens: spent.tokens,
      costUsd: spent.costUsd,
    }]),
  );
  return spent;
}

function total(spent: Spent[]): Spent {
  return spent.reduce((a, b) => ({
    calls: a.calls + b.calls,
    tokens: a.tokens + b.tokens,
    costUsd: a.costUsd + b.costUsd,
  }));
}

Deno.test("ten parallel multi-step turns spend at most a $0.01 daily cost cap", async () => {
  const turns = 10;
  const sql = connectTestDatabase(turns + 2);
  const model = `test/priced-${crypto.randomUUID()}`;
  try {
    const alice = await createUser(sql, "cost-cap");
    // $0.003 a call (500 prompt and 1,000 completion tokens at $2/M): the cap is not a whole
    // number of calls, so a check of settled cost alone would admit a fourth.
    await sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token)
              values (${model}, 0.000002, 0.000002)`;
    await sql`update public.user_limits set daily_cost_cap_usd = 0.01 where user_id = ${alice.id}`;
    await Promise.all(Array.from({ length: turns + 2 }, () => sql`select 1`));

    const spent = total(
      await Promise.all(Array.from({ length: turns }, () => worstCaseTurn(sql, alice, model, 4))),
    );
    console.log(
      `${turns} parallel turns against a $0.01 cap: ${spent.calls} calls, ` +
        `$${spent.costUsd.toFixed(4)}`,
    );
    assert.ok(spent.costUsd <= 0.01 + 1e-9, `spent $${spent.costUsd} of a $0.01 cap`);
    assert.equal(spent.calls, 3, "admitted as far as the cap goes: three $0.003 calls");
    const [limits] = await sql`select day_cost_usd from public.user_limits
                               where user_id = ${alice.id}`;
    assert.equal(Number(limits.day_cost_usd), 0.009, "settled: the day counts what was spent");
  } finally {
    await sql`delete from public.models where id = ${model}`;
    await sql.end();
  }
});

Deno.test("parallel multi-step turns never take the bucket below zero", async () => {
  const turns = 6;
  const capacity = 10_000;
  const sql = connectTestDatabase(turns + 2);
  try {
    const alice = await createUser(sql, "bucket");
    await sql`update public.user_limits
              set bucket_capacity = ${capacity}, bucket_tokens = ${capacity}, refill_per_minute = 0
              where user_id = ${alice.id}`;
    await Promise.all(Array.from({ length: turns + 2 }, () => sql`select 1`));

    const spent = total(
      await Promise.all(
        Array.from({ length: turns }, () => worstCaseTurn(sql, alice, "openai/gpt-4o-mini", 4)),
      ),
    );
    const [limits] = await sql`select bucket_tokens, day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    console.log(
      `${turns} parallel 4-step turns against a bucket of ${capacity}: ` +
        `${spent.calls} calls, ${spent.tokens} tokens, bucket left ${limits.bucket_tokens}`,
    );
    assert.ok(spent.tokens <= capacity, `spent ${spent.tokens} tokens of ${capacity}`);
    assert.equal(spent.calls, Math.floor(capacity / CALL_TOKENS), "admitted as far as it goes");
    assert.equal(limits.bucket_tokens, capacity - spent.tokens);
    assert.ok(limits.bucket_tokens >= 0);
    assert.equal(Number(limits.day_tokens), spent.tokens);
  } finally {
    await sql.end();
  }
});

Deno.test("a step of a turn no longer running is refused and reserves nothing", async () => {
  const sql = connectTestDatabase();
  try {
    const alice = await createUser(sql, "ended");
    const turnId = crypto.randomUUID();
    const started = await startTurn(sql, alice.claims, {
      turnId,
      sessionId: crypto.randomUUID(),
      title: null,
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
      completionTokens: 100,
    });
    assert.equal(started.kind, "started");
    await sql`update public.agent_turns set state = 'complete' where id = ${turnId}`;
    assert.deepEqual(await reserveStep(sql, turnId, 0, 100), {
      allowed: false,
      reason: "not_running",
    });
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    assert.equal(Number(limits.day_tokens), 100, "only the start's reservation");
  } finally {
    await sql.end();
  }
});

Deno.test("parallel chats run at most max_concurrent_turns turns; dead isolates' do not count", async () => {
  const chats = 10;
  const sql = connectTestDatabase(chats + 3);
  try {
    const alice = await createUser(sql, "concurrent");
    await sql`update public.user_limits set max_concurrent_turns = 3 where user_id = ${alice.id}`;
    await Promise.all(Array.from({ length: chats + 3 }, () => sql`select 1`));
    const start = () => {
      const turnId = crypto.randomUUID();
      return startTurn(sql, alice.claims, {
        turnId,
        sessionId: crypto.randomUUID(),
        title: null,
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
        completionTokens: 100,
        staleAfterMs: 15_000,
      });
    };

    // All starts in flight at once, whatever the machine's speed: the test holds the user's
    // limits row until every start waits on a lock (the real code at its count, a start without
    // the concurrent-turn lock only at consume_quota, past its count), then lets them go.
    let launched: Promise<Awaited<ReturnType<typeof start>>[]> | undefined;
    await sql.begin(async (tx) => {
      await tx`select 1 from public.user_limits where user_id = ${alice.id} for update`;
      launched = Promise.all(Array.from({ length: chats }, start));
      const deadline = Date.now() + 20_000;
      for (;;) {
        const [{ waiting }] = await sql<{ waiting: number }[]>`
          select count(*)::int as waiting from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'`;
        if (waiting >= chats) break;
        if (Date.now() > deadline) throw new Error(`only ${waiting} starts wait on a lock`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    });
    const outcomes = await launched!;
    const started = outcomes.filter((o) => o.kind === "started");
    const refused = outcomes.filter((o) => o.kind === "refused");
    console.log(`${chats} parallel chats, max_concurrent_turns 3: ${started.length} started`);
    assert.equal(started.length, 3);
    assert.deepEqual(
      [...new Set(refused.map((o) => o.kind === "refused" && o.reason))],
      ["concurrent_turns"],
    );
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    assert.equal(Number(limits.day_tokens), 300, "a refused chat reserves nothing");

    // One ends: room for one more. One's isolate dies (its heartbeat stops): room for another.
    const [first, second] = started.map((o) => o.kind === "started" ? o.turnId : "");
    await sql`update public.agent_turns set state = 'complete' where id = ${first}`;
    await sql`update public.agent_turns set heartbeat_at = now() - interval '1 minute'
              where id = ${second}`;
    assert.equal((await start()).kind, "started");
    assert.equal((await start()).kind, "started");
    assert.equal((await start()).kind, "refused");
  } finally {
    await sql.end();
  }
});
