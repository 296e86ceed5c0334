/**
 * Fakes for the unit tests of the turn loop and its tool calls: a scripted LLM upstream (the
 * OpenAI streaming wire format, answered by a `fetch` the scope hands the LLM client), a tool
 * that needs no database, and a scope that records usage rows in memory.
 */
import { z } from "zod";
import type { Sql } from "../../functions/_shared/db/client.ts";
import type { PermissionGrant } from "../../functions/_shared/permissions.ts";
import { READ_ONLY_ANNOTATIONS, type ToolDefinition } from "../../functions/_shared/tools/types.ts";
import type { UsageRecord } from "../../functions/_shared/usage.ts";
import { agentConfig } from "../../functions/_shared/agent/config.ts";
import type { TurnScope } from "../../functions/_shared/agent/turn_scope.ts";

/** One streamed chunk of an OpenAI-compatible chat completion. */
type Chunk = Record<string, unknown>;

export function textAnswer(...deltas: string[]): Chunk[] {
  return [
    ...deltas.map((content) => ({
      choices: [{ index: 0, delta: { content } }],
    })),
    {
      choices: [{ index: 0, delta: {}, finish_reason: "stop" }],
      usage: {
        prompt_tokens: 10,
        completion_tokens: deltas.length,
        cost: 0.001,
      },
    },
  ];
}

/** The model calls `name` with `args`, its arguments JSON split over two chunks. */
export function toolCallAnswer(name: string, args: unknown): Chunk[] {
  const text = JSON.stringify(args);
  const half = Math.floor(text.length / 2);
  const fragment = (extra: Record<string, unknown>, part: string) => ({
    choices: [{
      index: 0,
      delta: {
        tool_calls: [{
          index: 0,
          ...extra,
          function: { ...extra.function as object, arguments: part },
        }],
      },
    }],
  });
  return [
    fragment(
      { id: "model-call-1", type: "function", function: { name } },
      text.slice(0, half),
    ),
    fragment({}, text.slice(half)),
    {
      choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }],
      usage: { prompt_tokens: 10, completion_tokens: 5, cost: 0.001 },
    },
  ];
}

/** A `fetch` that answers each LLM request with the next scripted stream, and keeps the bodies. */
export function scriptedLlm(...answers: Chunk[][]) {
  const requests: Record<string, unknown>[] = [];
  const fetch = async (
    _input: RequestInfo | URL,
    init?: RequestInit,
  ): Promise<Response> => {
    requests.push(JSON.parse(String(init?.body)));
    const answer = answers.shift();
    if (!answer) {
      return new Response("no more answers scripted", { status: 500 });
    }
    const body = answer.map((chunk) => `data: ${JSON.stringify(chunk)}\n\n`).join("") +
      "data: [DONE]\n\n";
    await Promise.resolve();
    return new Response(body, {
      headers: { "Content-Type": "text/event-stream" },
    });
  };
  return { fetch: fetch as typeof globalThis.fetch, requests };
}

const DoublerInput = z.object({ n: z.number().int() });
const DoublerOutput = z.object({ doubled: z.number() });

/**
 * Doubles `n`, reporting progress once; answers 13 with a tool error and throws on 666 (a bug,
 * as far as its callers know). Touches no database.
 */
export const doublerTool: ToolDefinition<
  typeof DoublerInput,
  typeof DoublerOutput
> = {
  name: "doubler",
  title: "Doubler",
  description: "Doubles n",
  input: DoublerInput,
  output: DoublerOutput,
  annotations: READ_ONLY_ANNOTATIONS,
  permission: "doubler",
  async run({ n }, { progress }) {
    if (n === 666) throw new Error("the details stay in the log");
    if (n === 13) {
      return { ok: false, error: { code: "unlucky", message: "13" } };
    }
    await progress(1, 1, "doubled");
    return { ok: true, output: { doubled: n * 2 } };
  },
};

/** A turn scope over fakes; `sql` is never reached by an `auto` grant of the doubler. */
export function fakeTurnScope(
  llmFetch: typeof fetch,
  options: { grants?: PermissionGrant[]; maxSteps?: number } = {},
) {
  const usage: UsageRecord[] = [];
  const scope: TurnScope = {
    caller: { id: "user-1", claims: { sub: "user-1" } as never },
    grants: options.grants ??
      [{ tool: "doubler", approval_mode: "auto", constraints: {} }],
    llmTools: [{
      type: "function",
      function: {
        name: "doubler",
        description: "Doubles n",
        parameters: { type: "object" },
      },
    }],
    messages: [{ role: "user", content: "double 21" }],
    sql: {} as Sql,
    recordUsage: (row) => {
      usage.push(row);
      return Promise.resolve();
    },
    // Every step admitted: the limits are the database's, tested in supabase/tests.
    reserveStep: () => Promise.resolve({ allowed: true, reservedTokens: 0, reservedCostUsd: 0 }),
    meterToolCall: () => Promise.resolve({ allowed: true }),
    llm: {
      baseUrl: "http://llm.invalid/v1",
      model: "m",
      fallbackModels: [],
      fetch: llmFetch,
    },
    config: agentConfig({ maxSteps: options.maxSteps ?? 4 }),
    registry: [doublerTool],
    // Nothing to store: the flush is the database's, tested with the runtime.
    flushTurn: () => Promise.resolve(),
  };
  return { scope, usage };
}
