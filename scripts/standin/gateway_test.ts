import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { createTokenVerifier } from "./token_verifier.ts";
import { createGateway, ProxiedSockets } from "./gateway.ts";
import { type FunctionWorker, startFunctionWorker } from "./function_workers.ts";
import { generateSigningKey, issueAccessToken, jwksOf } from "./signing_keys.ts";

const DenoWebSocket = WebSocket as unknown as new (
  url: string,
  options: { protocols?: string[]; headers?: HeadersInit },
) => WebSocket;

const ECHO_FUNCTION = fileURLToPath(new URL("./testdata/echo_function.ts", import.meta.url));

async function withGateway(
  verifyJwt: Record<string, boolean>,
  run: (
    base: string,
    context: { worker: FunctionWorker; token: string; sockets: ProxiedSockets },
  ) => Promise<void>,
) {
  const key = await generateSigningKey();
  const worker = await startFunctionWorker({
    name: "echo",
    entrypoint: ECHO_FUNCTION,
    env: {},
    log: () => {},
  });
  const functions = new Map(Object.keys(verifyJwt).map((name) => [name, worker.origin]));
  const sockets = new ProxiedSockets();
  const handler = createGateway({
    functions,
    verifyJwt: new Map(Object.entries(verifyJwt)),
    verifier: createTokenVerifier({ jwks: jwksOf(key) }),
    sockets,
  });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  const token = await issueAccessToken(key, {
    userId: crypto.randomUUID(),
    issuer: "http://127.0.0.1/auth/v1",
  });
  try {
    await run(`http://127.0.0.1:${server.addr.port}`, { worker, token, sockets });
  } finally {
    await server.shutdown();
    await worker.stop();
  }
}

Deno.test("a function sees /<name>/… with the query, headers and method it was sent", async () => {
  await withGateway({ echo: false }, async (base) => {
    const response = await fetch(`${base}/functions/v1/echo/things/1?limit=5`, {
      method: "DELETE",
      headers: { authorization: "Bearer abc", apikey: "key" },
    });
    assert.equal(response.status, 200);
    const body = await response.json();
    assert.deepEqual(
      [body.path, body.search, body.method, body.authorization, body.apikey],
      ["/echo/things/1", "?limit=5", "DELETE", "Bearer abc", "key"],
    );
  });
});

Deno.test("server-sent events stream through", async () => {
  await withGateway({ echo: false }, async (base) => {
    const response = await fetch(`${base}/functions/v1/echo/sse`);
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    assert.equal(await response.text(), "data: 1\n\ndata: 2\n\ndata: 3\n\n");
  });
});

Deno.test("WebSockets pass through with the chosen subprotocol and close codes", async () => {
  await withGateway({ echo: false }, async (base) => {
    const url = `${base.replace("http", "ws")}/functions/v1/echo/ws`;
    const DenoWebSocket = WebSocket as unknown as new (
      url: string,
      options: { protocols?: string[]; headers?: HeadersInit },
    ) => WebSocket;
    const ws = new DenoWebSocket(url, {
      protocols: ["jwt-abc", "other"],
      headers: { authorization: "Bearer let-me-in" },
    });
    const messages: string[] = [];
    const closed = new Promise<CloseEvent>((resolve) => ws.onclose = resolve);
    await new Promise<void>((resolve, reject) => {
      ws.onerror = () => reject(new Error("socket failed"));
      ws.onmessage = (event) => {
        messages.push(event.data);
        if (messages.length === 1) ws.send("ping");
        if (messages.length === 2) {
          ws.send("close-please");
          resolve();
        }
      };
    });
    const close = await closed;
    assert.equal(ws.protocol, "jwt-abc");
    assert.deepEqual(messages, [
      JSON.stringify({ hello: "echo", protocol: "jwt-abc" }),
      "echo:ping",
    ]);
    assert.deepEqual([close.code, close.reason], [4001, "replaced by a newer connection"]);
  });
});

Deno.test("a function that sends a frame and closes at once: the client gets both", async () => {
  await withGateway({ echo: false }, async (base) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const ws = new DenoWebSocket(`${base.replace("http", "ws")}/functions/v1/echo/ws?refuse`, {
        headers: { authorization: "Bearer let-me-in" },
      });
      const messages: string[] = [];
      ws.onmessage = (event) => messages.push(event.data);
      const timeout = Promise.withResolvers<never>();
      const timer = setTimeout(
        () => timeout.reject(new Error("no close reached the client")),
        10_000,
      );
      const close = await Promise.race([
        new Promise<CloseEvent>((resolve) => ws.onclose = resolve),
        timeout.promise,
      ]).finally(() => clearTimeout(timer));
      assert.equal(messages.length, 1);
      assert.deepEqual([close.code, close.reason], [4004, "refused at once"]);
    }
  });
});

Deno.test("dropAll cuts every bridged socket; the gateway keeps serving", async () => {
  await withGateway({ echo: false }, async (base, { sockets }) => {
    const url = `${base.replace("http", "ws")}/functions/v1/echo/ws`;
    const DenoWebSocket = WebSocket as unknown as new (
      url: string,
      options: { headers?: HeadersInit },
    ) => WebSocket;
    const connect = async () => {
      const ws = new DenoWebSocket(url, { headers: { authorization: "Bearer let-me-in" } });
      const closed = new Promise<CloseEvent>((resolve) => ws.onclose = resolve);
      await new Promise((resolve, reject) => {
        ws.onmessage = resolve;
        ws.onerror = () => reject(new Error("socket failed"));
      });
      return { ws, closed };
    };
    const first = await connect();
    assert.equal(sockets.dropAll(), 1);
    const close = await first.closed;
    // 1012 may not be sent by Deno's WebSocket: it travels as 1000 with the code in the reason.
    assert.deepEqual([close.code, close.reason], [1000, "[1012] dropped by the gateway"]);
    assert.equal(sockets.dropAll(), 0);

    const second = await connect();
    const echoed = new Promise((resolve) => second.ws.onmessage = (e) => resolve(e.data));
    second.ws.send("still here");
    assert.equal(await echoed, "echo:still here");
    second.ws.close();
    await second.closed;
  });
});

Deno.test("a function's refusal before upgrading reaches the client", async () => {
  await withGateway({ echo: false }, async (base) => {
    const handlerResponse = await fetch(`${base}/functions/v1/echo/ws`, {
      headers: { authorization: "Bearer wrong" },
    });
    assert.equal(handlerResponse.status, 401);
    await handlerResponse.body?.cancel();

    const ws = new WebSocket(`${base.replace("http", "ws")}/functions/v1/echo/ws`);
    const outcome = await new Promise<string>((resolve) => {
      ws.onopen = () => resolve("opened");
      ws.onerror = () => resolve("refused");
    });
    assert.equal(outcome, "refused");
  });
});

Deno.test("verify_jwt = true: the gateway checks the JWT before the function runs", async () => {
  await withGateway({ guarded: true }, async (base, { token }) => {
    const refused = await fetch(`${base}/functions/v1/guarded/x`);
    assert.equal(refused.status, 401);
    assert.deepEqual(await refused.json(), { code: 401, message: "Invalid JWT" });
    const forged = await fetch(`${base}/functions/v1/guarded/x`, {
      headers: { authorization: "Bearer not.a.jwt" },
    });
    assert.equal(forged.status, 401);
    await forged.body?.cancel();
    const allowed = await fetch(`${base}/functions/v1/guarded/x`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(allowed.status, 200);
    assert.equal((await allowed.json()).path, "/guarded/x");
  });
});

Deno.test("unknown functions are 404 and a dead worker is 502", async () => {
  await withGateway({ echo: false }, async (base, { worker }) => {
    const missing = await fetch(`${base}/functions/v1/nope/x`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    worker.kill("SIGKILL");
    await worker.exited;
    const dead = await fetch(`${base}/functions/v1/echo/x`);
    assert.equal(dead.status, 502);
    await dead.body?.cancel();
  });
});
