/**
 * The token quota in front of the LLM: reserved atomically in Postgres before a turn starts,
 * so parallel chats are admitted exactly as far as the bucket goes, and refused chats leave
 * nothing stored.
 */
import assert from "node:assert/strict";
import type { ErrorFrame, TurnFrame } from "../_shared/agent_protocol.ts";
import { DEFAULT_AGENT_CONFIG } from "../_shared/agent/config.ts";
import { reservationTokens } from "../_shared/agent/limits.ts";
import { buildMessages } from "../_shared/agent/prompt.ts";
import { withWorld } from "../../tests/support/agent_world.ts";

/** A chat whose usage, as the fixture reports it, equals what the agent reserves for it. */
function chatCostingItsReservation(): { content: string; reserved: number } {
  const template = (tokens: string) =>
    `[[fixture:slow count=3 delay=30 prompt_tokens=${tokens} completion_tokens=0]] hi`;
  // The reservation depends on the content's length only: estimate it with a placeholder.
  const reserved = reservationTokens(
    buildMessages(DEFAULT_AGENT_CONFIG.systemPrompt, [], template("00000")),
    [],
    DEFAULT_AGENT_CONFIG.maxCompletionTokens,
  );
  return { content: template(String(reserved).padStart(5, "0")), reserved };
}

Deno.test("a bucket sized for K turns admits exactly K of 2K parallel chats", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const K = 4;
    const alice = await user();
    const { content, reserved } = chatCostingItsReservation();
    await sql`update public.user_limits
              set bucket_capacity = ${K * reserved}, bucket_tokens = ${K * reserved},
                  refill_per_minute = 1, bucket_updated_at = now(),
                  max_concurrent_turns = ${2 * K}
              where user_id = ${alice.id}`;
    const clients = await Promise.all([connect(alice), connect(alice)]);
    const ids = Array.from({ length: 2 * K }, () => crypto.randomUUID());
    ids.forEach((id, i) => clients[i % 2].send({ type: "chat", id, content, tools: [] }));
    const answers = await Promise.all(
      ids.map((id, i) =>
        clients[i % 2].take((frame) =>
          (frame.type === "start" && frame.user_message_id === id) ||
          (frame.type === "error" && frame.ref === id)
        )
      ),
    );
    const started = answers.filter((frame) => frame.type === "start") as TurnFrame[];
    const refused = answers.filter((frame) => frame.type === "error") as ErrorFrame[];
    assert.equal(started.length, K);
    assert.equal(refused.length, K);
    for (const error of refused) {
      assert.equal(error.code, "rate_limited");
      assert.equal(error.reason, "token_bucket");
      assert.equal(error.retryable, true);
      assert.ok(error.retry_after_ms !== undefined && error.retry_after_ms > 0);
      assert.equal(error.turn_id, undefined, "a refused chat starts no turn");
    }
    await Promise.all(
      started.map((frame, i) =>
        clients.find((c) => c.frames.includes(frame))!.turnFrames(frame.turn_id)
          .then((frames) => assert.equal(frames.at(-1)?.type, "complete", `turn ${i}`))
      ),
    );

    // Only admitted chats were stored; every reservation was settled at its real cost.
    const [{ stored }] = await sql`select count(*)::int as stored from public.chat_history
                                   where user_id = ${alice.id} and role = 'user'`;
    assert.equal(stored, K);
    const [limits] = await sql`select bucket_tokens, day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    assert.equal(Number(limits.day_tokens), K * reserved);
    assert.ok(
      limits.bucket_tokens < reserved,
      "the bucket stays (nearly) empty",
    );
    // A turn's row holds its open reservation: none once settled.
    const [{ turns }] = await sql`select count(*)::int as turns from public.agent_turns
                                  where user_id = ${alice.id} and reserved_tokens = 0
                                    and state = 'complete'`;
    assert.equal(turns, K);
  });
});

Deno.test("a chat larger than the whole bucket is refused as not retryable", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await user();
    await sql`update public.user_limits set bucket_capacity = 100, bucket_tokens = 100
              where user_id = ${alice.id}`;
    const client = await connect(alice);
    const [answer] = await client.chat("[[fixture:text]] hi");
    assert.ok(answer.type === "error");
    assert.equal(answer.code, "rate_limited");
    assert.equal(answer.reason, "exceeds_capacity");
    assert.equal(answer.retryable, false);
  });
});

Deno.test("a chat naming a model the catalogue does not offer is refused, nothing stored", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await user();
    const client = await connect(alice);
    const id = crypto.randomUUID();
    client.send({
      type: "chat",
      id,
      content: "hi",
      model: "openai/o1-pro",
      tools: [],
    });
    const answer = await client.take((frame) =>
      (frame.type === "error" && frame.ref === id) || frame.type === "start"
    );
    assert.equal(answer.type, "error");
    const error = answer as ErrorFrame;
    assert.deepEqual([error.code, error.retryable, error.path], [
      "model_not_allowed",
      false,
      "model",
    ]);
    assert.equal(error.turn_id, undefined);
    const [{ stored }] = await sql`select count(*)::int as stored from public.chat_history
                                   where client_id = ${id}`;
    assert.equal(stored, 0);
    const [{ usage }] = await sql`select count(*)::int as usage from public.usage_metrics
                                  where user_id = ${alice.id}`;
    assert.equal(usage, 0, "no LLM call was made");
  });
});
