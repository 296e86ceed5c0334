/**
 * account_refusal and caller_account_refusal (20261203000500_account_access.sql): a token
 * outlives its user's deletion, ban and sign-out, so the agent asks Auth's rows whether the
 * user may still act — as service_role for its sockets, as the user before a new turn.
 */
import assert from "node:assert/strict";
import { accountRefusals } from "../functions/_shared/account_access.ts";
import { asServiceRole, type JwtClaims, queryAsUser } from "../functions/_shared/db/client.ts";
import { inlineSql } from "../functions/_shared/db/inline_sql.ts";
import { connectTestDatabase, createUser, type TestUser } from "./support/database.ts";

async function signIn(sql: ReturnType<typeof connectTestDatabase>, user: TestUser) {
  const sessionId = crypto.randomUUID();
  await sql`insert into auth.sessions (id, user_id, created_at, updated_at, aal)
            values (${sessionId}, ${user.id}, now(), now(), 'aal1')`;
  return { sessionId, claims: { ...user.claims, session_id: sessionId } as JwtClaims };
}

Deno.test("account refusals: deleted, banned and signed-out users are told apart; others pass", async () => {
  const sql = connectTestDatabase(2);
  try {
    const [active, banned, softDeleted, deleted, signedOut, expired, sessionless] = await Promise
      .all(
        ["active", "banned", "soft", "deleted", "signed-out", "expired", "sessionless"].map((
          label,
        ) => createUser(sql, `access-${label}`)),
      );
    const sessions = new Map<string, string>();
    for (const user of [active, banned, softDeleted, deleted, signedOut, expired]) {
      sessions.set(user.id, (await signIn(sql, user)).sessionId);
    }
    await sql`update auth.users set banned_until = now() + interval '1 hour'
              where id = ${banned.id}`;
    await sql`update auth.users set deleted_at = now() where id = ${softDeleted.id}`;
    await sql`delete from auth.users where id = ${deleted.id}`;
    await sql`delete from auth.sessions where user_id = ${signedOut.id}`;
    await sql`update auth.sessions set not_after = now() - interval '1 second'
              where user_id = ${expired.id}`;
    // A ban that has run out is no ban.
    await sql`update auth.users set banned_until = now() - interval '1 second'
              where id = ${active.id}`;

    const accounts = [active, banned, softDeleted, deleted, signedOut, expired].map((user) => ({
      key: user.email,
      userId: user.id,
      sessionId: sessions.get(user.id),
    }));
    accounts.push({ key: sessionless.email, userId: sessionless.id, sessionId: undefined });
    const refusals = await asServiceRole(sql, (tx) => accountRefusals(tx, accounts));
    assert.deepEqual(
      Object.fromEntries(refusals),
      {
        [banned.email]: "user_banned",
        [softDeleted.email]: "user_deleted",
        [deleted.email]: "user_deleted",
        [signedOut.email]: "session_ended",
        [expired.email]: "session_ended",
      },
    );
  } finally {
    await sql.end();
  }
});

Deno.test("caller_account_refusal answers for the caller only, from his token's session", async () => {
  const sql = connectTestDatabase(2);
  try {
    const alice = await createUser(sql, "access-alice");
    const { claims } = await signIn(sql, alice);
    const ask = async (who: JwtClaims) =>
      (await queryAsUser<{ refusal: string | null }>(
        sql,
        who,
        inlineSql`select public.caller_account_refusal() as refusal`,
      ))[0].refusal;

    assert.equal(await ask(claims), null);
    assert.equal(await ask({ ...claims, session_id: crypto.randomUUID() }), "session_ended");
    assert.equal(await ask({ ...claims, session_id: "not-a-uuid" }), null, "no session named");
    await sql`update auth.users set banned_until = 'infinity' where id = ${alice.id}`;
    assert.equal(await ask(claims), "user_banned");
  } finally {
    await sql.end();
  }
});
