/**
 * The `history` function over real HTTP: the app served on a free port, real ES256 tokens
 * checked against a local JWKS, a real database with RLS. Each test closes its server and pool.
 */
import assert from "node:assert/strict";
import {
  generateSigningKey,
  issueAccessToken,
  jwksOf,
} from "../../../scripts/standin/signing_keys.ts";
import type { SigningKey } from "../../../scripts/standin/signing_keys.ts";
import {
  connectFunctionDatabase,
  createUser,
  message,
  type TestUser,
} from "../../tests/support/database.ts";
import { createTokenVerifier } from "../_shared/auth.ts";
import type { Sql } from "../_shared/db/client.ts";
import { createHistoryApp } from "../_shared/history/app.ts";

const ISSUER = "http://127.0.0.1/auth/v1";

interface Harness {
  sql: Sql;
  key: SigningKey;
  base: string;
  close(): Promise<void>;
}

async function start(poolSize = 10): Promise<Harness> {
  const sql = connectFunctionDatabase(poolSize);
  const key = await generateSigningKey();
  const app = createHistoryApp({ sql, verifier: createTokenVerifier({ jwks: jwksOf(key) }) });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, app.fetch);
  return {
    sql,
    key,
    base: `http://127.0.0.1:${server.addr.port}/history`,
    async close() {
      await server.shutdown();
      await sql.end();
    },
  };
}

interface Caller {
  user: TestUser;
  token: string;
}

async function caller(h: Harness, label = "user"): Promise<Caller> {
  const user = await createUser(h.sql, label);
  const token = await issueAccessToken(h.key, {
    userId: user.id,
    email: user.email,
    issuer: ISSUER,
  });
  return { user, token };
}

interface Reply {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

async function call(
  h: Harness,
  who: Caller | null,
  method: string,
  path: string,
  body?: unknown,
): Promise<Reply> {
  const headers = new Headers();
  if (who) headers.set("Authorization", `Bearer ${who.token}`);
  if (body !== undefined) headers.set("Content-Type", "application/json");
  const response = await fetch(`${h.base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return await replyOf(response);
}

async function replyOf(response: Response): Promise<Reply> {
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: text === "" ? null : JSON.parse(text),
  };
}

function assertError(reply: Reply, status: number, code: string, path?: string) {
  assert.equal(reply.status, status, JSON.stringify(reply.body));
  assert.equal(reply.body.error.code, code);
  assert.equal(typeof reply.body.error.message, "string");
  if (path !== undefined) assert.equal(reply.body.error.path, path);
}

async function count(sql: Sql, table: string, column: string, value: string): Promise<number> {
  const [{ n }] = await sql`select count(*)::int as n from ${sql("public." + table)}
                            where ${sql(column)} = ${value}`;
  return n;
}

Deno.test("POST /history/messages stores a batch; posting it again is a 200 with the same seqs", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const batch = [message("hi"), message("hello!", "assistant")];
    const first = await call(h, alice, "POST", "/messages", { title: "Hi", messages: batch });
    assert.equal(first.status, 201);
    assert.match(first.body.session_id, /^[0-9a-f-]{36}$/);
    assert.deepEqual(
      first.body.messages.map((m: { id: string; seq: number; inserted: boolean }) => [
        m.id,
        m.seq,
        m.inserted,
      ]),
      [[batch[0].id, 1, true], [batch[1].id, 2, true]],
    );
    assert.ok(!Number.isNaN(Date.parse(first.body.messages[0].created_at)));

    const again = await call(h, alice, "POST", "/messages", { title: "Hi", messages: batch });
    assert.equal(again.status, 200);
    assert.equal(again.body.session_id, first.body.session_id);
    assert.deepEqual(
      again.body.messages.map((m: { seq: number; created_at: string }) => [m.seq, m.created_at]),
      first.body.messages.map((m: { seq: number; created_at: string }) => [m.seq, m.created_at]),
    );
    assert.equal(await count(h.sql, "chat_history", "session_id", first.body.session_id), 2);
  } finally {
    await h.close();
  }
});

Deno.test("ten concurrent POSTs of one body store it once, with one set of seqs", async () => {
  const h = await start(12);
  try {
    const alice = await caller(h);
    await call(h, alice, "POST", "/messages", { messages: [message("earlier")] });
    for (const withSession of [true, false]) {
      const batch = [message(`retried ${withSession}`), message("reply", "assistant")];
      const body = withSession
        ? { session_id: crypto.randomUUID(), messages: batch }
        : { messages: batch };
      const replies = await Promise.all(
        Array.from({ length: 10 }, () => call(h, alice, "POST", "/messages", body)),
      );
      assert.deepEqual(
        replies.map((r) => r.status).sort(),
        [200, 200, 200, 200, 200, 200, 200, 200, 200, 201],
        JSON.stringify(replies.find((r) => r.status >= 300)?.body),
      );
      const sessionIds = new Set(replies.map((r) => r.body.session_id));
      assert.equal(sessionIds.size, 1);
      const seqs = new Set(
        replies.map((r) => JSON.stringify(r.body.messages.map((m: { seq: number }) => m.seq))),
      );
      assert.deepEqual([...seqs], ["[1,2]"]);
      for (const m of batch) {
        assert.equal(await count(h.sql, "chat_history", "client_id", m.id), 1);
      }
    }
    assert.equal(await count(h.sql, "chat_sessions", "user_id", alice.user.id), 3);
  } finally {
    await h.close();
  }
});

Deno.test("one bad message fails the whole batch and stores nothing, not even the session", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const sessionId = crypto.randomUUID();
    const invalid = await call(h, alice, "POST", "/messages", {
      session_id: sessionId,
      messages: [message("fine"), { ...message("bad"), role: "wizard" }, message("fine too")],
    });
    assertError(invalid, 422, "invalid_request", "messages[1].role");
    assert.match(invalid.body.error.message, /^messages\[1\]\.role: /);
    assert.equal(await count(h.sql, "chat_sessions", "id", sessionId), 0);

    // A conflict only the database can see (an id already used in another session).
    const used = message("mine");
    await call(h, alice, "POST", "/messages", { messages: [used] });
    const conflict = await call(h, alice, "POST", "/messages", {
      session_id: sessionId,
      messages: [message("new"), used],
    });
    assertError(conflict, 409, "conflict");
    assert.equal(await count(h.sql, "chat_sessions", "id", sessionId), 0);
    assert.equal(await count(h.sql, "chat_history", "user_id", alice.user.id), 1);
  } finally {
    await h.close();
  }
});

Deno.test("session and message cursors walk every row exactly once", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const bob = await caller(h, "bob");
    await call(h, bob, "POST", "/messages", { messages: [message("bob's")] });
    const made: string[] = [];
    for (let i = 0; i < 5; i++) {
      const reply = await call(h, alice, "POST", "/messages", { messages: [message(`s${i}`)] });
      made.push(reply.body.session_id);
    }
    const listed: string[] = [];
    let url = "/sessions?limit=2";
    for (let page = 0; page < 10; page++) {
      const reply = await call(h, alice, "GET", url);
      assert.equal(reply.status, 200);
      listed.push(...reply.body.sessions.map((s: { id: string }) => s.id));
      if (reply.body.next_before === null) break;
      url = `/sessions?limit=2&before=${encodeURIComponent(reply.body.next_before)}`;
    }
    assert.deepEqual(listed, [...made].reverse(), "newest first, each once");
    const defaults = await call(h, alice, "GET", "/sessions");
    assert.deepEqual([defaults.body.sessions.length, defaults.body.next_before], [5, null]);

    const sessionId = made[0];
    const batch = Array.from({ length: 11 }, (_, i) => message(`m${i}`));
    await call(h, alice, "POST", "/messages", { session_id: sessionId, messages: batch });
    const seqs: number[] = [];
    let afterSeq: number | null = 0;
    for (let page = 0; afterSeq !== null && page < 10; page++) {
      const reply = await call(
        h,
        alice,
        "GET",
        `/sessions/${sessionId}/messages?after_seq=${afterSeq}&limit=4`,
      );
      assert.equal(reply.status, 200);
      assert.equal(reply.body.session_id, sessionId);
      seqs.push(...reply.body.messages.map((m: { seq: number }) => m.seq));
      afterSeq = reply.body.next_after_seq;
    }
    assert.deepEqual(seqs, Array.from({ length: 12 }, (_, i) => i + 1));
    const all = await call(h, alice, "GET", `/sessions/${sessionId}/messages`);
    assert.deepEqual(
      all.body.messages.map((m: { id: string; content: string }) => m.content),
      ["s0", ...batch.map((m) => m.content)],
    );
    assert.equal(all.body.messages[1].id, batch[0].id, "id is the client's id");
  } finally {
    await h.close();
  }
});

Deno.test("search is ranked and sees only the caller's own messages", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const bob = await caller(h, "bob");
    const mine = await call(h, alice, "POST", "/messages", {
      title: "Cooking",
      messages: [
        message("A recipe for bread"),
        message("Bread, bread and more bread: the bread recipe book"),
        message("Something else entirely"),
      ],
    });
    await call(h, bob, "POST", "/messages", { messages: [message("bread bread bread bread")] });

    const reply = await call(h, alice, "GET", `/search?q=${encodeURIComponent("bread recipe")}`);
    assert.equal(reply.status, 200);
    const results = reply.body.results;
    assert.deepEqual(
      results.map((r: { seq: number; session_id: string }) => [r.seq, r.session_id]),
      [[2, mine.body.session_id], [1, mine.body.session_id]],
    );
    assert.ok(results[0].rank > results[1].rank);
    assert.equal(results[0].session_title, "Cooking");
    assert.equal(results[0].message_id, mine.body.messages[1].id);
    assert.match(results[0].snippet, /<mark>Bread<\/mark>/);

    const none = await call(h, bob, "GET", "/search?q=recipe");
    assert.deepEqual(none.body.results, []);
    const one = await call(h, alice, "GET", "/search?q=bread&limit=1");
    assert.deepEqual(one.body.results.map((r: { seq: number }) => r.seq), [2]);
  } finally {
    await h.close();
  }
});

Deno.test("another user's session is 404 for GET messages, DELETE and POST into it", async () => {
  const h = await start();
  try {
    const alice = await caller(h, "alice");
    const bob = await caller(h, "bob");
    const created = await call(h, alice, "POST", "/messages", { messages: [message("secret")] });
    const sessionId = created.body.session_id;

    assertError(await call(h, bob, "GET", `/sessions/${sessionId}/messages`), 404, "not_found");
    assertError(await call(h, bob, "DELETE", `/sessions/${sessionId}`), 404, "not_found");
    const into = await call(h, bob, "POST", "/messages", {
      session_id: sessionId,
      messages: [message("sneaky")],
    });
    assertError(into, 404, "not_found");
    // The same answer as for a session that never existed (but for each request's own id).
    const withoutId = (body: { error: { request_id?: string } }) => {
      assert.ok(body.error.request_id, "the error names its request");
      return { error: { ...body.error, request_id: undefined } };
    };
    const missing = await call(h, bob, "GET", `/sessions/${crypto.randomUUID()}/messages`);
    assert.deepEqual(
      withoutId(missing.body),
      withoutId((await call(h, bob, "DELETE", `/sessions/${sessionId}`)).body),
    );

    const still = await call(h, alice, "GET", `/sessions/${sessionId}/messages`);
    assert.deepEqual(still.body.messages.map((m: { content: string }) => m.content), ["secret"]);
  } finally {
    await h.close();
  }
});

Deno.test("DELETE answers 204; the session then answers 404", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const created = await call(h, alice, "POST", "/messages", { messages: [message("bye")] });
    const sessionId = created.body.session_id;
    const deleted = await call(h, alice, "DELETE", `/sessions/${sessionId}`);
    assert.deepEqual([deleted.status, deleted.body], [204, null]);
    assertError(await call(h, alice, "GET", `/sessions/${sessionId}/messages`), 404, "not_found");
    assertError(await call(h, alice, "DELETE", `/sessions/${sessionId}`), 404, "not_found");
    const sessions = await call(h, alice, "GET", "/sessions");
    assert.deepEqual(sessions.body.sessions, []);
    assert.equal(await count(h.sql, "chat_history", "session_id", sessionId), 0);
    assertError(await call(h, alice, "GET", "/sessions/not-a-uuid/messages"), 404, "not_found");
  } finally {
    await h.close();
  }
});

Deno.test("a body over 1 MiB is 413, with a Content-Length and without one", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const headers = { Authorization: `Bearer ${alice.token}`, "Content-Type": "application/json" };
    const declared = await fetch(`${h.base}/messages`, {
      method: "POST",
      headers,
      body: "x".repeat(1024 * 1024 + 1),
    });
    assertError(await replyOf(declared), 413, "payload_too_large");

    // A chunked body that never ends: the server must stop reading and answer anyway.
    const cap = 256 * 1024 * 1024;
    let produced = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (produced >= cap) return controller.close();
        produced += 64 * 1024;
        controller.enqueue(new Uint8Array(64 * 1024).fill(0x20));
      },
    });
    const chunked = await fetch(`${h.base}/messages`, { method: "POST", headers, body: endless });
    assertError(await replyOf(chunked), 413, "payload_too_large");
    assert.ok(produced < cap, "the server stopped reading the body");

    // Just under the limit is fine: one message of 1,000,000 bytes.
    const big = await call(h, alice, "POST", "/messages", {
      messages: [message("y".repeat(1_000_000))],
    });
    assert.equal(big.status, 201);
  } finally {
    await h.close();
  }
});

Deno.test("missing, malformed, expired and foreign tokens are 401 with their codes", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const missing = await call(h, null, "GET", "/sessions");
    assertError(missing, 401, "missing_token");
    assert.equal(missing.headers.get("WWW-Authenticate"), "Bearer");

    const garbage = await call(h, { ...alice, token: "not.a.jwt" }, "GET", "/sessions");
    assertError(garbage, 401, "invalid_token");
    assert.match(garbage.headers.get("WWW-Authenticate") ?? "", /error="invalid_token"/);

    const hourAgo = Math.floor(Date.now() / 1000) - 7200;
    const expiredToken = await issueAccessToken(h.key, {
      userId: alice.user.id,
      issuer: ISSUER,
      now: hourAgo,
      expiresIn: 3600,
    });
    const expired = await call(h, { ...alice, token: expiredToken }, "GET", "/sessions");
    assertError(expired, 401, "expired_token");

    const otherKey = await generateSigningKey();
    const foreign = await issueAccessToken(otherKey, { userId: alice.user.id, issuer: ISSUER });
    const forged = { ...alice, token: foreign };
    const post = await call(h, forged, "POST", "/messages", { messages: [message("x")] });
    assertError(post, 401, "invalid_token");
    assert.equal(await count(h.sql, "chat_history", "user_id", alice.user.id), 0);
  } finally {
    await h.close();
  }
});

Deno.test("a body that is not JSON is 400 bad_json", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const bodies: BodyInit[] = [
      '{"messages": [',
      "",
      new Uint8Array([0x7b, 0x22, 0xe9, 0x22, 0x7d]), // {"é"} in Latin-1: not UTF-8
    ];
    for (const body of bodies) {
      const response = await fetch(`${h.base}/messages`, {
        method: "POST",
        headers: { Authorization: `Bearer ${alice.token}` },
        body,
      });
      assertError(await replyOf(response), 400, "bad_json");
    }
  } finally {
    await h.close();
  }
});

Deno.test("JSON nested deeper than the limit is 400 before any schema runs", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const deep = "[".repeat(5000) + "]".repeat(5000);
    const body =
      `{"session_id":"${crypto.randomUUID()}","messages":[{"id":"${crypto.randomUUID()}",` +
      `"role":"assistant","content":"x","tool_calls":${deep}}]}`;
    const reply = await call(h, alice, "POST", "/messages", body);
    assertError(reply, 400, "bad_json");
    assert.match(reply.body.error.message, /nests deeper than 64 levels/);
  } finally {
    await h.close();
  }
});

Deno.test("schema violations are 422 invalid_request naming the field", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    const tooMany = Array.from({ length: 501 }, (_, i) => message(`m${i}`));
    const bodies: [unknown, string | undefined][] = [
      [[], undefined],
      [{ messages: [{ ...message("x"), content: 42 }] }, "messages[0].content"],
      [{ messages: [{ role: "user", content: "x" }] }, "messages[0].id"],
      [{ messages: [{ ...message("x"), tool_calls: {} }] }, "messages[0].tool_calls"],
      [{ messages: [{ ...message("x"), status: "done" }] }, "messages[0].status"],
      [{ session_id: 7, messages: [message("x")] }, "session_id"],
      [{ messages: tooMany }, "messages"],
    ];
    for (const [body, path] of bodies) {
      assertError(await call(h, alice, "POST", "/messages", body), 422, "invalid_request", path);
    }
    const fiveHundred = await call(h, alice, "POST", "/messages", {
      messages: tooMany.slice(0, 500),
    });
    assert.equal(fiveHundred.status, 201);
    assert.equal(fiveHundred.body.messages.at(-1).seq, 500);

    const sessionId = fiveHundred.body.session_id;
    const queries: [string, string][] = [
      ["/sessions?limit=abc", "limit"],
      ["/sessions?limit=101", "limit"],
      ["/sessions?before=junk", "before"],
      [`/sessions/${sessionId}/messages?after_seq=-1`, "after_seq"],
      [`/sessions/${sessionId}/messages?limit=501`, "limit"],
      ["/search", "q"],
      ["/search?q=bread&limit=0", "limit"],
    ];
    for (const [url, path] of queries) {
      assertError(await call(h, alice, "GET", url), 422, "invalid_request", path);
    }
  } finally {
    await h.close();
  }
});

Deno.test("unknown routes are 404 and wrong methods 405, both JSON", async () => {
  const h = await start();
  try {
    const alice = await caller(h);
    assertError(await call(h, alice, "GET", "/nowhere"), 404, "not_found");
    assertError(await call(h, alice, "GET", "/sessions/x/y/z"), 404, "not_found");
    const wrong = await call(h, alice, "PUT", "/messages", {});
    assertError(wrong, 405, "method_not_allowed");
    assert.equal(wrong.headers.get("Allow"), "POST");
    const patch = await call(h, alice, "PATCH", `/sessions/${crypto.randomUUID()}`);
    assertError(patch, 405, "method_not_allowed");
    assert.equal(patch.headers.get("Allow"), "DELETE");
  } finally {
    await h.close();
  }
});

Deno.test("CORS: preflight is answered and error replies are readable from a browser", async () => {
  const h = await start();
  try {
    const preflight = await fetch(`${h.base}/messages`, {
      method: "OPTIONS",
      headers: {
        Origin: "http://localhost:5173",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-client-info, apikey, content-type",
      },
    });
    await preflight.body?.cancel();
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("Access-Control-Allow-Origin"), "*");
    const allowed = (preflight.headers.get("Access-Control-Allow-Headers") ?? "").split(",");
    for (
      const header of ["authorization", "x-client-info", "apikey", "content-type"]
    ) {
      assert.ok(allowed.includes(header), header);
    }
    assert.match(preflight.headers.get("Access-Control-Allow-Methods") ?? "", /DELETE/);

    const unauthorized = await call(h, null, "GET", "/sessions");
    assert.equal(unauthorized.headers.get("Access-Control-Allow-Origin"), "*");
    const alice = await caller(h);
    const ok = await call(h, alice, "GET", "/sessions");
    assert.equal(ok.headers.get("Access-Control-Allow-Origin"), "*");
  } finally {
    await h.close();
  }
});

Deno.test("each caller has a request bucket: past it, 429 rate_limited with Retry-After", async () => {
  const h = await start();
  try {
    const alice = await caller(h, "bucket");
    const bob = await caller(h, "bucket-other");
    await h.sql`update public.user_limits set request_capacity = 3, requests_per_minute = 6
                where user_id = ${alice.user.id}`;
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await call(h, alice, "GET", "/sessions")).status);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
    const refused = await call(h, alice, "GET", "/sessions");
    assert.equal(refused.body.error.code, "rate_limited");
    // Six a minute: the next request is at most ten seconds away.
    const retryAfter = Number(refused.headers.get("Retry-After"));
    assert.ok(retryAfter >= 1 && retryAfter <= 10, `Retry-After: ${retryAfter}`);
    assert.equal((await call(h, bob, "GET", "/sessions")).status, 200, "buckets are per user");
  } finally {
    await h.close();
  }
});

Deno.test("a deleted user's still-valid token is 401 invalid_token, not a server error", async () => {
  const h = await start();
  try {
    const ghost = await caller(h, "deleted");
    await h.sql`delete from auth.users where id = ${ghost.user.id}`;
    const reply = await call(h, ghost, "POST", "/messages", { messages: [message("hello?")] });
    assert.equal(reply.status, 401);
    assert.equal(reply.body.error.code, "invalid_token");
    assert.match(reply.headers.get("WWW-Authenticate") ?? "", /^Bearer error="invalid_token"/);
  } finally {
    await h.close();
  }
});

Deno.test("admin summary: /metrics as JSON for app_metadata.role admin, 403 for anyone else", async () => {
  const h = await start();
  try {
    const plain = await caller(h, "plain");
    const refused = await call(h, plain, "GET", "/admin/summary");
    assertError(refused, 403, "forbidden");
    // A role in user_metadata (which users write themselves) is not app_metadata's.
    const pretender = {
      ...plain,
      token: await issueAccessToken(h.key, {
        userId: plain.user.id,
        issuer: ISSUER,
        userMetadata: { role: "admin" },
      }),
    };
    assertError(await call(h, pretender, "GET", "/admin/summary"), 403, "forbidden");

    const adminUser = await createUser(h.sql, "admin");
    const admin = {
      user: adminUser,
      token: await issueAccessToken(h.key, {
        userId: adminUser.id,
        issuer: ISSUER,
        appMetadata: { role: "admin" },
      }),
    };
    await h.sql`insert into public.usage_metrics (user_id, kind, source, name, status, latency_ms)
                values (${adminUser.id}, 'tool', 'mcp', 'admin-probe-tool', 'ok', 7)`;
    const summary = await call(h, admin, "GET", "/admin/summary?window=600");
    assert.equal(summary.status, 200, JSON.stringify(summary.body));
    assert.equal(summary.body.window_seconds, 600);
    assert.deepEqual(
      summary.body.usage
        .filter((group: { name: string }) => group.name === "admin-probe-tool")
        .map((group: { calls: number; status: string }) => [group.calls, group.status]),
      [[1, "ok"]],
    );
    assertError(await call(h, admin, "GET", "/admin/summary?window=1"), 422, "invalid_request");
  } finally {
    await h.close();
  }
});
