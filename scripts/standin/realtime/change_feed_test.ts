import assert from "node:assert/strict";
import { connectTestDatabase, testDatabaseUrl } from "../../../supabase/tests/support/database.ts";
import type { Sql } from "../../../supabase/functions/_shared/db/client.ts";
import { Catalog, openRealtimePool } from "./catalog.ts";
import { type Change, startChangeFeed } from "./change_feed.ts";
import { changeData } from "./change_payload.ts";
import { Inbox } from "../../../supabase/tests/support/realtime.ts";

interface FeedContext {
  sql: Sql;
  /** The test's own table, in a publication of its own: no other test's writes show up. */
  table: string;
  changes: Inbox<Change>;
  statuses: Inbox<string>;
  catalog: Catalog;
}

async function withFeed(work: (context: FeedContext) => Promise<void>) {
  const suffix = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
  const table = `feed_probe_${suffix}`;
  const publication = `feed_test_${suffix}`;
  const sql = connectTestDatabase(3);
  await sql.unsafe(`
    create table public.${table} (id int primary key, note text, big text);
    create publication ${publication} for table public.${table};`);
  const pool = openRealtimePool(testDatabaseUrl(), 2);
  const catalog = new Catalog(pool, publication);
  const changes = new Inbox<Change>();
  const statuses = new Inbox<string>();
  try {
    const feed = await startChangeFeed({
      databaseUrl: testDatabaseUrl(),
      publication,
      catalog,
      onChanges: (batch) => {
        for (const change of batch) changes.push(change);
        return Promise.resolve();
      },
      onStatus: (status) => statuses.push(status),
    });
    try {
      await work({ sql, table, changes, statuses, catalog });
    } finally {
      await feed.close();
    }
  } finally {
    await pool.end();
    await sql.unsafe(`drop publication ${publication}; drop table public.${table};`);
    await sql.end();
  }
}

const rowOf = (change: Change, which: "newRow" | "oldRow") =>
  Object.fromEntries(change[which] ?? []);

Deno.test("change feed: delivers in commit order, never what rolled back", async () => {
  await withFeed(async ({ sql, table, changes }) => {
    const first = await sql.reserve();
    const second = await sql.reserve();
    try {
      await first.unsafe(
        `begin; insert into public.${table} (id, note) values (1, 'started first')`,
      );
      await second.unsafe(
        `begin; insert into public.${table} (id, note) values (2, 'committed first')`,
      );
      await second.unsafe("commit");
      await first.unsafe("commit");
      await first.unsafe(`begin; insert into public.${table} (id, note) values (3, 'rolled back')`);
      await first.unsafe("rollback");
      await sql.unsafe(`insert into public.${table} (id, note) values (4, 'last')`);
    } finally {
      first.release();
      second.release();
    }
    await changes.waitFor(
      (items) => items.some((change) => change.newRow?.get("id") === "4"),
      "the last insert",
    );
    assert.deepEqual(changes.items.map((change) => change.newRow?.get("id")), ["2", "1", "4"]);
    assert.ok(changes.items.every((change) => change.type === "INSERT"));
    const stamps = changes.items.map((change) => Date.parse(change.commitTimestamp));
    assert.ok(stamps[0] <= stamps[1] && stamps[1] <= stamps[2]);
  });
});

Deno.test("change feed: one transaction's changes share its commit timestamp and xid", async () => {
  await withFeed(async ({ sql, table, changes }) => {
    await sql.begin(async (tx) => {
      await tx.unsafe(`insert into public.${table} (id) values (1), (2)`);
      await tx.unsafe(`delete from public.${table} where id = 1`);
    });
    const items = await changes.waitForCount(3, "three changes");
    assert.deepEqual(items.map((change) => change.type), ["INSERT", "INSERT", "DELETE"]);
    assert.equal(new Set(items.map((change) => change.commitTimestamp)).size, 1);
    assert.equal(new Set(items.map((change) => change.xid)).size, 1);
    assert.deepEqual(rowOf(items[2], "oldRow"), { id: "1" });
  });
});

Deno.test("change feed: old rows follow the replica identity; unchanged TOAST is left out", async () => {
  await withFeed(async ({ sql, table, changes, catalog }) => {
    // Incompressible text above the TOAST threshold, stored out of line.
    const big = Array.from({ length: 3000 }, () => Math.random().toString(36).slice(2, 4)).join("");
    await sql.unsafe(`insert into public.${table} values (1, 'a', $1)`, [big]);
    await sql.unsafe(`update public.${table} set note = 'b' where id = 1`);
    await sql.unsafe(`update public.${table} set id = 10 where id = 1`);
    await sql.unsafe(`alter table public.${table} replica identity full`);
    await sql.unsafe(`update public.${table} set note = 'c' where id = 10`);
    await sql.unsafe(`delete from public.${table} where id = 10`);
    const [insert, update, rekey, full, removal] = await changes.waitForCount(5, "five changes");

    assert.equal(insert.newRow?.get("big"), big);
    // Default identity, key unchanged: no old tuple in the WAL, the key is the new row's.
    assert.deepEqual(rowOf(update, "oldRow"), { id: "1" });
    assert.equal(update.newRow?.get("note"), "b");
    assert.ok(update.newRow?.has("big") && update.newRow.get("big") === undefined);
    // Key changed: the WAL logs the old key.
    assert.deepEqual(rowOf(rekey, "oldRow"), { id: "1" });
    // REPLICA IDENTITY FULL: the whole old row, TOASTed value included.
    assert.deepEqual(rowOf(full, "oldRow"), { id: "10", note: "b", big });
    assert.deepEqual(rowOf(removal, "oldRow"), { id: "10", note: "c", big });

    // The payload leaves the unchanged TOASTed value out of `record`, or takes it from the
    // full old row when the WAL has one.
    const columns = new Set(["id", "note", "big"]);
    const lookup = (oid: number) => catalog.type(oid);
    const payload = changeData(update, columns, lookup) as { record: Record<string, unknown> };
    assert.deepEqual(payload.record, { id: 1, note: "b" });
    const fullPayload = changeData(full, columns, lookup) as { record: Record<string, unknown> };
    assert.deepEqual(fullPayload.record, { id: 10, note: "c", big });
  });
});

Deno.test("change feed: a lost replication connection is re-established and says so", async () => {
  await withFeed(async ({ sql, table, changes, statuses }) => {
    await sql.unsafe(`insert into public.${table} (id) values (1)`);
    await changes.waitForCount(1, "the first insert");
    const [{ terminated }] = await sql<{ terminated: boolean }[]>`
      select bool_or(pg_terminate_backend(pid)) as terminated from pg_stat_activity
      where application_name = 'local-realtime-feed' and datname = current_database()`;
    assert.equal(terminated, true);
    await statuses.waitFor((items) => items.includes("up"), "the feed to come back");
    assert.deepEqual(statuses.items, ["down", "up"]);
    await sql.unsafe(`insert into public.${table} (id) values (2)`);
    await changes.waitForCount(2, "an insert after the reconnect");
    assert.deepEqual(changes.items.map((change) => change.newRow?.get("id")), ["1", "2"]);
  });
});
