/**
 * An OAuth-protected MCP server's tools through agent workers that are real processes (the
 * function as the local runtime runs it), against the double's rotating authorization server:
 * the access token is refreshed once for all of them, single-flight through the lease in
 * Postgres; a worker killed before its token request leaves the grant whole; one killed after
 * the server rotated, before it stored, leaves a revoked grant: "needs sign-in" and
 * `mcp_reauth_required`, and nothing hangs.
 */
import assert from "node:assert/strict";
import { fixtureArg } from "../../../scripts/standin/llm_fixture.ts";
import { startMcpServerDouble } from "../../../scripts/standin/mcp_server_double.ts";
import type { FunctionWorker } from "../../../scripts/standin/function_workers.ts";
import type { TurnFrame } from "../_shared/agent_protocol.ts";
import {
  AgentClient,
  startAgentProcess,
  withWorld,
  type World,
} from "../../tests/support/agent_world.ts";
import { liftRequestLimits, type TestUser } from "../../tests/support/database.ts";
import { signInWithOAuth, TEST_CREDENTIALS_KEY } from "../../tests/support/oauth_sign_in.ts";

// Refresh 1 s before expiry; a lease of 1.5 s, so a dead holder's lease soon runs out.
const REFRESH_MARGIN_MS = 1_000;
const LEASE_MS = 1_500;

function agentWorker(world: World): Promise<FunctionWorker> {
  return startAgentProcess(world, {
    MCP_ALLOW_LOOPBACK: "true",
    MCP_CREDENTIALS_KEY: TEST_CREDENTIALS_KEY,
    MCP_OAUTH_REFRESH_MARGIN_MS: String(REFRESH_MARGIN_MS),
    MCP_OAUTH_LEASE_MS: String(LEASE_MS),
  });
}

async function connectTo(world: World, worker: FunctionWorker, user: TestUser) {
  const client = await AgentClient.open(`${worker.origin.replace("http", "ws")}/agent`, {
    headers: { Authorization: `Bearer ${await world.tokenFor(user)}` },
  });
  await client.take((frame) => frame.type === "ready");
  return client;
}

const echo = (text: string) =>
  `[[fixture:tool_call tool=dbl__echo args=${fixtureArg(JSON.stringify({ text }))}]] go`;

/** The one tool result of a turn's frames. */
function resultOf(frames: TurnFrame[]) {
  const result = frames.find((f) => f.type === "tool_result");
  assert.ok(result && result.type === "tool_result", JSON.stringify(frames.at(-1)));
  return result;
}

/** Signs `user` in to the double as `dbl` and lets its tools run without asking. */
async function connect(world: World, user: TestUser, url: string): Promise<string> {
  await liftRequestLimits(world.sql, user.id);
  // Killed workers' turns stay running until adopted: they may not hold the others back.
  await world.sql`update public.user_limits set max_concurrent_turns = 10
                  where user_id = ${user.id}`;
  const id = await signInWithOAuth(world.key, await world.tokenFor(user), url, "dbl");
  await world.sql`insert into public.permissions (user_id, tool, approval_mode)
                  values (${user.id}, 'dbl__echo', 'auto')`;
  return id;
}

/** When the stored access token expires (its lifetime is seconds). */
async function expiryOf(world: World, serverId: string): Promise<Date> {
  const [{ expires_at }] = await world.sql`select expires_at from public.mcp_credentials
                                           where server_id = ${serverId}`;
  return expires_at;
}

function until(instant: Date): Promise<void> {
  return new Promise((resolve) =>
    setTimeout(resolve, Math.max(0, instant.getTime() - Date.now() + 50))
  );
}

async function untilExpired(world: World, serverId: string) {
  await until(await expiryOf(world, serverId));
}

Deno.test("20 turns on 3 agent workers across the token's expiry: one refresh, no failures, no new consent", async () => {
  // The first token lives 2 s; the refreshed one long, so one refresh is all the run needs.
  const double = startMcpServerDouble({ oauth: { accessTokenTtlSeconds: 2 } });
  const workers: FunctionWorker[] = [];
  try {
    await withWorld({}, async (world) => {
      const alice = await world.user("oauth");
      const serverId = await connect(world, alice, double.url);
      const oauth = double.oauth!;
      const firstExpiry = await expiryOf(world, serverId);
      oauth.accessTokenTtlSeconds = 600;
      workers.push(...await Promise.all([1, 2, 3].map(() => agentWorker(world))));
      const clients = await Promise.all(workers.map((w) => connectTo(world, w, alice)));

      // Three lanes, one per worker, each its turns one after the other.
      const run = (turns: number) =>
        Promise.all(clients.map(async (client, lane) => {
          const results = [];
          for (let i = lane; i < turns; i += clients.length) {
            results.push(resultOf(await client.chat(echo(`turn ${i}`))));
          }
          return results;
        }));
      // Half before the first token's expiry, half after; the refresh falls where the margin
      // puts it, among concurrent calls either way.
      const before = (await run(10)).flat();
      await until(firstExpiry);
      const after = (await run(10)).flat();

      const results = [...before, ...after];
      assert.equal(results.length, 20);
      assert.deepEqual(results.filter((r) => r.is_error), [], "no tool failed");
      assert.equal(double.calls.filter((c) => c.name === "echo").length, 20);
      assert.equal(oauth.refreshes, 1, "one refresh for every worker");
      assert.equal(oauth.reuses, 0);
      // One code exchange and one refresh: nobody was sent to consent again.
      assert.equal(oauth.tokenRequests, 2);
      const [{ status }] = await world.sql`select status from public.mcp_servers
                                           where id = ${serverId}`;
      assert.equal(status, "connected");
    });
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await double.close();
  }
});

Deno.test("the refreshing worker killed before its token request, then after the server rotated: one refresh; then needs sign-in, mcp_reauth_required", async () => {
  const double = startMcpServerDouble({ oauth: { accessTokenTtlSeconds: 1 } });
  const workers: FunctionWorker[] = [];
  try {
    await withWorld({}, async (world) => {
      const alice = await world.user("oauth-kill");
      const serverId = await connect(world, alice, double.url);
      const oauth = double.oauth!;
      const [doomed, survivor, doomedToo] = await Promise.all(
        [1, 2, 3].map(() => agentWorker(world)),
      );
      workers.push(doomed, survivor, doomedToo);
      const [first, second, third] = await Promise.all(
        [doomed, survivor, doomedToo].map((w) => connectTo(world, w, alice)),
      );
      await untilExpired(world, serverId);

      // 1. Killed while its token request is held unread: the grant is untouched.
      oauth.holdRefresh = "before";
      first.send({ type: "chat", id: crypto.randomUUID(), content: echo("doomed") });
      await oauth.refreshArrived;
      doomed.kill("SIGKILL");
      await doomed.exited;
      oauth.holdRefresh = null;
      oauth.release();
      // The survivor waits out the dead holder's lease, then refreshes with the same token.
      oauth.accessTokenTtlSeconds = 1;
      const ok = resultOf(await second.chat(echo("after the kill")));
      assert.equal(ok.is_error, false, JSON.stringify(ok.result));
      assert.equal(oauth.refreshes, 1);
      assert.equal(oauth.reuses, 0);

      // 2. Killed after the server rotated, before it stored: the answer is lost.
      await untilExpired(world, serverId);
      oauth.holdRefresh = "after";
      third.send({ type: "chat", id: crypto.randomUUID(), content: echo("lost answer") });
      await oauth.refreshArrived;
      doomedToo.kill("SIGKILL");
      await doomedToo.exited;
      oauth.holdRefresh = null;
      oauth.release();
      assert.equal(oauth.refreshes, 2, "the server rotated");
      const refused = resultOf(await second.chat(echo("after the lost answer")));
      assert.equal(refused.is_error, true);
      assert.equal((refused.result as { code: string }).code, "mcp_reauth_required");
      assert.equal(oauth.reuses, 1, "the old refresh token came back: the family is revoked");
      const [{ status }] = await world.sql`select status from public.mcp_servers
                                           where id = ${serverId}`;
      assert.equal(status, "needs_sign_in");
      // And at once from then on: nothing waits on a revoked grant.
      const again = resultOf(await second.chat(echo("once more")));
      assert.equal((again.result as { code: string }).code, "mcp_reauth_required");
      // The code, the held one, the survivor's, the lost answer, the reuse: nothing more.
      assert.equal(oauth.tokenRequests, 5, "no further token request");
    });
  } finally {
    await Promise.all(workers.map((w) => w.stop().catch(() => {})));
    await double.close();
  }
});
