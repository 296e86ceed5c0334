/**
 * The `history` function over HTTP: one-message POST latency, and batched append throughput
 * with 500-message POSTs (target ≥ 20,000 rows/s). The function's own entry point runs in a
 * process of its own, as an isolate on Supabase would, with a local JWKS; every number
 * includes the HTTP round trip, token verification, body reading, validation and the
 * transaction. The client is this process (on the same two cores).
 */
import { parseAppendInput } from "../../supabase/functions/_shared/history/input.ts";
import { startFunctionWorker } from "../standin/function_workers.ts";
import { createUser, liftRequestLimits, message } from "../../supabase/tests/support/database.ts";
import { generateSigningKey, issueAccessToken, jwksOf } from "../standin/signing_keys.ts";
import { measure } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

const BATCH_SIZE = 500;
const ROWS_PER_SECOND_TARGET = 20_000;

export async function historyBench(ctx: BenchContext): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const key = await generateSigningKey();
  const worker = await startFunctionWorker({
    name: "history",
    env: {
      SUPABASE_DB_URL: ctx.databaseUrl,
      HISTORY_DB_POOL_SIZE: String(ctx.pools.history),
      SUPABASE_JWKS: JSON.stringify(jwksOf(key)),
      SUPABASE_URL: "http://127.0.0.1",
    },
  });
  const url = `${worker.origin}/history/messages`;
  try {
    const user = await createUser(ctx.sql, "bench");
    // The benchmark measures the server, not the caller's quota.
    await liftRequestLimits(ctx.sql, user.id);
    const token = await issueAccessToken(key, {
      userId: user.id,
      email: user.email,
      issuer: "http://127.0.0.1/auth/v1",
    });
    const post = async (body: string) => {
      const response = await fetch(url, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body,
      });
      const text = await response.text();
      if (response.status !== 201) {
        throw new Error(`POST /history/messages answered ${response.status}: ${text}`);
      }
    };
    // Bodies are built before the clock starts: their cost is the client's, not the server's.
    const bodies = (count: number, size: number, sessions: string[]) =>
      Array.from({ length: count }, (_, i) =>
        JSON.stringify({
          session_id: sessions[i % sessions.length],
          messages: Array.from({ length: size }, (_, j) => message(`benchmark message ${i}.${j}`)),
        }));

    await post(bodies(1, 1, [crypto.randomUUID()])[0]); // connections and JIT warm

    for (const concurrency of [1, 32]) {
      const total = ctx.smoke ? 32 : concurrency === 1 ? 2000 : 4000;
      const sessions = Array.from({ length: concurrency }, () => crypto.randomUUID());
      const singles = bodies(total, 1, sessions);
      let next = 0;
      const single = await measure(total, concurrency, () => post(singles[next++]));
      results.push({
        name: `POST /history/messages, one message, ${concurrency} concurrent`,
        value: single.perSecond,
        unit: "requests/s",
        detail: `p50 ${single.p50.toFixed(2)} ms, p99 ${single.p99.toFixed(2)} ms`,
      });
    }

    for (const concurrency of [1, 4]) {
      const batches = ctx.smoke ? 4 : concurrency * 30;
      // One session per worker: appends to one session serialise on its row lock.
      const sessions = Array.from({ length: concurrency }, () => crypto.randomUUID());
      const batchBodies = bodies(batches, BATCH_SIZE, sessions);
      let next = 0;
      const run = await measure(batches, concurrency, () => post(batchBodies[next++]));
      const rowsPerSecond = run.perSecond * BATCH_SIZE;
      results.push({
        name: `POST /history/messages, batches of ${BATCH_SIZE}, ${concurrency} concurrent`,
        value: rowsPerSecond,
        unit: "rows/s",
        target: `>= ${ROWS_PER_SECOND_TARGET}`,
        pass: rowsPerSecond >= ROWS_PER_SECOND_TARGET,
        detail: `p50 ${run.p50.toFixed(1)} ms, p99 ${run.p99.toFixed(1)} ms per batch`,
      });
    }

    // Where a batch's time goes outside the database: parsing and validating its body.
    const sample = bodies(1, BATCH_SIZE, [crypto.randomUUID()])[0];
    const validation = await measure(ctx.smoke ? 4 : 200, 1, () => {
      const parsed = parseAppendInput(JSON.parse(sample));
      if (!parsed.ok) throw new Error(parsed.message);
      return Promise.resolve();
    });
    results.push({
      name: `JSON.parse + zod validation of one ${BATCH_SIZE}-message body`,
      value: validation.p50,
      unit: "ms",
      detail: `p99 ${validation.p99.toFixed(2)} ms`,
    });
  } finally {
    await worker.stop();
  }
  return results;
}
