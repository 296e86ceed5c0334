/**
 * `execute_workflow`: runs an n8n workflow (or anything speaking n8n's webhook contract) by
 * POSTing the payload to `<base>/webhook/<workflow_id>` and returning the webhook's JSON.
 *
 * Which workflows a user may run is part of his grant: `constraints.workflow_ids` on his
 * permissions row. No list means none: a grant of the tool alone must not open every workflow
 * the n8n instance has.
 *
 * While waiting, the tool reports progress once per interval (elapsed seconds), so clients
 * with a request timeout that resets on progress keep waiting, and people see it is alive.
 */
import { z } from "zod";
import type { Env } from "../env.ts";
import type { ProgressReporter, ToolDefinition, ToolResult } from "./types.ts";
import { logFailure } from "../log.ts";

export interface WorkflowConfig {
  /** `N8N_BASE_URL`, e.g. `https://n8n.example.com`; the tool fails cleanly without it. */
  baseUrl?: string;
  /** `N8N_WEBHOOK_AUTH_HEADER` + `N8N_WEBHOOK_AUTH_VALUE`: n8n's "Header Auth" credential. */
  authHeader?: { name: string; value: string };
  /** `N8N_TIMEOUT_MS`; defaults to 30 s. */
  timeoutMs?: number;
  /** How often progress is reported while waiting; defaults to 1 s. */
  progressIntervalMs?: number;
  /** Largest webhook answer accepted; defaults to 1 MiB. */
  maxResponseBytes?: number;
  fetch?: typeof fetch;
}

export const DEFAULT_WORKFLOW_TIMEOUT_MS = 30_000;
const DEFAULT_PROGRESS_INTERVAL_MS = 1_000;
const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

/** The workflow settings from the function's secrets. */
export function workflowConfigFromEnv(env: Env = Deno.env): WorkflowConfig {
  const config: WorkflowConfig = {};
  const baseUrl = env.get("N8N_BASE_URL")?.trim();
  if (baseUrl) config.baseUrl = baseUrl;
  const headerName = env.get("N8N_WEBHOOK_AUTH_HEADER")?.trim();
  const headerValue = env.get("N8N_WEBHOOK_AUTH_VALUE");
  if (headerName && headerValue) config.authHeader = { name: headerName, value: headerValue };
  const timeout = env.get("N8N_TIMEOUT_MS")?.trim();
  if (timeout) {
    const ms = Number(timeout);
    if (!Number.isInteger(ms) || ms <= 0) {
      throw new Error(`N8N_TIMEOUT_MS must be a positive integer (milliseconds), got "${timeout}"`);
    }
    config.timeoutMs = ms;
  }
  return config;
}

const WORKFLOW_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const input = z.object({
  workflow_id: z.string().regex(WORKFLOW_ID).describe(
    "The workflow's webhook path, one of the workflow ids you are allowed to run.",
  ),
  payload: z.record(z.string(), z.unknown()).default({}).describe(
    "The JSON object sent to the workflow's webhook as its body.",
  ),
});

const output = z.object({
  workflow_id: z.string(),
  status: z.number().int().describe("The webhook's HTTP status."),
  result: z.unknown().describe("The webhook's JSON answer."),
  elapsed_ms: z.number().int(),
});

type Output = z.output<typeof output>;

/** The ids in a grant's `constraints.workflow_ids`; anything malformed allows nothing. */
export function allowedWorkflowIds(constraints: { [key: string]: unknown }): string[] {
  const ids = constraints.workflow_ids;
  if (!Array.isArray(ids)) return [];
  return ids.filter((id): id is string => typeof id === "string");
}

export function createExecuteWorkflowTool(
  config: WorkflowConfig,
): ToolDefinition<typeof input, typeof output> {
  const timeoutMs = config.timeoutMs ?? DEFAULT_WORKFLOW_TIMEOUT_MS;
  const intervalMs = config.progressIntervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS;
  const maxBytes = config.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  const doFetch = config.fetch ?? fetch;

  return {
    name: "execute_workflow",
    title: "Run a workflow",
    description: "Runs one of your allowed n8n workflows through its webhook with a JSON " +
      `payload and returns the workflow's JSON answer (times out after ${
        Math.round(timeoutMs / 1000)
      } s; reports progress while it runs).`,
    input,
    output,
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: false,
      openWorldHint: true,
    },
    permission: "execute_workflow",
    async run({ workflow_id, payload }, { permission, progress, signal }) {
      const allowed = allowedWorkflowIds(permission.constraints);
      if (!allowed.includes(workflow_id)) {
        return failure(
          "workflow_not_allowed",
          allowed.length === 0
            ? `You may not run any workflow: your execute_workflow permission lists no workflow_ids`
            : `You may not run workflow "${workflow_id}"; allowed: ${allowed.join(", ")}`,
        );
      }
      if (!config.baseUrl) {
        return failure("workflow_not_configured", "No n8n instance is configured (N8N_BASE_URL)");
      }
      const url = new URL(`webhook/${encodeURIComponent(workflow_id)}`, withSlash(config.baseUrl));
      const headers = new Headers({
        "Content-Type": "application/json",
        Accept: "application/json",
      });
      if (config.authHeader) headers.set(config.authHeader.name, config.authHeader.value);

      const started = performance.now();
      const timeout = AbortSignal.timeout(timeoutMs);
      const abort = AbortSignal.any([signal, timeout]);
      const ticker = startProgress(progress, workflow_id, started, intervalMs, abort);
      try {
        const response = await doFetch(url, {
          method: "POST",
          headers,
          body: JSON.stringify(payload),
          signal: abort,
        });
        const body = await readLimited(response, maxBytes);
        const elapsed = Math.round(performance.now() - started);
        return interpret(workflow_id, response.status, body, maxBytes, elapsed);
      } catch (error) {
        if (signal.aborted) return failure("cancelled", "The call was cancelled");
        if (timeout.aborted) {
          return failure(
            "workflow_timeout",
            `Workflow "${workflow_id}" did not answer within ${timeoutMs} ms`,
          );
        }
        if (error instanceof TypeError) {
          return failure(
            "workflow_unreachable",
            `Workflow "${workflow_id}" could not be reached: ${error.message}`,
          );
        }
        throw error;
      } finally {
        ticker.stop();
      }
    },
  };
}

function interpret(
  workflowId: string,
  status: number,
  body: string | null,
  maxBytes: number,
  elapsedMs: number,
): ToolResult<Output> {
  if (body === null) {
    return failure(
      "workflow_response_too_large",
      `Workflow "${workflowId}" answered with more than ${maxBytes} bytes`,
    );
  }
  if (status < 200 || status > 299) {
    return failure(
      "workflow_http_error",
      `Workflow "${workflowId}" answered HTTP ${status}: ${body.slice(0, 500)}`,
    );
  }
  let result: unknown;
  try {
    result = JSON.parse(body);
  } catch {
    return failure(
      "workflow_invalid_response",
      `Workflow "${workflowId}" answered with something that is not JSON: ${body.slice(0, 200)}`,
    );
  }
  return { ok: true, output: { workflow_id: workflowId, status, result, elapsed_ms: elapsedMs } };
}

/**
 * The body as text, or null when it is larger than `maxBytes`. The fetch's abort signal also
 * aborts this read, so a timeout or a cancel stops a slow body too.
 */
async function readLimited(response: Response, maxBytes: number): Promise<string | null> {
  if (!response.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body.getReader();
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

/** Reports elapsed seconds every interval until stopped or aborted. */
function startProgress(
  progress: ProgressReporter,
  workflowId: string,
  started: number,
  intervalMs: number,
  signal: AbortSignal,
): { stop(): void } {
  const timer = setInterval(() => {
    if (signal.aborted) return;
    // Milliseconds of precision keep successive reports strictly increasing, as MCP asks.
    const elapsedS = Math.round(performance.now() - started) / 1000;
    // A lost progress report is no reason to fail the workflow: it is only a heartbeat.
    progress(
      elapsedS,
      undefined,
      `Waiting for workflow "${workflowId}": ${elapsedS.toFixed(1)} s`,
      { stage: "waiting_for_workflow" },
    )
      .catch((error) => logFailure("workflow_progress", error, {}, "warn"));
  }, intervalMs);
  return { stop: () => clearInterval(timer) };
}

function withSlash(base: string): string {
  return base.endsWith("/") ? base : `${base}/`;
}

function failure(
  code: string,
  message: string,
): { ok: false; error: { code: string; message: string } } {
  return { ok: false, error: { code, message } };
}
