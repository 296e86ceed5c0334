/**
 * The OAuth rows under their rules: a sign-in under way is the service role's alone and is taken
 * once, never after it expired; a server's refresh lease is held by one isolate at a time, for
 * the token version it read, and only that holder stores the refreshed token; a revoked grant
 * marks the server "needs sign-in" for its owner to see.
 */
import assert from "node:assert/strict";
import {
  endRefresh,
  insertFlow,
  loadToken,
  type PendingFlow,
  replaceOAuthCredential,
  storeOAuthServer,
  storeRefreshed,
  takeFlow,
  takeRefreshLease,
} from "../functions/_shared/mcp_servers/oauth_store.ts";
import { ANON_CLAIMS, as, connectTestDatabase, createUser, sqlState } from "./support/database.ts";

const sealed = () => crypto.getRandomValues(new Uint8Array(48));
const state = () => crypto.randomUUID() + crypto.randomUUID();

Deno.test("mcp oauth flows: service role only; taken once, and never after expiry", async () => {
  const sql = connectTestDatabase(2);
  try {
    const owner = await createUser(sql, "flow");
    const flow: PendingFlow = {
      state: state(),
      userId: owner.id,
      serverId: crypto.randomUUID(),
      reconnect: false,
      slug: "dbl",
      displayName: null,
      url: "https://mcp.example.com/mcp",
      returnOrigin: "https://app.example.com",
      secret: sealed(),
      expiresAt: new Date(Date.now() + 600_000),
    };
    await insertFlow(sql, flow);
    for (const who of [owner.claims, ANON_CLAIMS]) {
      assert.equal(
        await sqlState(as(sql, who, (tx) => tx`select state from public.mcp_oauth_flows`)),
        "42501",
      );
    }
    const taken = await takeFlow(sql, flow.state);
    assert.equal(taken?.serverId, flow.serverId);
    assert.deepEqual(new Uint8Array(taken!.secret), flow.secret);
    assert.equal(await takeFlow(sql, flow.state), null, "a state works once");

    const expired = { ...flow, state: state(), expiresAt: new Date(Date.now() - 1000) };
    await insertFlow(sql, expired);
    assert.equal(await takeFlow(sql, expired.state), null, "an expired flow is refused");
    const [{ left }] = await sql`select count(*)::int as left from public.mcp_oauth_flows
      where user_id = ${owner.id}`;
    assert.equal(left, 0, "and removed");
  } finally {
    await sql.end();
  }
});

Deno.test("mcp refresh lease: one holder at a time, for the version it read; only it stores", async () => {
  const sql = connectTestDatabase(6);
  try {
    const owner = await createUser(sql, "lease");
    const id = crypto.randomUUID();
    const stored = await storeOAuthServer(sql, {
      id,
      userId: owner.id,
      slug: "dbl",
      displayName: null,
      url: "https://mcp.example.com/mcp",
      secret: sealed(),
      expiresAt: new Date(Date.now() + 60_000),
      tools: [],
      warnings: [],
    });
    assert.deepEqual(stored, { ok: true });
    const [server] = await as(sql, owner, (tx) => tx`select auth_mode from public.mcp_servers`);
    assert.equal(server.auth_mode, "oauth");
    const before = await loadToken(sql, owner.id, id);
    assert.equal(before?.version, 0);
    assert.ok(before?.expiresAt);

    // Five isolates find the token due at once: one takes the lease.
    const holders = Array.from({ length: 5 }, () => crypto.randomUUID());
    const taken = await Promise.all(holders.map((h) => takeRefreshLease(sql, id, h, 0, 60_000)));
    assert.equal(taken.filter(Boolean).length, 1, JSON.stringify(taken));
    const winner = holders[taken.indexOf(true)];
    const loser = holders.find((h) => h !== winner)!;
    assert.equal((await loadToken(sql, owner.id, id))?.leased, true);
    assert.equal(await takeRefreshLease(sql, id, loser, 0, 60_000), false, "a live lease holds");

    // Only the holder stores, and only over the version it refreshed.
    const next = sealed();
    assert.equal(await storeRefreshed(sql, id, loser, 0, next, null), false);
    assert.equal(await storeRefreshed(sql, id, winner, 1, next, null), false);
    assert.equal(await storeRefreshed(sql, id, winner, 0, next, new Date()), true);
    const after = await loadToken(sql, owner.id, id);
    assert.deepEqual([after?.version, after?.leased], [1, false]);
    assert.deepEqual(new Uint8Array(after!.secret), next);

    // One who read the old version refreshes nothing: it is to use the new token.
    assert.equal(await takeRefreshLease(sql, id, loser, 0, 60_000), false);
    // A lease that ran out (its holder died) is taken by the next.
    assert.equal(await takeRefreshLease(sql, id, winner, 1, 0), true);
    assert.equal(await takeRefreshLease(sql, id, loser, 1, 60_000), true);

    // A revoked grant: the lease ends and the owner sees "needs sign-in".
    await endRefresh(sql, id, loser, true);
    const [status] = await as(sql, owner, (tx) => tx`select status from public.mcp_servers`);
    assert.equal(status.status, "needs_sign_in");
    assert.equal((await loadToken(sql, owner.id, id))?.leased, false);

    // Signing in again replaces the token set and connects the server; not another user's.
    const other = await createUser(sql, "other");
    assert.equal(await replaceOAuthCredential(sql, id, other.id, sealed(), null), false);
    assert.equal(await replaceOAuthCredential(sql, id, owner.id, sealed(), null), true);
    const [back] = await as(sql, owner, (tx) => tx`select status from public.mcp_servers`);
    assert.equal(back.status, "connected");
    assert.equal((await loadToken(sql, owner.id, id))?.version, 2);

    // Users touch none of it.
    for (const who of [owner.claims, ANON_CLAIMS]) {
      assert.equal(
        await sqlState(
          as(
            sql,
            who,
            (tx) =>
              tx`select public.mcp_take_refresh_lease(${id}::uuid, ${owner.id}::uuid, 1, 1000)`,
          ),
        ),
        "42501",
      );
    }
  } finally {
    await sql.end();
  }
});
