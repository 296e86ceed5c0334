import assert from "node:assert/strict";
import {
  ClientFrameSchema,
  decodeClientFrame,
  decodeServerFrame,
  isTerminalFrame,
  TurnFrameSchema,
} from "./agent_protocol.ts";

const id = "6f1f6d3e-3c2a-4d7e-9a51-0c6b2b1f8a10";

Deno.test("every client frame type decodes", () => {
  const frames = [
    {
      type: "chat",
      id,
      content: "hi",
      session_id: id,
      model: "m",
      tools: ["calculator"],
      policy: "enqueue",
    },
    { type: "cancel", turn_id: id },
    {
      type: "approve",
      call_id: "call_1",
      decision: "deny",
      remember: "always",
    },
    { type: "resume", turn_id: id, after_seq: 0 },
    { type: "ping" },
    { type: "auth", access_token: "eyJ.renewed.token" },
  ];
  for (const frame of frames) {
    const decoded = decodeClientFrame(JSON.stringify(frame));
    assert.ok(decoded.ok, JSON.stringify(frame));
    assert.deepEqual(decoded.frame, frame);
  }
  assert.deepEqual(ClientFrameSchema.options.map((o) => o.shape.type.value), [
    "chat",
    "cancel",
    "approve",
    "resume",
    "ping",
    "auth",
  ]);
});

Deno.test("a bad client frame names the field at fault", () => {
  const problem = (frame: unknown) => {
    const decoded = decodeClientFrame(
      typeof frame === "string" ? frame : JSON.stringify(frame),
    );
    assert.ok(!decoded.ok);
    return decoded.error;
  };
  assert.deepEqual(problem("{"), {
    code: "bad_request",
    message: problem("{").message,
  });
  assert.match(problem("{").message, /^not valid JSON/);
  assert.equal(problem("null").message, "the frame must be a JSON object");
  assert.equal(
    problem({ type: "chat", id, content: "hi", tools: ["ok", "Not OK"] }).path,
    "tools[1]",
  );
  assert.equal(
    problem({ type: "chat", id, content: "a\u0000b" }).path,
    "content",
  );
  assert.equal(
    problem({ type: "resume", turn_id: id, after_seq: -1 }).path,
    "after_seq",
  );
  assert.equal(problem({ type: "chat", id, content: "hi", policy: "interrupt" }).path, "policy");
  const unknown = problem({ type: "shout" });
  assert.equal(unknown.path, "type");
  assert.equal(
    unknown.message,
    "type: must be one of chat, cancel, approve, resume, ping, auth",
  );
});

Deno.test("unknown fields are ignored in both directions", () => {
  const decoded = decodeClientFrame(JSON.stringify({ type: "ping", extra: 1 }));
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.frame, { type: "ping" });
  assert.deepEqual(decodeServerFrame('{"type":"pong","server_time":1}'), {
    type: "pong",
  });
});

Deno.test("turn frames need turn_id and seq; only complete and error are terminal", () => {
  assert.ok(
    TurnFrameSchema.safeParse({
      type: "token",
      turn_id: id,
      seq: 2,
      delta: "x",
    }).success,
  );
  assert.ok(
    !TurnFrameSchema.safeParse({ type: "token", turn_id: id, delta: "x" })
      .success,
  );
  assert.ok(
    !TurnFrameSchema.safeParse({
      type: "token",
      turn_id: id,
      seq: 0,
      delta: "x",
    }).success,
  );
  const turnError = {
    type: "error",
    turn_id: id,
    seq: 3,
    code: "x",
    message: "m",
    retryable: true,
  };
  assert.ok(TurnFrameSchema.safeParse(turnError).success);
  const { turn_id: _, seq: __, ...connectionError } = turnError;
  assert.ok(!TurnFrameSchema.safeParse(connectionError).success);
  assert.deepEqual(
    decodeServerFrame(JSON.stringify(connectionError)),
    connectionError,
  );
  assert.throws(() => decodeServerFrame('{"type":"token","delta":"x"}'));
  assert.deepEqual(
    ["start", "token", "response", "complete", "error"].filter((type) => isTerminalFrame({ type })),
    ["complete", "error"],
  );
});

Deno.test("queued is a server frame without a seq; session_busy names the running turn", () => {
  const queued = decodeServerFrame(JSON.stringify({
    type: "queued",
    ref: id,
    turn_id: id,
    session_id: id,
    ahead: 0,
    running_turn_id: id,
  }));
  assert.equal(queued.type, "queued");
  assert.throws(() => TurnFrameSchema.parse(queued));
  const busy = decodeServerFrame(JSON.stringify({
    type: "error",
    code: "session_busy",
    message: "busy",
    retryable: true,
    ref: id,
    running_turn_id: id,
  }));
  assert.ok(busy.type === "error" && busy.running_turn_id === id && busy.turn_id === undefined);
});
