/** execute_workflow called directly (no MCP): configuration, grants and webhook failures. */
import assert from "node:assert/strict";
import {
  startWebhookDouble,
  type WebhookHandler,
} from "../../../../scripts/standin/webhook_double.ts";
import type { ResolvedPermission } from "../permissions.ts";
import {
  allowedWorkflowIds,
  createExecuteWorkflowTool,
  DEFAULT_WORKFLOW_TIMEOUT_MS,
  type WorkflowConfig,
  workflowConfigFromEnv,
} from "./execute_workflow.ts";
import type { ToolContext } from "./types.ts";

function env(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

function context(workflowIds: unknown, overrides: Partial<ToolContext> = {}): ToolContext {
  const permission: ResolvedPermission = {
    tool: "execute_workflow",
    grantedBy: "execute_workflow",
    mode: "auto",
    constraints: { workflow_ids: workflowIds as string[] },
  };
  return {
    caller: { id: crypto.randomUUID(), claims: { role: "authenticated" } },
    db: () => Promise.reject(new Error("execute_workflow does not use the database")),
    progress: () => Promise.resolve(),
    signal: new AbortController().signal,
    permission,
    ...overrides,
  };
}

async function withWebhook(
  handler: WebhookHandler,
  config: Partial<WorkflowConfig>,
  test: (tool: ReturnType<typeof createExecuteWorkflowTool>) => Promise<void>,
) {
  const double = startWebhookDouble(handler);
  try {
    await test(createExecuteWorkflowTool({ baseUrl: double.url, ...config }));
  } finally {
    await double.close();
  }
}

Deno.test("workflowConfigFromEnv reads the base URL, auth header and timeout", () => {
  assert.deepEqual(workflowConfigFromEnv(env({})), {});
  assert.deepEqual(
    workflowConfigFromEnv(env({
      N8N_BASE_URL: " https://n8n.example.com ",
      N8N_WEBHOOK_AUTH_HEADER: "X-Key",
      N8N_WEBHOOK_AUTH_VALUE: "v",
      N8N_TIMEOUT_MS: "5000",
    })),
    {
      baseUrl: "https://n8n.example.com",
      authHeader: { name: "X-Key", value: "v" },
      timeoutMs: 5000,
    },
  );
  // A header name without a value sends nothing rather than an empty credential.
  assert.deepEqual(workflowConfigFromEnv(env({ N8N_WEBHOOK_AUTH_HEADER: "X-Key" })), {});
  assert.throws(() => workflowConfigFromEnv(env({ N8N_TIMEOUT_MS: "soon" })), /N8N_TIMEOUT_MS/);
  assert.equal(DEFAULT_WORKFLOW_TIMEOUT_MS, 30_000);
});

Deno.test("allowedWorkflowIds takes only a list of strings", () => {
  assert.deepEqual(allowedWorkflowIds({ workflow_ids: ["a", 1, "b", null] }), ["a", "b"]);
  assert.deepEqual(allowedWorkflowIds({ workflow_ids: "a" }), []);
  assert.deepEqual(allowedWorkflowIds({}), []);
});

Deno.test("without N8N_BASE_URL the tool says so", async () => {
  const tool = createExecuteWorkflowTool({});
  const result = await tool.run({ workflow_id: "a", payload: {} }, context(["a"]));
  assert.deepEqual(result.ok ? null : result.error.code, "workflow_not_configured");
});

Deno.test("the webhook URL keeps the base path and encodes nothing it should not", async () => {
  const paths: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    paths.push(new URL(req.url).pathname);
    return Response.json({});
  });
  try {
    const tool = createExecuteWorkflowTool({ baseUrl: `http://127.0.0.1:${server.addr.port}/n8n` });
    const result = await tool.run(
      { workflow_id: "v2.report_x-1", payload: {} },
      context([
        "v2.report_x-1",
      ]),
    );
    assert.ok(result.ok);
    assert.deepEqual(paths, ["/n8n/webhook/v2.report_x-1"]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("an unreachable n8n is workflow_unreachable", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(),
  );
  const port = server.addr.port;
  await server.shutdown();
  const tool = createExecuteWorkflowTool({ baseUrl: `http://127.0.0.1:${port}` });
  const result = await tool.run({ workflow_id: "a", payload: {} }, context(["a"]));
  assert.equal(result.ok ? null : result.error.code, "workflow_unreachable");
});

Deno.test("an answer over the size limit is refused", async () => {
  await withWebhook(
    () => Response.json({ blob: "x".repeat(2000) }),
    { maxResponseBytes: 1000 },
    async (tool) => {
      const result = await tool.run({ workflow_id: "big", payload: {} }, context(["big"]));
      assert.equal(result.ok ? null : result.error.code, "workflow_response_too_large");
    },
  );
});

Deno.test("a non-object JSON answer is returned as it is", async () => {
  await withWebhook(() => Response.json([1, "two"]), {}, async (tool) => {
    const result = await tool.run({ workflow_id: "list", payload: { a: 1 } }, context(["list"]));
    assert.ok(result.ok);
    assert.deepEqual(result.output.result, [1, "two"]);
    assert.equal(result.output.status, 200);
  });
});

Deno.test("the caller's signal cancels the request: code cancelled, webhook aborted", async () => {
  const controller = new AbortController();
  let aborted = false;
  await withWebhook(
    (call) =>
      new Promise((resolve) => {
        call.signal.addEventListener("abort", () => {
          aborted = true;
          resolve(new Response(null, { status: 499 }));
        });
        controller.abort();
      }),
    {},
    async (tool) => {
      const result = await tool.run(
        { workflow_id: "slow", payload: {} },
        context(["slow"], { signal: controller.signal }),
      );
      assert.equal(result.ok ? null : result.error.code, "cancelled");
    },
  );
  assert.ok(aborted);
});
