/**
 * The agent's largest write: one flush of every streaming turn of an isolate (`writeFlush`,
 * i.e. `public.agent_flush`), as the flusher sends it every 500 ms. Turns are started with
 * the agent's own `startTurn`; each flush carries ten new token frames and their text for
 * every turn; each batch of turns then ends, and a new batch starts on the pages the old one
 * left, as turns come and go under a steady load. Flushes go through the agent's flush pool
 * (`AGENT_FLUSH_DB_POOL_SIZE`, one connection by default), as in the agent. The time is the
 * round trip from this process, so the Postgres client is in it.
 *
 * The share of HOT updates (pg_stat_user_tables) says whether the rows a flush rewrites stay
 * on their pages; an update that does not adds entries to every index of its table.
 */
import { LiveTurn } from "../../supabase/functions/_shared/agent/live_turn.ts";
import { startTurn, writeFlush } from "../../supabase/functions/_shared/agent/turn_store.ts";
import { connect, type Sql } from "../../supabase/functions/_shared/db/client.ts";
import { createUsers, userClaims } from "../../supabase/tests/support/database.ts";
import { percentile } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

const OWNER = "isolate-flush-bench";
const TOKENS_PER_FLUSH = 10;
const BATCHES = 3;

export async function agentFlushBench(ctx: BenchContext): Promise<BenchResult[]> {
  const turnCount = ctx.smoke ? 50 : 1000;
  const users = await createUsers(ctx.sql, turnCount, "flush-bench");
  const flushSql = connect(ctx.databaseUrl, { max: ctx.pools.agentFlush });
  try {
    return await measureFlushes(ctx.sql, flushSql, users, ctx.smoke ? 2 : 10);
  } finally {
    await flushSql.end();
  }
}

async function measureFlushes(
  sql: Sql,
  flushSql: Sql,
  users: string[],
  flushesPerBatch: number,
): Promise<BenchResult[]> {
  const before = await updateCounts(sql);
  const times: number[] = [];
  for (let batch = 0; batch < BATCHES; batch++) {
    const turns = await startTurns(sql, users);
    for (let flush = 0; flush < flushesPerBatch; flush++) {
      for (const turn of turns) {
        for (let i = 0; i < TOKENS_PER_FLUSH; i++) {
          turn.appendText(" token");
          turn.emit({ type: "token", delta: " token" });
        }
      }
      const started = performance.now();
      await flushAll(flushSql, turns);
      times.push(performance.now() - started);
    }
    for (const turn of turns) {
      turn.end({ state: "complete", messageStatus: "complete" }, []);
    }
    await flushAll(flushSql, turns);
  }
  // A backend publishes its table statistics at most once a second, or when asked to at the
  // end of its next transaction.
  await flushSql`select pg_stat_force_next_flush()`;
  await flushSql`select 1`;
  const after = await updateCounts(sql);
  times.sort((a, b) => a - b);
  return [{
    name: `agent: one flush of ${users.length} streaming turns (${TOKENS_PER_FLUSH} tokens each)`,
    value: percentile(times, 50),
    unit: "ms",
    detail: `p99 ${percentile(times, 99).toFixed(1)} ms, ${times.length} flushes; HOT updates: ` +
      `agent_turns ${hotShare(before, after, "agent_turns")}, chat_history ${
        hotShare(before, after, "chat_history")
      }`,
  }];
}

async function startTurns(sql: Sql, users: string[]): Promise<LiveTurn[]> {
  const turns: LiveTurn[] = [];
  for (const userId of users) {
    const turnId = crypto.randomUUID();
    const userMessageId = crypto.randomUUID();
    const assistantMessageId = crypto.randomUUID();
    const started = await startTurn(sql, userClaims(userId), {
      turnId,
      sessionId: crypto.randomUUID(),
      title: "flush bench",
      owner: OWNER,
      model: "openai/gpt-4o-mini",
      promptTokens: 0,
      completionTokens: 100,
      messages: [
        { id: userMessageId, role: "user", content: "What is (2+3)*4?", turn_id: turnId },
        {
          id: assistantMessageId,
          role: "assistant",
          content: "",
          status: "streaming",
          model: "openai/gpt-4o-mini",
          turn_id: turnId,
        },
      ],
    });
    if (started.kind !== "started") throw new Error(`turn not started: ${started.kind}`);
    turns.push(
      new LiveTurn({
        turnId: started.turnId,
        userId,
        sessionId: started.sessionId,
        assistantRowId: started.assistantRowId,
        assistantMessageId,
        userMessageId,
        model: "openai/gpt-4o-mini",
        reservedTokens: started.reservedTokens,
        reservedCostUsd: started.reservedCostUsd,
      }),
    );
  }
  return turns;
}

async function flushAll(sql: Sql, turns: LiveTurn[]): Promise<void> {
  const entries = turns.map((turn) => turn.takeFlush()).filter((entry) => entry !== undefined);
  const { owned } = await writeFlush(sql, OWNER, entries);
  if (owned.size !== entries.length) {
    throw new Error(`the flush kept ${owned.size} of ${entries.length} turns`);
  }
  for (const entry of entries) entry.turn.flushed(entry);
}

type UpdateCounts = Map<string, { updates: number; hot: number }>;

async function updateCounts(sql: Sql): Promise<UpdateCounts> {
  const rows = await sql<{ relname: string; updates: string; hot: string }[]>`
    select relname, n_tup_upd as updates, n_tup_hot_upd as hot
    from pg_stat_user_tables
    where schemaname = 'public' and relname in ('agent_turns', 'chat_history')`;
  return new Map(
    rows.map((row) => [row.relname, { updates: Number(row.updates), hot: Number(row.hot) }]),
  );
}

function hotShare(before: UpdateCounts, after: UpdateCounts, table: string): string {
  const updates = (after.get(table)?.updates ?? 0) - (before.get(table)?.updates ?? 0);
  const hot = (after.get(table)?.hot ?? 0) - (before.get(table)?.hot ?? 0);
  return updates === 0 ? "no updates seen" : `${Math.round((100 * hot) / updates)}% of ${updates}`;
}
