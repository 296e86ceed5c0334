/**
 * The Edge Runtime's limits through the gateway, on a test function (testdata/
 * limits_function.ts) with the Free plan's figures, the wall clock shortened. Time here only
 * drives the limits; nothing asserts how fast anything is.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { createGateway } from "./gateway.ts";
import { type LimitsChoice, resolveLimits, RuntimeLimitsError } from "./runtime_limits.ts";
import { createTokenVerifier } from "./token_verifier.ts";
import { FunctionPool, type WorkerEvent } from "./worker_pool.ts";

const LIMITS_FUNCTION = fileURLToPath(new URL("./testdata/limits_function.ts", import.meta.url));

interface Harness {
  base: string;
  pool: FunctionPool;
  logs: string[];
}

async function withPool(limits: LimitsChoice, run: (harness: Harness) => Promise<void>) {
  const logs: string[] = [];
  const pool = new FunctionPool({
    name: "limits",
    entrypoint: LIMITS_FUNCTION,
    env: {},
    limits: resolveLimits(limits),
    log: (line) => logs.push(line),
  });
  const handler = createGateway({
    functions: { has: (name) => name === "limits", get: () => pool.acquire() },
    verifyJwt: new Map([["limits", false]]),
    verifier: createTokenVerifier({ jwks: { keys: [] } }),
  });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  try {
    await run({ base: `http://127.0.0.1:${server.addr.port}/functions/v1/limits`, pool, logs });
  } finally {
    await server.shutdown();
    await pool.stop();
  }
}

async function pidOf(base: string): Promise<number> {
  const response = await fetch(`${base}/pid`);
  assert.equal(response.status, 200);
  return (await response.json()).pid;
}

/** A WebSocket through the gateway that keeps every message and its close. */
class Socket {
  readonly messages: string[] = [];
  readonly closed: Promise<CloseEvent>;
  readonly #socket: WebSocket;
  constructor(url: string) {
    this.#socket = new WebSocket(url.replace("http", "ws"));
    this.#socket.onmessage = (event) => this.messages.push(String(event.data));
    this.closed = new Promise((resolve) => this.#socket.onclose = resolve);
  }
  async pid(): Promise<number> {
    const hello = await this.next((message) => message.startsWith("pid:"));
    return Number(hello.slice(4));
  }
  send(text: string) {
    this.#socket.send(text);
  }
  async next(match: (message: string) => boolean): Promise<string> {
    for (let waited = 0; waited < 20_000; waited += 20) {
      const found = this.messages.find(match);
      if (found) return found;
      await sleep(20);
    }
    throw new Error(`no such message; got ${JSON.stringify(this.messages)}`);
  }
  close() {
    if (this.#socket.readyState === WebSocket.OPEN) this.#socket.close(1000, "test done");
  }
}

function sleep(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function eventOf(
  pool: FunctionPool,
  pid: number,
  kind: WorkerEvent["kind"],
): Promise<WorkerEvent> {
  for (let waited = 0; waited < 20_000; waited += 20) {
    const event = pool.events.find((e) => e.pid === pid && e.kind === kind);
    if (event) return event;
    await sleep(20);
  }
  throw new Error(`worker ${pid} was never ${kind}: ${JSON.stringify(pool.events)}`);
}

Deno.test("wall clock: retired at half, then beforeunload and closed; sockets move on", async () => {
  await withPool({ plan: "free", wallClockMs: 4_000, unloadGraceMs: 300 }, async (h) => {
    const early = new Socket(`${h.base}/ws`);
    const first = await early.pid();
    assert.equal(await pidOf(h.base), first, "before half, requests share the worker");

    const retired = await eventOf(h.pool, first, "retired");
    assert.match(retired.reason, /^wall clock half/);
    const second = await pidOf(h.base);
    assert.notEqual(second, first, "after half, a new request boots a fresh worker");
    const late = new Socket(`${h.base}/ws`);
    assert.equal(await late.pid(), second, "and a new socket goes there too");

    // The retired worker's socket still works until its wall clock…
    early.send("ping");
    await early.next((message) => message === "done:ping");
    // …then the function hears `beforeunload` and the socket closes.
    const closed = await early.closed;
    assert.ok(early.messages.includes(`beforeunload:${first}`), early.messages.join(", "));
    assert.equal(closed.reason, "[1001] going away");
    assert.ok((await eventOf(h.pool, first, "unloading")).ageMs >= 4_000);
    await eventOf(h.pool, first, "exited");

    // The fresh worker's own clock started later: its socket is still served.
    late.send("ping");
    await late.next((message) => message === "done:ping");
    late.close();
    await late.closed;
  });
});

Deno.test("CPU: the soft limit retires a worker, the hard one kills it without beforeunload", async () => {
  await withPool({ plan: "free", unloadGraceMs: 300 }, async (h) => {
    const busy = new Socket(`${h.base}/ws`);
    const first = await busy.pid();
    busy.send("burn:1200");
    await busy.next((message) => message === "done:burn");
    assert.match((await eventOf(h.pool, first, "retired")).reason, /^CPU soft limit/);
    const second = await pidOf(h.base);
    assert.notEqual(second, first, "past the soft limit, new requests go to a fresh worker");

    // The socket it still holds may go on working, until the hard limit.
    busy.send("burn:1500");
    const closed = await busy.closed;
    assert.match((await eventOf(h.pool, first, "killed")).reason, /^CPU hard limit/);
    assert.match((await eventOf(h.pool, first, "exited")).reason, /SIGKILL/);
    assert.ok(!busy.messages.some((m) => m.startsWith("beforeunload")), busy.messages.join());
    assert.notEqual(closed.reason, "[1001] going away");
    assert.equal(await pidOf(h.base), second);
  });
});

Deno.test("a crashed worker is replaced by the next request", async () => {
  await withPool({ plan: "free" }, async (h) => {
    const first = await pidOf(h.base);
    const crash = await fetch(`${h.base}/crash`);
    assert.equal(crash.status, 502);
    await crash.body?.cancel();
    assert.match((await eventOf(h.pool, first, "exited")).reason, /exit code 3/);
    const second = await pidOf(h.base);
    assert.notEqual(second, first);
  });
});

Deno.test("memory: a worker over the limit is killed, the next request gets a fresh one", async () => {
  await withPool({ plan: "free", memoryBytes: 160 * 1024 * 1024 }, async (h) => {
    const first = await pidOf(h.base);
    const grown = await fetch(`${h.base}/grow?mb=200`);
    await grown.body?.cancel();
    assert.match((await eventOf(h.pool, first, "killed")).reason, /^memory limit/);
    await eventOf(h.pool, first, "exited");
    assert.notEqual(await pidOf(h.base), first);
  });
});

Deno.test("memory: a worker's V8 heap is capped at the memory limit, as the Edge Runtime caps it", async () => {
  await withPool({ plan: "free", memoryBytes: 160 * 1024 * 1024 }, async (h) => {
    const response = await fetch(`${h.base}/heap`);
    const { limit } = await response.json() as { limit: number };
    // V8 rounds the limit to its pages; what matters is that it is the limit, not the default.
    assert.ok(limit <= 160 * 1024 * 1024, `heap limit ${limit} over the 160 MiB memory limit`);
    assert.ok(limit >= 150 * 1024 * 1024, `heap limit ${limit} far under the memory limit`);
  });
});

Deno.test("limits may be made stricter, never laxer, and CPU lifted only by name", () => {
  assert.throws(
    () => resolveLimits({ plan: "free", wallClockMs: 200_000 }),
    (error) => error instanceof RuntimeLimitsError && /only be made stricter/.test(error.message),
  );
  assert.throws(() => resolveLimits({ plan: "paid", cpu: { softMs: 500, hardMs: 5_000 } }));
  assert.throws(() => resolveLimits({ plan: "free", cpu: { softMs: 1_500, hardMs: 1_000 } }));
  assert.equal(resolveLimits({ plan: "paid" })?.wallClockMs, 400_000);
  assert.equal(resolveLimits({ plan: "free" })?.wallClockMs, 150_000);
  assert.deepEqual(resolveLimits({ plan: "free" })?.cpu, { softMs: 1_000, hardMs: 2_000 });
  assert.equal(resolveLimits({ plan: "paid", cpu: "off" })?.cpu, null);
  assert.equal(resolveLimits("off"), null);
});

Deno.test("killing every worker: retired ones too, without beforeunload; the next request boots one", async () => {
  await withPool({ plan: "free", wallClockMs: 4_000, unloadGraceMs: 300 }, async (h) => {
    const early = new Socket(`${h.base}/ws`);
    const first = await early.pid();
    await eventOf(h.pool, first, "retired");
    const second = await pidOf(h.base);
    assert.notEqual(second, first);

    assert.equal(await h.pool.killAll("test"), 2, "the retired worker and the current one");
    const closed = await early.closed;
    for (const pid of [first, second]) {
      assert.equal((await eventOf(h.pool, pid, "killed")).reason, "test");
      assert.match((await eventOf(h.pool, pid, "exited")).reason, /SIGKILL/);
    }
    assert.ok(!early.messages.some((m) => m.startsWith("beforeunload")), early.messages.join());
    assert.notEqual(closed.reason, "[1001] going away");
    const third = await pidOf(h.base);
    assert.ok(![first, second].includes(third), "a fresh worker takes the next request");
  });
});
