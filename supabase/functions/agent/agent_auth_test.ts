/**
 * Authentication before the upgrade: the three ways to send the token, and every kind of bad
 * token answered 401 with a JSON error instead of a socket; after it, a socket lives as long as
 * its (renewed) token.
 */
import assert from "node:assert/strict";
import { importJWK, SignJWT } from "jose";
import { generateSigningKey, issueAccessToken } from "../../../scripts/standin/signing_keys.ts";
import { CLOSE_CODES } from "../_shared/agent_protocol.ts";
import { AgentClient, eventually, ISSUER, withWorld } from "../../tests/support/agent_world.ts";

function base64url(value: unknown): string {
  return btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

Deno.test("the token may come as a header, a subprotocol (echoed) or ?jwt=", async () => {
  await withWorld({}, async ({ agent, user, tokenFor }) => {
    const alice = await user();
    const token = await tokenFor(alice);
    const viaHeader = await AgentClient.open(agent.url, {
      headers: { Authorization: `Bearer ${token}` },
    });
    const viaProtocol = await AgentClient.open(agent.url, {
      protocols: [`jwt-${token}`],
    });
    const viaQuery = await AgentClient.open(
      `${agent.url}?jwt=${encodeURIComponent(token)}`,
    );
    try {
      assert.equal(
        viaProtocol.socket.protocol,
        `jwt-${token}`,
        "the subprotocol is echoed",
      );
      for (const client of [viaHeader, viaProtocol, viaQuery]) {
        const ready = await client.takeType("ready");
        assert.equal(ready.user_id, alice.id);
      }
    } finally {
      for (const client of [viaHeader, viaProtocol, viaQuery]) client.close();
      await Promise.all([
        viaHeader.closed,
        viaProtocol.closed,
        viaQuery.closed,
      ]);
    }
  });
});

Deno.test("bad tokens get 401 with a JSON error code, before any upgrade", async () => {
  await withWorld({}, async ({ agent, user, key }) => {
    const alice = await user();
    const claims = { userId: alice.id, email: alice.email, issuer: ISSUER };
    const now = Math.floor(Date.now() / 1000);
    const expired = await issueAccessToken(key, {
      ...claims,
      now: now - 7200,
      expiresIn: 3600,
    });
    const impostorKey = await generateSigningKey();
    const badSignature = await issueAccessToken(
      {
        ...impostorKey,
        kid: key.kid,
        privateJwk: { ...impostorKey.privateJwk, kid: key.kid },
      },
      claims,
    );
    const payload = {
      sub: alice.id,
      role: "authenticated",
      aud: "authenticated",
      iss: ISSUER,
      iat: now,
      exp: now + 3600,
    };
    const wrongAudience = await new SignJWT({ ...payload, aud: "someone-else" })
      .setProtectedHeader({ alg: "ES256", kid: key.kid })
      .sign(await importJWK(key.privateJwk, "ES256"));
    const algNone = `${base64url({ alg: "none", typ: "JWT" })}.${base64url(payload)}.`;
    const hs256 = await new SignJWT(payload)
      .setProtectedHeader({ alg: "HS256", kid: key.kid })
      .sign(
        new TextEncoder().encode(
          "super-secret-jwt-token-with-at-least-32-characters",
        ),
      );

    const cases: [string, string | undefined, string][] = [
      ["expired", expired, "expired_token"],
      ["bad signature", badSignature, "invalid_token"],
      ["wrong audience", wrongAudience, "invalid_token"],
      ["alg none", algNone, "invalid_token"],
      ["HS256", hs256, "invalid_token"],
      ["garbage", "not-a-jwt", "invalid_token"],
      ["no token", undefined, "missing_token"],
    ];
    for (const [label, token, code] of cases) {
      const response = await fetch(agent.httpUrl, {
        headers: {
          Connection: "Upgrade",
          Upgrade: "websocket",
          "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": btoa("0123456789abcdef"),
          ...(token ? { Authorization: `Bearer ${token}` } : {}),
        },
      });
      assert.equal(response.status, 401, label);
      assert.match(
        response.headers.get("content-type") ?? "",
        /application\/json/,
        label,
      );
      const body = await response.json();
      assert.equal(body.error.code, code, label);
      assert.equal(typeof body.error.message, "string", label);
    }

    // A browser-style client sees the upgrade fail.
    await assert.rejects(
      AgentClient.open(agent.url, { protocols: [`jwt-${expired}`] }),
    );
    await assert.rejects(AgentClient.open(`${agent.url}?jwt=${hs256}`));
  });
});

Deno.test("a plain GET with a good token is told to upgrade", async () => {
  await withWorld({}, async ({ agent, user, tokenFor }) => {
    const token = await tokenFor(await user());
    const response = await fetch(agent.httpUrl, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(response.status, 426);
    assert.equal((await response.json()).error.code, "upgrade_required");
    const missing = await fetch(`${agent.httpUrl}/elsewhere`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  });
});

Deno.test("a socket closes at its token's exp (4002) unless an auth frame renewed it", async () => {
  await withWorld({}, async ({ agent, key, user }) => {
    const caller = await user("expiring");
    const shortToken = (seconds: number) =>
      issueAccessToken(key, {
        userId: caller.id,
        email: caller.email,
        sessionId: caller.sessionId,
        issuer: ISSUER,
        expiresIn: seconds,
      });
    const open = async (token: string) => {
      const client = await AgentClient.open(agent.url, {
        headers: { Authorization: `Bearer ${token}` },
      });
      await client.take((frame) => frame.type === "ready");
      return client;
    };

    const unrenewed = await open(await shortToken(2));
    const renewed = await open(await shortToken(2));
    // Another user's token cannot take over a socket.
    const stranger = await user("stranger");
    renewed.send({
      type: "auth",
      access_token: await issueAccessToken(key, {
        userId: stranger.id,
        issuer: ISSUER,
      }),
    });
    const refused = await renewed.takeType("error");
    assert.equal(refused.code, "invalid_token");
    assert.equal(refused.ref, "auth");
    renewed.send({ type: "auth", access_token: await shortToken(60) });

    const closed = await unrenewed.closed;
    assert.equal(closed.code, CLOSE_CODES.tokenExpired);
    // Past the first token's exp, the renewed socket still serves.
    renewed.send({ type: "ping" });
    assert.equal((await renewed.takeType("pong")).type, "pong");
    renewed.close();
    await renewed.closed;
  });
});

Deno.test("a deleted, banned or signed-out user's socket closes (4003) at the next heartbeat", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const [deleted, banned, signedOut, bystander] = await Promise.all(
      ["deleted", "banned", "signed-out", "bystander"].map((label) => user(label)),
    );
    const clients = await Promise.all(
      [deleted, banned, signedOut, bystander].map((who) => connect(who)),
    );
    await sql`delete from auth.users where id = ${deleted.id}`;
    await sql`update auth.users set banned_until = now() + interval '1 day'
              where id = ${banned.id}`;
    // Sign-out everywhere: GoTrue deletes the user's sessions.
    await sql`delete from auth.sessions where user_id = ${signedOut.id}`;

    const expected = ["user_deleted", "user_banned", "session_ended"];
    for (const [index, reason] of expected.entries()) {
      const error = await clients[index].takeType("error");
      assert.equal(error.code, "access_revoked");
      assert.equal(error.reason, reason);
      const closed = await clients[index].closed;
      assert.deepEqual(closed, { code: CLOSE_CODES.accessRevoked, reason });
    }
    // The others' heartbeats go on: the bystander still serves, and his row is kept alive.
    clients[3].send({ type: "ping" });
    assert.equal((await clients[3].takeType("pong")).type, "pong");
    // A closed socket's row goes once its close handler has run, which the client does not wait
    // for: the revoked rows go, the bystander's stays.
    const rows = await eventually(async () => {
      const found = await sql`select user_id from public.agent_connections
                              where user_id in ${sql([banned.id, signedOut.id, bystander.id])}`;
      return found.length <= 1 ? found : undefined;
    }, "the revoked users' connection rows to go");
    assert.deepEqual(rows.map((row) => row.user_id), [bystander.id]);
  });
});

Deno.test("a signed-out session's token gets no socket and starts no turn", async () => {
  // No heartbeat within the test: the check before a turn must stand on its own.
  await withWorld(
    { config: { heartbeatIntervalMs: 60_000, staleAfterMs: 180_000 } },
    async ({ sql, agent, connect, user, tokenFor }) => {
      const alice = await user("signed-out");
      const open = await connect(alice);
      await sql`delete from auth.sessions where user_id = ${alice.id}`;

      open.send({
        type: "chat",
        id: crypto.randomUUID(),
        content: "still there?",
      });
      const refused = await open.takeType("error");
      assert.equal(refused.code, "access_revoked");
      assert.equal(refused.reason, "session_ended");
      assert.equal((await open.closed).code, CLOSE_CODES.accessRevoked);

      const late = await AgentClient.open(agent.url, {
        headers: { Authorization: `Bearer ${await tokenFor(alice)}` },
      });
      const error = await late.takeType("error");
      assert.equal(error.reason, "session_ended");
      assert.equal((await late.closed).code, CLOSE_CODES.accessRevoked);
      assert.equal(late.frames.some((frame) => frame.type === "ready"), false);

      const [limits] = await sql`select day_tokens from public.user_limits
                                 where user_id = ${alice.id}`;
      const turns = await sql`select id from public.agent_turns where user_id = ${alice.id}`;
      assert.deepEqual(
        [Number(limits.day_tokens), turns.length],
        [0, 0],
        "nothing billed",
      );
    },
  );
});
