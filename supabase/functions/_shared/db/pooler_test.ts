/**
 * The functions' pools behind a transaction pooler, as with `DATABASE_URL` on Supabase: a
 * PgBouncer of one server connection, so every client's transactions run on the connection
 * the previous transaction used, and anything a transaction leaves behind (a session `set`, a
 * prepared statement) is seen by the next. Under CI=true a missing pgbouncer fails this test
 * (`.ci/run` installs it); elsewhere it is skipped.
 */
import assert from "node:assert/strict";
import {
  findLeftovers,
  findPgBouncer,
  startPgBouncer,
} from "../../../../scripts/standin/pgbouncer.ts";
import {
  connectTestDatabase,
  createUser,
  testDatabaseUrl,
} from "../../../tests/support/database.ts";
import { asServiceRole, asUser, connect, connectTo, queryAsUser } from "./client.ts";
import { databaseConfigFromEnv } from "./config.ts";
import { inlineSql } from "./inline_sql.ts";

const ignore = Deno.env.get("CI") !== "true" && !(await findPgBouncer());

Deno.test({
  name: "through a transaction pooler, asUser's role and claims and no prepared statement " +
    "outlive the transaction",
  ignore,
  async fn() {
    const bouncer = await startPgBouncer({ upstreamUrl: testDatabaseUrl(), poolSize: 1 });
    const values: Record<string, string> = {
      SUPABASE_DB_URL: testDatabaseUrl(),
      DATABASE_URL: bouncer.url,
    };
    const database = databaseConfigFromEnv({ get: (name) => values[name] });
    const pool = connectTo(database, 2);
    const observer = connect(bouncer.url, { max: 1, transactionPooler: true });
    const setUp = connectTestDatabase(1);
    try {
      assert.equal(database.transactionPooler, true);
      const alice = await createUser(setUp, "pooler");
      const sessionId = crypto.randomUUID();
      const observe = async () => {
        const [row] = await observer`
          select pg_backend_pid() as pid, current_user::text as role,
            nullif(current_setting('request.jwt.claims', true), '') as claims,
            (select count(*)::int from pg_prepared_statements) as prepared`;
        return { ...row };
      };
      const clean = await observe();
      assert.deepEqual(
        { ...clean, pid: 0 },
        {
          pid: 0,
          role: decodeURIComponent(new URL(testDatabaseUrl()).username),
          claims: null,
          prepared: 0,
        },
      );

      // The function's transactions and the observer's alternate on the one server connection.
      const asAlice = () =>
        asUser(pool, alice.claims, async (tx) => {
          const [row] = await tx`
            select pg_backend_pid() as pid, auth.uid() as uid, current_user::text as role,
              (select count(*)::int from public.chat_history
               where user_id = ${alice.id} and session_id = ${sessionId}) as messages`;
          return { ...row };
        });
      const work = [
        asAlice,
        () => queryAsUser(pool, alice.claims, inlineSql`select auth.uid() as uid`),
        () => asServiceRole(pool, (tx) => tx`select ${alice.id}::uuid as uid`),
      ];
      const observations = await Promise.all(
        Array.from({ length: 12 }, (_, i) => i % 2 === 0 ? work[(i / 2) % 3]() : observe()),
      );
      for (const seen of observations.filter((_, i) => i % 2 === 1)) {
        assert.deepEqual(seen, clean, "what the pool's transactions left on the connection");
      }
      const inside = await asAlice();
      assert.deepEqual(inside, {
        pid: clean.pid,
        uid: alice.id,
        role: "authenticated",
        messages: 0,
      });
      assert.deepEqual(await observe(), clean);
      assert.deepEqual(await findLeftovers(bouncer.url, bouncer.poolSize), []);
    } finally {
      await Promise.all([pool.end(), observer.end(), setUp.end()]);
      await bouncer.stop();
    }
  },
});
