import assert from "node:assert/strict";
import { as, connectFunctionDatabase, createUser, sqlState } from "../../tests/support/database.ts";
import {
  loadGrants,
  permissionFor,
  type PermissionGrant,
  resolvePermission,
} from "./permissions.ts";

const grant = (
  tool: string,
  approval_mode: PermissionGrant["approval_mode"],
  constraints: PermissionGrant["constraints"] = {},
): PermissionGrant => ({ tool, approval_mode, constraints });

Deno.test("the tool's own row wins over '*', whatever the order and the modes", () => {
  const grants = [grant("*", "auto", { from: "wildcard" }), grant("calculator", "deny")];
  assert.deepEqual(resolvePermission(grants, "calculator"), {
    tool: "calculator",
    grantedBy: "calculator",
    mode: "deny",
    constraints: {},
  });
  const reversed = [grant("calculator", "ask"), grant("*", "deny")];
  assert.equal(resolvePermission(reversed, "calculator")?.mode, "ask");
});

Deno.test("'*' covers tools without a row of their own, with its constraints", () => {
  const grants = [grant("*", "ask", { workflow_ids: ["a"] }), grant("calculator", "auto")];
  assert.deepEqual(resolvePermission(grants, "execute_workflow"), {
    tool: "execute_workflow",
    grantedBy: "*",
    mode: "ask",
    constraints: { workflow_ids: ["a"] },
  });
});

Deno.test("a connected server's tool: its own row, then its server's '<slug>__*', then '*'", () => {
  const grants = [grant("*", "auto"), grant("gh__*", "ask"), grant("gh__read_file", "deny")];
  assert.equal(resolvePermission(grants, "gh__read_file")?.grantedBy, "gh__read_file");
  assert.equal(resolvePermission(grants, "gh__read_file")?.mode, "deny");
  assert.deepEqual(resolvePermission(grants, "gh__create_issue"), {
    tool: "gh__create_issue",
    grantedBy: "gh__*",
    mode: "ask",
    constraints: {},
  });
  assert.equal(resolvePermission(grants, "other__x")?.grantedBy, "*");
  // '<slug>__*' covers only its own server's tools, never a built-in one.
  assert.equal(resolvePermission([grant("calculator__*", "auto")], "calculator"), null);
});

Deno.test("no matching row means no permission", () => {
  assert.equal(resolvePermission([], "calculator"), null);
  assert.equal(resolvePermission([grant("get_usage", "auto")], "calculator"), null);
});

Deno.test("constraints that are not an object resolve to none", () => {
  assert.deepEqual(resolvePermission([grant("x", "auto", [1, 2])], "x")?.constraints, {});
});

Deno.test("grants are read as the user: his own rows only, defaults included", async () => {
  const sql = connectFunctionDatabase(2);
  try {
    const alice = await createUser(sql, "perm-alice");
    const bob = await createUser(sql, "perm-bob");
    await sql`
      insert into public.permissions (user_id, tool, approval_mode, constraints)
      values (${bob.id}, 'execute_workflow', 'auto', '{"workflow_ids": ["bobs"]}'),
             (${alice.id}, '*', 'ask', '{}')`;

    const aliceGrants = await loadGrants(sql, alice.claims);
    assert.deepEqual(aliceGrants.map((g) => g.tool).sort(), [
      "*",
      "calculator",
      "get_usage",
      "query_table",
      "search_history",
    ]);
    assert.equal((await permissionFor(sql, alice.claims, "execute_workflow"))?.mode, "ask");
    assert.equal((await permissionFor(sql, alice.claims, "calculator"))?.mode, "auto");
    assert.deepEqual(
      (await permissionFor(sql, bob.claims, "execute_workflow"))?.constraints,
      { workflow_ids: ["bobs"] },
    );

    // RLS, not the query's own filter, is what keeps Bob's rows from Alice.
    const seenByAlice = await as(sql, alice, (tx) => tx`select user_id from public.permissions`);
    assert.ok(seenByAlice.every((row) => row.user_id === alice.id));
    // Signed-out callers have no grants to read at all.
    assert.equal(await sqlState(loadGrants(sql, { role: "anon" })), "42501");
    // loadGrants (through public.my_permissions) reads the very rows RLS lets the user see.
    const byTool = (grants: PermissionGrant[]) =>
      grants.map((g) => ({ ...g })).sort((a, b) => a.tool.localeCompare(b.tool));
    const ownRows = (user: typeof alice) =>
      as(
        sql,
        user,
        (tx) =>
          tx<PermissionGrant[]>`select tool, approval_mode, constraints from public.permissions`,
      );
    assert.deepEqual(byTool(aliceGrants), byTool(await ownRows(alice)));
    assert.deepEqual(byTool(await loadGrants(sql, bob.claims)), byTool(await ownRows(bob)));
    // service_role (RLS bypassed) has no grants of its own to ask for.
    assert.equal(await sqlState(loadGrants(sql, { role: "service_role" })), "42501");
  } finally {
    await sql.end();
  }
});
