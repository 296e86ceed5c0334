/**
 * Bad frames get an `error` frame with a stable code (naming the field where one is at
 * fault) and the connection stays open: too fast, not JSON, unknown type, invalid fields,
 * binary. An oversized frame is the exception: it also closes the connection (1009).
 */
import assert from "node:assert/strict";
import { CLOSE_CODES, type ErrorFrame, type ServerFrame } from "../_shared/agent_protocol.ts";
import type { AgentClient } from "../../tests/support/agent_world.ts";
import { withWorld } from "../../tests/support/agent_world.ts";

async function errorFor(
  client: AgentClient,
  frame: unknown,
): Promise<ErrorFrame> {
  client.send(frame);
  return await client.takeType("error");
}

async function stillServes(client: AgentClient): Promise<void> {
  client.send({ type: "ping" });
  assert.equal((await client.take()).type, "pong");
}

Deno.test("a frame over 256 KiB is refused with frame_too_large and closes the socket (1009)", async () => {
  await withWorld({}, async ({ connect, user }) => {
    const caller = await user();
    const limit = 256 * 1024;
    // A frame at the limit is read (and here answered as the ping it is).
    const client = await connect(caller);
    const atLimit = JSON.stringify({ type: "ping", pad: "" });
    const padded = atLimit.replace(
      '"pad":""',
      `"pad":"${"y".repeat(limit - atLimit.length)}"`,
    );
    assert.equal(new TextEncoder().encode(padded).byteLength, limit);
    client.send(padded);
    assert.equal((await client.take()).type, "pong");

    // Deno reads a message whole before the server sees it: the first one over the limit
    // ends the connection, so a client cannot make the server buffer one after another.
    const justOver = JSON.stringify({ type: "ping", pad: "x".repeat(limit) });
    assert.ok(new TextEncoder().encode(justOver).byteLength > limit);
    assert.equal((await errorFor(client, justOver)).code, "frame_too_large");
    assert.equal((await client.closed).code, CLOSE_CODES.frameTooLarge);

    // Counted in bytes, not characters: 100,000 three-byte characters are over the limit.
    const wideClient = await connect(caller);
    const wide = JSON.stringify({ type: "ping", pad: "€".repeat(100_000) });
    assert.ok(wide.length < limit);
    assert.equal((await errorFor(wideClient, wide)).code, "frame_too_large");
    assert.equal((await wideClient.closed).code, CLOSE_CODES.frameTooLarge);

    // The user's other connections are not affected.
    const other = await connect(caller);
    await stillServes(other);
  });
});

Deno.test("more than 20 frames a second are refused with rate_limited", async () => {
  await withWorld({}, async ({ connect, user }) => {
    const client = await connect(await user());
    for (let i = 0; i < 25; i++) client.send({ type: "ping" });
    const answers: ServerFrame[] = [];
    for (let i = 0; i < 25; i++) answers.push(await client.take());
    const pongs = answers.filter((frame) => frame.type === "pong");
    const refusals = answers.filter((frame): frame is ErrorFrame => frame.type === "error");
    assert.equal(pongs.length, 20);
    assert.equal(refusals.length, 5);
    for (const refusal of refusals) {
      assert.equal(refusal.code, "rate_limited");
      assert.equal(refusal.reason, "frames_per_second");
      assert.ok(
        refusal.retry_after_ms !== undefined && refusal.retry_after_ms <= 1000,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, refusals.at(-1)!.retry_after_ms! + 50));
    await stillServes(client);
  });
});

Deno.test("malformed frames get bad_request naming the field, and nothing breaks", async () => {
  await withWorld({}, async ({ connect, user }) => {
    const client = await connect(await user());
    const id = crypto.randomUUID();
    // 15 cases and 3 more frames: under the 20 frames a second the connection may send.
    const cases: [unknown, string | undefined, RegExp][] = [
      ["{not json", undefined, /not valid JSON/],
      ["[1,2]", undefined, /must be a JSON object/],
      ["42", undefined, /must be a JSON object/],
      [{ no: "type" }, "type", /chat, cancel, approve, resume, ping/],
      [{ type: "dance" }, "type", /must be one of/],
      [{ type: "chat", id: "nope", content: "hi" }, "id", /uuid/],
      [{ type: "chat", id }, "content", /^content: /],
      [{ type: "chat", id, content: "" }, "content", /empty/],
      [
        { type: "chat", id, content: "hi", tools: ["Bad Name"] },
        "tools[0]",
        /tool name/,
      ],
      [
        { type: "chat", id, content: "hi", session_id: 7 },
        "session_id",
        /session_id/,
      ],
      [{ type: "cancel" }, "turn_id", /turn_id/],
      [
        { type: "approve", call_id: "c", decision: "maybe" },
        "decision",
        /decision/,
      ],
      [
        {
          type: "approve",
          call_id: "c",
          decision: "allow",
          remember: "forever",
        },
        "remember",
        /./,
      ],
      [
        { type: "resume", turn_id: id, after_seq: -1 },
        "after_seq",
        /after_seq/,
      ],
      [{ type: "resume", turn_id: id, after_seq: 1.5 }, "after_seq", /int/],
    ];
    for (const [frame, path, message] of cases) {
      const error = await errorFor(client, frame);
      assert.equal(error.code, "bad_request", JSON.stringify(frame));
      assert.equal(error.path, path, JSON.stringify(frame));
      assert.match(error.message, message, JSON.stringify(frame));
      assert.equal(error.retryable, false);
    }
    const unknownTool = await errorFor(client, {
      type: "chat",
      id,
      content: "hi",
      tools: ["calculator", "no_such_tool"],
    });
    assert.deepEqual([unknownTool.code, unknownTool.path, unknownTool.ref], [
      "bad_request",
      "tools[1]",
      id,
    ]);

    client.socket.send(new Uint8Array([1, 2, 3]));
    const binary = await client.takeType("error");
    assert.equal(binary.code, "bad_request");
    assert.match(binary.message, /binary/);
    await stillServes(client);
    assert.equal(client.isClosed, false);
  });
});

Deno.test("cancel, approve and resume of unknown ids are answered, not ignored", async () => {
  await withWorld({}, async ({ connect, user }) => {
    const client = await connect(await user());
    const turnId = crypto.randomUUID();
    const cancel = await errorFor(client, { type: "cancel", turn_id: turnId });
    assert.deepEqual([cancel.code, cancel.ref], ["not_running", turnId]);
    const resume = await errorFor(client, {
      type: "resume",
      turn_id: turnId,
      after_seq: 0,
    });
    assert.deepEqual([resume.code, resume.ref], ["not_found", turnId]);
    const approve = await errorFor(client, {
      type: "approve",
      call_id: "x",
      decision: "deny",
    });
    assert.deepEqual([approve.code, approve.ref], ["not_found", "x"]);
    await stillServes(client);
  });
});
