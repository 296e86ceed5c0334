import assert from "node:assert/strict";
import {
  connectTestDatabase,
  createUser,
  testDatabaseUrl,
  type TestUser,
} from "../../../supabase/tests/support/database.ts";
import { createAuthorizer, type VisibilityCheck } from "./authorize.ts";
import { Catalog, openRealtimePool, type TableInfo } from "./catalog.ts";

async function withAuthorizer(
  work: (context: {
    sessions: TableInfo;
    users: TestUser[];
    rows: { id: string; owner: number }[];
    visible(checks: VisibilityCheck[]): Promise<boolean[]>;
  }) => Promise<void>,
) {
  const sql = connectTestDatabase(2);
  const pool = openRealtimePool(testDatabaseUrl(), 2);
  const authorizer = createAuthorizer(pool);
  try {
    const catalog = new Catalog(pool, "supabase_realtime");
    const published = await catalog.publishedTables();
    const sessions = await catalog.table(
      published.find((table) => table.table === "chat_sessions")!.oid,
    );
    const users = [
      await createUser(sql, "authz-a"),
      await createUser(sql, "authz-b"),
      await createUser(sql, "authz-c"),
    ];
    const rows: { id: string; owner: number }[] = [];
    for (let i = 0; i < 9; i++) {
      const [row] = await sql<{ id: string }[]>`
        insert into public.chat_sessions (user_id, title) values (${users[i % 3].id}, 'authz')
        returning id`;
      rows.push({ id: row.id, owner: i % 3 });
    }
    await work({
      sessions: sessions!,
      users,
      rows,
      visible: (checks) => authorizer.visible(checks),
    });
  } finally {
    await authorizer.close();
    await pool.end();
    await sql.end();
  }
}

Deno.test("authorize: RLS answers per claims set, in the order asked, across a batch", async () => {
  await withAuthorizer(async ({ sessions, users, rows, visible }) => {
    const checks: VisibilityCheck[] = [];
    const expected: boolean[] = [];
    // Interleaved on purpose: the authorizer regroups by claims and must map answers back.
    for (const row of rows) {
      for (const [index, user] of users.entries()) {
        checks.push({
          table: sessions,
          key: [row.id],
          role: "authenticated",
          claims: JSON.stringify(user.claims),
        });
        expected.push(row.owner === index);
      }
      checks.push({ table: sessions, key: [row.id], role: "service_role", claims: "{}" });
      expected.push(true);
    }
    checks.push({
      table: sessions,
      key: [crypto.randomUUID()],
      role: "service_role",
      claims: "{}",
    });
    expected.push(false); // no such row
    assert.deepEqual(await visible(checks), expected);
  });
});

Deno.test("authorize: claims that make a policy fail cost only their own subscriber", async () => {
  await withAuthorizer(async ({ sessions, users, rows, visible }) => {
    const broken = JSON.stringify({ role: "authenticated", sub: "not-a-uuid" });
    const checks: VisibilityCheck[] = [
      { table: sessions, key: [rows[0].id], role: "authenticated", claims: broken },
      {
        table: sessions,
        key: [rows[0].id],
        role: "authenticated",
        claims: JSON.stringify(users[0].claims),
      },
    ];
    const errors: unknown[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => errors.push(args);
    try {
      assert.deepEqual(await visible(checks), [false, true]);
    } finally {
      console.error = original;
    }
    assert.equal(errors.length, 1);
  });
});
