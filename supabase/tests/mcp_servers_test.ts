/**
 * The connected-server tables under RLS, as each role uses them: the functions store a server
 * whole through `mcp_store_server` (service role); its owner reads and deletes his servers and
 * tools, nobody else's; a credential is readable by the service role alone — not by its owner,
 * not by anon — and `permissions.tool` holds `<slug>__*`.
 */
import assert from "node:assert/strict";
import { replaceTools, storeServer } from "../functions/_shared/mcp_servers/store.ts";
import { ANON_CLAIMS, as, connectTestDatabase, createUser, sqlState } from "./support/database.ts";

const SERVICE = { role: "service_role" };

function tool(name: string) {
  return {
    name: `srv__${name}`,
    original_name: name,
    title: null,
    description: `the ${name} tool`,
    input_schema: { type: "object" },
    output_schema: null,
    annotations: {},
  };
}

Deno.test("mcp servers: stored whole by the service role; the owner reads and deletes his own only", async () => {
  const sql = connectTestDatabase(2);
  try {
    const owner = await createUser(sql, "owner");
    const other = await createUser(sql, "other");
    const id = crypto.randomUUID();
    const stored = await storeServer(sql, {
      id,
      userId: owner.id,
      slug: "srv",
      displayName: "Server",
      url: "https://mcp.example.com/mcp",
      authMode: "header",
      secret: crypto.getRandomValues(new Uint8Array(64)),
      tools: [tool("alpha"), tool("beta")],
      warnings: ["gamma skipped"],
    });
    assert.deepEqual(stored, { ok: true });

    const seen = await as(sql, owner, (tx) => tx`select slug, warnings from public.mcp_servers`);
    assert.deepEqual(seen.map((r) => ({ ...r })), [{ slug: "srv", warnings: ["gamma skipped"] }]);
    const tools = await as(sql, owner, (tx) => tx`select name from public.mcp_tools order by 1`);
    assert.deepEqual(tools.map((r) => r.name), ["srv__alpha", "srv__beta"]);
    assert.equal((await as(sql, other, (tx) => tx`select 1 from public.mcp_servers`)).length, 0);
    assert.equal((await as(sql, other, (tx) => tx`select 1 from public.mcp_tools`)).length, 0);

    // The credential: the service role reads it; the owner and anon may not even try.
    const secrets = await as(
      sql,
      SERVICE,
      (tx) => tx`select server_id from public.mcp_credentials where user_id = ${owner.id}`,
    );
    assert.deepEqual(secrets.map((r) => r.server_id), [id]);
    for (const who of [owner.claims, ANON_CLAIMS]) {
      assert.equal(
        await sqlState(as(sql, who, (tx) => tx`select secret from public.mcp_credentials`)),
        "42501",
      );
    }
    // Users do not store servers themselves (the credential and grant are not theirs to write).
    assert.equal(
      await sqlState(
        as(
          sql,
          owner,
          (tx) =>
            tx`select public.mcp_store_server(gen_random_uuid(), ${owner.id}::uuid, 'mine', null,
          'https://x.example', 'none', null, '[]', '[]')`,
        ),
      ),
      "42501",
    );

    // New tools ask first; '<slug>__*' is a valid permissions.tool.
    const [grant] = await sql`select approval_mode from public.permissions
      where user_id = ${owner.id} and tool = 'srv__*'`;
    assert.equal(grant.approval_mode, "ask");
    assert.equal(
      await sqlState(
        sql`insert into public.permissions (user_id, tool) values (${owner.id}, 'Srv__*')`,
      ),
      "23514",
    );

    // The same slug again is refused as such; nothing of the second attempt stays.
    const again = await storeServer(sql, {
      id: crypto.randomUUID(),
      userId: owner.id,
      slug: "srv",
      displayName: null,
      url: "https://other.example.com/mcp",
      authMode: "none",
      secret: null,
      tools: [tool("delta")],
      warnings: [],
    });
    assert.deepEqual(again, { ok: false, reason: "slug_taken" });

    // A rediscovery replaces the tools, for the owner's server only.
    assert.equal(await replaceTools(sql, id, other.id, [tool("epsilon")], []), false);
    assert.equal(await replaceTools(sql, id, owner.id, [tool("beta"), tool("zeta")], []), true);
    const replaced = await as(sql, owner, (tx) => tx`select name from public.mcp_tools order by 1`);
    assert.deepEqual(replaced.map((r) => r.name), ["srv__beta", "srv__zeta"]);

    // Another user deletes nothing; the owner deletes it, tools and credential with it.
    assert.equal(
      (await as(sql, other, (tx) => tx`delete from public.mcp_servers returning id`)).length,
      0,
    );
    const deleted = await as(sql, owner, (tx) => tx`delete from public.mcp_servers returning id`);
    assert.deepEqual(deleted.map((r) => r.id), [id]);
    const [left] = await sql`select
      (select count(*)::int from public.mcp_tools where user_id = ${owner.id}) as tools,
      (select count(*)::int from public.mcp_credentials where user_id = ${owner.id}) as secrets`;
    assert.deepEqual({ ...left }, { tools: 0, secrets: 0 });
  } finally {
    await sql.end();
  }
});
