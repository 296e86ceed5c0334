/**
 * Load: about 1,000 inserts per second for 10 seconds, rows spread over 10 users, 50
 * supabase-js subscribers (5 sockets per user) listening to the whole table without a
 * filter, so RLS alone decides who sees what. Every subscriber must receive every row it
 * may see exactly once, in commit order, and nothing else.
 *
 * Inserts come from a separate pool, one writer per user, so a user's rows commit in the
 * order the writer numbered them: that number is the order each subscriber must see.
 * Nothing here asserts on timing; the pace is only the load, and the final wait is long.
 */
import assert from "node:assert/strict";
import {
  connectTestDatabase,
  createUser,
  testDatabaseUrl,
  type TestUser,
} from "../../../supabase/tests/support/database.ts";
import {
  closeClient,
  Inbox,
  realtimeClient,
  startRealtime,
  subscribe,
} from "../../../supabase/tests/support/realtime.ts";

const USERS = 10;
const SUBSCRIBERS_PER_USER = 5;
const RATE_PER_SECOND = 1_000;
const SECONDS = 10;
const ROWS_PER_USER = (RATE_PER_SECOND * SECONDS) / USERS;

interface Received {
  title: string;
  userId: string;
  commitTimestamp: string;
}

Deno.test("load: 1,000 inserts/s for 10 s, 50 subscribers, each row exactly once in commit order", async () => {
  const setup = connectTestDatabase(2);
  const writers = connectTestDatabase(USERS);
  const realtime = await startRealtime(testDatabaseUrl());
  const clients = [];
  try {
    const users: TestUser[] = [];
    for (let i = 0; i < USERS; i++) users.push(await createUser(setup, `load${i}`));
    const run = crypto.randomUUID().slice(0, 8);

    const subscribers: { user: TestUser; inbox: Inbox<Received> }[] = [];
    for (const user of users) {
      const token = await realtime.tokenFor(user.id);
      for (let i = 0; i < SUBSCRIBERS_PER_USER; i++) {
        const client = await realtimeClient(realtime.url, { token });
        clients.push(client);
        const inbox = new Inbox<Received>();
        await subscribe(
          client.channel(`load-${i}`).on(
            "postgres_changes",
            { event: "INSERT", schema: "public", table: "chat_sessions" },
            (change) =>
              inbox.push({
                title: String(change.new.title),
                userId: String(change.new.user_id),
                commitTimestamp: change.commit_timestamp,
              }),
          ),
        );
        subscribers.push({ user, inbox });
      }
    }

    const started = performance.now();
    await Promise.all(users.map(async (user, writer) => {
      for (let i = 0; i < ROWS_PER_USER; i++) {
        // Writers interleave: writer w's row i is due at (i * USERS + w) / RATE seconds.
        const due = started + ((i * USERS + writer) * 1000) / RATE_PER_SECOND;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        await writers`insert into public.chat_sessions (user_id, title)
                      values (${user.id}, ${`${run}:${i}`})`;
      }
    }));
    const insertSeconds = (performance.now() - started) / 1000;

    for (const { inbox } of subscribers) {
      await inbox.waitFor(
        (items) => items.length >= ROWS_PER_USER,
        `${ROWS_PER_USER} rows at a subscriber`,
        120_000,
      );
    }
    const deliveredSeconds = (performance.now() - started) / 1000;

    // A last row per user: delivery follows commit order, so once it is in, any duplicate or
    // stray row sent before it is in too.
    for (const user of users) {
      await writers`insert into public.chat_sessions (user_id, title) values (${user.id}, ${`${run}:end`})`;
    }
    for (const { inbox } of subscribers) {
      await inbox.waitFor(
        (items) => items.some((item) => item.title === `${run}:end`),
        "the closing row",
        60_000,
      );
    }

    const expected = [
      ...Array.from({ length: ROWS_PER_USER }, (_, i) => `${run}:${i}`),
      `${run}:end`,
    ];
    for (const { user, inbox } of subscribers) {
      const items = inbox.items;
      assert.ok(items.every((item) => item.userId === user.id), "only the user's own rows");
      assert.deepEqual(items.map((item) => item.title), expected);
      const stamps = items.map((item) => Date.parse(item.commitTimestamp));
      assert.ok(stamps.every((stamp, i) => i === 0 || stamp >= stamps[i - 1]), "commit order");
    }
    console.log(
      `${USERS * ROWS_PER_USER} inserts in ${insertSeconds.toFixed(1)} s ` +
        `(${((USERS * ROWS_PER_USER) / insertSeconds).toFixed(0)}/s); all ${subscribers.length} ` +
        `subscribers complete after ${deliveredSeconds.toFixed(1)} s`,
    );
  } finally {
    for (const client of clients) await closeClient(client);
    await realtime.stop();
    await writers.end();
    await setup.end();
  }
});
