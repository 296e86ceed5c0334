/**
 * An OpenAI-compatible chat-completions server that plays scripted turns over real HTTP SSE.
 * It stands in for OpenRouter in tests and serves the offline demo model of the local stack.
 *
 * The script is chosen by a directive in the last user message, `[[fixture:NAME key=value …]]`
 * (see SCRIPTS below); without one the offline demo answers. Scripts speak OpenRouter's wire
 * format: `data:` chunks with `model` and `id`, usage in the last chunk before `[DONE]`, an
 * `X-Generation-Id` header, `{error:{code,message,metadata}}` bodies for HTTP errors.
 *
 * Run directly: `deno run -A scripts/standin/llm_fixture.ts [--port 54330] [--hostname 127.0.0.1]`.
 *
 * Arguments every script understands:
 *   fail_models=a,b fail_status=N   answer HTTP N (default 503) when the request's model is listed
 *   prompt_tokens= completion_tokens= cost=   override the reported usage
 *   eol=lf|crlf|cr   line ends of the SSE stream
 *
 * A request whose last message is a partial assistant message (an "assistant prefill") is
 * continued, as models that support prefill do: the script plays as if the partial text had
 * been streamed already, from where it ends.
 */
import { abortableSleep } from "../../supabase/functions/_shared/abortable_sleep.ts";

export interface RecordedRequest {
  method: string;
  path: string;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  /** The parsed JSON body (undefined for GET). */
  body: unknown;
}

export interface LlmFixtureOptions {
  port?: number;
  hostname?: string;
  /** Pause between the words of the offline demo's answers, so they visibly stream. */
  demoDelayMs?: number;
  /**
   * Watches streamed answers (benchmarks note when each chunk leaves): called with the
   * request's messages, it may return a function that is given the text of every SSE chunk
   * the moment it is written.
   */
  watchStream?: (messages: readonly { content: string }[]) => ((chunk: string) => void) | undefined;
}

export interface LlmFixture {
  /** Base URL ending in `/v1`, ready for `LLM_BASE_URL`. */
  url: string;
  requests: RecordedRequest[];
  /** How many streamed responses the client cancelled before they were complete. */
  abortedRequests(): number;
  /** Resolves once `count` aborts were seen, or after `timeoutMs`; gives the count then. */
  waitForAbortedRequests(count: number, timeoutMs?: number): Promise<number>;
  close(): Promise<void>;
}

export const OFFLINE_DEMO_MODEL = "offline-demo";
export const DEFAULT_FIXTURE_PORT = 54330;

type Args = Record<string, string>;
type Json = Record<string, unknown>;

interface ChatBody {
  model?: unknown;
  messages?: unknown;
  tools?: unknown;
  stream?: unknown;
}

interface Message {
  role: string;
  content: string;
  tool_call_id?: string;
  tool_calls?: { id?: string; function?: { name?: string; arguments?: string } }[];
}

type Step =
  | { kind: "chunk"; chunk: Json }
  | { kind: "raw"; text: string }
  | { kind: "pause"; ms: number }
  | { kind: "disconnect" };

type Reply =
  | { kind: "http_error"; status: number; headers: Record<string, string>; body: Json }
  | { kind: "stream"; steps: Step[] };

interface ScriptContext {
  args: Args;
  messages: Message[];
  tools: string[];
  model: string;
  chunks: ChunkFactory;
  counters: Map<string, number>;
  demoDelayMs: number;
}

const PRICE_PER_PROMPT_TOKEN = 0.15e-6;
const PRICE_PER_COMPLETION_TOKEN = 0.6e-6;

export function startLlmFixture(options: LlmFixtureOptions = {}): Promise<LlmFixture> {
  const requests: RecordedRequest[] = [];
  const counters = new Map<string, number>();
  const closing = new AbortController();
  let aborted = 0;
  const abortWaiters = new Set<() => void>();
  const recordAbort = () => {
    aborted++;
    for (const wake of abortWaiters) wake();
  };
  let generation = 0;
  const demoDelayMs = options.demoDelayMs ?? 20;

  const handle = async (request: Request): Promise<Response> => {
    const path = new URL(request.url).pathname.replace(/\/+$/, "");
    const headers = Object.fromEntries(request.headers);
    if (request.method === "GET" && path === "/v1/models") {
      requests.push({ method: "GET", path, headers, body: undefined });
      return Response.json({ object: "list", data: [modelEntry(OFFLINE_DEMO_MODEL)] });
    }
    if (request.method !== "POST" || path !== "/v1/chat/completions") {
      return errorResponse(404, `no route for ${request.method} ${path}`);
    }
    let body: ChatBody;
    try {
      body = await request.json();
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      return errorResponse(400, "the request body is not JSON");
    }
    requests.push({ method: "POST", path, headers, body });
    if (typeof body !== "object" || body === null || !Array.isArray(body.messages)) {
      return errorResponse(400, "messages must be an array");
    }

    const all = body.messages.map(readMessage);
    const last = all.at(-1);
    const prefill = last?.role === "assistant" && !last.tool_calls && last.content !== ""
      ? last.content
      : undefined;
    const messages = prefill === undefined ? all : all.slice(0, -1);
    const directive = findDirective(messages);
    const script = directive ? SCRIPTS[directive.name] : offlineDemo;
    if (!script) return errorResponse(400, `unknown fixture script "${directive?.name}"`);
    const args = directive?.args ?? {};
    const requestedModel = typeof body.model === "string" ? body.model : "fixture-model";
    const model = directive ? requestedModel : OFFLINE_DEMO_MODEL;
    const generationId = `gen-fixture-${++generation}-${crypto.randomUUID().slice(0, 8)}`;
    const context: ScriptContext = {
      args,
      messages,
      tools: toolNames(body.tools),
      model,
      chunks: new ChunkFactory(generationId, model),
      counters,
      demoDelayMs,
    };
    const failModels = (args.fail_models ?? "").split(",").filter((name) => name !== "");
    const played = failModels.includes(requestedModel)
      ? httpError(Number(args.fail_status ?? 503), `model ${requestedModel} is failing`, args)
      : script(context);
    const reply = prefill === undefined ? played : continuedAfter(played, prefill);
    const baseHeaders = { "X-Generation-Id": generationId };

    if (reply.kind === "http_error") {
      return Response.json(reply.body, {
        status: reply.status,
        headers: { ...baseHeaders, ...reply.headers },
      });
    }
    if (body.stream !== true) {
      return nonStreamingResponse(reply.steps, context, baseHeaders);
    }
    return new Response(
      playSteps(
        reply.steps,
        lineEnd(args.eol),
        closing.signal,
        recordAbort,
        options.watchStream?.(messages),
      ),
      {
        headers: {
          ...baseHeaders,
          "Content-Type": "text/event-stream",
          "Cache-Control": "no-cache",
        },
      },
    );
  };

  // Deno.serve binds synchronously, so the address is known right away.
  const server = Deno.serve({
    port: options.port ?? DEFAULT_FIXTURE_PORT,
    hostname: options.hostname ?? "127.0.0.1",
    onListen: () => {},
  }, handle);
  const address = server.addr;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;

  return Promise.resolve({
    url: `http://${host}:${address.port}/v1`,
    requests,
    abortedRequests: () => aborted,
    waitForAbortedRequests(count, timeoutMs = 5_000) {
      if (aborted >= count) return Promise.resolve(aborted);
      return new Promise((resolve) => {
        const finish = () => {
          clearTimeout(timer);
          abortWaiters.delete(wake);
          resolve(aborted);
        };
        const wake = () => {
          if (aborted >= count) finish();
        };
        const timer = setTimeout(finish, timeoutMs);
        abortWaiters.add(wake);
      });
    },
    async close() {
      closing.abort();
      await server.shutdown();
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Scripts

type Script = (context: ScriptContext) => Reply;

const DEFAULT_TEXT = "Hello from the LLM fixture: grüße 👋, and goodbye.";

const SCRIPTS: Record<string, Script> = {
  text(context) {
    const text = decodeArg(context.args.text) ?? DEFAULT_TEXT;
    return stream(context, textSteps(context, splitWords(text), 0), "stop");
  },

  tool_call(context) {
    const toolResult = lastToolResult(context.messages);
    if (toolResult) {
      return stream(context, textSteps(context, splitWords(`The tool returned ${toolResult}.`), 0));
    }
    const name = context.args.tool ?? "calculator";
    const args = decodeArg(context.args.args) ?? '{"expression":"(1+2)*3"}';
    return stream(context, toolCallSteps(context, 0, newCallId(), name, args), "tool_calls");
  },

  parallel_tools(context) {
    const first = toolCallSteps(
      context,
      0,
      newCallId(),
      context.args.tool ?? "calculator",
      decodeArg(context.args.args) ?? '{"expression":"2+2"}',
    );
    // Index 0 again on purpose: some backends number parallel calls this way.
    const second = toolCallSteps(
      context,
      0,
      newCallId(),
      context.args.tool2 ?? "calculator",
      decodeArg(context.args.args2) ?? '{"expression":"3*3"}',
    );
    return stream(context, [...first, ...second], "tool_calls");
  },

  comments(context) {
    const steps: Step[] = [{ kind: "raw", text: ": OPENROUTER PROCESSING\n\n" }];
    for (const step of textSteps(context, splitWords(DEFAULT_TEXT), 0)) {
      steps.push(step, { kind: "raw", text: ": OPENROUTER PROCESSING\n\n" }, {
        kind: "raw",
        text: "\n",
      });
    }
    return stream(context, steps);
  },

  error_before(context) {
    const status = Number(context.args.status ?? 400);
    return httpError(status, decodeArg(context.args.message), context.args);
  },

  rate_limit(context) {
    const key = context.args.key ?? "default";
    const times = Number(context.args.times ?? 1);
    const seen = context.counters.get(key) ?? 0;
    if (seen < times) {
      context.counters.set(key, seen + 1);
      return httpError(429, "rate limited by the fixture", {
        retry_after: "1",
        ...context.args,
      });
    }
    return SCRIPTS.text(context);
  },

  error_mid(context) {
    const steps = textSteps(context, splitWords("Partial answer before the failure"), 0);
    steps.push({
      kind: "chunk",
      chunk: {
        ...context.chunks.base(),
        error: { code: 502, message: "the provider failed mid-stream" },
        choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }],
      },
    }, { kind: "raw", text: "data: [DONE]\n\n" });
    return { kind: "stream", steps };
  },

  slow(context) {
    const count = Number(context.args.count ?? 20);
    const delay = Number(context.args.delay ?? 100);
    const words = Array.from({ length: count }, (_, i) => `word${i} `);
    return stream(context, textSteps(context, words, delay));
  },

  disconnect(context) {
    const steps = textSteps(context, splitWords("This answer is cut off"), 0);
    steps.push({ kind: "disconnect" });
    return { kind: "stream", steps };
  },

  /**
   * A turn of `steps` LLM calls: each of the first steps-1 streams `words` words ("s1w0 …",
   * `delay` ms apart) and then calls `tool` with `args`; the last streams `final` words
   * ("final0 …"). Which step is asked is read from the tool results so far, so a step asked
   * again (after a takeover) is answered the same way.
   */
  multi_step(context) {
    const steps = Number(context.args.steps ?? 4);
    const delay = Number(context.args.delay ?? 20);
    const done = context.messages.filter((message) => message.role === "tool").length;
    if (done >= steps - 1) {
      const count = Number(context.args.final ?? 20);
      const words = Array.from({ length: count }, (_, i) => `final${i} `);
      return stream(context, textSteps(context, words, delay), "stop");
    }
    const count = Number(context.args.words ?? 5);
    const words = Array.from({ length: count }, (_, i) => `s${done + 1}w${i} `);
    const name = context.args.tool ?? "calculator";
    const args = decodeArg(context.args.args) ?? '{"expression":"1+1"}';
    return stream(
      context,
      [...textSteps(context, words, delay), ...toolCallSteps(context, 0, newCallId(), name, args)],
      "tool_calls",
    );
  },

  tokens(context) {
    const count = Number(context.args.count ?? 100);
    const delay = Number(context.args.delay ?? 0);
    const words = Array.from({ length: count }, () => " tok");
    return stream(context, textSteps(context, words, delay));
  },
};

/**
 * What the local stack answers without an API key: plain text that says so, and a real tool
 * round trip for arithmetic so the agent loop can be tried offline.
 */
function offlineDemo(context: ScriptContext): Reply {
  const delay = context.demoDelayMs;
  const toolResult = lastToolResult(context.messages);
  if (toolResult !== undefined) {
    const text = `${phraseToolResult(context.messages, toolResult)} ` +
      "(This is the offline demo model: no LLM API key is set.)";
    return demoStream(context, textSteps(context, splitWords(text), delay));
  }
  const userText = lastUserText(context.messages) ?? "";
  const expression = findArithmetic(userText);
  if (expression !== undefined && context.tools.includes("calculator")) {
    const args = JSON.stringify({ expression });
    return demoStream(
      context,
      toolCallSteps(context, 0, newCallId(), "calculator", args),
      "tool_calls",
    );
  }
  const echo = userText.length > 200 ? `${userText.slice(0, 200)}…` : userText;
  const text = expression === undefined
    ? "Hello! I am the offline demo model: no LLM API key is set, so a local fixture answers " +
      'instead of a real model. Ask me something like "what is (2+3)*4?" to see a tool call. ' +
      `You said: "${echo}"`
    : "I am the offline demo model (no LLM API key is set). I would use the calculator tool " +
      `for ${expression}, but it is not available to you.`;
  return demoStream(context, textSteps(context, splitWords(text), delay));
}

function demoStream(context: ScriptContext, steps: Step[], finishReason = "stop"): Reply {
  // The demo is free: tokens are estimated, the cost is zero.
  return stream({ ...context, args: { cost: "0", ...context.args } }, steps, finishReason);
}

// ---------------------------------------------------------------------------------------------
// Building responses

class ChunkFactory {
  private readonly created = Math.floor(Date.now() / 1000);
  completionTokens = 0;

  constructor(readonly id: string, readonly model: string) {}

  base(): Json {
    return {
      id: this.id,
      object: "chat.completion.chunk",
      created: this.created,
      model: this.model,
      provider: "fixture",
    };
  }

  delta(delta: Json, finishReason: string | null = null): Json {
    return {
      ...this.base(),
      choices: [{
        index: 0,
        delta,
        finish_reason: finishReason,
        native_finish_reason: finishReason,
      }],
    };
  }
}

function textSteps(context: ScriptContext, pieces: string[], delayMs: number): Step[] {
  const steps: Step[] = [];
  pieces.forEach((piece, position) => {
    if (position > 0 && delayMs > 0) steps.push({ kind: "pause", ms: delayMs });
    const delta = position === 0 ? { role: "assistant", content: piece } : { content: piece };
    steps.push({ kind: "chunk", chunk: context.chunks.delta(delta) });
    context.chunks.completionTokens++;
  });
  return steps;
}

/** One tool call: id and name first, then the arguments JSON cut into pieces mid-string. */
function toolCallSteps(
  context: ScriptContext,
  index: number,
  id: string,
  name: string,
  args: string,
): Step[] {
  const steps: Step[] = [{
    kind: "chunk",
    chunk: context.chunks.delta({
      role: "assistant",
      content: null,
      tool_calls: [{ index, id, type: "function", function: { name, arguments: "" } }],
    }),
  }];
  const pieceLength = Math.max(1, Math.ceil(args.length / 4));
  for (let start = 0; start < args.length; start += pieceLength) {
    steps.push({
      kind: "chunk",
      chunk: context.chunks.delta({
        tool_calls: [{ index, function: { arguments: args.slice(start, start + pieceLength) } }],
      }),
    });
  }
  context.chunks.completionTokens += Math.ceil(args.length / 4) + 1;
  return steps;
}

/** Appends the finish chunk, the usage chunk and `[DONE]`. */
function stream(context: ScriptContext, steps: Step[], finishReason = "stop"): Reply {
  const promptTokens = Math.ceil(
    context.messages.reduce((sum, message) => sum + message.content.length, 0) / 4,
  );
  const completionTokens = context.chunks.completionTokens;
  const usage = {
    prompt_tokens: Number(context.args.prompt_tokens ?? promptTokens),
    completion_tokens: Number(context.args.completion_tokens ?? completionTokens),
    cost: Number(
      context.args.cost ??
        promptTokens * PRICE_PER_PROMPT_TOKEN + completionTokens * PRICE_PER_COMPLETION_TOKEN,
    ),
  };
  return {
    kind: "stream",
    steps: [
      ...steps,
      { kind: "chunk", chunk: context.chunks.delta({}, finishReason) },
      {
        kind: "chunk",
        chunk: {
          ...context.chunks.base(),
          choices: [],
          usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
        },
      },
      { kind: "raw", text: "data: [DONE]\n\n" },
    ],
  };
}

/**
 * The reply without the text `prefill` already holds: content deltas it covers are left out
 * (with the pauses before them), one it covers in part keeps its rest; the usage counts only
 * what is left. Text that parts from the prefill is played from there on.
 */
function continuedAfter(reply: Reply, prefill: string): Reply {
  if (reply.kind !== "stream") return reply;
  let covered = 0;
  let dropped = 0;
  const steps: Step[] = [];
  let pending: Step[] = [];
  for (const step of reply.steps) {
    const delta = step.kind === "chunk" ? contentDelta(step.chunk) : undefined;
    if (covered >= prefill.length || (step.kind !== "pause" && delta === undefined)) {
      steps.push(...pending, step);
      pending = [];
      continue;
    }
    if (step.kind === "pause") {
      pending.push(step);
      continue;
    }
    const piece = delta!;
    const rest = prefill.slice(covered);
    pending = [];
    if (rest.startsWith(piece)) {
      covered += piece.length;
      dropped++;
    } else if (piece.startsWith(rest)) {
      covered = prefill.length;
      steps.push(withContent(step, piece.slice(rest.length)));
    } else {
      covered = prefill.length;
      steps.push(step);
    }
  }
  return {
    kind: "stream",
    steps: steps.map((step) => {
      const usage = step.kind === "chunk" ? step.chunk.usage as Json | undefined : undefined;
      if (!usage) return step;
      const completion = Math.max(0, Number(usage.completion_tokens) - dropped);
      return withUsage(step, {
        ...usage,
        completion_tokens: completion,
        total_tokens: Number(usage.prompt_tokens) + completion,
      });
    }),
  };
}

function contentDelta(chunk: Json): string | undefined {
  const choices = chunk.choices as { delta?: { content?: unknown } }[] | undefined;
  const content = choices?.[0]?.delta?.content;
  return typeof content === "string" ? content : undefined;
}

function withContent(step: Step, content: string): Step {
  if (step.kind !== "chunk") return step;
  const [choice] = step.chunk.choices as { delta: Json }[];
  return {
    kind: "chunk",
    chunk: { ...step.chunk, choices: [{ ...choice, delta: { ...choice.delta, content } }] },
  };
}

function withUsage(step: Step, usage: Json): Step {
  return step.kind === "chunk" ? { kind: "chunk", chunk: { ...step.chunk, usage } } : step;
}

function httpError(status: number, message: string | undefined, args: Args): Reply {
  const headers: Record<string, string> = {};
  if (args.retry_after !== undefined) headers["Retry-After"] = args.retry_after;
  return {
    kind: "http_error",
    status,
    headers,
    body: {
      error: {
        code: status,
        message: message ?? `fixture error ${status}`,
        metadata: { provider_name: "fixture" },
      },
    },
  };
}

function errorResponse(status: number, message: string): Response {
  return Response.json({ error: { code: status, message } }, { status });
}

/**
 * Plays the steps as an SSE body. The server cancels the body when the client goes away, so
 * a `cancel` before the last byte counts as one aborted request. (`request.signal` is no use
 * here: Deno.serve also aborts it after every successful response.)
 */
function playSteps(
  steps: Step[],
  eol: string,
  closing: AbortSignal,
  recordAbort: () => void,
  onChunk?: (chunk: string) => void,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const stop = new AbortController();
  let position = 0;
  let finished = false;
  const stopPlaying = () => stop.abort();
  const clientLeft = () => {
    if (!finished) {
      finished = true;
      recordAbort();
    }
    stop.abort();
  };
  // Listeners go once the stream ends: a long-running demo server must not collect them.
  stop.signal.addEventListener("abort", () => {
    closing.removeEventListener("abort", stopPlaying);
  }, { once: true });
  closing.addEventListener("abort", stopPlaying, { once: true });
  const encode = (text: string) => encoder.encode(text.replaceAll("\n", eol));
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (position < steps.length) {
        const step = steps[position++];
        if (step.kind === "pause") {
          await abortableSleep(step.ms, stop.signal);
          if (!stop.signal.aborted) continue;
          if (!finished) {
            // The fixture is closing: end the stream cleanly so shutdown can finish.
            finished = true;
            controller.close();
          }
          return;
        }
        if (step.kind === "disconnect") {
          finished = true;
          stop.abort();
          // Deno.serve logs the error below; the client sees the connection drop mid-body.
          controller.error(new Error("LLM fixture: simulated disconnect (expected)"));
          return;
        }
        const text = step.kind === "raw" ? step.text : `data: ${JSON.stringify(step.chunk)}\n\n`;
        const last = position === steps.length;
        // Mark the end before writing it, so a client that stops at [DONE] is no abort.
        if (last) finished = true;
        onChunk?.(text);
        controller.enqueue(encode(text));
        if (last) {
          stop.abort();
          controller.close();
        }
        return;
      }
      finished = true;
      stop.abort();
      controller.close();
    },
    cancel() {
      clientLeft();
    },
  });
}

function nonStreamingResponse(
  steps: Step[],
  context: ScriptContext,
  headers: Record<string, string>,
): Response {
  let content = "";
  let finishReason: unknown = "stop";
  let usage: unknown;
  const calls: { id: string; type: "function"; function: { name: string; arguments: string } }[] =
    [];
  for (const step of steps) {
    if (step.kind !== "chunk") continue;
    const chunk = step.chunk;
    if (chunk.error) return Response.json({ error: chunk.error }, { status: 502, headers });
    if (chunk.usage) usage = chunk.usage;
    const choice = (chunk.choices as Json[] | undefined)?.[0];
    const delta = choice?.delta as Json | undefined;
    if (typeof delta?.content === "string") content += delta.content;
    for (const fragment of (delta?.tool_calls as Json[] | undefined) ?? []) {
      const fn = fragment.function as { name?: string; arguments?: string };
      if (typeof fragment.id === "string") {
        calls.push({ id: fragment.id, type: "function", function: { name: "", arguments: "" } });
      }
      const call = calls[calls.length - 1];
      if (fn.name) call.function.name = fn.name;
      call.function.arguments += fn.arguments ?? "";
    }
    if (choice?.finish_reason) finishReason = choice.finish_reason;
  }
  return Response.json({
    id: context.chunks.id,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: context.model,
    choices: [{
      index: 0,
      message: {
        role: "assistant",
        content: calls.length > 0 && content === "" ? null : content,
        ...(calls.length > 0 ? { tool_calls: calls } : {}),
      },
      finish_reason: finishReason,
    }],
    usage,
  }, { headers });
}

// ---------------------------------------------------------------------------------------------
// Reading requests

function readMessage(value: unknown): Message {
  const record = (typeof value === "object" && value !== null ? value : {}) as Json;
  return {
    role: typeof record.role === "string" ? record.role : "",
    content: textOf(record.content),
    ...(typeof record.tool_call_id === "string" ? { tool_call_id: record.tool_call_id } : {}),
    ...(Array.isArray(record.tool_calls) ? { tool_calls: record.tool_calls } : {}),
  };
}

/** Message content is a string or an array of parts; only text parts matter here. */
function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((part) => typeof part?.text === "string" ? part.text : "")
    .join("");
}

function toolNames(tools: unknown): string[] {
  if (!Array.isArray(tools)) return [];
  return tools
    .map((tool) => tool?.function?.name)
    .filter((name): name is string => typeof name === "string");
}

function findDirective(messages: Message[]): { name: string; args: Args } | undefined {
  const text = lastUserText(messages);
  const match = text?.match(/\[\[fixture:([a-z_]+)([^\]]*)\]\]/);
  if (!match) return undefined;
  const args: Args = {};
  for (const pair of match[2].trim().split(/\s+/)) {
    const equals = pair.indexOf("=");
    if (equals > 0) args[pair.slice(0, equals)] = pair.slice(equals + 1);
  }
  return { name: match[1], args };
}

function lastUserText(messages: Message[]): string | undefined {
  return messages.findLast((message) => message.role === "user")?.content;
}

/** The content of the conversation's last message when it is a tool result. */
function lastToolResult(messages: Message[]): string | undefined {
  const last = messages.at(-1);
  return last?.role === "tool" ? last.content : undefined;
}

/**
 * A tool result as a model would say it: "(2+3)*4 = 20." for the calculator, a short sentence
 * for anything else; never the tool's raw JSON.
 */
function phraseToolResult(messages: Message[], result: string): string {
  const call = toolCallOfResult(messages);
  const name = call?.function?.name ?? "tool";
  const parsed = parseJson(result);
  const args = parseJson(call?.function?.arguments ?? "");
  if (name === "calculator" && isRecord(parsed) && typeof parsed.value === "string") {
    const expression = isRecord(args) && typeof args.expression === "string"
      ? args.expression
      : "The result";
    return `${expression} = ${parsed.value}.`;
  }
  if (isRecord(parsed) && typeof parsed.message === "string") {
    return `The ${name} tool could not answer: ${parsed.message}.`;
  }
  return `The ${name} tool answered.`;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function toolCallOfResult(messages: Message[]) {
  const id = messages.at(-1)?.tool_call_id;
  for (const message of messages.toReversed()) {
    const call = message.tool_calls?.find((candidate) => candidate.id === id);
    if (call) return call;
  }
  return undefined;
}

/** The first arithmetic expression in the text, e.g. "2+3" in "what is 2+3?". */
export function findArithmetic(text: string): string | undefined {
  const number = String.raw`[(\s]*\d+(?:\.\d+)?[)\s]*`;
  const match = text.match(new RegExp(`${number}(?:[-+*/^]${number})+`));
  return match?.[0].trim();
}

/**
 * `args=`, `args2=`, `text=` and `message=` values are base64url UTF-8 (see `fixtureArg`), as
 * directives cannot hold spaces or `]`; a value that does not decode is taken as it is.
 */
function decodeArg(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    const base64 = value.replaceAll("-", "+").replaceAll("_", "/");
    const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    if (error instanceof DOMException || error instanceof TypeError) return value;
    throw error;
  }
}

/** Encodes a value for `args=`/`text=`/`message=` directive arguments. */
export function fixtureArg(text: string): string {
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replaceAll("=", "");
}

function splitWords(text: string): string[] {
  return text.match(/\S+\s*/g) ?? [];
}

function newCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

function lineEnd(value: string | undefined): string {
  if (value === "crlf") return "\r\n";
  if (value === "cr") return "\r";
  return "\n";
}

function modelEntry(id: string): Json {
  return { id, object: "model", created: 0, owned_by: "fixture", name: "Offline demo (fixture)" };
}

function parsePort(args: string[]): { port: number; hostname: string } {
  let port = DEFAULT_FIXTURE_PORT;
  let hostname = "127.0.0.1";
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].split("=", 2);
    const value = inline ?? args[++i];
    if (flag === "--port") port = Number(value);
    else if (flag === "--hostname") hostname = value;
    else throw new Error(`unknown argument ${args[i]}; use --port N and --hostname H`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error("bad --port");
  return { port, hostname };
}

if (import.meta.main) {
  const fixture = await startLlmFixture(parsePort(Deno.args));
  console.log(`LLM fixture (OpenAI-compatible, model "${OFFLINE_DEMO_MODEL}") on ${fixture.url}`);
  const stopOnSignal = () => {
    fixture.close().finally(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", stopOnSignal);
  Deno.addSignalListener("SIGTERM", stopOnSignal);
}
