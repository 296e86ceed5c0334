/**
 * The REST stand-in driven by the unmodified supabase-js client against the test database:
 * RLS decides what each caller reads, filters and ordering work, and what it does not
 * support is refused with an error rather than ignored.
 */
import assert from "node:assert/strict";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { createTokenVerifier } from "./token_verifier.ts";
import {
  connectTestDatabase,
  createUser,
  type TestUser,
} from "../../supabase/tests/support/database.ts";
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

Deno.test(".single() gives one object, or PostgREST's 406 PGRST116; .maybeSingle() too", async () => {
  await withRest(async ({ clientOf, alice }) => {
    const supabase = await clientOf(alice);
    const one = await supabase.from("usage_metrics").select("prompt_tokens, name")
      .eq("prompt_tokens", 20).single();
    assert.equal(one.error, null);
    assert.deepEqual(one.data, { prompt_tokens: 20, name: "model-a" });

    for (
      const [query, rows] of [[supabase.from("usage_metrics").select("id"), 3], [
        supabase.from("usage_metrics").select("id").eq("prompt_tokens", 99),
        0,
      ]] as const
    ) {
      const answer = await query.single();
      assert.equal(answer.status, 406);
      assert.equal(answer.data, null);
      assert.deepEqual(answer.error, {
        code: "PGRST116",
        details: `The result contains ${rows} rows`,
        hint: null,
        message: "Cannot coerce the result to a single JSON object",
      });
    }

    const maybeNone = await supabase.from("usage_metrics").select("id").eq("prompt_tokens", 99)
      .maybeSingle();
    assert.equal(maybeNone.error, null);
    assert.equal(maybeNone.data, null);
    const maybeOne = await supabase.from("usage_metrics").select("prompt_tokens")
      .eq("prompt_tokens", 30).maybeSingle();
    assert.deepEqual(maybeOne.data, { prompt_tokens: 30 });
    const maybeMany = await supabase.from("usage_metrics").select("id").maybeSingle();
    assert.equal(maybeMany.error?.code, "PGRST116");
  });
});

Deno.test("count=exact gives the count, with head: true too, and PostgREST's Content-Range", async () => {
  await withRest(async ({ url, clientOf, alice, bob }) => {
    const supabase = await clientOf(alice);
    const page = await supabase.from("usage_metrics").select("prompt_tokens", { count: "exact" })
      .order("prompt_tokens").limit(2);
    assert.equal(page.error, null);
    assert.equal(page.count, 3);
    assert.equal(page.status, 206);
    assert.deepEqual(page.data!.map((row) => row.prompt_tokens), [10, 20]);

    const all = await supabase.from("usage_metrics").select("id", { count: "exact" });
    assert.equal(all.count, 3);
    assert.equal(all.status, 200);
    const head = await supabase.from("usage_metrics")
      .select("*", { count: "exact", head: true }).gte("prompt_tokens", 20);
    assert.equal(head.error, null);
    assert.equal(head.count, 2);
    assert.equal(head.data, null);
    const none = await supabase.from("usage_metrics")
      .select("*", { count: "exact", head: true }).eq("prompt_tokens", 99);
    assert.equal(none.count, 0);
    assert.equal(
      (await (await clientOf(bob)).from("usage_metrics")
        .select("*", { count: "planned", head: true })).count,
      1,
    );

    const token = await issueAccessToken(signingKey, { userId: alice.id, issuer: "x" });
    const raw = (query: string, headers: Record<string, string> = {}) =>
      fetch(`${url}/rest/v1/usage_metrics?${query}`, {
        headers: {
          apikey: LOCAL_PUBLISHABLE_KEY,
          Authorization: `Bearer ${token}`,
          Prefer: "count=exact",
          ...headers,
        },
      });
    const ranged = await raw("select=id&order=id&offset=1&limit=10");
    assert.equal(ranged.headers.get("content-range"), "1-2/3");
    assert.equal((await ranged.json()).length, 2);
    const empty = await raw("select=id&prompt_tokens=eq.99");
    assert.equal(empty.headers.get("content-range"), "*/0");
    await empty.body?.cancel();
    const header = await raw("select=id&order=id", { Range: "0-0" });
    assert.equal(header.status, 206);
    assert.equal(header.headers.get("content-range"), "0-0/3");
    await header.body?.cancel();
    const uncounted = await raw("select=id", { Prefer: "" });
    assert.equal(uncounted.headers.get("content-range"), "0-2/*");
    await uncounted.body?.cancel();
    const past = await raw("select=id&offset=5");
    assert.equal(past.status, 416);
    assert.deepEqual(await past.json(), {
      code: "PGRST103",
      details: "An offset of 5 was requested, but there are only 3 rows.",
      hint: null,
      message: "Requested range not satisfiable",
    });
  });
});

Deno.test("like and ilike take PostgREST's * wildcard as well as %", async () => {
  await withRest(async ({ clientOf, alice }) => {
    const supabase = await clientOf(alice);
    const count = async (query: PromiseLike<{ data: unknown[] | null; error: unknown }>) => {
      const { data, error } = await query;
      assert.equal(error, null);
      return data!.length;
    };
    const rows = () => supabase.from("usage_metrics").select("id");
    assert.equal(await count(rows().like("name", "model-*")), 3);
    assert.equal(await count(rows().like("name", "*-a")), 3);
    assert.equal(await count(rows().like("name", "%-a")), 3);
    assert.equal(await count(rows().like("name", "MODEL*")), 0);
    assert.equal(await count(rows().ilike("name", "MODEL*")), 3);
    assert.equal(await count(rows().ilike("name", "x*")), 0);
  });
});

Deno.test("or/and trees and not filters are applied as PostgREST applies them", async () => {
  await withRest(async ({ clientOf, alice }) => {
    const supabase = await clientOf(alice);
    const tokens = async (
      query: PromiseLike<{ data: { prompt_tokens: number }[] | null; error: unknown }>,
    ) => {
      const { data, error } = await query;
      assert.equal(error, null, JSON.stringify(error));
      return data!.map((row) => row.prompt_tokens);
    };
    const rows = () =>
      supabase.from("usage_metrics").select("prompt_tokens").order("prompt_tokens");
    assert.deepEqual(await tokens(rows().or("prompt_tokens.eq.10,prompt_tokens.eq.30")), [10, 30]);
    assert.deepEqual(
      await tokens(rows().or("prompt_tokens.gt.25,and(prompt_tokens.gte.10,prompt_tokens.lt.15)")),
      [10, 30],
    );
    assert.deepEqual(await tokens(rows().or("prompt_tokens.in.(10,20),name.like.*-b")), [10, 20]);
    assert.deepEqual(await tokens(rows().or('name.eq."model-a",prompt_tokens.is.null')), [
      10,
      20,
      30,
    ]);
    assert.deepEqual(await tokens(rows().not("prompt_tokens", "eq", 20)), [10, 30]);
    assert.deepEqual(await tokens(rows().not("prompt_tokens", "in", "(10,20)")), [30]);
    assert.deepEqual(
      await tokens(rows().or("prompt_tokens.eq.10,prompt_tokens.eq.20").or("prompt_tokens.gte.20")),
      [20],
    );
    assert.deepEqual(
      await tokens(
        rows().or("not.and(prompt_tokens.gte.10,prompt_tokens.lte.20),prompt_tokens.eq.10"),
      ),
      [10, 30],
    );
    assert.deepEqual(await tokens(rows().in("prompt_tokens", [])), []);
  });
});

Deno.test("malformed or unsupported filters are refused with PostgREST's error shapes", async () => {
  await withRest(async ({ clientOf, alice }) => {
    const supabase = await clientOf(alice);
    const rows = () => supabase.from("usage_metrics").select("id");

    const broken = await rows().or("prompt_tokens.eq.10,prompt_tokens");
    assert.equal(broken.status, 400);
    assert.equal(broken.error?.code, "PGRST100");
    assert.match(
      broken.error!.message,
      /^"failed to parse logic tree \(\(.*\)\)" \(line 1, column \d+\)$/,
    );
    assert.equal(typeof broken.error?.details, "string");
    assert.equal(broken.error?.hint, null);

    const unknownOperator = await rows().filter("prompt_tokens", "noop", "1");
    assert.equal(unknownOperator.error?.code, "PGRST100");
    assert.equal(unknownOperator.error?.details, "unknown single value operator noop");

    // Real operators the stand-in does not implement are refused, never ignored.
    assert.equal((await rows().filter("name", "match", "^m")).error?.code, "PGRST100");
    assert.equal((await rows().or("name.fts.model")).error?.code, "PGRST100");
    assert.equal((await rows().textSearch("name", "model")).error?.code, "PGRST100");
    // An unknown column inside a tree is Postgres's 42703, as from PostgREST.
    assert.equal((await rows().or("nope.eq.1,prompt_tokens.eq.10")).error?.code, "42703");
    // Filters on a resource that is not embedded: PGRST108.
    const notEmbedded = await rows().or("id.eq.1", { referencedTable: "chat_history" });
    assert.equal(notEmbedded.error?.code, "PGRST108");
    assert.equal(
      notEmbedded.error?.message,
      "'chat_history' is not an embedded resource in this request",
    );
    // Media types the stand-in does not produce: PGRST107, not JSON in their place.
    const rpc = await supabase.rpc("my_permissions");
    assert.equal(rpc.error?.code, "PGRST127");
    const csv = await rows().csv();
    assert.equal(csv.status, 406);
    assert.equal(csv.error?.code, "PGRST107");
  });
});
