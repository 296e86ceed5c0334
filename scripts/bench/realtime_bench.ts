/**
 * Realtime: latency from an INSERT to the supabase-js postgres_changes callback, through the
 * local stand-in (logical decoding → batched RLS checks → WebSocket → client), with 10 and
 * 100 subscribers. Targets at 100 subscribers: p50 <= 20 ms, p99 <= 100 ms.
 *
 * Each subscriber is a different user listening to the whole `chat_sessions` table without
 * a filter, so every insert is checked against every subscriber's claims (RLS decides who
 * gets it: its owner). A second run has all subscribers belong to one user, so every insert
 * is delivered to all of them (fan-out). Clock: just before the INSERT is sent → callback,
 * all in this process; inserts are paced so the numbers are latency, not queueing.
 */
import type { SupabaseClient } from "@supabase/supabase-js";
import { createUser, type TestUser } from "../../supabase/tests/support/database.ts";
import {
  closeClient,
  realtimeClient,
  type RunningRealtime,
  startRealtime,
  subscribe,
} from "../../supabase/tests/support/realtime.ts";
import { percentile } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

interface Scenario {
  subscribers: number;
  /** One user for all subscribers (fan-out) or one user each (RLS decides). */
  sharedUser: boolean;
  inserts: number;
  intervalMs: number;
}

export async function realtimeBench(ctx: BenchContext): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const realtime = await startRealtime(ctx.databaseUrl);
  try {
    for (const subscribers of [10, 100]) {
      for (const sharedUser of [false, true]) {
        const scenario: Scenario = {
          subscribers,
          sharedUser,
          inserts: ctx.smoke ? 5 : sharedUser ? 100 : 300,
          intervalMs: ctx.smoke ? 50 : 20,
        };
        const latencies = await measureScenario(ctx, realtime, scenario);
        const p50 = percentile(latencies, 50);
        const p99 = percentile(latencies, 99);
        const label = `postgres_changes INSERT → callback, ${subscribers} subscribers, ${
          sharedUser ? "one user (fan-out to all)" : "one user each (RLS picks one)"
        }`;
        const targeted = subscribers === 100;
        const detail = `${latencies.length} callbacks, ${
          (1000 / scenario.intervalMs).toFixed(0)
        } inserts/s`;
        results.push({
          name: `${label}: p50`,
          value: p50,
          unit: "ms",
          target: targeted ? "<= 20" : undefined,
          pass: targeted ? p50 <= 20 : undefined,
          detail,
        });
        results.push({
          name: `${label}: p99`,
          value: p99,
          unit: "ms",
          target: targeted ? "<= 100" : undefined,
          pass: targeted ? p99 <= 100 : undefined,
          detail,
        });
      }
    }
  } finally {
    await realtime.stop();
  }
  return results;
}

/** Every callback's latency in ms, sorted. */
async function measureScenario(
  ctx: BenchContext,
  realtime: RunningRealtime,
  scenario: Scenario,
): Promise<number[]> {
  const users: TestUser[] = [];
  const userCount = scenario.sharedUser ? 1 : scenario.subscribers;
  for (let i = 0; i < userCount; i++) users.push(await createUser(ctx.sql, "bench-rt"));

  const run = crypto.randomUUID().slice(0, 8);
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  const expected = scenario.inserts * (scenario.sharedUser ? scenario.subscribers : 1);
  const done = Promise.withResolvers<void>();
  const clients: SupabaseClient[] = [];
  try {
    const tokens = await Promise.all(users.map((user) => realtime.tokenFor(user.id)));
    for (let i = 0; i < scenario.subscribers; i++) {
      const client = await realtimeClient(realtime.url, { token: tokens[i % tokens.length] });
      clients.push(client);
      await subscribe(
        client.channel(`bench-${run}-${i}`).on(
          "postgres_changes",
          { event: "INSERT", schema: "public", table: "chat_sessions" },
          (change) => {
            const started = sentAt.get(String(change.new.title));
            if (started === undefined) return; // another scenario's row
            latencies.push(performance.now() - started);
            if (latencies.length === expected) done.resolve();
          },
        ),
      );
    }

    const begin = performance.now();
    for (let i = 0; i < scenario.inserts; i++) {
      const due = begin + i * scenario.intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const title = `${run}:${i}`;
      const owner = users[i % users.length];
      sentAt.set(title, performance.now());
      await ctx
        .sql`insert into public.chat_sessions (user_id, title) values (${owner.id}, ${title})`;
    }
    const timeout = setTimeout(
      () => done.reject(new Error(`only ${latencies.length} of ${expected} callbacks arrived`)),
      60_000,
    );
    try {
      await done.promise;
    } finally {
      clearTimeout(timeout);
    }
  } finally {
    for (const client of clients) await closeClient(client);
  }
  return latencies.sort((a, b) => a - b);
}
