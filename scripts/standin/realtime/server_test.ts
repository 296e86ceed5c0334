/**
 * The Realtime stand-in against the unmodified supabase-js client: payload shapes, filters,
 * RLS, token refresh, reconnection after a restart, broadcast over the socket and REST.
 */
import assert from "node:assert/strict";
import { LOCAL_SECRET_KEY } from "../keys.ts";
import {
  as,
  connectTestDatabase,
  createUser,
  testDatabaseUrl,
  type TestUser,
} from "../../../supabase/tests/support/database.ts";
import type { Sql } from "../../../supabase/functions/_shared/db/client.ts";
import {
  closeClient,
  Inbox,
  realtimeClient,
  type RunningRealtime,
  startRealtime,
  StatusLog,
  subscribe,
} from "../../../supabase/tests/support/realtime.ts";

/** What a postgres_changes callback receives. */
interface Change {
  schema: string;
  table: string;
  commit_timestamp: string;
  eventType: string;
  new: Record<string, unknown>;
  old: Record<string, unknown>;
  errors: unknown;
}

async function withRealtime(
  work: (realtime: RunningRealtime, sql: Sql) => Promise<void>,
): Promise<void> {
  const sql = connectTestDatabase(4);
  const realtime = await startRealtime(testDatabaseUrl());
  try {
    await work(realtime, sql);
  } finally {
    await realtime.stop();
    await sql.end();
  }
}

/** The row as `to_jsonb` prints it in a UTC session, the form Realtime's `record` has. */
async function rowJson(sql: Sql, table: string, id: string): Promise<Record<string, unknown>> {
  return await sql.begin(async (tx) => {
    await tx`set local time zone 'UTC'`;
    const [row] = await tx.unsafe(
      `select to_jsonb(t) - 'content_search' as row from public.${table} t where id = $1`,
      [id],
    );
    return row.row;
  }) as Record<string, unknown>;
}

function createSession(sql: Sql, user: TestUser, title: string) {
  return as(sql, user, async (tx) => {
    const [row] = await tx<{ id: string }[]>`
      insert into public.chat_sessions (title) values (${title}) returning id`;
    return row.id;
  });
}

const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

Deno.test("postgres_changes: INSERT, UPDATE and DELETE arrive in Realtime's payload shape", async () => {
  await withRealtime(async (realtime, sql) => {
    const user = await createUser(sql, "shape");
    const client = await realtimeClient(realtime.url, { token: await realtime.tokenFor(user.id) });
    const changes = new Inbox<Change>();
    try {
      await subscribe(
        client.channel("shapes").on(
          "postgres_changes",
          { event: "*", schema: "public", table: "chat_sessions" },
          changes.push,
        ),
      );

      const id = await createSession(sql, user, "first");
      const [insert] = await changes.waitForCount(1, "INSERT");
      const inserted = await rowJson(sql, "chat_sessions", id);
      assert.deepEqual(
        { ...insert, commit_timestamp: "<checked below>" },
        {
          schema: "public",
          table: "chat_sessions",
          commit_timestamp: "<checked below>",
          eventType: "INSERT",
          new: inserted,
          old: {},
          errors: null,
        },
      );
      assert.match(insert.commit_timestamp, ISO_MS);
      // Commit happens after the transaction started (created_at = now()), to the millisecond.
      assert.ok(
        Date.parse(insert.commit_timestamp) >= Math.floor(Date.parse(String(inserted.created_at))),
      );

      await as(
        sql,
        user,
        (tx) => tx`update public.chat_sessions set title = 'second' where id = ${id}`,
      );
      const update = (await changes.waitForCount(2, "UPDATE"))[1];
      assert.equal(update.eventType, "UPDATE");
      assert.deepEqual(update.new, await rowJson(sql, "chat_sessions", id));
      assert.equal(update.new.title, "second");
      // Default replica identity: the WAL only knows the primary key of the old row.
      assert.deepEqual(update.old, { id });

      await as(sql, user, (tx) => tx`delete from public.chat_sessions where id = ${id}`);
      const removal = (await changes.waitForCount(3, "DELETE"))[2];
      assert.deepEqual(
        { ...removal, commit_timestamp: "" },
        {
          schema: "public",
          table: "chat_sessions",
          commit_timestamp: "",
          eventType: "DELETE",
          new: {},
          old: { id },
          errors: null,
        },
      );
      assert.ok(Date.parse(removal.commit_timestamp) >= Date.parse(update.commit_timestamp));
    } finally {
      await closeClient(client);
    }
  });
});

Deno.test("postgres_changes: filters select rows by value cast to the column type", async () => {
  await withRealtime(async (realtime, sql) => {
    const user = await createUser(sql, "filters");
    const sessionId = await createSession(sql, user, "filters");
    const clientId = crypto.randomUUID();
    const client = await realtimeClient(realtime.url, { token: await realtime.tokenFor(user.id) });
    const filters = {
      seqEq: "seq=eq.2",
      seqNeq: "seq=neq.2",
      seqLt: "seq=lt.2",
      seqLte: "seq=lte.2",
      seqGt: "seq=gt.3",
      seqGte: "seq=gte.3",
      // Enum order (user < assistant < system < tool), not alphabetical.
      roleLt: "role=lt.assistant",
      roleIn: "role=in.(assistant,tool)",
      // The uuid is cast, so upper case matches Postgres's lower-case output.
      clientId: `client_id=eq.${clientId.toUpperCase()}`,
      both: `seq=gte.2,role=eq.system`,
    };
    const inboxes = Object.fromEntries(
      Object.keys(filters).map((name) => [name, new Inbox<Change>()]),
    ) as Record<keyof typeof filters, Inbox<Change>>;
    const everything = new Inbox<Change>();
    try {
      let channel = client.channel("filters").on(
        "postgres_changes",
        {
          event: "INSERT",
          schema: "public",
          table: "chat_history",
          filter: `session_id=eq.${sessionId}`,
        },
        everything.push,
      );
      for (const [name, filter] of Object.entries(filters)) {
        channel = channel.on(
          "postgres_changes",
          { event: "INSERT", schema: "public", table: "chat_history", filter },
          inboxes[name as keyof typeof filters].push,
        );
      }
      await subscribe(channel);

      const roles = ["user", "assistant", "system", "tool", "user"];
      await as(sql, user, async (tx) => {
        for (const [index, role] of roles.entries()) {
          const id = index === 1 ? clientId : crypto.randomUUID();
          await tx`insert into public.chat_history (session_id, client_id, seq, role, content)
                   values (${sessionId}, ${id}, ${index + 1}, ${role}, ${`m${index + 1}`})`;
        }
      });
      // One frame per change carries every matching binding: once the unfiltered binding saw
      // all five, every filtered binding has seen what it will see.
      await everything.waitForCount(roles.length, "all five messages");
      const seqs = (inbox: Inbox<Change>) => inbox.items.map((change) => change.new.seq);
      assert.deepEqual(seqs(everything), [1, 2, 3, 4, 5]);
      assert.deepEqual(seqs(inboxes.seqEq), [2]);
      assert.deepEqual(seqs(inboxes.seqNeq), [1, 3, 4, 5]);
      assert.deepEqual(seqs(inboxes.seqLt), [1]);
      assert.deepEqual(seqs(inboxes.seqLte), [1, 2]);
      assert.deepEqual(seqs(inboxes.seqGt), [4, 5]);
      assert.deepEqual(seqs(inboxes.seqGte), [3, 4, 5]);
      assert.deepEqual(seqs(inboxes.roleLt), [1, 5]);
      assert.deepEqual(seqs(inboxes.roleIn), [2, 4]);
      assert.deepEqual(seqs(inboxes.clientId), [2]);
      assert.deepEqual(seqs(inboxes.both), [3]);
    } finally {
      await closeClient(client);
    }
  });
});

Deno.test("postgres_changes: a bad filter or unpublished table is a system error", async () => {
  await withRealtime(async (realtime, sql) => {
    const user = await createUser(sql, "bad-filter");
    const client = await realtimeClient(realtime.url, { token: await realtime.tokenFor(user.id) });
    const system = new Inbox<{ status: string; message: string; extension: string }>();
    try {
      for (
        const [name, binding] of [
          ["bad-value", { table: "chat_history", filter: "seq=eq.abc" }],
          ["bad-operator", { table: "chat_history", filter: "seq=like.1" }],
          ["bad-column", { table: "chat_history", filter: "nope=eq.1" }],
          ["unpublished", { table: "user_limits" }],
        ] as const
      ) {
        const before = system.items.length;
        await subscribe(
          client.channel(name)
            .on("postgres_changes", { event: "*", schema: "public", ...binding }, () => {})
            .on("system", {}, system.push),
        );
        const [message] = (await system.waitForCount(before + 1, `system message for ${name}`))
          .slice(before);
        assert.equal(message.extension, "postgres_changes", name);
        assert.equal(message.status, "error", name);
      }
      assert.match(system.items[0].message, /invalid value for seq/);
      assert.match(system.items[1].message, /operator "like" is not supported/);
      assert.match(system.items[2].message, /column "nope" does not exist/);
      assert.match(system.items[3].message, /Unable to subscribe to changes/);
    } finally {
      await closeClient(client);
    }
  });
});

Deno.test("postgres_changes: RLS decides per subscriber; B never sees A's rows", async () => {
  await withRealtime(async (realtime, sql) => {
    const alice = await createUser(sql, "alice");
    const bob = await createUser(sql, "bob");
    const aliceClient = await realtimeClient(realtime.url, {
      token: await realtime.tokenFor(alice.id),
    });
    const bobClient = await realtimeClient(realtime.url, {
      token: await realtime.tokenFor(bob.id),
    });
    const anonClient = await realtimeClient(realtime.url);
    const serviceClient = await realtimeClient(realtime.url, { key: LOCAL_SECRET_KEY });
    const seen = {
      alice: new Inbox<Change>(),
      bob: new Inbox<Change>(),
      anon: new Inbox<Change>(),
      service: new Inbox<Change>(),
    };
    const binding = { event: "INSERT", schema: "public", table: "chat_sessions" } as const;
    try {
      await subscribe(aliceClient.channel("rls").on("postgres_changes", binding, seen.alice.push));
      await subscribe(bobClient.channel("rls").on("postgres_changes", binding, seen.bob.push));
      await subscribe(anonClient.channel("rls").on("postgres_changes", binding, seen.anon.push));
      await subscribe(
        serviceClient.channel("rls").on("postgres_changes", binding, seen.service.push),
      );

      const aliceRow = await createSession(sql, alice, "alice's secret");
      const bobRow = await createSession(sql, bob, "bob's");
      // Delivery follows commit order: once Bob has his row, Alice's (earlier) was decided.
      await seen.bob.waitForCount(1, "bob's row");
      await seen.alice.waitForCount(1, "alice's row");
      await seen.service.waitForCount(2, "both rows for service_role");
      assert.deepEqual(seen.bob.items.map((change) => change.new.id), [bobRow]);
      assert.deepEqual(seen.alice.items.map((change) => change.new.id), [aliceRow]);
      assert.deepEqual(seen.service.items.map((change) => change.new.id), [aliceRow, bobRow]);
      // anon has no privilege on chat_sessions at all.
      assert.deepEqual(seen.anon.items, []);
    } finally {
      for (const client of [aliceClient, bobClient, anonClient, serviceClient]) {
        await closeClient(client);
      }
    }
  });
});

Deno.test("postgres_changes: columns the role cannot SELECT are left out; DELETE keeps only the key", async () => {
  await withRealtime(async (realtime, sql) => {
    const user = await createUser(sql, "columns");
    await sql.unsafe(`
      create table public.realtime_column_probe (
        id int primary key, owner uuid not null, visible text, secret text);
      alter table public.realtime_column_probe replica identity full;
      alter table public.realtime_column_probe enable row level security;
      create policy probe_owner on public.realtime_column_probe for select to authenticated
        using (owner = (select auth.uid()));
      revoke all on public.realtime_column_probe from anon, authenticated;
      grant select (id, owner, visible) on public.realtime_column_probe to authenticated;
      alter publication supabase_realtime add table public.realtime_column_probe;`);
    const client = await realtimeClient(realtime.url, { token: await realtime.tokenFor(user.id) });
    const changes = new Inbox<Change>();
    try {
      await subscribe(
        client.channel("probe").on(
          "postgres_changes",
          { event: "*", schema: "public", table: "realtime_column_probe" },
          changes.push,
        ),
      );
      await sql`insert into public.realtime_column_probe values (1, ${user.id}, 'shown', 'hidden')`;
      const [insert] = await changes.waitForCount(1, "INSERT");
      assert.deepEqual(insert.new, { id: 1, owner: user.id, visible: "shown" });

      await sql`update public.realtime_column_probe set visible = 'again' where id = 1`;
      const update = (await changes.waitForCount(2, "UPDATE"))[1];
      assert.deepEqual(update.new, { id: 1, owner: user.id, visible: "again" });
      // REPLICA IDENTITY FULL: the whole old row, minus what the role cannot SELECT.
      assert.deepEqual(update.old, { id: 1, owner: user.id, visible: "shown" });

      await sql`delete from public.realtime_column_probe where id = 1`;
      const removal = (await changes.waitForCount(3, "DELETE"))[2];
      // RLS cannot be checked on a deleted row, so only the key goes out, even with FULL.
      assert.deepEqual(removal.old, { id: 1 });
    } finally {
      await closeClient(client);
      await sql.unsafe(`drop table public.realtime_column_probe`);
    }
  });
});

Deno.test("access_token: a refreshed token keeps delivering with its claims; an invalid one closes the channel", async () => {
  await withRealtime(async (realtime, sql) => {
    const alice = await createUser(sql, "refresh-a");
    const bob = await createUser(sql, "refresh-b");
    let token = await realtime.tokenFor(alice.id);
    const client = await realtimeClient(realtime.url, { token: () => token });
    const changes = new Inbox<Change>();
    const system = new Inbox<{ status: string; message: string; extension: string }>();
    const statuses = new StatusLog();
    const channel = client.channel("refresh", { config: { broadcast: { ack: true } } })
      .on(
        "postgres_changes",
        { event: "INSERT", schema: "public", table: "chat_sessions" },
        changes.push,
      )
      .on("system", {}, system.push);
    /** Frames are handled in order: an acknowledged broadcast proves the token push landed. */
    const serverCaughtUp = async () => {
      assert.equal(await channel.send({ type: "broadcast", event: "sync", payload: {} }), "ok");
    };
    try {
      channel.subscribe(statuses.callback);
      await statuses.waitForCount("SUBSCRIBED", 1);

      const first = await createSession(sql, alice, "with the first token");
      await changes.waitForCount(1, "row under the first token");

      token = await realtime.tokenFor(alice.id);
      await client.realtime.setAuth();
      await serverCaughtUp();
      const second = await createSession(sql, alice, "with the refreshed token");
      await changes.waitForCount(2, "row under the refreshed token");

      // Bob's token: the channel now sees what Bob may see, and nothing of Alice's.
      token = await realtime.tokenFor(bob.id);
      await client.realtime.setAuth();
      await serverCaughtUp();
      const alicesLater = await createSession(sql, alice, "alice after the switch");
      const bobs = await createSession(sql, bob, "bob's");
      await changes.waitForCount(3, "bob's row");
      assert.deepEqual(changes.items.map((change) => change.new.id), [first, second, bobs]);
      assert.notEqual(alicesLater, bobs);

      token = "not-a-jwt";
      await client.realtime.setAuth();
      await statuses.waitForCount("CLOSED", 1);
      const [closing] = await system.waitFor(
        (items) => items.some((item) => item.extension === "system"),
        "system error before the close",
      ).then((items) => items.filter((item) => item.extension === "system"));
      assert.equal(closing.status, "error");
      assert.match(closing.message, /^InvalidJWTToken: /);
    } finally {
      await closeClient(client);
    }
  });
});

Deno.test("reconnect: after a server restart the client rejoins and receives new events", async () => {
  await withRealtime(async (realtime, sql) => {
    const user = await createUser(sql, "restart");
    const client = await realtimeClient(realtime.url, { token: await realtime.tokenFor(user.id) });
    const changes = new Inbox<Change>();
    const statuses = new StatusLog();
    try {
      client.channel("restart")
        .on(
          "postgres_changes",
          { event: "INSERT", schema: "public", table: "chat_sessions" },
          changes.push,
        )
        .subscribe(statuses.callback);
      await statuses.waitForCount("SUBSCRIBED", 1);
      const before = await createSession(sql, user, "before the restart");
      await changes.waitForCount(1, "row before the restart");

      const port = realtime.port;
      await realtime.stop();
      await realtime.start();
      assert.equal(realtime.port, port);

      // The socket closed (channel error), reconnected after its back-off, and rejoined.
      await statuses.waitForCount("SUBSCRIBED", 2);
      const after = await createSession(sql, user, "after the restart");
      await changes.waitForCount(2, "row after the restart");
      assert.deepEqual(changes.items.map((change) => change.new.id), [before, after]);
      assert.ok(statuses.count("CHANNEL_ERROR") >= 1);
    } finally {
      await closeClient(client);
    }
  });
});

type BroadcastMessage = { event: string; payload: unknown; type: string };

Deno.test("broadcast: self off and on, ack, binary payloads, over the socket", async () => {
  await withRealtime(async (realtime) => {
    const quiet = await realtimeClient(realtime.url);
    const echoing = await realtimeClient(realtime.url);
    const heard = { quiet: new Inbox<BroadcastMessage>(), echoing: new Inbox<BroadcastMessage>() };
    try {
      const quietChannel = quiet.channel("room", { config: { broadcast: { self: false } } })
        .on("broadcast", { event: "*" }, heard.quiet.push);
      const echoingChannel = echoing
        .channel("room", { config: { broadcast: { self: true, ack: true } } })
        .on("broadcast", { event: "*" }, heard.echoing.push);
      await subscribe(quietChannel);
      await subscribe(echoingChannel);

      assert.equal(
        await quietChannel.send({ type: "broadcast", event: "from-quiet", payload: { n: 1 } }),
        "ok",
      );
      await heard.echoing.waitForCount(1, "quiet's message at echoing");
      // Acknowledged: the reply comes after the server fanned the message out.
      assert.equal(
        await echoingChannel.send({ type: "broadcast", event: "from-echoing", payload: { n: 2 } }),
        "ok",
      );
      await heard.quiet.waitForCount(1, "echoing's message at quiet");
      await heard.echoing.waitForCount(2, "echoing's own message");

      const bytes = new Uint8Array([0, 1, 2, 254, 255]);
      await quietChannel.send({ type: "broadcast", event: "bytes", payload: bytes.buffer });
      await heard.echoing.waitForCount(3, "binary message");

      assert.deepEqual(
        heard.echoing.items.slice(0, 2).map(({ event, payload }) => ({ event, payload })),
        [{ event: "from-quiet", payload: { n: 1 } }, { event: "from-echoing", payload: { n: 2 } }],
      );
      assert.deepEqual(
        heard.quiet.items.map(({ event, payload }) => ({ event, payload })),
        [{ event: "from-echoing", payload: { n: 2 } }],
      );
      const binary = heard.echoing.items[2];
      assert.equal(binary.event, "bytes");
      assert.deepEqual(new Uint8Array(binary.payload as ArrayBuffer), bytes);
    } finally {
      await closeClient(quiet);
      await closeClient(echoing);
    }
  });
});

Deno.test("broadcast: REST /api/broadcast and httpSend reach joined channels (202)", async () => {
  await withRealtime(async (realtime) => {
    const listener = await realtimeClient(realtime.url);
    const sender = await realtimeClient(realtime.url);
    const heard = new Inbox<BroadcastMessage>();
    try {
      await subscribe(
        listener.channel("rest-room").on("broadcast", { event: "*" }, heard.push),
      );
      // Not joined: supabase-js falls back to POST /realtime/v1/api/broadcast.
      const unjoined = sender.channel("rest-room");
      assert.equal(
        await unjoined.send({ type: "broadcast", event: "via-rest", payload: { a: 1 } }),
        "ok",
      );
      assert.deepEqual(await unjoined.httpSend("via-http-send", { b: 2 }), { success: true });
      await heard.waitForCount(2, "both REST messages");
      assert.deepEqual(
        heard.items.map(({ event, payload }) => ({ event, payload })),
        [{ event: "via-rest", payload: { a: 1 } }, { event: "via-http-send", payload: { b: 2 } }],
      );

      const post = (headers: Record<string, string>, body: unknown) =>
        fetch(`${realtime.url}/realtime/v1/api/broadcast`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify(body),
        });
      const message = { topic: "rest-room", event: "x", payload: {} };
      const noKey = await post({}, { messages: [message] });
      assert.equal(noKey.status, 401);
      assert.equal((await noKey.json()).code, "invalid_apikey");
      const privateMessage = await post(
        { apikey: LOCAL_SECRET_KEY },
        { messages: [{ ...message, private: true }] },
      );
      assert.equal(privateMessage.status, 403);
      assert.equal((await privateMessage.json()).code, "private_channels_unsupported");
      const badBody = await post({ apikey: LOCAL_SECRET_KEY }, { messages: "nope" });
      assert.equal(badBody.status, 400);
      assert.equal((await badBody.json()).code, "invalid_body");
    } finally {
      await closeClient(listener);
      await closeClient(sender);
    }
  });
});

Deno.test("vsn 1.0.0: JSON-object frames carry changes and broadcasts too", async () => {
  await withRealtime(async (realtime, sql) => {
    const user = await createUser(sql, "vsn1");
    const client = await realtimeClient(realtime.url, {
      token: await realtime.tokenFor(user.id),
      vsn: "1.0.0",
    });
    const changes = new Inbox<Change>();
    const heard = new Inbox<BroadcastMessage>();
    try {
      const channel = client.channel("v1", { config: { broadcast: { self: true, ack: true } } })
        .on(
          "postgres_changes",
          { event: "INSERT", schema: "public", table: "chat_sessions" },
          changes.push,
        )
        .on("broadcast", { event: "hello" }, heard.push);
      await subscribe(channel);
      const id = await createSession(sql, user, "over vsn 1");
      const [change] = await changes.waitForCount(1, "change over vsn 1.0.0");
      assert.equal(change.new.id, id);
      assert.equal(
        await channel.send({ type: "broadcast", event: "hello", payload: { v: 1 } }),
        "ok",
      );
      const [message] = await heard.waitForCount(1, "broadcast over vsn 1.0.0");
      assert.deepEqual(message.payload, { v: 1 });
    } finally {
      await closeClient(client);
    }
  });
});
