/**
 * append_messages: idempotent by client id, all or nothing, seq strictly increasing per
 * session even under concurrent appends.
 */
import assert from "node:assert/strict";
import {
  appendMessages,
  as,
  connectTestDatabase,
  createUser,
  message,
  sqlState,
} from "./support/database.ts";

Deno.test("the same client id twice is stored once, with the same seq", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const hello = message("hello");
    const [first] = await as(sql, user, (tx) => appendMessages(tx, sessionId, [hello], "Greeting"));
    const [again] = await as(sql, user, (tx) => appendMessages(tx, sessionId, [hello]));
    assert.equal(first.inserted, true);
    assert.equal(again.inserted, false);
    assert.deepEqual([again.id, again.seq, again.client_id], [first.id, first.seq, hello.id]);

    const rows = await sql`select seq from public.chat_history where session_id = ${sessionId}`;
    assert.equal(rows.length, 1);
    const [session] = await sql`select title, user_id from public.chat_sessions
                                where id = ${sessionId}`;
    assert.deepEqual([session.title, session.user_id], ["Greeting", user.id]);
  } finally {
    await sql.end();
  }
});

Deno.test("a batch is numbered in order and a retried batch keeps its numbers", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const batch = [message("one"), message("two", "assistant"), message("three")];
    const stored = await as(sql, user, (tx) => appendMessages(tx, sessionId, batch));
    assert.deepEqual(stored.map((r) => r.seq), [1, 2, 3]);
    assert.deepEqual(stored.map((r) => r.client_id), batch.map((m) => m.id));

    const mixed = [batch[1], message("four")];
    const retried = await as(sql, user, (tx) => appendMessages(tx, sessionId, mixed));
    assert.deepEqual(retried.map((r) => [r.seq, r.inserted]), [[2, false], [4, true]]);
  } finally {
    await sql.end();
  }
});

Deno.test("seq is strictly increasing and gap-free under concurrent appends", async () => {
  const writers = 40;
  const sql = connectTestDatabase(writers);
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    await as(sql, user, (tx) => appendMessages(tx, sessionId, [message("first")]));
    const results = await Promise.all(
      Array.from(
        { length: writers },
        (_, i) =>
          as(
            sql,
            user,
            (tx) => appendMessages(tx, sessionId, [message(`m${i}`), message(`n${i}`)]),
          ),
      ),
    );
    for (const [a, b] of results) assert.equal(b.seq, a.seq + 1, "a batch stays contiguous");

    const rows = await sql`select seq, created_at from public.chat_history
                           where session_id = ${sessionId} order by seq`;
    assert.deepEqual(
      rows.map((r) => r.seq),
      Array.from({ length: 2 * writers + 1 }, (_, i) => i + 1),
    );
  } finally {
    await sql.end();
  }
});

Deno.test("concurrent retries of one message store it once", async () => {
  const sql = connectTestDatabase(20);
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    await as(sql, user, (tx) => appendMessages(tx, sessionId, [message("first")]));
    const retried = message("retried");
    const results = await Promise.all(
      Array.from(
        { length: 20 },
        () => as(sql, user, (tx) => appendMessages(tx, sessionId, [retried])),
      ),
    );
    assert.equal(results.filter(([r]) => r.inserted).length, 1);
    assert.equal(new Set(results.map(([r]) => r.seq)).size, 1);
    const [{ count }] = await sql`select count(*)::int as count from public.chat_history
                                  where client_id = ${retried.id}`;
    assert.equal(count, 1);
  } finally {
    await sql.end();
  }
});

Deno.test("one invalid message stores nothing, not even the session", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const batch = [message("fine"), { ...message("bad"), role: "wizard" as never }];
    assert.equal(
      await sqlState(as(sql, user, (tx) => appendMessages(tx, sessionId, batch))),
      "22P02",
    );
    const [{ count }] = await sql`select count(*)::int as count from public.chat_sessions
                                  where id = ${sessionId}`;
    assert.equal(count, 0);

    const badId = [{ ...message("x"), id: "not-a-uuid" }];
    assert.equal(
      await sqlState(as(sql, user, (tx) => appendMessages(tx, sessionId, badId))),
      "22P02",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("batch errors carry stable codes", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql);
    const other = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const reused = message("reused");
    await as(sql, user, (tx) => appendMessages(tx, sessionId, [reused]));

    const cases: [string, Parameters<typeof appendMessages>[2], string?][] = [
      ["AG422", []],
      ["AG422", [reused, reused]],
      ["AG422", [{ role: "user", content: "no id" } as never]],
    ];
    for (const [code, batch] of cases) {
      assert.equal(
        await sqlState(as(sql, user, (tx) => appendMessages(tx, sessionId, batch))),
        code,
      );
    }
    const elsewhere = as(sql, user, (tx) => appendMessages(tx, crypto.randomUUID(), [reused]));
    assert.equal(await sqlState(elsewhere), "AG409", "a client id belongs to one session");
    const otherRole = as(
      sql,
      user,
      (tx) => appendMessages(tx, sessionId, [{ ...reused, role: "assistant" }]),
    );
    assert.equal(await sqlState(otherRole), "AG409");
    const foreign = as(sql, other, (tx) => appendMessages(tx, sessionId, [message("hi")]));
    assert.equal(await sqlState(foreign), "AG404", "another user's session does not exist for him");
  } finally {
    await sql.end();
  }
});

Deno.test("message content is full-text searchable", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    await as(
      sql,
      user,
      (tx) =>
        appendMessages(tx, sessionId, [
          message("The deployments were running smoothly"),
          message("Unrelated"),
        ]),
    );
    const hits = await as(sql, user, (tx) =>
      tx`
      select content from public.chat_history
      where content_search @@ websearch_to_tsquery('english', 'deployment run')`);
    assert.deepEqual(hits.map((h) => h.content), ["The deployments were running smoothly"]);
  } finally {
    await sql.end();
  }
});

Deno.test("a streaming answer is searchable once it stops streaming, not while it grows", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const answer = { ...message("The deployment", "assistant"), status: "streaming" as const };
    const [row] = await as(sql, user, (tx) => appendMessages(tx, sessionId, [answer]));
    const search = async () =>
      (await as(sql, user, (tx) =>
        tx`select content from public.chat_history
           where content_search @@ websearch_to_tsquery('english', 'deployment')`))
        .map((hit) => hit.content);
    // What the agent's flushes do while the answer streams.
    await sql`update public.chat_history set content = content || ' is running'
              where id = ${row.id}`;
    assert.deepEqual(await search(), []);
    await sql`update public.chat_history set status = 'complete' where id = ${row.id}`;
    assert.deepEqual(await search(), ["The deployment is running"]);
  } finally {
    await sql.end();
  }
});

Deno.test("a message belongs to its session's owner: no other user_id, gone with the user", async () => {
  const sql = connectTestDatabase();
  try {
    const owner = await createUser(sql);
    const sessionId = crypto.randomUUID();
    await as(sql, owner, (tx) => appendMessages(tx, sessionId, [message("a"), message("b")]));

    // Even the superuser cannot file a message under a user that is not the session's owner
    // (chat_history has no user_id key of its own; the (session_id, user_id) key does this).
    const stranger = crypto.randomUUID();
    const misfiled = sql`
      insert into public.chat_history (session_id, user_id, client_id, seq, role)
      values (${sessionId}, ${stranger}, ${crypto.randomUUID()}, 99, 'user')`;
    assert.equal(await sqlState(misfiled), "23503");

    await sql`delete from auth.users where id = ${owner.id}`;
    const [left] = await sql`
      select (select count(*)::int from public.chat_sessions where id = ${sessionId}) as sessions,
             (select count(*)::int from public.chat_history where session_id = ${sessionId})
               as messages`;
    assert.deepEqual({ ...left }, { sessions: 0, messages: 0 });
  } finally {
    await sql.end();
  }
});

Deno.test("a long session is numbered on from its highest seq, batch after batch", async () => {
  const sql = connectTestDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    // Another session of the same user interleaved: its numbers must not leak into this one.
    const otherSession = crypto.randomUUID();
    for (let batch = 0; batch < 5; batch++) {
      await as(sql, user, (tx) => appendMessages(tx, otherSession, [message("other")]));
      const stored = await as(
        sql,
        user,
        (tx) => appendMessages(tx, sessionId, Array.from({ length: 40 }, () => message("m"))),
      );
      assert.deepEqual(
        stored.map((row) => row.seq),
        Array.from({ length: 40 }, (_, i) => batch * 40 + i + 1),
      );
    }
  } finally {
    await sql.end();
  }
});

Deno.test("a session deleted while an append commits takes the new messages with it", async () => {
  const sql = connectTestDatabase();
  try {
    const owner = await createUser(sql);
    const sessionId = crypto.randomUUID();
    await as(sql, owner, (tx) => appendMessages(tx, sessionId, [message("first")]));

    // The append holds its transaction open; the delete must wait for it, then remove its rows.
    const appended = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const append = as(sql, owner, async (tx) => {
      await appendMessages(tx, sessionId, [message("second"), message("third")]);
      appended.resolve();
      await release.promise;
    });
    await appended.promise;
    let deleteDone = false;
    const remove = sql`delete from public.chat_sessions where id = ${sessionId}`
      .then(() => deleteDone = true);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(deleteDone, false, "the delete waits for the append's lock on the session");
    release.resolve();
    await append;
    await remove;
    const [{ count }] = await sql`
      select count(*)::int from public.chat_history where session_id = ${sessionId}`;
    assert.equal(count, 0, "no message outlives its session");
  } finally {
    await sql.end();
  }
});

Deno.test("a message cannot go into a session whose delete is under way, nor move", async () => {
  const sql = connectTestDatabase();
  try {
    const owner = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const otherSession = crypto.randomUUID();
    await as(sql, owner, (tx) => appendMessages(tx, sessionId, [message("a")]));
    await as(sql, owner, (tx) => appendMessages(tx, otherSession, [message("b")]));

    const deleted = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const remove = sql.begin(async (tx) => {
      await tx`delete from public.chat_sessions where id = ${sessionId}`;
      deleted.resolve();
      await release.promise;
    });
    await deleted.promise;
    const insert = sqlState(sql`
      insert into public.chat_history (session_id, user_id, client_id, seq, role)
      values (${sessionId}, ${owner.id}, ${crypto.randomUUID()}, 50, 'user')`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    release.resolve();
    await remove;
    assert.equal(await insert, "23503", "the insert waited for the delete, then found no session");

    const [other] =
      await sql`select id from public.chat_history where session_id = ${otherSession}`;
    const relocate = as(
      sql,
      owner,
      (tx) => tx`update public.chat_history set session_id = ${sessionId} where id = ${other.id}`,
    );
    assert.equal(await sqlState(relocate), "23503", "a message stays in its session");
    const rename = as(
      sql,
      owner,
      (tx) => tx`update public.chat_sessions set id = gen_random_uuid() where id = ${otherSession}`,
    );
    assert.equal(await sqlState(rename), "23503", "a session keeps its id");
  } finally {
    await sql.end();
  }
});
