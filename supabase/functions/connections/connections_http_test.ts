/**
 * The `connections` function over real HTTP against the MCP server double: real ES256 tokens,
 * a real database with RLS, the SDK's client talking Streamable HTTP to the SDK's server.
 * Each bad input is a clear error with a stable code, and nothing of it is stored.
 */
import assert from "node:assert/strict";
import { startMcpServerDouble } from "../../../scripts/standin/mcp_server_double.ts";
import {
  generateSigningKey,
  issueAccessToken,
  jwksOf,
} from "../../../scripts/standin/signing_keys.ts";
import {
  as,
  connectFunctionDatabase,
  connectTestDatabase,
  createUser,
  sqlState,
  type TestUser,
} from "../../tests/support/database.ts";
import { createTokenVerifier } from "../_shared/auth.ts";
import { createConnectionsApp } from "../_shared/mcp_servers/app.ts";
import {
  decryptCredential,
  headersOf,
  importCredentialKey,
} from "../_shared/mcp_servers/credentials.ts";
import { oauthAccessToken } from "../_shared/mcp_servers/oauth_tokens.ts";
import type { UrlPolicy } from "../_shared/mcp_servers/url_safety.ts";

const ISSUER = "http://127.0.0.1/auth/v1";
const KEY_TEXT = btoa(
  String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))),
);
const LOCAL: UrlPolicy = {
  allowLoopback: true,
  resolveDns: (h, t) => Deno.resolveDns(h, t),
};
/** Hosted settings, with a DNS where `loopback.example` points at 127.0.0.1. */
const HOSTED: UrlPolicy = {
  allowLoopback: false,
  resolveDns: (host, type) =>
    Promise.resolve(
      host === "loopback.example" && type === "A" ? ["127.0.0.1"] : [],
    ),
};

async function harness(policy: UrlPolicy = LOCAL) {
  const sql = connectFunctionDatabase(4);
  const signing = await generateSigningKey();
  const credentialKey = await importCredentialKey(KEY_TEXT);
  // Served first: the OAuth callback URL needs the port.
  let handle: (request: Request) => Response | Promise<Response> = () => new Response(null);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request) => handle(request),
  );
  const origin = `http://127.0.0.1:${server.addr.port}`;
  const app = createConnectionsApp({
    sql,
    verifier: createTokenVerifier({ jwks: jwksOf(signing) }),
    remote: {
      policy,
      requestTimeoutMs: 1500,
      limits: { maxResponseBytes: 1024 * 1024, headersTimeoutMs: 1500 },
    },
    credentialKey,
    oauth: {
      redirectUrl: `${origin}/connections/oauth/callback`,
      flowTtlMs: 60_000,
      refreshMarginMs: 1_000,
      leaseMs: 2_000,
    },
  });
  handle = app.fetch;
  const base = `${origin}/connections`;
  const user = await createUser(sql, "hub");
  const token = await issueAccessToken(signing, {
    userId: user.id,
    email: user.email,
    issuer: ISSUER,
  });
  const call = async (
    method: string,
    path = "",
    body?: unknown,
    auth = true,
  ) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: {
        Origin: origin,
        ...(auth ? { Authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  };
  return {
    sql,
    user,
    origin,
    credentialKey,
    policy,
    call,
    async close() {
      await server.shutdown();
      await sql.end();
    },
  };
}

async function serverCount(
  sql: ReturnType<typeof connectTestDatabase>,
  user: TestUser,
) {
  const [{ servers, tools, credentials }] = await sql`
    select (select count(*)::int from public.mcp_servers where user_id = ${user.id}) as servers,
      (select count(*)::int from public.mcp_tools where user_id = ${user.id}) as tools,
      (select count(*)::int from public.mcp_credentials where user_id = ${user.id}) as credentials`;
  return { servers, tools, credentials };
}

/** No text, jsonb or bytea column of `public` or `auth` holds any of `secrets`. */
async function assertNoColumnHolds(
  admin: ReturnType<typeof connectTestDatabase>,
  secrets: string[],
) {
  const columns = await admin<
    { table_schema: string; table_name: string; column_name: string; data_type: string }[]
  >`
    select c.table_schema, c.table_name, c.column_name, c.data_type
    from information_schema.columns c join information_schema.tables t
      on t.table_schema = c.table_schema and t.table_name = c.table_name
    where t.table_type = 'BASE TABLE' and c.table_schema in ('public', 'auth')
      and c.data_type in ('text', 'jsonb', 'bytea', 'character varying')`;
  assert.ok(columns.length > 20);
  for (const secret of secrets) {
    for (const c of columns) {
      const [{ found }] = c.data_type === "bytea"
        ? await admin`select count(*)::int as found
            from ${admin(c.table_schema)}.${admin(c.table_name)}
            where position(convert_to(${secret}, 'UTF8') in ${admin(c.column_name)}) > 0`
        : await admin`select count(*)::int as found
            from ${admin(c.table_schema)}.${admin(c.table_name)}
            where ${admin(c.column_name)}::text like ${"%" + secret + "%"}`;
      assert.equal(found, 0, `${c.table_schema}.${c.table_name}.${c.column_name} holds a token`);
    }
  }
}

Deno.test("connections: /health answers without a token; /metrics stays shut without its secret", async () => {
  const h = await harness();
  try {
    const health = await h.call("GET", "/health", undefined, false);
    assert.equal(health.status, 200, JSON.stringify(health.body));
    assert.equal(health.body.checks.db.ok, true);
    const metrics = await h.call("GET", "/metrics", undefined, false);
    assert.equal(metrics.status, 503);
    assert.equal(metrics.body.error.code, "not_configured");
  } finally {
    await h.close();
  }
});

Deno.test("connections: 401 without a token, on GET and POST", async () => {
  const h = await harness();
  try {
    assert.equal((await h.call("GET", "", undefined, false)).status, 401);
    const posted = await h.call("POST", "", {
      url: "https://example.com/mcp",
      slug: "x",
    }, false);
    assert.equal(posted.status, 401);
    assert.equal(posted.body.error.code, "missing_token");
  } finally {
    await h.close();
  }
});

Deno.test("connections: a server with a bearer token is discovered and stored encrypted; a bad schema is a warning", async () => {
  const secret = `tok-${crypto.randomUUID()}`;
  const double = startMcpServerDouble({
    requiredHeader: { name: "Authorization", value: `Bearer ${secret}` },
  });
  const h = await harness();
  const admin = connectTestDatabase(1);
  try {
    const added = await h.call("POST", "", {
      url: double.url,
      slug: "dbl",
      display_name: "Double",
      auth: { type: "bearer", token: secret },
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    const server = added.body.server;
    assert.equal(server.slug, "dbl");
    assert.equal(server.auth_mode, "header");
    assert.deepEqual(
      server.tools.map((t: { name: string }) => t.name),
      ["dbl__echo", "dbl__fail", "dbl__hang", "dbl__huge", "dbl__slow"],
    );
    assert.equal(server.warnings.length, 1);
    assert.match(
      server.warnings[0],
      /^bad_schema skipped: .*not valid JSON Schema/,
    );

    const listed = await h.call("GET");
    assert.deepEqual(listed.body.servers.map((s: { id: string }) => s.id), [
      server.id,
    ]);
    // Each tool with the grant that decides it: new servers ask.
    assert.deepEqual(
      new Set(listed.body.servers[0].tools.map((t: { approval_mode: string }) => t.approval_mode)),
      new Set(["ask"]),
    );

    // New tools ask first: one `<slug>__*` row.
    const grants = await admin`select tool, approval_mode from public.permissions
      where user_id = ${h.user.id} and tool like 'dbl%'`;
    assert.deepEqual(grants.map((g) => `${g.tool}:${g.approval_mode}`), [
      "dbl__*:ask",
    ]);

    // The credential decrypts with the key and the server's id, and with nothing else.
    const [{ secret: sealed }] = await admin`select secret from public.mcp_credentials
      where server_id = ${server.id}`;
    const opened = await decryptCredential(h.credentialKey, server.id, sealed);
    assert.deepEqual(headersOf(opened), { Authorization: `Bearer ${secret}` });
    await assert.rejects(
      decryptCredential(h.credentialKey, crypto.randomUUID(), sealed),
    );

    // No text, jsonb or bytea column anywhere holds the token.
    await assertNoColumnHolds(admin, [secret]);
  } finally {
    await admin.end();
    await h.close();
    await double.close();
  }
});

Deno.test("connections: each bad server is a clear error, and nothing is stored", async () => {
  const double = startMcpServerDouble({
    requiredHeader: { name: "X-Key", value: "right" },
  });
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const h = await harness();
  const hosted = await harness(HOSTED);
  const admin = connectTestDatabase(1);
  try {
    const cases: Array<[string, typeof h, unknown, number, string]> = [
      [
        "non-MCP page",
        h,
        { url: `${double.origin}/html`, slug: "a" },
        502,
        "not_an_mcp_server",
      ],
      [
        "unreachable",
        h,
        { url: `http://127.0.0.1:${closedPort}/mcp`, slug: "a" },
        502,
        "server_unreachable",
      ],
      [
        "metadata address",
        h,
        { url: "http://169.254.169.254/latest", slug: "a" },
        422,
        "url_not_allowed",
      ],
      [
        "private https",
        h,
        { url: "https://10.0.0.1/mcp", slug: "a" },
        422,
        "url_not_allowed",
      ],
      [
        "redirect inward",
        h,
        {
          url: `${double.origin}/redirect?to=${encodeURIComponent("http://169.254.169.254/")}`,
          slug: "a",
        },
        422,
        "url_not_allowed",
      ],
      [
        "50 MB answer",
        h,
        { url: `${double.origin}/huge`, slug: "a" },
        502,
        "server_response_too_large",
      ],
      [
        "hanging answer",
        h,
        { url: `${double.origin}/hang`, slug: "a" },
        504,
        "server_timeout",
      ],
      [
        "wrong credential",
        h,
        {
          url: double.url,
          slug: "a",
          auth: { type: "header", name: "X-Key", value: "wrong" },
        },
        502,
        "server_auth_failed",
      ],
      [
        "loopback on hosted",
        hosted,
        { url: double.url, slug: "a" },
        422,
        "url_not_allowed",
      ],
      [
        "name to 127.0.0.1 on hosted",
        hosted,
        { url: "https://loopback.example/mcp", slug: "a" },
        422,
        "url_not_allowed",
      ],
      [
        "bad slug",
        h,
        { url: double.url, slug: "Bad-Slug" },
        422,
        "invalid_request",
      ],
      [
        "reserved header",
        h,
        {
          url: double.url,
          slug: "a",
          auth: { type: "header", name: "Host", value: "x" },
        },
        422,
        "invalid_request",
      ],
    ];
    for (const [label, who, body, status, code] of cases) {
      const reply = await who.call("POST", "", body);
      assert.equal(
        reply.status,
        status,
        `${label}: ${JSON.stringify(reply.body)}`,
      );
      assert.equal(reply.body.error.code, code, label);
      assert.ok(reply.body.error.message.length > 10, label);
    }
    assert.deepEqual(await serverCount(admin, h.user), {
      servers: 0,
      tools: 0,
      credentials: 0,
    });

    // A slug in use is a conflict; the first server stays as it was.
    const good = {
      url: double.url,
      slug: "dup",
      auth: { type: "header", name: "X-Key", value: "right" },
    };
    assert.equal((await h.call("POST", "", good)).status, 201);
    const again = await h.call("POST", "", good);
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, "conflict");
    assert.deepEqual(await serverCount(admin, h.user), {
      servers: 1,
      tools: 5,
      credentials: 1,
    });
  } finally {
    await admin.end();
    await h.close();
    await hosted.close();
    await double.close();
  }
});

Deno.test("connections: refresh lists a server's tools again, with its stored credential", async () => {
  const double = startMcpServerDouble({ requiredHeader: { name: "X-Key", value: "k" } });
  const h = await harness();
  try {
    const added = await h.call("POST", "", {
      url: double.url,
      slug: "fresh",
      auth: { type: "header", name: "X-Key", value: "k" },
    });
    assert.equal(added.status, 201);
    double.tools.push({
      name: "Added.Later",
      description: "A tool the server gained.",
      inputSchema: { type: "object" },
    });
    const refreshed = await h.call("POST", `/${added.body.server.id}/refresh`);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    const added_later = refreshed.body.server.tools.find((t: { name: string }) =>
      t.name === "fresh__added_later"
    );
    assert.equal(added_later?.original_name, "Added.Later");
    assert.equal(added_later?.approval_mode, "ask");
    assert.equal(refreshed.body.server.tools.length, added.body.server.tools.length + 1);
    assert.equal((await h.call("POST", `/${crypto.randomUUID()}/refresh`)).status, 404);
  } finally {
    await h.close();
    await double.close();
  }
});

Deno.test("connections: DELETE removes the server with its tools and credential; another user's is not found", async () => {
  const double = startMcpServerDouble({
    requiredHeader: { name: "X-Key", value: "k" },
  });
  const h = await harness();
  const admin = connectTestDatabase(1);
  try {
    const added = await h.call("POST", "", {
      url: double.url,
      slug: "gone",
      auth: { type: "header", name: "X-Key", value: "k" },
    });
    assert.equal(added.status, 201);
    const stranger = await createUser(admin, "stranger");
    // Another user deletes nothing (RLS), and cannot read credentials at all.
    const removed = await as(
      admin,
      stranger,
      (tx) => tx`delete from public.mcp_servers where id = ${added.body.server.id} returning id`,
    );
    assert.equal(removed.length, 0);
    assert.equal(
      await sqlState(
        as(
          admin,
          h.user,
          (tx) => tx`select secret from public.mcp_credentials`,
        ),
      ),
      "42501",
    );
    assert.equal(
      (await h.call("DELETE", `/${added.body.server.id}`)).status,
      204,
    );
    assert.equal(
      (await h.call("DELETE", `/${added.body.server.id}`)).status,
      404,
    );
    assert.deepEqual(await serverCount(admin, h.user), {
      servers: 0,
      tools: 0,
      credentials: 0,
    });
  } finally {
    await admin.end();
    await h.close();
    await double.close();
  }
});

Deno.test("connections: OAuth sign-in: discovered, registered, PKCE; the callback stores the server with sealed tokens, once", async () => {
  const double = startMcpServerDouble({ oauth: true });
  const h = await harness();
  const admin = connectTestDatabase(1);
  try {
    const started = await h.call("POST", "", {
      url: double.url,
      slug: "dbl",
      auth: { type: "oauth" },
    });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const authorize = new URL(started.body.sign_in.authorization_url);
    assert.equal(`${authorize.origin}${authorize.pathname}`, `${double.origin}/authorize`);
    assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
    assert.equal(authorize.searchParams.get("resource"), double.url);
    const callback = `${h.origin}/connections/oauth/callback`;
    assert.equal(authorize.searchParams.get("redirect_uri"), callback);
    assert.deepEqual(await serverCount(admin, h.user), { servers: 0, tools: 0, credentials: 0 });

    // The user consents (the double at once); the browser follows the redirect back.
    const consent = await fetch(authorize, { redirect: "manual" });
    const back = consent.headers.get("location")!;
    assert.ok(back.startsWith(callback), back);
    const page = await fetch(back);
    const html = await page.text();
    assert.equal(page.status, 200, html);
    assert.match(page.headers.get("content-type")!, /^text\/html/);
    assert.equal(page.headers.get("referrer-policy"), "no-referrer");
    assert.ok(html.includes(`const origin = "${h.origin}"`), html);
    assert.match(html, /"type":"mcp_oauth","slug":"dbl","ok":true/);

    const listed = await h.call("GET");
    const [server] = listed.body.servers;
    assert.deepEqual([server.slug, server.auth_mode, server.status], ["dbl", "oauth", "connected"]);
    assert.equal(server.tools.length, 5);
    assert.deepEqual(await serverCount(admin, h.user), { servers: 1, tools: 5, credentials: 1 });
    const [{ expires_at }] = await admin`select expires_at from public.mcp_credentials
      where server_id = ${server.id}`;
    assert.ok(expires_at instanceof Date);

    // The state works once; a made-up one not at all; the flow row is gone.
    const again = await fetch(back);
    assert.equal(again.status, 400);
    assert.match(await again.text(), /expired or was already used/);
    const forged = await fetch(`${callback}?state=${"x".repeat(43)}&code=abc`);
    assert.equal(forged.status, 400);
    await forged.body?.cancel();
    const [{ flows }] = await admin`select count(*)::int as flows from public.mcp_oauth_flows
      where user_id = ${h.user.id}`;
    assert.equal(flows, 0);

    // A revoked grant: signing in again replaces the token set; the server, tools stay.
    await admin`update public.mcp_servers set status = 'needs_sign_in' where id = ${server.id}`;
    const renewed = await h.call("POST", `/${server.id}/sign-in`);
    assert.equal(renewed.status, 202, JSON.stringify(renewed.body));
    const consentAgain = await fetch(renewed.body.sign_in.authorization_url, {
      redirect: "manual",
    });
    const reconnected = await fetch(consentAgain.headers.get("location")!);
    assert.equal(reconnected.status, 200, await reconnected.text());
    const [again2] = (await h.call("GET")).body.servers;
    assert.deepEqual([again2.id, again2.status, again2.tools.length], [server.id, "connected", 5]);
    assert.deepEqual(await serverCount(admin, h.user), { servers: 1, tools: 5, credentials: 1 });
    const notOAuth = await h.call("POST", `/${crypto.randomUUID()}/sign-in`);
    assert.equal(notOAuth.status, 404);

    // No token is in any column: they are sealed.
    assert.equal(double.oauth!.issued.length, 4);
    await assertNoColumnHolds(admin, double.oauth!.issued);
  } finally {
    await admin.end();
    await h.close();
    await double.close();
  }
});

Deno.test("connections: OAuth to a server that does not ask for it, or to a forbidden URL, is a clear error; nothing stored", async () => {
  const plain = startMcpServerDouble();
  const h = await harness();
  const admin = connectTestDatabase(1);
  try {
    const unsupported = await h.call("POST", "", {
      url: plain.url,
      slug: "dbl",
      auth: { type: "oauth" },
    });
    assert.equal(unsupported.status, 502, JSON.stringify(unsupported.body));
    assert.equal(unsupported.body.error.code, "oauth_unsupported");
    const metadata = await h.call("POST", "", {
      url: "http://169.254.169.254/mcp",
      slug: "meta",
      auth: { type: "oauth" },
    });
    assert.equal(metadata.status, 422);
    assert.equal(metadata.body.error.code, "url_not_allowed");
    assert.deepEqual(await serverCount(admin, h.user), { servers: 0, tools: 0, credentials: 0 });
    const [{ flows }] = await admin`select count(*)::int as flows from public.mcp_oauth_flows
      where user_id = ${h.user.id}`;
    assert.equal(flows, 0);
  } finally {
    await admin.end();
    await h.close();
    await plain.close();
  }
});

Deno.test("connections: the client-id metadata document is served without a token, and is what an authorization server checks", async () => {
  const h = await harness();
  try {
    const url = `${h.origin}/connections/oauth/client-metadata.json`;
    const answer = await fetch(url, { redirect: "manual" });
    const document = await answer.json();
    assert.equal(answer.status, 200, JSON.stringify(document));
    assert.match(answer.headers.get("content-type")!, /^application\/json/);
    assert.match(answer.headers.get("cache-control")!, /public, max-age=\d+/);
    assert.deepEqual(document, {
      client_id: url,
      client_name: "Supabase agent",
      redirect_uris: [`${h.origin}/connections/oauth/callback`],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    });
  } finally {
    await h.close();
  }
});

Deno.test("connections: OAuth with a client-id metadata document: a server that offers only that signs in, and refreshes with the URL client id", async () => {
  const double = startMcpServerDouble({
    oauth: { clientRegistration: ["metadata_document"], allowLoopbackClientIds: true },
  });
  const h = await harness();
  try {
    const clientId = `${h.origin}/connections/oauth/client-metadata.json`;
    const started = await h.call("POST", "", {
      url: double.url,
      slug: "cimd",
      auth: { type: "oauth" },
    });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const authorize = new URL(started.body.sign_in.authorization_url);
    assert.equal(authorize.searchParams.get("client_id"), clientId);
    const consent = await fetch(authorize, { redirect: "manual" });
    assert.equal(consent.status, 302, await consent.text());
    const page = await fetch(consent.headers.get("location")!);
    const html = await page.text();
    assert.equal(page.status, 200, html);
    const [server] = (await h.call("GET")).body.servers;
    assert.deepEqual([server.slug, server.status, server.tools.length], ["cimd", "connected", 5]);
    // The authorization server read the document at /authorize and at the code exchange.
    assert.equal(double.oauth!.metadataDocumentFetches, 2);

    const [{ secret }] = await h.sql`select secret from public.mcp_credentials
      where server_id = ${server.id}`;
    const credential = await decryptCredential(h.credentialKey, server.id, secret);
    assert.equal(credential.kind === "oauth" && credential.client.client_id, clientId);

    // A refresh (forced: the server refused version 0) goes out with the same client id.
    const token = await oauthAccessToken(
      {
        sql: h.sql,
        credentialKey: h.credentialKey,
        remote: { policy: h.policy, requestTimeoutMs: 1500 },
        oauth: { refreshMarginMs: 1_000, leaseMs: 2_000 },
      },
      h.user.id,
      server.id,
      "cimd",
      { refused: 0 },
    );
    assert.ok(token.ok, JSON.stringify(token));
    assert.equal(token.version, 1);
    assert.equal(double.oauth!.refreshes, 1);
    assert.equal(double.oauth!.metadataDocumentFetches, 3);
    assert.ok(double.oauth!.accessAllowed(token.token));
  } finally {
    await h.close();
    await double.close();
  }
});

Deno.test("connections: OAuth client identity by preference: a metadata document over registration; neither offered is oauth_unsupported", async () => {
  const both = startMcpServerDouble({
    oauth: {
      clientRegistration: ["dynamic", "metadata_document"],
      allowLoopbackClientIds: true,
    },
  });
  const neither = startMcpServerDouble({ oauth: { clientRegistration: [] } });
  const h = await harness();
  const admin = connectTestDatabase(1);
  try {
    const picked = await h.call("POST", "", {
      url: both.url,
      slug: "both",
      auth: { type: "oauth" },
    });
    assert.equal(picked.status, 202, JSON.stringify(picked.body));
    assert.equal(
      new URL(picked.body.sign_in.authorization_url).searchParams.get("client_id"),
      `${h.origin}/connections/oauth/client-metadata.json`,
    );

    const refused = await h.call("POST", "", {
      url: neither.url,
      slug: "neither",
      auth: { type: "oauth" },
    });
    assert.equal(refused.status, 502, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, "oauth_unsupported");
    assert.match(refused.body.error.message, /metadata document.*registration/);
    const [{ flows }] = await admin`select count(*)::int as flows from public.mcp_oauth_flows
      where user_id = ${h.user.id} and slug = 'neither'`;
    assert.equal(flows, 0);
  } finally {
    await admin.end();
    await h.close();
    await both.close();
    await neither.close();
  }
});
