/**
 * The PgBouncer stand-in: it pools in transaction mode, takes only the database URL's login,
 * and `findLeftovers` sees what a session leaves on a server connection. Under CI=true a
 * missing pgbouncer fails these tests (`.ci/run` installs it); elsewhere they are skipped.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { testDatabaseUrl } from "../../supabase/tests/support/database.ts";
import { findLeftovers, findPgBouncer, startPgBouncer } from "./pgbouncer.ts";

const ignore = Deno.env.get("CI") !== "true" && !(await findPgBouncer());

Deno.test({
  name: "pgbouncer: one server connection serves two clients, and leftovers are found",
  ignore,
  async fn() {
    const bouncer = await startPgBouncer({ upstreamUrl: testDatabaseUrl(), poolSize: 1 });
    const first = postgres(bouncer.url, { max: 1, onnotice: () => {} });
    const second = postgres(bouncer.url, { max: 1, prepare: false, onnotice: () => {} });
    try {
      assert.deepEqual(await findLeftovers(bouncer.url, bouncer.poolSize), []);
      const [a] = await first`select pg_backend_pid() as pid`;
      const [b] = await second`select pg_backend_pid() as pid`;
      assert.equal(a.pid, b.pid, "two clients, one server connection: transaction pooling");

      // Everything a transaction pooler does not clean up: the first client's session state
      // shows in the second client's transactions.
      await first`select ${1}::int as prepared_by_name`; // prepare: true, postgres.js default
      await first.unsafe(`set request.jwt.claims = '{"sub":"leaked"}'`);
      await first.unsafe(`set statement_timeout = 12345`);
      await first.unsafe(`set role anon`);
      await first.unsafe(`listen leaked_channel`);
      await first.unsafe(`create temporary table leaked_table (id int)`);
      await first.unsafe(`select pg_advisory_lock(4242)`);
      const found = (await findLeftovers(bouncer.url, bouncer.poolSize)).join("\n");
      for (
        const expected of [
          "role is anon",
          `request.jwt.claims = {"sub":"leaked"}`,
          "prepared statements",
          "listening on leaked_channel",
          "temporary tables leaked_table",
          "1 advisory lock(s) held",
          "statement_timeout=12345",
        ]
      ) {
        assert.ok(found.includes(expected), `"${expected}" not found in:\n${found}`);
      }
    } finally {
      await Promise.all([first.end(), second.end()]);
      await bouncer.stop();
    }
    await assert.rejects(postgres(bouncer.url, { max: 1 })`select 1`, "stopped means closed");
  },
});

Deno.test({
  name: "pgbouncer: a wrong password is refused",
  ignore,
  async fn() {
    const bouncer = await startPgBouncer({ upstreamUrl: testDatabaseUrl(), poolSize: 1 });
    const url = new URL(bouncer.url);
    url.password = "not-the-password";
    const sql = postgres(url.href, { max: 1, onnotice: () => {} });
    try {
      await assert.rejects(sql`select 1`, /SASL authentication failed/);
    } finally {
      await sql.end();
      await bouncer.stop();
    }
  },
});
