import assert from "node:assert/strict";
import { AgentClient } from "./agent_client.ts";
import { AgentStore, intervalScheduler, NEW_SESSION } from "./store.ts";
import { FakeSocket, FakeTimers, settle, TurnScript } from "./test_support.ts";

/** A client on fake sockets whose store notifies at once (no batching timer). */
function harness(findRunningTurns?: () => Promise<string[]>) {
  const timers = new FakeTimers();
  const sockets: FakeSocket[] = [];
  const store = new AgentStore((flush) => flush());
  const ids = ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"];
  const client = new AgentClient({
    url: "ws://agent.test",
    token: () => Promise.resolve("t"),
    timers,
    pingIntervalMs: 0,
    store,
    newId: () => ids.shift() ?? crypto.randomUUID(),
    ...(findRunningTurns ? { findRunningTurns } : {}),
    openSocket: (url, protocols) => {
      const socket = new FakeSocket(url, protocols);
      sockets.push(socket);
      return socket;
    },
  });
  return { client, store, timers, last: () => sockets[sockets.length - 1] };
}

Deno.test("a chat shows at once, goes out with its client id, and joins its session on start", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  const id = h.client.sendChat({ content: "hello", model: "m1" });
  assert.equal(id, "00000000-0000-4000-8000-000000000001");
  assert.deepEqual(h.store.pendingIn(NEW_SESSION).map((c) => [c.id, c.state]), [[id, "sending"]]);
  assert.deepEqual(h.last().sent, [
    { type: "chat", id, content: "hello", model: "m1", policy: "enqueue" },
  ]);

  const s = new TurnScript(id);
  const started: string[] = [];
  h.store.onTurnStarted((turn) => started.push(turn.sessionId));
  h.last().receive(s.start());
  assert.deepEqual(started, [s.sessionId]);
  assert.deepEqual(h.store.pendingIn(NEW_SESSION), []);
  assert.deepEqual(h.store.pendingIn(s.sessionId).map((c) => c.state), ["started"]);
  assert.equal(h.store.runningTurnIn(s.sessionId)?.turnId, s.turnId);
});

Deno.test("after a lost connection it resumes the running turn from its last seq", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  const id = h.client.sendChat({ content: "tell me" });
  const s = new TurnScript(id);
  h.last().receive(s.start());
  h.last().receive(s.token("one "));
  h.last().receive(s.token("two "));
  const lastSeq = s.nextSeq - 1;

  h.last().drop();
  h.timers.advance(1000);
  await settle();
  h.last().accept();
  assert.deepEqual(h.last().sent, [{ type: "resume", turn_id: s.turnId, after_seq: lastSeq }]);

  // The server replays from after_seq; a frame sent twice around the drop counts once.
  h.last().receive(s.token("three"));
  h.last().receive(s.complete());
  const turn = h.store.turnOfMessage(s.messageId)!;
  assert.equal(turn.text, "one two three");
  assert.equal(turn.status, "complete");
});

Deno.test("a chat sent while disconnected goes out, same id, once the socket is back", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  h.last().drop();
  const id = h.client.sendChat({ content: "queued", sessionId: crypto.randomUUID() });
  h.timers.advance(1000);
  await settle();
  h.last().accept();
  assert.deepEqual(h.last().sent.map((f) => [f.type, f.id]), [["chat", id]]);
});

Deno.test("a refused chat is marked failed with the server's code and can be retried", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  const id = h.client.sendChat({ content: "too much" });
  h.last().receive({
    type: "error",
    code: "rate_limited",
    message: "Your token bucket is empty",
    retryable: true,
    ref: id,
  });
  const chat = h.store.pendingChat(id)!;
  assert.equal(chat.state, "failed");
  assert.equal(chat.error?.code, "rate_limited");
  h.client.retryChat(id);
  assert.deepEqual(h.last().sent.map((f) => [f.type, f.id]), [["chat", id], ["chat", id]]);
});

Deno.test("an error for no chat of ours becomes a notice; approvals and cancels go out", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  h.last().receive({
    type: "error",
    code: "not_found",
    message: "no such call",
    retryable: false,
    ref: "call_x",
  });
  assert.deepEqual(h.store.notices.map((n) => n.code), ["not_found"]);
  const s = new TurnScript();
  h.last().receive(s.start());
  h.last().receive(s.approvalRequired("call_1", "calculator", {}));
  h.client.approve(s.messageId, "call_1", "allow", "session");
  h.client.cancel(s.turnId);
  assert.deepEqual(h.last().sent, [
    { type: "approve", call_id: "call_1", decision: "allow", remember: "session" },
    { type: "cancel", turn_id: s.turnId },
  ]);
  assert.equal(h.store.turnOfMessage(s.messageId)!.toolCalls[0].approval?.answered, "allow");
});

Deno.test("a token notifies its own message only, never the session or the list", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  const s = new TurnScript();
  h.last().receive(s.start());
  const heard: string[] = [];
  h.store.subscribe(`message:${s.messageId}`, () => heard.push("message"));
  h.store.subscribe(`session:${s.sessionId}`, () => heard.push("session"));
  h.store.subscribe("status", () => heard.push("status"));
  for (let i = 0; i < 5; i++) h.last().receive(s.token(`t${i}`));
  assert.deepEqual(heard, ["message", "message", "message", "message", "message"]);
  h.last().receive(s.complete());
  assert.deepEqual(heard.slice(5), ["message", "session"]);
});

Deno.test("the interval scheduler turns a burst of tokens into one flush per interval", () => {
  const timers = new FakeTimers();
  const store = new AgentStore(intervalScheduler(50, timers));
  const s = new TurnScript();
  const frame = (f: unknown) => store.applyFrame(f as Parameters<AgentStore["applyFrame"]>[0]);
  frame(s.start());
  let notified = 0;
  store.subscribe(`message:${s.messageId}`, () => notified++);
  for (let i = 0; i < 50; i++) frame(s.token("x"));
  assert.equal(notified, 0, "tokens wait for the flush");
  timers.advance(0);
  assert.equal(notified, 1, "fifty tokens, one notification");
  for (let i = 0; i < 50; i++) frame(s.token("y"));
  timers.advance(49);
  assert.equal(notified, 1, "not before the interval since the last flush");
  timers.advance(1);
  assert.equal(notified, 2);
  assert.equal(store.turnOfMessage(s.messageId)?.text.length, 100);
});

Deno.test("the end of a turn is notified at once, to the message and the session together", () => {
  const timers = new FakeTimers();
  const store = new AgentStore(intervalScheduler(50, timers));
  const s = new TurnScript();
  const frame = (f: unknown) => store.applyFrame(f as Parameters<AgentStore["applyFrame"]>[0]);
  frame(s.start());
  timers.advance(0);
  const heard: string[] = [];
  store.subscribe(`message:${s.messageId}`, () => heard.push("message"));
  store.subscribe(`session:${s.sessionId}`, () => heard.push("session"));
  frame(s.token("a"));
  assert.deepEqual(heard, [], "a token waits for the next flush");
  frame(s.error("cancelled"));
  // No timer ran: the Stop button disappears in the same render that says "Stopped".
  assert.deepEqual(heard, ["message", "session"]);
  assert.equal(store.runningTurnIn(s.sessionId), undefined);
});

Deno.test("a refreshed token goes to the open socket as an auth frame; closed, it waits", async () => {
  const h = harness();
  h.client.renewToken("refreshed-before-open");
  h.client.start();
  await settle();
  h.last().accept();
  assert.deepEqual(h.last().sent, [], "the next connect carries the fresh token itself");
  h.client.renewToken("refreshed");
  assert.deepEqual(h.last().sent, [{ type: "auth", access_token: "refreshed" }]);
});

Deno.test("step frames, a complete's duration, a progress stage and a notice about a turn keep the turn going", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  const id = h.client.sendChat({ content: "compute" });
  const s = new TurnScript(id);
  h.last().receive(s.start());
  h.last().receive({
    type: "step",
    turn_id: s.turnId,
    seq: s.nextSeq,
    step: "calling_model",
    index: 1,
  });
  s.token(""); // the step took a seq: keep the script's numbering in step
  assert.equal(h.store.runningTurnIn(s.sessionId)?.step?.kind, "calling_model");
  h.last().receive(s.toolCall("c1", "calculator", {}));
  h.last().receive({
    ...s.progress("c1", 1, 2),
    stage: "parsing",
    data: { partial: 1 },
  } as never);
  const turn = h.store.runningTurnIn(s.sessionId)!;
  assert.equal(turn.toolCalls[0].progress?.stage, "parsing");
  h.last().receive({
    type: "step",
    turn_id: s.turnId,
    seq: s.nextSeq,
    step: "a_future_kind",
    index: 1,
  });
  s.token("");
  h.last().receive({
    type: "notice",
    turn_id: s.turnId,
    code: "ending_delayed",
    message: "The database has not stored the ending yet",
  });
  assert.ok(h.store.runningTurnIn(s.sessionId), "a notice ends nothing");
  h.last().receive(s.response("4"));
  h.last().receive({ ...s.complete(), duration_ms: 1234 } as never);
  assert.equal(h.store.runningTurnIn(s.sessionId), undefined);
});

Deno.test("a turn seen streaming elsewhere is followed over this socket, from seq 0, once", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  const s = new TurnScript();
  h.client.followTurn(s.turnId);
  h.client.followTurn(s.turnId);
  assert.deepEqual(h.last().sent, [{ type: "resume", turn_id: s.turnId, after_seq: 0 }]);
  // Lost before any frame came: the next connection asks again from 0.
  h.last().drop();
  h.timers.advance(1000);
  await settle();
  h.last().accept();
  assert.deepEqual(h.last().sent, [{ type: "resume", turn_id: s.turnId, after_seq: 0 }]);
  h.last().receive(s.start());
  h.last().receive(s.token("live"));
  assert.equal(h.store.turnOfMessage(s.messageId)?.text, "live");
  assert.equal(h.store.runningTurnIn(s.sessionId)?.turnId, s.turnId, "Stop shows here too");
});

Deno.test("on every ready it finds the user's running turns in the database and follows them", async () => {
  const running = crypto.randomUUID();
  let asked = 0;
  const h = harness(() => {
    asked++;
    return Promise.resolve([running]);
  });
  h.client.start();
  await settle();
  h.last().accept();
  await settle();
  assert.equal(asked, 1);
  assert.deepEqual(h.last().sent, [{ type: "resume", turn_id: running, after_seq: 0 }]);
});

Deno.test("a resume after a takeover carries the epoch of the last restart_step seen", async () => {
  const h = harness();
  h.client.start();
  await settle();
  h.last().accept();
  const id = h.client.sendChat({ content: "tell me" });
  const s = new TurnScript(id);
  h.last().receive(s.start());
  h.last().receive(s.token("one "));
  h.last().receive(
    { type: "restart_step", turn_id: s.turnId, seq: 3, step: 1, epoch: 2, keep_chars: 4 } as never,
  );
  h.last().drop();
  h.timers.advance(1000);
  await settle();
  h.last().accept();
  assert.deepEqual(h.last().sent, [{ type: "resume", turn_id: s.turnId, after_seq: 3, epoch: 2 }]);
});
