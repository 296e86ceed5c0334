import assert from "node:assert/strict";
import { connectFunctionDatabase, createUser, sqlState } from "../../../tests/support/database.ts";
import {
  asServiceRole,
  asUser,
  type JwtClaims,
  queryAsServiceRole,
  queryAsUser,
  reconnectBackoffSeconds,
} from "./client.ts";
import { inlineSql } from "./inline_sql.ts";

/** Claims with characters a hand-built SQL literal would get wrong. */
function awkwardClaims(sub: string): JwtClaims {
  return {
    sub,
    role: "authenticated",
    email: "o'brien\\@example.test",
    user_metadata: { name: `Robert'); drop table public.permissions; --`, quote: '"' },
  };
}

const WHO_AM_I = inlineSql`
  select current_user::text as role, auth.uid() as uid,
         current_setting('request.jwt.claims', true) as claims`;

Deno.test("queryAsUser runs the statement as the user, with his claims verbatim", async () => {
  const sql = connectFunctionDatabase(1);
  try {
    const user = await createUser(sql, "db");
    const claims = awkwardClaims(user.id);
    const [row] = await queryAsUser<{ role: string; uid: string; claims: string }>(
      sql,
      claims,
      WHO_AM_I,
    );
    assert.deepEqual({ ...row }, {
      role: "authenticated",
      uid: user.id,
      claims: JSON.stringify(claims),
    });

    // The settings end with the statement: the same connection is itself again afterwards.
    const [after] = await sql.unsafe(WHO_AM_I.text);
    assert.equal(after.role, "postgres");
    assert.ok(!after.claims, `claims leaked into the next statement: ${after.claims}`);
  } finally {
    await sql.end();
  }
});

Deno.test("queryAsUser: RLS decides, and users cannot write what only service_role may", async () => {
  const sql = connectFunctionDatabase(1);
  try {
    const alice = await createUser(sql, "alice");
    const bob = await createUser(sql, "bob");
    const ownersSeen = await queryAsUser<{ user_id: string }>(
      sql,
      alice.claims,
      inlineSql`select distinct user_id from public.permissions`,
    );
    assert.deepEqual(ownersSeen.map((row) => row.user_id), [alice.id]);

    const insertUsage = inlineSql`
      insert into public.usage_metrics (user_id, kind, name, status)
      values (${bob.id}, 'tool', 'calculator', 'ok')`;
    assert.equal(await sqlState(queryAsUser(sql, alice.claims, insertUsage)), "42501");
    await queryAsServiceRole(sql, insertUsage);
    const [{ count }] = await sql`
      select count(*)::int as count from public.usage_metrics where user_id = ${bob.id}`;
    assert.equal(count, 1);
  } finally {
    await sql.end();
  }
});

Deno.test("a role that cannot be set runs nothing, rather than running as the connection", async () => {
  const sql = connectFunctionDatabase(1);
  try {
    const user = await createUser(sql, "db");
    const sessionId = crypto.randomUUID();
    // As the connection's own (super)user this insert would succeed.
    const insertSession = inlineSql`
      insert into public.chat_sessions (id, user_id) values (${sessionId}, ${user.id})`;
    const bogus: JwtClaims = { sub: user.id, role: "no_such_role" };
    assert.equal(await sqlState(queryAsUser(sql, bogus, insertSession)), "22023");
    assert.equal(
      await sqlState(asUser(sql, bogus, (tx) => tx.unsafe(insertSession.text))),
      "22023",
    );
    const rows = await sql`select 1 from public.chat_sessions where id = ${sessionId}`;
    assert.equal(rows.length, 0);
  } finally {
    await sql.end();
  }
});

Deno.test("asUser and asServiceRole set the same role and claims as queryAsUser", async () => {
  const sql = connectFunctionDatabase(1);
  try {
    const user = await createUser(sql, "db");
    const claims = awkwardClaims(user.id);
    const [asHim] = await asUser(sql, claims, (tx) => tx.unsafe(WHO_AM_I.text));
    assert.deepEqual({ ...asHim }, {
      role: "authenticated",
      uid: user.id,
      claims: JSON.stringify(claims),
    });
    const [asService] = await asServiceRole(sql, (tx) => tx.unsafe(WHO_AM_I.text));
    assert.deepEqual({ ...asService }, {
      role: "service_role",
      uid: null,
      claims: JSON.stringify({ role: "service_role" }),
    });
    const [after] = await sql.unsafe(WHO_AM_I.text);
    assert.equal(after.role, "postgres");
  } finally {
    await sql.end();
  }
});

Deno.test("reconnect backoff: short and flat however many connects failed, so no query waits out a long one", () => {
  for (const failures of [0, 1, 5, 10, 50]) {
    const seconds = reconnectBackoffSeconds(failures);
    assert.ok(seconds >= 0.025 && seconds <= 0.05, `${failures} failures: ${seconds} s`);
  }
});
