/**
 * The REST stand-in driven by the unmodified supabase-js client against the test database:
 * RLS decides what each caller reads, filters and ordering work, and what it does not
 * support is refused with an error rather than ignored.
 */
import assert from "node:assert/strict";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { createTokenVerifier } from "./token_verifier.ts";
import { connectTestDatabase, createUser, type TestUser } from "../../supabase/tests/db_helpers.ts";
import { LOCAL_PUBLISHABLE_KEY } from "./keys.ts";
import { createRestHandler } from "./rest_server.ts";
import { generateSigningKey, issueAccessToken, jwksOf } from "./signing_keys.ts";

const signingKey = await generateSigningKey();

async function withRest(
  test: (context: {
    url: string;
    clientOf(user?: TestUser): Promise<SupabaseClient>;
    alice: TestUser;
    bob: TestUser;
  }) => Promise<void>,
) {
  const sql = connectTestDatabase(4);
  const handler = createRestHandler({
    sql,
    verifier: createTokenVerifier({ jwks: jwksOf(signingKey) }),
    maxRows: 50,
  });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  const url = `http://127.0.0.1:${server.addr.port}`;
  try {
    const alice = await createUser(sql, "rest-alice");
    const bob = await createUser(sql, "rest-bob");
    for (const [user, tokens] of [[alice, [10, 20, 30]], [bob, [99]]] as const) {
      for (const promptTokens of tokens) {
        await sql`insert into public.usage_metrics (user_id, kind, name, prompt_tokens, status,
                    cost_usd)
                  values (${user.id}, 'llm', 'model-a', ${promptTokens}, 'ok', 0.000125)`;
      }
    }
    const clientOf = async (user?: TestUser) => {
      const accessToken = user
        ? await issueAccessToken(signingKey, {
          userId: user.id,
          email: user.email,
          issuer: `${url}/auth/v1`,
        })
        : undefined;
      return createClient(url, LOCAL_PUBLISHABLE_KEY, {
        auth: { persistSession: false, autoRefreshToken: false },
        ...(accessToken ? { accessToken: () => Promise.resolve(accessToken) } : {}),
      });
    };
    await test({ url, clientOf, alice, bob });
  } finally {
    await server.shutdown();
    await sql.end();
  }
}

Deno.test("a user reads only his own rows, filtered, ordered and limited", async () => {
  await withRest(async ({ clientOf, alice }) => {
    const supabase = await clientOf(alice);
    const { data, error } = await supabase.from("usage_metrics")
      .select("prompt_tokens, cost_usd, created_at")
      .gte("prompt_tokens", 20)
      .order("prompt_tokens", { ascending: false })
      .limit(5);
    assert.equal(error, null);
    assert.deepEqual(data!.map((row) => row.prompt_tokens), [30, 20]);
    // Built by Postgres as PostgREST does: numeric is a JSON number, timestamps keep an offset.
    assert.equal(data![0].cost_usd, 0.000125);
    assert.match(data![0].created_at, /[+-]\d{2}:\d{2}$/);

    const all = await supabase.from("usage_metrics").select("user_id");
    assert.deepEqual(new Set(all.data!.map((row) => row.user_id)), new Set([alice.id]));

    const some = await supabase.from("usage_metrics").select("prompt_tokens")
      .in("prompt_tokens", [10, 30, 99]).order("prompt_tokens");
    assert.deepEqual(some.data!.map((row) => row.prompt_tokens), [10, 30]);
  });
});

Deno.test("the publishable key alone reads as anon, whom RLS shows nothing", async () => {
  await withRest(async ({ clientOf }) => {
    const { data, error } = await (await clientOf()).from("permissions").select("*");
    // anon has no SELECT privilege on permissions: PostgREST answers 42501.
    assert.equal(data, null);
    assert.equal(error?.code, "42501");
  });
});

Deno.test("unknown tables and columns, writes and embedding are refused, not ignored", async () => {
  await withRest(async ({ url, clientOf, alice }) => {
    const supabase = await clientOf(alice);
    const table = await supabase.from("no_such_table").select("*");
    assert.equal(table.error?.code, "PGRST205");
    const column = await supabase.from("usage_metrics").select("nope");
    assert.equal(column.error?.code, "42703");
    const embedded = await supabase.from("chat_sessions").select("id, chat_history(content)");
    assert.equal(embedded.error?.code, "PGRST100");
    const write = await supabase.from("permissions").insert({ tool: "calculator" });
    assert.equal(write.status, 405);
    const badValue = await supabase.from("usage_metrics").select("id").eq("prompt_tokens", "x");
    assert.equal(badValue.error?.code, "22P02");

    const noKey = await fetch(`${url}/rest/v1/usage_metrics`);
    assert.equal(noKey.status, 401);
    await noKey.body?.cancel();
    const preflight = await fetch(`${url}/rest/v1/usage_metrics`, { method: "OPTIONS" });
    assert.equal(preflight.status, 204);
    assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /apikey/);
  });
});
