/**
 * The wire itself, frame by frame, with a bare WebSocket: what the reference
 * (supabase-wire-protocols.md, "Realtime") says the server sends.
 */
import assert from "node:assert/strict";
import { LOCAL_PUBLISHABLE_KEY, LOCAL_SECRET_KEY } from "../keys.ts";
import {
  connectTestDatabase,
  createUser,
  testDatabaseUrl,
} from "../../../supabase/tests/support/database.ts";
import {
  type RunningRealtime,
  startRealtime,
  WAIT_MS,
} from "../../../supabase/tests/support/realtime.ts";

type Frame = unknown[] | Record<string, unknown>;

/** A bare socket that queues parsed text frames. */
class RawSocket {
  readonly #frames: Frame[] = [];
  #waiting: (() => void) | undefined;

  private constructor(readonly socket: WebSocket) {
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => {
      this.#frames.push(JSON.parse(event.data as string));
      this.#waiting?.();
    };
  }

  static async open(realtime: RunningRealtime, query: string): Promise<RawSocket> {
    const socket = new WebSocket(`ws://127.0.0.1:${realtime.port}/realtime/v1/websocket?${query}`);
    const opened = Promise.withResolvers<void>();
    socket.onopen = () => opened.resolve();
    socket.onerror = () => opened.reject(new Error("socket failed to open"));
    await opened.promise;
    return new RawSocket(socket);
  }

  send(frame: Frame | Uint8Array): void {
    this.socket.send(frame instanceof Uint8Array ? frame : JSON.stringify(frame));
  }

  /** The next frame (heartbeat-free tests: every frame is significant). */
  async next(what: string): Promise<Frame> {
    const deadline = Date.now() + WAIT_MS;
    while (this.#frames.length === 0) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out waiting for ${what}`);
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#waiting = resolve;
      const timer = setTimeout(resolve, remaining);
      await promise;
      clearTimeout(timer);
    }
    return this.#frames.shift()!;
  }

  async close(): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return;
    const closed = Promise.withResolvers<void>();
    this.socket.onclose = () => closed.resolve();
    this.socket.close();
    await closed.promise;
  }
}

async function withRealtime(work: (realtime: RunningRealtime) => Promise<void>) {
  const realtime = await startRealtime(testDatabaseUrl());
  try {
    await work(realtime);
  } finally {
    await realtime.stop();
  }
}

const SERVICE_QUERY = `apikey=${LOCAL_SECRET_KEY}&vsn=2.0.0`;

function joinFrame(joinRef: string, topic: string, postgresChanges: unknown[], extra = {}) {
  return [joinRef, joinRef, `realtime:${topic}`, "phx_join", {
    config: {
      broadcast: { ack: false, self: false },
      presence: { key: "", enabled: false },
      postgres_changes: postgresChanges,
      private: false,
    },
    ...extra,
  }];
}

Deno.test("wire: heartbeat, join reply with ordered stable ids, change frame, leave and close", async () => {
  const sql = connectTestDatabase(2);
  await withRealtime(async (realtime) => {
    const socket = await RawSocket.open(realtime, SERVICE_QUERY);
    try {
      socket.send([null, "2", "phoenix", "heartbeat", {}]);
      assert.deepEqual(await socket.next("heartbeat reply"), [
        null,
        "2",
        "phoenix",
        "phx_reply",
        { status: "ok", response: {} },
      ]);

      const title = `wire-${crypto.randomUUID()}`;
      const bindings = [
        { event: "INSERT", schema: "public", table: "chat_sessions", filter: `title=eq.${title}` },
        { event: "*", schema: "public", table: "chat_sessions" },
      ];
      socket.send(joinFrame("1", "room1", bindings));
      const reply = await socket.next("join reply") as unknown[];
      assert.deepEqual(reply.slice(0, 4), ["1", "1", "realtime:room1", "phx_reply"]);
      const { status, response } = reply[4] as {
        status: string;
        response: { postgres_changes: Record<string, unknown>[] };
      };
      assert.equal(status, "ok");
      const echoed = response.postgres_changes;
      assert.deepEqual(echoed.map(({ id: _id, ...binding }) => binding), bindings);
      const ids = echoed.map((binding) => binding.id);
      assert.ok(ids.every((id) => Number.isInteger(id)));
      assert.notEqual(ids[0], ids[1]);
      assert.deepEqual(await socket.next("subscribed system message"), [
        "1",
        null,
        "realtime:room1",
        "system",
        {
          extension: "postgres_changes",
          status: "ok",
          message: "Subscribed to PostgreSQL",
          channel: "room1",
        },
      ]);

      // The same bindings on another topic get the same ids: they derive from the binding.
      socket.send(joinFrame("5", "room2", [bindings[1], bindings[0]]));
      const again = (await socket.next("second join reply") as unknown[])[4] as {
        response: { postgres_changes: { id: number }[] };
      };
      assert.deepEqual(again.response.postgres_changes.map((binding) => binding.id), [
        ids[1],
        ids[0],
      ]);
      await socket.next("second system message");
      socket.send(["5", "6", "realtime:room2", "phx_leave", {}]);
      await socket.next("leave reply");
      await socket.next("close");

      const user = await createUser(sql, "wire");
      const [row] = await sql.begin(async (tx) => {
        await tx`set local time zone 'UTC'`;
        return await tx`insert into public.chat_sessions (user_id, title)
                        values (${user.id}, ${title}) returning *, to_jsonb(chat_sessions) as json`;
      });
      const change = await socket.next("change frame") as unknown[];
      assert.deepEqual(change.slice(0, 4), [null, null, "realtime:room1", "postgres_changes"]);
      const payload = change[4] as { ids: number[]; data: Record<string, unknown> };
      assert.deepEqual(payload.ids, ids);
      assert.match(String(payload.data.commit_timestamp), /^\d{4}-\d\d-\d\dT[\d:.]{12}Z$/);
      assert.deepEqual({ ...payload.data, commit_timestamp: "" }, {
        schema: "public",
        table: "chat_sessions",
        commit_timestamp: "",
        type: "INSERT",
        columns: [
          { name: "id", type: "uuid" },
          { name: "user_id", type: "uuid" },
          { name: "title", type: "text" },
          { name: "created_at", type: "timestamptz" },
          { name: "updated_at", type: "timestamptz" },
        ],
        record: row.json,
        errors: null,
      });

      socket.send(["1", "3", "realtime:room1", "phx_leave", {}]);
      assert.deepEqual(await socket.next("leave reply"), [
        "1",
        "3",
        "realtime:room1",
        "phx_reply",
        { status: "ok", response: {} },
      ]);
      assert.deepEqual(await socket.next("phx_close"), [
        "1",
        "1",
        "realtime:room1",
        "phx_close",
        {},
      ]);

      socket.send([null, "4", "realtime:room1", "broadcast", {
        type: "broadcast",
        event: "x",
        payload: {},
      }]);
      assert.deepEqual(await socket.next("unmatched topic reply"), [
        null,
        "4",
        "realtime:room1",
        "phx_reply",
        { status: "error", response: { reason: "unmatched topic" } },
      ]);
    } finally {
      await socket.close();
    }
  });
  await sql.end();
});

Deno.test("wire: a binary user broadcast push (kind 3) reaches other sockets as text", async () => {
  await withRealtime(async (realtime) => {
    const sender = await RawSocket.open(realtime, `apikey=${LOCAL_PUBLISHABLE_KEY}&vsn=2.0.0`);
    const receiver = await RawSocket.open(realtime, `apikey=${LOCAL_PUBLISHABLE_KEY}&vsn=2.0.0`);
    try {
      for (const socket of [sender, receiver]) {
        socket.send(joinFrame("1", "room1", []));
        assert.equal(((await socket.next("join reply")) as unknown[])[3], "phx_reply");
      }
      // The reference's example: 03 01 01 0e 04 00 01 "6" "7" "realtime:room1" "ping" {"n":1}
      const text = new TextEncoder().encode(`67realtime:room1ping{"n":1}`);
      sender.send(new Uint8Array([3, 1, 1, 14, 4, 0, 1, ...text]));
      assert.deepEqual(await receiver.next("broadcast"), [
        null,
        null,
        "realtime:room1",
        "broadcast",
        { type: "broadcast", event: "ping", payload: { n: 1 } },
      ]);
    } finally {
      await sender.close();
      await receiver.close();
    }
  });
});

Deno.test("wire: vsn 1.0.0 speaks JSON objects", async () => {
  await withRealtime(async (realtime) => {
    const socket = await RawSocket.open(realtime, `apikey=${LOCAL_PUBLISHABLE_KEY}&vsn=1.0.0`);
    try {
      socket.send({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1", join_ref: null });
      assert.deepEqual(await socket.next("heartbeat reply"), {
        topic: "phoenix",
        event: "phx_reply",
        payload: { status: "ok", response: {} },
        ref: "1",
        join_ref: null,
      });
      socket.send({
        topic: "realtime:v1",
        event: "phx_join",
        payload: { config: { broadcast: { self: true } } },
        ref: "2",
        join_ref: "2",
      });
      assert.deepEqual(await socket.next("join reply"), {
        topic: "realtime:v1",
        event: "phx_reply",
        payload: { status: "ok", response: { postgres_changes: [] } },
        ref: "2",
        join_ref: "2",
      });
      socket.send({
        topic: "realtime:v1",
        event: "broadcast",
        payload: { type: "broadcast", event: "hi", payload: { a: 1 } },
        ref: "3",
        join_ref: "2",
      });
      assert.deepEqual(await socket.next("own broadcast (self)"), {
        topic: "realtime:v1",
        event: "broadcast",
        payload: { type: "broadcast", event: "hi", payload: { a: 1 } },
        ref: null,
        join_ref: null,
      });
    } finally {
      await socket.close();
    }
  });
});

Deno.test("wire: joins are refused for bad tokens and private channels; expiry closes", async () => {
  await withRealtime(async (realtime) => {
    const socket = await RawSocket.open(realtime, `apikey=${LOCAL_PUBLISHABLE_KEY}&vsn=2.0.0`);
    try {
      socket.send(joinFrame("1", "secure", [], { access_token: "not.a.jwt" }));
      const refused = await socket.next("refused join") as unknown[];
      assert.deepEqual(refused.slice(0, 4), ["1", "1", "realtime:secure", "phx_reply"]);
      const { status, response } = refused[4] as { status: string; response: { reason: string } };
      assert.equal(status, "error");
      assert.match(response.reason, /^InvalidJWTToken: /);

      const privateJoin = joinFrame("2", "private-room", []);
      (privateJoin[4] as { config: { private: boolean } }).config.private = true;
      socket.send(privateJoin);
      const privateReply = await socket.next("private join reply") as unknown[];
      assert.deepEqual(privateReply[4], {
        status: "error",
        response: {
          reason:
            "Unauthorized: You do not have permissions to read from this Channel topic: private-room",
        },
      });

      // A token valid for one to two more seconds: the channel is shut when it expires.
      const token = await realtime.tokenFor(crypto.randomUUID(), { expiresIn: 2 });
      socket.send(joinFrame("3", "short", [], { access_token: token }));
      assert.equal(
        ((await socket.next("join reply")) as { 4: { status: string } })[4].status,
        "ok",
      );
      const system = await socket.next("expiry system message") as unknown[];
      assert.deepEqual(system.slice(0, 4), ["3", null, "realtime:short", "system"]);
      assert.deepEqual(system[4], {
        extension: "system",
        status: "error",
        message: "InvalidJWTToken: Token has expired",
        channel: "short",
      });
      assert.deepEqual(await socket.next("close"), ["3", "3", "realtime:short", "phx_close", {}]);
    } finally {
      await socket.close();
    }
  });
});

Deno.test("http: apikey and vsn are checked before the upgrade; other routes are 404", async () => {
  await withRealtime(async (realtime) => {
    const get = async (path: string, headers: Record<string, string> = {}) => {
      const response = await fetch(`${realtime.url}${path}`, {
        headers: { connection: "upgrade", upgrade: "websocket", ...headers },
      });
      return { status: response.status, body: await response.json() };
    };
    const missingKey = await get("/realtime/v1/websocket?vsn=2.0.0");
    assert.deepEqual([missingKey.status, missingKey.body.code], [401, "invalid_apikey"]);
    const wrongKey = await get("/realtime/v1/websocket?apikey=sb_publishable_nope&vsn=2.0.0");
    assert.deepEqual([wrongKey.status, wrongKey.body.code], [401, "invalid_apikey"]);
    const badVsn = await get(`/realtime/v1/websocket?apikey=${LOCAL_PUBLISHABLE_KEY}&vsn=3.0.0`);
    assert.deepEqual([badVsn.status, badVsn.body.code], [400, "unsupported_vsn"]);
    const plain = await fetch(
      `${realtime.url}/realtime/v1/websocket?apikey=${LOCAL_PUBLISHABLE_KEY}`,
    );
    assert.deepEqual([plain.status, (await plain.json()).code], [400, "websocket_required"]);
    const unknown = await get("/realtime/v1/elsewhere");
    assert.deepEqual([unknown.status, unknown.body.code], [404, "not_found"]);
  });
});

Deno.test("wire: a join while the replication connection is down hears the same status its socket last heard", async () => {
  const sql = connectTestDatabase(2);
  await withRealtime(async (realtime) => {
    const socket = await RawSocket.open(realtime, SERVICE_QUERY);
    try {
      const bindings = [{ event: "*", schema: "public", table: "chat_sessions" }];
      socket.send(joinFrame("1", "before", bindings));
      await socket.next("the first join's reply");
      const subscribed = await socket.next("the first join's system message") as unknown[];
      assert.equal((subscribed[4] as { status: string }).status, "ok");

      const [{ terminated }] = await sql<{ terminated: boolean }[]>`
        select bool_or(pg_terminate_backend(pid)) as terminated from pg_stat_activity
        where application_name = 'local-realtime-feed' and datname = current_database()`;
      assert.equal(terminated, true);
      const lost = await socket.next("the lost-connection message") as unknown[];
      assert.deepEqual(lost.slice(2, 4), ["realtime:before", "system"]);
      assert.equal((lost[4] as { status: string }).status, "error");

      // Frames of one socket are ordered: whatever the reconnect's timing, the new channel's
      // system message must agree with the last status the first channel heard before it.
      socket.send(joinFrame("2", "during", bindings));
      let lastHeard = "error";
      for (;;) {
        const frame = await socket.next("the second join's system message") as unknown[];
        if (frame[3] !== "system") continue;
        const { status } = frame[4] as { status: string };
        if (frame[2] === "realtime:before") {
          lastHeard = status;
          continue;
        }
        assert.equal(frame[2], "realtime:during");
        assert.equal(status, lastHeard, "the new channel was told something else than the old");
        break;
      }
    } finally {
      await socket.close();
    }
  });
  await sql.end();
});
