import assert from "node:assert/strict";
import { RECONNECT_POLICY, reconnectDelay } from "./backoff.ts";
import { AgentConnection, type ConnectionStatus } from "./connection.ts";
import type { ServerFrame } from "./protocol.ts";
import { FakeSocket, FakeTimers, settle, TurnScript } from "./test_support.ts";

function harness(options: { token?: () => Promise<string | undefined> } = {}) {
  const timers = new FakeTimers();
  const sockets: FakeSocket[] = [];
  const statuses: ConnectionStatus[] = [];
  const frames: ServerFrame[] = [];
  const problems: { code: string; message: string }[] = [];
  let readies = 0;
  const connection = new AgentConnection({
    url: "ws://agent.test/functions/v1/agent",
    token: options.token ?? (() => Promise.resolve("token-1")),
    timers,
    pingIntervalMs: 0,
    openSocket: (url, protocols) => {
      const socket = new FakeSocket(url, protocols);
      sockets.push(socket);
      return socket;
    },
    onFrame: (frame) => frames.push(frame),
    onStatus: (status) => statuses.push(status),
    onReady: () => readies++,
    onProblem: (problem) => problems.push(problem),
  });
  return {
    connection,
    timers,
    sockets,
    statuses,
    frames,
    problems,
    readies: () => readies,
    last: () => sockets[sockets.length - 1],
  };
}

Deno.test("the backoff is 1 s · 2ⁿ over five tries", () => {
  assert.deepEqual(
    Array.from({ length: RECONNECT_POLICY.maxAttempts }, (_, n) => reconnectDelay(n)),
    [1000, 2000, 4000, 8000, 16000],
  );
});

Deno.test("connects with the token as the jwt- subprotocol and is open after ready", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  assert.equal(h.sockets.length, 1);
  assert.deepEqual(h.last().protocols, ["jwt-token-1"]);
  assert.equal(h.connection.status.state, "connecting");
  h.last().accept();
  assert.equal(h.connection.status.state, "open");
  assert.equal(h.readies(), 1);
});

Deno.test("every frame goes through the protocol's schemas; a bad one is a visible problem", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  h.last().accept();
  const turn = new TurnScript();
  h.last().receive(turn.start());
  h.last().receive({ type: "token", turn_id: "not-a-uuid", seq: 2, delta: "x" });
  h.last().receive("{not json");
  assert.deepEqual(h.frames.map((frame) => frame.type), ["start"]);
  assert.deepEqual(h.problems.map((problem) => problem.code), ["protocol_error", "protocol_error"]);
  assert.equal(h.connection.status.state, "open");
});

Deno.test("after a drop it retries after 1, 2, 4, 8 and 16 s, then waits for the button", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  h.last().accept();
  h.last().drop();
  const waits: number[] = [];
  for (let attempt = 1; attempt <= 5; attempt++) {
    const status = h.connection.status;
    assert.equal(status.state, "waiting");
    assert.equal(status.state === "waiting" && status.attempt, attempt);
    const [delay] = h.timers.pendingDelays();
    waits.push(delay);
    const sockets = h.sockets.length;
    h.timers.advance(delay - 1);
    await settle();
    assert.equal(h.sockets.length, sockets, "no try before its time");
    h.timers.advance(1);
    await settle();
    assert.equal(h.sockets.length, sockets + 1);
    h.last().drop(); // the try fails
  }
  assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000]);
  const status = h.connection.status;
  assert.equal(status.state, "offline");
  assert.equal(status.state === "offline" && status.code, "unreachable");
  assert.deepEqual(h.timers.pendingDelays(), []);

  h.connection.reconnect();
  await settle();
  h.last().accept();
  assert.equal(h.connection.status.state, "open");
});

Deno.test("reaching ready again starts the next outage's tries from 1 s", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  h.last().accept();
  h.last().drop();
  h.timers.advance(1000);
  await settle();
  h.last().drop();
  h.timers.advance(2000);
  await settle();
  h.last().accept();
  assert.equal(h.readies(), 2);
  h.last().drop();
  assert.deepEqual(h.timers.pendingDelays(), [1000]);
});

Deno.test("a close for too many connections is not retried", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  h.last().accept();
  h.last().drop(4001);
  const status = h.connection.status;
  assert.equal(status.state === "offline" && status.code, "replaced");
  assert.deepEqual(h.timers.pendingDelays(), []);
});

Deno.test("a close for a revoked account (4003) is not retried and says why", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  h.last().accept();
  h.last().drop(4003, "session_ended");
  const status = h.connection.status;
  assert.deepEqual(status, {
    state: "offline",
    code: "access_revoked",
    message: "Your session was signed out; sign in again",
  });
  assert.deepEqual(h.timers.pendingDelays(), []);
});

Deno.test("signed out: no socket, and an offline status that says so", async () => {
  const h = harness({ token: () => Promise.resolve(undefined) });
  h.connection.start();
  await settle();
  assert.equal(h.sockets.length, 0);
  const status = h.connection.status;
  assert.equal(status.state === "offline" && status.code, "signed_out");
});

Deno.test("send checks the frame and refuses while not connected", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  assert.deepEqual(h.connection.send({ type: "ping" }), { ok: false, code: "not_connected" });
  h.last().accept();
  assert.deepEqual(
    h.connection.send({ type: "chat", id: crypto.randomUUID(), content: "" }),
    { ok: false, code: "bad_request" },
  );
  assert.deepEqual(h.connection.send({ type: "ping" }), { ok: true });
  assert.deepEqual(h.last().sent, [{ type: "ping" }]);
});

Deno.test("stop closes the socket and nothing reconnects", async () => {
  const h = harness();
  h.connection.start();
  await settle();
  h.last().accept();
  const socket = h.last();
  h.connection.stop();
  assert.equal(socket.closedByClient, 1000);
  assert.equal(h.connection.status.state, "idle");
  h.timers.advance(60_000);
  await settle();
  assert.equal(h.sockets.length, 1);
});
