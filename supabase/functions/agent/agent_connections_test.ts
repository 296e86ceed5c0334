/**
 * The connection policy: at most `user_limits.max_connections` (default 3) open sockets per
 * user across isolates; a newer one closes the oldest with 4001.
 */
import assert from "node:assert/strict";
import { eventually, withWorld } from "../../tests/support/agent_world.ts";

Deno.test("a 4th connection closes the oldest with 4001 (same isolate)", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await user();
    const bob = await connect(await user("bob"));
    const first = await connect(alice);
    const second = await connect(alice);
    const third = await connect(alice);
    const fourth = await connect(alice);
    const closed = await first.closed;
    assert.equal(closed.code, 4001);
    assert.match(closed.reason, /too many connections: at most 3/);
    for (const client of [second, third, fourth, bob]) {
      client.send({ type: "ping" });
      assert.equal((await client.take()).type, "pong");
    }
    const rows = await eventually(async () => {
      const rows = await sql`select id from public.agent_connections where user_id = ${alice.id}`;
      return rows.length === 3 ? rows : undefined;
    }, "the closed connection to leave the registry");
    assert.equal(rows.length, 3);
  });
});

Deno.test("a 4th connection on another isolate closes the oldest with 4001", async () => {
  await withWorld({}, async ({ connect, user, startInstance }) => {
    const alice = await user();
    const first = await connect(alice);
    const second = await connect(alice);
    const third = await connect(alice);
    const otherIsolate = await startInstance();
    const fourth = await connect(alice, otherIsolate);
    const closed = await first.closed;
    assert.equal(closed.code, 4001);
    for (const client of [second, third, fourth]) {
      client.send({ type: "ping" });
      assert.equal((await client.take()).type, "pong");
    }
    assert.equal(second.isClosed, false);
  });
});

Deno.test("max_connections comes from the user's limits", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await user();
    await sql`update public.user_limits set max_connections = 1 where user_id = ${alice.id}`;
    const first = await connect(alice);
    const ready = first.frames.find((frame) => frame.type === "ready");
    assert.ok(ready?.type === "ready" && ready.limits.max_connections === 1);
    const second = await connect(alice);
    assert.equal((await first.closed).code, 4001);
    second.send({ type: "ping" });
    assert.equal((await second.take()).type, "pong");
  });
});

Deno.test("connections of a dead isolate stop counting once their heartbeat is stale", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const alice = await user();
    // Three connections of an isolate that died long ago.
    for (let i = 0; i < 3; i++) {
      await sql`insert into public.agent_connections (id, user_id, isolate_id, created_at,
                  heartbeat_at)
                values (${crypto.randomUUID()}, ${alice.id}, 'dead-isolate',
                  now() - interval '1 hour', now() - interval '1 hour')`;
    }
    const fresh = await connect(alice);
    const other = await connect(alice);
    fresh.send({ type: "ping" });
    assert.equal((await fresh.take()).type, "pong");
    assert.equal(other.isClosed, false);
    const [{ dead }] = await sql`select count(*)::int as dead from public.agent_connections
                                 where user_id = ${alice.id} and isolate_id = 'dead-isolate'`;
    assert.equal(dead, 0, "registration removed the stale rows");
  });
});
