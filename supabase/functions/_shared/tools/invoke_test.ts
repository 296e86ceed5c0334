import assert from "node:assert/strict";
import type { Sql } from "../db/client.ts";
import type { PermissionGrant } from "../permissions.ts";
import type { UsageRecord } from "../usage.ts";
import { invokeTool, refusal, type ToolInvocation, type ToolScope } from "./invoke.ts";
import { doublerTool as doubler } from "../../../tests/support/turn_fakes.ts";

function setUp(grants: PermissionGrant[], signal = new AbortController().signal) {
  const usage: UsageRecord[] = [];
  const scope: ToolScope = {
    caller: { id: "user-1", claims: { sub: "user-1" } as never },
    // The doubler never touches the database.
    sql: {} as Sql,
    grants,
    signal,
    recordUsage: (row) => {
      usage.push(row);
      return Promise.resolve();
    },
    source: "agent",
    sessionId: "session-1",
    turnId: "turn-1",
  };
  const policyCalls: unknown[] = [];
  const invocation = (args: unknown, name = "doubler"): ToolInvocation => ({
    name,
    args: { ok: true, value: args },
    policy: (_tool, permission, input) => {
      policyCalls.push(input);
      return Promise.resolve(
        permission.mode === "ask" ? refusal("approval_denied", "no", "denied") : undefined,
      );
    },
    progress: () => Promise.resolve(),
  });
  return { usage, scope, invocation, policyCalls };
}

const auto: PermissionGrant[] = [{ tool: "doubler", approval_mode: "auto", constraints: {} }];

Deno.test("invokeTool runs a granted call and records one usage row with its source", async () => {
  const { usage, scope, invocation } = setUp(auto);
  const outcome = await invokeTool([doubler], scope, invocation({ n: 21 }));
  assert.deepEqual(outcome, { result: { ok: true, output: { doubled: 42 } }, status: "ok" });
  assert.equal(usage.length, 1);
  const [row] = usage;
  assert.equal(row.kind, "tool");
  assert.equal(row.source, "agent");
  assert.equal(row.name, "doubler");
  assert.equal(row.session_id, "session-1");
  assert.equal(row.turn_id, "turn-1");
  assert.equal(row.status, "ok");
  assert.ok((row.latency_ms ?? -1) >= 0);
});

Deno.test("invokeTool refuses what the caller sent wrong, before the policy is asked", async () => {
  const { usage, scope, invocation, policyCalls } = setUp(auto);
  const codeOf = async (call: ToolInvocation) => {
    const { result, status } = await invokeTool([doubler], scope, call);
    assert.equal(result.ok, false);
    return [!result.ok && result.error.code, !result.ok && result.error.message, status];
  };
  assert.deepEqual(await codeOf(invocation({}, "nope")), [
    "unknown_tool",
    'There is no tool named "nope"',
    "error",
  ]);
  assert.deepEqual(await codeOf({ ...invocation({}), args: { ok: false, message: "bad" } }), [
    "invalid_arguments",
    "The arguments are not valid JSON: bad",
    "error",
  ]);
  const [code, message] = await codeOf(invocation({ n: 1.5 }));
  assert.equal(code, "invalid_arguments");
  assert.match(String(message), /^n: /, "names the field");
  assert.deepEqual(policyCalls, []);
  assert.deepEqual(usage.map((row) => [row.name, row.status]), [
    ["nope", "error"],
    ["doubler", "error"],
    ["doubler", "error"],
  ]);
});

Deno.test("invokeTool: no grant or a deny grant is permission_denied; the policy decides the rest", async () => {
  const none = setUp([]);
  const noGrant = await invokeTool([doubler], none.scope, none.invocation({ n: 1 }));
  assert.equal(noGrant.status, "denied");
  assert.equal(!noGrant.result.ok && noGrant.result.error.code, "permission_denied");
  assert.match(!noGrant.result.ok ? noGrant.result.error.message : "", /"doubler" permission/);

  const deny = setUp([{ tool: "*", approval_mode: "deny", constraints: {} }]);
  const denied = await invokeTool([doubler], deny.scope, deny.invocation({ n: 1 }));
  assert.equal(!denied.result.ok && denied.result.error.code, "permission_denied");
  assert.match(!denied.result.ok ? denied.result.error.message : "", /set to deny/);
  assert.deepEqual(deny.policyCalls, [], "a deny grant never reaches the policy");

  const ask = setUp([{ tool: "doubler", approval_mode: "ask", constraints: {} }]);
  const refused = await invokeTool([doubler], ask.scope, ask.invocation({ n: 2 }));
  assert.deepEqual(refused, {
    result: { ok: false, error: { code: "approval_denied", message: "no" } },
    status: "denied",
  });
  assert.deepEqual(ask.policyCalls, [{ n: 2 }], "the policy sees the validated input");
  assert.deepEqual(ask.usage.map((row) => row.status), ["denied"]);
});

Deno.test("invokeTool: a tool error stays the tool's; a throw is internal_error; an abort is cancelled", async () => {
  const { usage, scope, invocation } = setUp(auto);
  const unlucky = await invokeTool([doubler], scope, invocation({ n: 13 }));
  assert.deepEqual(unlucky, {
    result: { ok: false, error: { code: "unlucky", message: "13" } },
    status: "error",
  });

  const originalError = console.error;
  console.error = () => {};
  try {
    const thrown = await invokeTool([doubler], scope, invocation({ n: 666 }));
    assert.deepEqual(thrown, {
      result: {
        ok: false,
        error: { code: "internal_error", message: "doubler failed unexpectedly" },
      },
      status: "error",
    });
  } finally {
    console.error = originalError;
  }

  const controller = new AbortController();
  controller.abort();
  const cancelled = setUp(auto, controller.signal);
  const outcome = await invokeTool([doubler], cancelled.scope, cancelled.invocation({ n: 1 }));
  assert.equal(outcome.status, "cancelled");
  assert.equal(!outcome.result.ok && outcome.result.error.code, "cancelled");
  assert.deepEqual(usage.map((row) => row.status), ["error", "error"]);
  assert.deepEqual(cancelled.usage.map((row) => row.status), ["cancelled"]);
});

Deno.test("invokeTool: a usage row that cannot be written does not lose the result", async () => {
  const { scope, invocation } = setUp(auto);
  const originalError = console.error;
  const logged: unknown[] = [];
  console.error = (...args: unknown[]) => logged.push(args);
  try {
    const outcome = await invokeTool([doubler], {
      ...scope,
      recordUsage: () => Promise.reject(new Error("database down")),
    }, invocation({ n: 2 }));
    assert.deepEqual(outcome.result, { ok: true, output: { doubled: 4 } });
    assert.equal(logged.length, 1);
  } finally {
    console.error = originalError;
  }
});

Deno.test("invokeTool waits for the usage row's commit, unless the caller takes the write (deferUsage)", async () => {
  const { scope, invocation } = setUp(auto);
  let commit!: () => void;
  const committing = () => new Promise<void>((resolve) => commit = resolve);
  const settledFirst = (promise: Promise<unknown>) =>
    Promise.race([
      promise.then(() => "call"),
      new Promise((r) => setTimeout(() => r("timer"), 50)),
    ]);

  // Waited for: the call is not over while its row is uncommitted.
  const waiting = invokeTool(
    [doubler],
    { ...scope, recordUsage: committing },
    invocation({ n: 1 }),
  );
  assert.equal(await settledFirst(waiting), "timer");
  commit();
  await waiting;

  // Taken: the call is over at once, and the write is the caller's to keep until it commits.
  const taken: Promise<void>[] = [];
  const deferred = invokeTool([doubler], {
    ...scope,
    recordUsage: committing,
    deferUsage: (write) => taken.push(write),
  }, invocation({ n: 1 }));
  assert.equal(await settledFirst(deferred), "call");
  assert.equal(taken.length, 1);
  assert.equal(await settledFirst(taken[0]), "timer");
  commit();
  await taken[0];
});
