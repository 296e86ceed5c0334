/**
 * Database primitives the functions lean on: batched message append (target ≥ 20,000
 * rows/s), single-message append latency, atomic quota consumption under concurrency, and
 * what turning prepared statements off (as behind a transaction pooler) costs a transaction.
 */
import { asUser, connect, type Sql } from "../../supabase/functions/_shared/db/client.ts";
import {
  appendMessages,
  as,
  createUser,
  message,
  type TestUser,
} from "../../supabase/tests/support/database.ts";
import { measure } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

function appendMessagesAsUser(sql: Sql, user: TestUser, sessionId: string, count: number) {
  const batch = Array.from({ length: count }, (_, i) => message(`benchmark message ${i}`));
  return as(sql, user, (tx) => appendMessages(tx, sessionId, batch));
}

export async function databaseBench(ctx: BenchContext): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const user = await createUser(ctx.sql, "bench");
  const batchSize = 500;
  const batches = ctx.smoke ? 4 : 60;

  for (const concurrency of [1, 4]) {
    // One session per worker (appends to one session serialise on its row lock); batches are
    // built before the clock starts, as a client would have them ready.
    const sessions = Array.from({ length: concurrency }, () => crypto.randomUUID());
    const total = batches * concurrency;
    const bodies = Array.from(
      { length: total },
      (_, b) => Array.from({ length: batchSize }, (_, i) => message(`benchmark message ${b}.${i}`)),
    );
    let next = 0;
    const batchRun = await measure(total, concurrency, () => {
      const index = next++;
      return as(
        ctx.sql,
        user,
        (tx) => appendMessages(tx, sessions[index % concurrency], bodies[index]),
      );
    });
    const rowsPerSecond = batchRun.perSecond * batchSize;
    results.push({
      name: `append_messages, batches of ${batchSize}, ${concurrency} concurrent`,
      value: rowsPerSecond,
      unit: "rows/s",
      target: ">= 20000",
      pass: rowsPerSecond >= 20000,
      detail: `p50 ${batchRun.p50.toFixed(1)} ms per batch`,
    });
  }

  for (const concurrency of [1, 32]) {
    const perSession = Array.from({ length: concurrency }, () => crypto.randomUUID());
    let next = 0;
    const single = await measure(
      ctx.smoke ? 64 : 4000,
      concurrency,
      () => appendMessagesAsUser(ctx.sql, user, perSession[next++ % concurrency], 1),
    );
    results.push({
      name: `append_messages, one message, ${concurrency} concurrent`,
      value: single.perSecond,
      unit: "appends/s",
      detail: `p50 ${single.p50.toFixed(2)} ms, p99 ${single.p99.toFixed(2)} ms`,
    });
  }

  for (const concurrency of [1, 32]) {
    const quotaUser = await createUser(ctx.sql, "bench");
    const quota = await measure(
      ctx.smoke ? 64 : 5000,
      concurrency,
      () => ctx.sql`select * from public.consume_quota(${quotaUser.id}, 1)`,
    );
    results.push({
      name: `consume_quota, one user, ${concurrency} concurrent`,
      value: quota.perSecond,
      unit: "calls/s",
      detail: `p50 ${quota.p50.toFixed(2)} ms, p99 ${quota.p99.toFixed(2)} ms`,
    });
  }

  // The same transaction on a connection of one's own, with prepared statements on (direct,
  // SUPABASE_DB_URL) and off (as the functions run behind the pooler, DATABASE_URL).
  const sessionId = crypto.randomUUID();
  for (const transactionPooler of [false, true]) {
    const sql = connect(ctx.databaseUrl, { max: 1, transactionPooler });
    try {
      const run = await measure(
        ctx.smoke ? 32 : 3000,
        1,
        () =>
          asUser(sql, user.claims, async (tx) => {
            for (let i = 1; i <= 3; i++) {
              await tx`select id from public.chat_history
                     where user_id = ${user.id} and session_id = ${sessionId} limit ${i}`;
            }
          }),
      );
      results.push({
        name: `asUser with three parameterised selects, prepared statements ${
          transactionPooler ? "off (as through the pooler)" : "on (direct)"
        }`,
        value: run.p50,
        unit: "ms",
        detail: `p99 ${run.p99.toFixed(2)} ms, ${run.perSecond.toFixed(0)} transactions/s`,
      });
    } finally {
      await sql.end();
    }
  }
  return results;
}
