/**
 * A turn over a real WebSocket: frame order and seqs, what is stored (messages, turn, frames,
 * usage, quota), idempotent retries, sessions, and LLM failures.
 */
import assert from "node:assert/strict";
import { fixtureArg } from "../../../scripts/standin/llm_fixture.ts";
import type { TurnFrame } from "../_shared/agent_protocol.ts";
import { decodeFrames } from "../_shared/agent/turn_store.ts";
import { tokensOf, withWorld } from "../../tests/support/agent_world.ts";

const FIXTURE_TEXT = "Hello from the LLM fixture: grüße 👋, and goodbye.";

Deno.test("a chat streams start, tokens, response and complete, numbered 1..n", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await user("alice");
    const client = await connect(alice);
    const ready = client.frames.find((frame) => frame.type === "ready");
    assert.ok(ready?.type === "ready");
    assert.equal(ready.user_id, alice.id);
    assert.equal(ready.limits.max_connections, 3);
    assert.equal(ready.limits.max_frame_bytes, 256 * 1024);
    assert.equal(ready.limits.token_bucket.capacity, 100_000);

    const chatId = crypto.randomUUID();
    const frames = await client.chat("[[fixture:text]] hi", { id: chatId });
    const types = frames.map((frame) => frame.type);
    assert.deepEqual(types.slice(0, 2), ["start", "step"]);
    assert.deepEqual(types.slice(-2), ["response", "complete"]);
    assert.ok(
      types.slice(2, -2).every((type) => type === "token"),
      types.join(","),
    );
    assert.ok(types.length > 4, "the fixture streams several tokens");
    assert.deepEqual(
      frames.map((frame) => frame.seq),
      frames.map((_, i) => i + 1),
    );
    const turnId = frames[0].turn_id;
    assert.ok(frames.every((frame) => frame.turn_id === turnId));

    const start = frames[0] as Extract<TurnFrame, { type: "start" }>;
    assert.equal(start.user_message_id, chatId);
    assert.equal(tokensOf(frames), FIXTURE_TEXT);
    const response = frames.at(-2) as Extract<TurnFrame, { type: "response" }>;
    assert.equal(response.content, FIXTURE_TEXT);
    assert.equal(response.message_id, start.message_id);
    const complete = frames.at(-1) as Extract<TurnFrame, { type: "complete" }>;
    assert.equal(complete.steps, 1);
    assert.ok(
      complete.usage.prompt_tokens > 0 && complete.usage.completion_tokens > 0,
    );
    assert.ok(complete.usage.cost > 0);

    // Stored: the pair of messages, the turn, its frames, one usage row, the settled quota.
    const messages = await sql`
      select client_id, role, content, status, turn_id, seq from public.chat_history
      where session_id = ${start.session_id} order by seq`;
    assert.deepEqual(
      messages.map((m) => [m.client_id, m.role, m.status, m.turn_id]),
      [
        [chatId, "user", "complete", turnId],
        [start.message_id, "assistant", "complete", turnId],
      ],
    );
    assert.equal(messages[0].content, "[[fixture:text]] hi");
    assert.equal(messages[1].content, FIXTURE_TEXT);
    const [turn] = await sql`select state, steps, owner, finished_at, reserved_tokens
                             from public.agent_turns where id = ${turnId}`;
    assert.equal(turn.state, "complete");
    assert.equal(turn.steps, 1);
    assert.ok(turn.finished_at !== null);
    const stored = await sql`select seq, frames from public.agent_turn_events
                             where turn_id = ${turnId} order by seq`;
    assert.deepEqual(
      stored.flatMap((row) => decodeFrames(turnId, row.seq, row.frames)),
      frames,
    );
    const tokenCount = frames.filter((frame) => frame.type === "token").length;
    assert.equal(
      stored.flatMap((row) => row.frames).filter((f) => typeof f === "string")
        .length,
      tokenCount,
      "token frames are stored as their bare deltas",
    );
    const usage = await sql`select kind, name, prompt_tokens, completion_tokens, status, turn_id
                            from public.usage_metrics where user_id = ${alice.id}`;
    assert.deepEqual(usage.map((u) => [u.kind, u.status, u.turn_id]), [[
      "llm",
      "ok",
      turnId,
    ]]);
    assert.equal(usage[0].prompt_tokens, complete.usage.prompt_tokens);
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    assert.equal(
      Number(limits.day_tokens),
      complete.usage.prompt_tokens + complete.usage.completion_tokens,
      "the reservation was settled against the real usage",
    );
  });
});

Deno.test("a second chat in the session sends the earlier messages to the model", async () => {
  await withWorld({}, async ({ connect, user, fixture }) => {
    const client = await connect(await user());
    const first = await client.chat(
      `[[fixture:text text=${fixtureArg("Paris.")}]] capital?`,
    );
    const sessionId = (first[0] as Extract<TurnFrame, { type: "start" }>).session_id;
    const second = await client.chat("[[fixture:text]] and of Italy?", {
      session_id: sessionId,
    });
    assert.equal(second.at(-1)?.type, "complete");
    assert.equal(
      (second[0] as Extract<TurnFrame, { type: "start" }>).session_id,
      sessionId,
    );
    const body = fixture.requests.at(-1)?.body as {
      messages: { role: string; content: string }[];
    };
    assert.deepEqual(body.messages.slice(1).map((m) => [m.role, m.content]), [
      ["user", `[[fixture:text text=${fixtureArg("Paris.")}]] capital?`],
      ["assistant", "Paris."],
      ["user", "[[fixture:text]] and of Italy?"],
    ]);
    assert.equal(body.messages[0].role, "system");
  });
});

Deno.test("a retried chat (same id) starts no second turn: it replays the first", async () => {
  await withWorld({}, async ({ sql, connect, user, fixture }) => {
    const alice = await user();
    const client = await connect(alice);
    const id = crypto.randomUUID();
    const first = await client.chat("[[fixture:text]] once", { id });
    const requestsAfterFirst = fixture.requests.length;

    const other = await connect(alice);
    other.send({ type: "chat", id, content: "[[fixture:text]] once" });
    const replay = await other.turnFrames(first[0].turn_id);
    assert.deepEqual(replay, first);
    assert.equal(
      fixture.requests.length,
      requestsAfterFirst,
      "no second LLM call",
    );
    const [{ turns }] = await sql`select count(*)::int as turns from public.agent_turns
                                  where user_id = ${alice.id}`;
    assert.equal(turns, 1);
  });
});

Deno.test("parallel retries of one chat run one turn", async () => {
  await withWorld({}, async ({ sql, connect, user, fixture }) => {
    const alice = await user();
    const clients = await Promise.all([
      connect(alice),
      connect(alice),
      connect(alice),
    ]);
    const id = crypto.randomUUID();
    const content = "[[fixture:slow count=5 delay=20]] once";
    for (const client of clients) client.send({ type: "chat", id, content });
    const endings = await Promise.all(
      clients.map((client) => client.take((frame) => frame.type === "complete")),
    );
    const turnIds = new Set(
      endings.map((frame) => (frame as TurnFrame).turn_id),
    );
    assert.equal(turnIds.size, 1);
    const [{ turns }] = await sql`select count(*)::int as turns from public.agent_turns
                                  where user_id = ${alice.id}`;
    assert.equal(turns, 1);
    assert.equal(fixture.requests.length, 1);
    // The losers gave their reservations back: only the turn's real usage is counted.
    const [{ used }] = await sql`select sum(prompt_tokens + completion_tokens)::int as used
                                 from public.usage_metrics where user_id = ${alice.id}`;
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    assert.equal(Number(limits.day_tokens), used);
  });
});

Deno.test("an LLM failure ends the turn with an llm_ error and keeps the partial text", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const client = await connect(await user());
    const frames = await client.chat("[[fixture:error_mid]] go");
    const last = frames.at(-1)!;
    assert.equal(last.type, "error");
    assert.ok(
      last.type === "error" && last.code === "llm_stream_error",
      JSON.stringify(last),
    );
    const partial = tokensOf(frames);
    assert.ok(partial.startsWith("Partial answer"));
    const start = frames[0] as Extract<TurnFrame, { type: "start" }>;
    const [message] = await sql`select content, status from public.chat_history
                                where client_id = ${start.message_id}`;
    assert.deepEqual([message.content, message.status], [partial, "error"]);
    const [turn] = await sql`select state, error from public.agent_turns
                             where id = ${start.turn_id}`;
    assert.equal(turn.state, "error");
    assert.equal(turn.error.code, "llm_stream_error");

    const refused = await client.chat("[[fixture:error_before status=400]] go");
    const error = refused.at(-1)!;
    assert.ok(
      error.type === "error" && error.code === "llm_upstream_http_error",
    );
  });
});

Deno.test("a silent LLM upstream ends the turn with llm_timeout, partial text kept", async () => {
  await withWorld(
    { config: { llmTimeoutMs: 300 } },
    async ({ sql, connect, user }) => {
      const client = await connect(await user());
      const frames = await client.chat(
        "[[fixture:slow delay=5000 count=3]] go",
      );
      const last = frames.at(-1)!;
      assert.ok(
        last.type === "error" && last.code === "llm_timeout",
        JSON.stringify(last),
      );
      assert.equal(tokensOf(frames), "word0 ");
      const start = frames[0] as Extract<TurnFrame, { type: "start" }>;
      const [message] = await sql`select content, status from public.chat_history
                                where client_id = ${start.message_id}`;
      assert.deepEqual([message.content, message.status], ["word0 ", "error"]);
    },
  );
});

Deno.test("a chat into another user's session, or reusing an id, is refused and refunded", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await connect(await user("alice"));
    const [aliceStart] = await alice.chat("[[fixture:text]] mine");
    const sessionId = (aliceStart as Extract<TurnFrame, { type: "start" }>).session_id;

    const mallory = await user("mallory");
    const client = await connect(mallory);
    const [intrusion] = await client.chat("[[fixture:text]] let me in", {
      session_id: sessionId,
    });
    assert.ok(intrusion.type === "error");
    assert.equal(intrusion.code, "not_found");

    const [first] = await client.chat("[[fixture:text]] first");
    const firstStart = first as Extract<TurnFrame, { type: "start" }>;
    // The same id again, but for another session: not a retry, a clash.
    const [clash] = await client.chat("[[fixture:text]] again", {
      id: firstStart.user_message_id,
      session_id: crypto.randomUUID(),
    });
    assert.ok(clash.type === "error");
    assert.equal(clash.code, "conflict");

    const [{ used }] = await sql`select coalesce(sum(prompt_tokens + completion_tokens), 0)::int
                                   as used
                                 from public.usage_metrics where user_id = ${mallory.id}`;
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${mallory.id}`;
    assert.equal(
      Number(limits.day_tokens),
      used,
      "refused chats keep no reservation",
    );
    const [{ messages }] = await sql`select count(*)::int as messages from public.chat_history
                                     where session_id = ${sessionId}`;
    assert.equal(messages, 2, "alice's session is untouched");
  });
});
