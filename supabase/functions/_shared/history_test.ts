/**
 * The history module against a real database, as the calling user (RLS on): idempotent and
 * atomic appends, keyset pagination, ranked search, deletes, and error values with codes.
 */
import assert from "node:assert/strict";
import {
  as,
  connectFunctionDatabase,
  createUser,
  message,
  type TestUser,
} from "../../tests/support/database.ts";
import type { Sql } from "./db/client.ts";
import { fieldPath } from "./field_path.ts";
import { appendMessages } from "./history/append.ts";
import type { AppendInput } from "./history/input.ts";
import type { HistoryResult, SessionSummary } from "./history/protocol.ts";
import { searchMessages } from "./history/search.ts";
import { deleteSession, listMessages, listSessions } from "./history/sessions.ts";

function ok<T>(result: HistoryResult<T>): T {
  if (!result.ok) {
    assert.fail(`expected success, got ${result.code}: ${result.message}`);
  }
  return result.value;
}

function append(sql: Sql, user: TestUser, input: AppendInput) {
  return as(sql, user, (tx) => appendMessages(tx, input));
}

async function countRows(sql: Sql, table: string, column: string, value: string) {
  const [{ count }] = await sql`select count(*)::int as count from ${sql("public." + table)}
                                where ${sql(column)} = ${value}`;
  return count as number;
}

Deno.test("fieldPath writes zod paths the way a client reads them", () => {
  assert.equal(fieldPath(["messages", 3, "role"]), "messages[3].role");
  assert.equal(fieldPath(["limit"]), "limit");
  assert.equal(fieldPath([]), "");
});

Deno.test("appendMessages stores a batch in order and a retry gets the same seqs", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const batch = [message("one"), message("two", "assistant"), message("three")];
    const first = ok(await append(sql, user, { messages: batch, title: "Counting" }));
    assert.equal(first.inserted, true);
    assert.deepEqual(first.messages.map((m) => [m.id, m.seq, m.inserted]), [
      [batch[0].id, 1, true],
      [batch[1].id, 2, true],
      [batch[2].id, 3, true],
    ]);

    // No session_id on the retry either: it must find the session its first attempt made.
    const retry = ok(await append(sql, user, { messages: batch }));
    assert.equal(retry.session_id, first.session_id);
    assert.equal(retry.inserted, false);
    assert.deepEqual(
      retry.messages.map((m) => [m.id, m.row_id, m.seq]),
      first.messages.map((m) => [m.id, m.row_id, m.seq]),
    );
    assert.equal(await countRows(sql, "chat_history", "session_id", first.session_id), 3);
    const [session] = await sql`select title, user_id from public.chat_sessions
                                where id = ${first.session_id}`;
    assert.deepEqual([session.title, session.user_id], ["Counting", user.id]);
  } finally {
    await sql.end();
  }
});

Deno.test("concurrent retries without a session id store the batch once", async () => {
  const sql = connectFunctionDatabase(12);
  try {
    const user = await createUser(sql);
    const batch = [message("hello"), message("there")];
    const results = await Promise.all(
      Array.from({ length: 10 }, () => append(sql, user, { messages: batch })),
    );
    const values = results.map(ok);
    assert.equal(new Set(values.map((v) => v.session_id)).size, 1, "one session for all");
    assert.equal(values.filter((v) => v.inserted).length, 1, "one attempt stored it");
    for (const value of values) {
      assert.deepEqual(value.messages.map((m) => m.seq), [1, 2]);
    }
    const [{ sessions }] = await sql`select count(*)::int as sessions from public.chat_sessions
                                     where user_id = ${user.id}`;
    assert.equal(sessions, 1, "the losing attempts left no session behind");
  } finally {
    await sql.end();
  }
});

Deno.test("tool calls and optional fields are stored, null ones as SQL NULL", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const toolCalls = [{ id: "call_1", name: "calculator", arguments: { expression: "1+1" } }];
    const turnId = crypto.randomUUID();
    const assistant = {
      ...message("", "assistant"),
      tool_calls: toolCalls,
      model: "test-model",
      status: "streaming" as const,
      turn_id: turnId,
    };
    const tool = { ...message("2", "tool"), tool_call_id: "call_1", tool_calls: null };
    const { session_id } = ok(await append(sql, user, { messages: [assistant, tool] }));
    const page = ok(await as(sql, user, (tx) => listMessages(tx, session_id)));
    const [a, t] = page.messages;
    assert.deepEqual(
      [a.id, a.role, a.tool_calls, a.model, a.status, a.turn_id, a.tool_call_id],
      [assistant.id, "assistant", toolCalls, "test-model", "streaming", turnId, null],
    );
    assert.deepEqual(
      [t.id, t.role, t.content, t.tool_calls, t.tool_call_id, t.status],
      [tool.id, "tool", "2", null, "call_1", "complete"],
    );
  } finally {
    await sql.end();
  }
});

Deno.test("invalid batches are error values naming the field, and store nothing", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const repeated = message("twice");
    const cases: [AppendInput, string][] = [
      [{
        session_id: sessionId,
        messages: [message("ok"), { ...message("x"), role: "x" as never }],
      }, "messages[1].role"],
      [{ session_id: sessionId, messages: [{ ...message("x"), id: "nope" }] }, "messages[0].id"],
      [{ session_id: sessionId, messages: [repeated, { ...repeated }] }, "messages[1].id"],
      [{ session_id: sessionId, messages: [message("nul \u0000")] }, "messages[0].content"],
      [{ session_id: sessionId, messages: [] }, "messages"],
      [{
        session_id: sessionId,
        messages: Array.from({ length: 501 }, () => message("m")),
      }, "messages"],
      [{ session_id: sessionId, title: "t".repeat(201), messages: [message("x")] }, "title"],
      [{ session_id: "not-a-uuid", messages: [message("x")] }, "session_id"],
    ];
    for (const [input, path] of cases) {
      const result = await append(sql, user, input);
      assert.equal(result.ok, false, path);
      if (result.ok) continue;
      assert.deepEqual([result.code, result.path], ["invalid_request", path]);
      assert.match(result.message, new RegExp(`^${path.replace(/[[\]]/g, "\\$&")}: `));
    }
    // 200 emoji are 400 UTF-16 units but 200 characters: the limit counts characters.
    const emojiTitle = "😀".repeat(200);
    ok(await append(sql, user, { title: emojiTitle, messages: [message("fine")] }));
    assert.equal(await countRows(sql, "chat_sessions", "id", sessionId), 0);
  } finally {
    await sql.end();
  }
});

Deno.test("a reused client id is a conflict; the caller's transaction stays usable", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const reused = message("mine");
    const { session_id } = ok(await append(sql, user, { messages: [reused] }));
    const elsewhere = crypto.randomUUID();
    const after = await as(sql, user, async (tx) => {
      const result = await appendMessages(tx, {
        session_id: elsewhere,
        messages: [message("new"), reused],
      });
      // The failed append must not poison the transaction it ran in.
      const [{ n }] = await tx`select count(*)::int as n from public.chat_history`;
      return { result, n };
    });
    assert.equal(after.result.ok, false);
    if (!after.result.ok) assert.equal(after.result.code, "conflict");
    assert.equal(after.n, 1);
    assert.equal(await countRows(sql, "chat_sessions", "id", elsewhere), 0);

    const otherRole = await append(sql, user, {
      session_id,
      messages: [{ ...reused, role: "assistant" }],
    });
    assert.deepEqual(otherRole.ok ? "stored" : otherRole.code, "conflict");
  } finally {
    await sql.end();
  }
});

Deno.test("another user's session does not exist for him", async () => {
  const sql = connectFunctionDatabase();
  try {
    const alice = await createUser(sql, "alice");
    const bob = await createUser(sql, "bob");
    const { session_id } = ok(await append(sql, alice, { messages: [message("secret")] }));
    const intoIt = await append(sql, bob, { session_id, messages: [message("sneaky")] });
    const read = await as(sql, bob, (tx) => listMessages(tx, session_id));
    const removed = await as(sql, bob, (tx) => deleteSession(tx, session_id));
    for (const result of [intoIt, read, removed]) {
      assert.deepEqual(result.ok ? "ok" : result.code, "not_found");
    }
    assert.equal(await countRows(sql, "chat_history", "session_id", session_id), 1);
    const bobs = ok(await as(sql, bob, (tx) => listSessions(tx)));
    assert.deepEqual(bobs.sessions, []);
  } finally {
    await sql.end();
  }
});

Deno.test("listSessions walks every session exactly once, newest first", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const other = await createUser(sql);
    ok(await append(sql, other, { messages: [message("not mine")] }));
    const made: string[] = [];
    for (let i = 0; i < 4; i++) {
      made.push(
        ok(await append(sql, user, { messages: [message(`s${i}`)] }))
          .session_id,
      );
    }
    // Five sessions in one transaction share updated_at: only the id orders them.
    await as(sql, user, async (tx) => {
      for (let i = 0; i < 5; i++) {
        made.push(
          ok(await appendMessages(tx, { messages: [message(`t${i}`)] }))
            .session_id,
        );
      }
    });
    // Touching the oldest session makes it the newest.
    ok(await append(sql, user, { session_id: made[0], messages: [message("again")] }));

    const seen: SessionSummary[] = [];
    let before: string | null = null;
    let pages = 0;
    do {
      const page = ok(await as(sql, user, (tx) => listSessions(tx, { limit: 2, before })));
      seen.push(...page.sessions);
      before = page.next_before;
      pages++;
    } while (before !== null && pages < 20);

    assert.equal(pages, 5);
    assert.deepEqual(new Set(seen.map((s) => s.id)), new Set(made));
    assert.equal(seen.length, made.length, "no session twice");
    assert.equal(seen[0].id, made[0]);
    const expected = [...seen].sort((a, b) =>
      Date.parse(b.updated_at) - Date.parse(a.updated_at) ||
      (a.id < b.id ? 1 : -1)
    );
    assert.deepEqual(seen.map((s) => s.id), expected.map((s) => s.id));
  } finally {
    await sql.end();
  }
});

Deno.test("listMessages pages by seq and says where to go on", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const batch = Array.from({ length: 7 }, (_, i) => message(`m${i}`));
    const { session_id } = ok(await append(sql, user, { messages: batch }));
    const contents: string[] = [];
    let afterSeq = 0;
    const cursors: (number | null)[] = [];
    for (;;) {
      const page = ok(
        await as(sql, user, (tx) => listMessages(tx, session_id, { afterSeq, limit: 3 })),
      );
      contents.push(...page.messages.map((m) => m.content));
      cursors.push(page.next_after_seq);
      if (page.next_after_seq === null) break;
      afterSeq = page.next_after_seq;
    }
    assert.deepEqual(contents, batch.map((m) => m.content));
    assert.deepEqual(cursors, [3, 6, null]);
    const empty = ok(await as(sql, user, (tx) => listMessages(tx, session_id, { afterSeq: 7 })));
    assert.deepEqual([empty.messages, empty.next_after_seq], [[], null]);
  } finally {
    await sql.end();
  }
});

Deno.test("bad limits and cursors are invalid_request naming the parameter", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const sessionId = crypto.randomUUID();
    const results = await as(sql, user, async (tx) =>
      [
        [await listSessions(tx, { limit: 0 }), "limit"],
        [await listSessions(tx, { limit: 101 }), "limit"],
        [await listSessions(tx, { before: "garbage!" }), "before"],
        [await listSessions(tx, { before: btoa("2026-01-01T00:00:00Z|nope") }), "before"],
        [await listMessages(tx, sessionId, { limit: 501 }), "limit"],
        [await listMessages(tx, sessionId, { afterSeq: -1 }), "after_seq"],
        [await searchMessages(tx, "  "), "q"],
        [await searchMessages(tx, "x", { limit: 1.5 }), "limit"],
      ] as const);
    for (const [result, path] of results) {
      assert.deepEqual(result.ok ? "ok" : [result.code, result.path], ["invalid_request", path]);
    }
    const max = ok(await as(sql, user, (tx) => listSessions(tx, { limit: 100 })));
    assert.deepEqual(max.sessions, []);
  } finally {
    await sql.end();
  }
});

Deno.test("searchMessages ranks the caller's own matches and escapes snippets", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const other = await createUser(sql);
    const { session_id } = ok(
      await append(sql, user, {
        title: "Ops",
        messages: [
          message("The deployment failed once."),
          message("Deployment: 1 < 2 & 'so' <b>failed</b> deployment after deployment, rollback."),
          message("Nothing relevant here."),
        ],
      }),
    );
    ok(await append(sql, other, { messages: [message("deployment deployment deployment")] }));

    const hits = ok(await as(sql, user, (tx) => searchMessages(tx, "deployments")));
    assert.equal(hits.length, 2, "only the caller's two matching messages");
    assert.deepEqual(hits.map((h) => h.seq), [2, 1], "more occurrences rank higher");
    assert.ok(hits[0].rank > hits[1].rank);
    assert.deepEqual([hits[0].session_id, hits[0].session_title], [session_id, "Ops"]);
    assert.match(hits[0].snippet, /<mark>Deployment<\/mark>/);
    // ts_headline drops what its parser takes for tags; everything else arrives escaped.
    assert.match(hits[0].snippet, /<mark>Deployment<\/mark>: 1 &lt; 2 &amp; &#39;so&#39;\s+failed/);
    assert.doesNotMatch(hits[0].snippet.replaceAll(/<\/?mark>/g, ""), /[<>]/);
    const phrase = ok(await as(sql, user, (tx) => searchMessages(tx, '"deployment failed"')));
    assert.deepEqual(phrase.map((h) => h.seq), [1]);
    const excluded = ok(await as(sql, user, (tx) => searchMessages(tx, "deployment -rollback")));
    assert.deepEqual(excluded.map((h) => h.seq), [1]);
    const limited = ok(await as(sql, user, (tx) => searchMessages(tx, "deployment", { limit: 1 })));
    assert.deepEqual(limited.map((h) => h.seq), [2]);
  } finally {
    await sql.end();
  }
});

Deno.test("deleteSession removes the messages and turns, keeps usage rows", async () => {
  const sql = connectFunctionDatabase();
  try {
    const user = await createUser(sql);
    const { session_id, messages } = ok(
      await append(sql, user, { messages: [message("bye"), message("ok", "assistant")] }),
    );
    await sql`insert into public.usage_metrics (user_id, session_id, kind, name, status)
              values (${user.id}, ${session_id}, 'llm', 'test-model', 'ok')`;
    await sql`insert into public.agent_turns (user_id, session_id, owner, user_message_id)
              values (${user.id}, ${session_id}, 'test', ${messages[0].row_id})`;

    ok(await as(sql, user, (tx) => deleteSession(tx, session_id)));
    assert.equal(await countRows(sql, "chat_history", "session_id", session_id), 0);
    assert.equal(await countRows(sql, "agent_turns", "session_id", session_id), 0);
    const usage = await sql`select session_id from public.usage_metrics where user_id = ${user.id}`;
    assert.deepEqual(usage.map((u) => u.session_id), [null]);

    const again = await as(sql, user, (tx) => deleteSession(tx, session_id));
    assert.deepEqual(again.ok ? "ok" : again.code, "not_found");
    const read = await as(sql, user, (tx) => listMessages(tx, session_id));
    assert.deepEqual(read.ok ? "ok" : read.code, "not_found");
  } finally {
    await sql.end();
  }
});
