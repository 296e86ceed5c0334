/**
 * The stand-in end to end: one gateway port, Auth issuing real ES256 tokens, and the
 * functions running in their own workers with the environment Supabase gives them.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import postgres from "postgres";
import { findLeftovers, findPgBouncer } from "./pgbouncer.ts";
import { type RunningStack, startStack } from "./stack.ts";

Deno.test("a seeded user signs in through the gateway and uses the functions", async () => {
  const stack = await startStack({ ephemeral: true, log: () => {} });
  try {
    await signInAndUseHistory(stack);
  } finally {
    await stack.stop();
  }
});

Deno.test({
  name: "with the pooler, the functions reach Postgres through PgBouncer",
  // Under CI=true a missing pgbouncer fails this test (`.ci/run` installs it).
  ignore: Deno.env.get("CI") !== "true" && !(await findPgBouncer()),
  async fn() {
    const stack = await startStack({ ephemeral: true, pooler: true, log: () => {} });
    const sql = postgres(stack.dbUrl, { max: 1, onnotice: () => {} });
    try {
      await signInAndUseHistory(stack);
      // PgBouncer appends its client's address to the application name it passes on.
      const [{ pooled }] = await sql`
        select count(*)::int as pooled from pg_stat_activity
        where application_name like 'supabase-agent - 127.0.0.1:%'`;
      assert.ok(pooled > 0, "no server connection of PgBouncer's in pg_stat_activity");
      assert.deepEqual(await findLeftovers(stack.pooler!.url, stack.pooler!.poolSize), []);
    } finally {
      await sql.end();
      await stack.stop();
    }
  },
});

async function signInAndUseHistory(stack: RunningStack): Promise<void> {
  const supabase = createClient(stack.apiUrl, stack.publishableKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  try {
    const { data, error } = await supabase.auth.signInWithPassword({
      email: "alice@example.com",
      password: "password123",
    });
    assert.equal(error, null);
    const token = data.session!.access_token;

    const sessionId = crypto.randomUUID();
    const posted = await supabase.functions.invoke("history/messages", {
      body: {
        session_id: sessionId,
        title: "Through the gateway",
        messages: [{ id: crypto.randomUUID(), role: "user", content: "hello" }],
      },
    });
    assert.equal(posted.error, null);
    assert.equal(posted.data.session_id, sessionId);

    const listed = await fetch(`${stack.apiUrl}/functions/v1/history/sessions`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(listed.status, 200);
    const { sessions } = await listed.json();
    assert.deepEqual(sessions.map((s: { id: string }) => s.id), [sessionId]);

    const anonymous = await fetch(`${stack.apiUrl}/functions/v1/history/sessions`);
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
  } finally {
    await supabase.auth.signOut();
  }
}

Deno.test("Realtime through the gateway delivers a user's own new messages", async () => {
  const stack = await startStack({ ephemeral: true, log: () => {} });
  const supabase = createClient(stack.apiUrl, stack.publishableKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  try {
    const { data } = await supabase.auth.signInWithPassword({
      email: "bob@example.com",
      password: "password123",
    });
    await supabase.realtime.setAuth(data.session!.access_token);
    const received = new Promise<Record<string, unknown>>((resolve) => {
      const channel = supabase.channel("mine").on(
        "postgres_changes",
        { event: "INSERT", schema: "public", table: "chat_history" },
        (payload) => resolve(payload.new),
      );
      channel.subscribe(async (status) => {
        if (status !== "SUBSCRIBED") return;
        await supabase.functions.invoke("history/messages", {
          body: { messages: [{ id: crypto.randomUUID(), role: "user", content: "live" }] },
        });
      });
    });
    const row = await received;
    assert.equal(row.content, "live");
  } finally {
    await supabase.removeAllChannels();
    await supabase.auth.signOut();
    await stack.stop();
  }
});

Deno.test("after the gateway restarts, supabase-js reconnects, rejoins and gets new rows", async () => {
  const stack = await startStack({ ephemeral: true, log: () => {} });
  const supabase = createClient(stack.apiUrl, stack.publishableKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  try {
    const { data } = await supabase.auth.signInWithPassword({
      email: "alice@example.com",
      password: "password123",
    });
    await supabase.realtime.setAuth(data.session!.access_token);
    const contents: string[] = [];
    const statuses: string[] = [];
    const waiters: (() => void)[] = [];
    const changed = () => waiters.splice(0).forEach((wake) => wake());
    const until = async (done: () => boolean, what: string) => {
      const deadline = Date.now() + 30_000;
      while (!done()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${statuses}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
    };
    const subscribed = () => statuses.filter((status) => status === "SUBSCRIBED").length;
    supabase.channel("restart").on(
      "postgres_changes",
      { event: "INSERT", schema: "public", table: "chat_history" },
      (payload) => {
        contents.push(String(payload.new.content));
        changed();
      },
    ).subscribe((status) => {
      statuses.push(status);
      changed();
    });
    const post = async (content: string) => {
      const { error } = await supabase.functions.invoke("history/messages", {
        body: { messages: [{ id: crypto.randomUUID(), role: "user", content }] },
      });
      assert.equal(error, null);
    };

    await until(() => subscribed() === 1, "the first join");
    await post("before the restart");
    await until(() => contents.length === 1, "the row before the restart");

    await stack.restartGateway();
    // The socket closed under the channel, came back after its back-off, and joined again.
    await until(() => subscribed() === 2, "the rejoin");
    await post("after the restart");
    await until(() => contents.length === 2, "the row after the restart");
    assert.deepEqual(contents, ["before the restart", "after the restart"]);
    assert.ok(statuses.includes("CHANNEL_ERROR") || statuses.includes("TIMED_OUT"), `${statuses}`);
  } finally {
    await supabase.removeAllChannels();
    await supabase.auth.signOut();
    await stack.stop();
  }
});
