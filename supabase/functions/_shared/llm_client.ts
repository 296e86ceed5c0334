/**
 * Streaming client for OpenAI-compatible chat completions (OpenRouter by default).
 *
 * The caller sees one ordered stream of events: text deltas as they arrive, the finished tool
 * calls once the model has stopped to call them, then `done` with usage; or an `error` value.
 * Failures never throw: they end the stream with an error event whose `partial` says whether
 * output had already been yielded, because the agent must store what the user already saw.
 *
 * Retries and fallback models happen only before any output: once a token or tool-call delta
 * has arrived, repeating the request would show the user a second, different answer.
 */
import { abortableSleep } from "./abortable_sleep.ts";
import { readSseEvents, type SseEvent } from "./sse.ts";
import type { Env } from "./env.ts";

export type ChatMessage =
  | { role: "system"; content: string }
  | { role: "user"; content: string }
  | { role: "assistant"; content: string | null; tool_calls?: ChatToolCall[] }
  | { role: "tool"; content: string; tool_call_id: string; name?: string };

/** A tool call as it appears in an assistant message sent back to the model. */
export interface ChatToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export interface ToolDefinition {
  type: "function";
  function: {
    name: string;
    description?: string;
    /** JSON Schema of the arguments object. */
    parameters: Record<string, unknown>;
  };
}

export type ToolChoice = "auto" | "none" | "required" | {
  type: "function";
  function: { name: string };
};

export interface ChatCompletionRequest {
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice;
  temperature?: number;
  maxTokens?: number;
}

export interface StreamChatOptions {
  /** Base URL of the API, e.g. `https://openrouter.ai/api/v1`. */
  baseUrl: string;
  apiKey?: string;
  model: string;
  /** Tried in order, only before any output, when the model before them failed. */
  fallbackModels?: string[];
  signal?: AbortSignal;
  /** Retries of one model for 429, 502, 503 and lost connections. Default 2. */
  maxRetries?: number;
  fetch?: typeof fetch;
  headers?: HeadersInit;
  /** Sent as `HTTP-Referer` (OpenRouter's app attribution). */
  referer?: string;
  /** Sent as `X-Title` (OpenRouter's app attribution). */
  title?: string;
  /** Longest silence tolerated: waiting for the response headers or between two body chunks. */
  timeoutMs?: number;
  /** Longest wait before a retry; a longer `Retry-After` is returned instead. Default 30 s. */
  maxRetryWaitMs?: number;
  /** First backoff when the upstream gave no `Retry-After`; doubles per retry. Default 500. */
  retryBaseDelayMs?: number;
  /** Extra top-level body fields, e.g. `{ stream_options: { include_usage: true } }` for OpenAI. */
  extraBody?: Record<string, unknown>;
}

export interface LlmToolCall {
  id: string;
  name: string;
  /** The raw JSON text the model produced; the caller validates it. */
  arguments: string;
}

export interface LlmUsage {
  promptTokens: number;
  completionTokens: number;
  /** USD as reported by the upstream; 0 when it reports none. */
  cost: number;
}

export type LlmErrorCode =
  | "upstream_http_error"
  | "rate_limited"
  | "unavailable"
  | "insufficient_credits"
  | "stream_error"
  | "connection_lost"
  | "aborted"
  | "timeout";

export interface LlmErrorEvent {
  type: "error";
  code: LlmErrorCode;
  message: string;
  retryable: boolean;
  /** HTTP status, or the numeric error code of an in-stream error. */
  status?: number;
  /** How long the upstream asked to wait before trying again. */
  retryAfterMs?: number;
  /** True when text or tool-call deltas had already arrived before the failure. */
  partial: boolean;
  /** The model the failing request asked for. */
  model?: string;
}

export type LlmStreamEvent =
  | { type: "text"; delta: string }
  | { type: "tool_calls"; calls: LlmToolCall[] }
  | {
    type: "done";
    finishReason: string;
    usage: LlmUsage;
    /** The model that actually answered (`response.model`). */
    model: string;
    generationId: string;
  }
  | LlmErrorEvent;

export interface LlmConfig {
  baseUrl: string;
  apiKey?: string;
  model: string;
  fallbackModels: string[];
}

export const DEFAULT_LLM_BASE_URL = "https://openrouter.ai/api/v1";
export const DEFAULT_LLM_MODEL = "openai/gpt-4o-mini";

/** Reads the upstream configuration; empty variables count as unset. */
export function llmConfigFromEnv(
  env: Env = Deno.env,
): LlmConfig {
  const read = (name: string) => {
    const value = env.get(name)?.trim();
    return value === undefined || value === "" ? undefined : value;
  };
  const apiKey = read("OPENROUTER_API_KEY") ?? read("LLM_API_KEY");
  return {
    baseUrl: read("LLM_BASE_URL") ?? DEFAULT_LLM_BASE_URL,
    ...(apiKey === undefined ? {} : { apiKey }),
    model: read("LLM_MODEL") ?? DEFAULT_LLM_MODEL,
    fallbackModels: (read("LLM_FALLBACK_MODELS") ?? "").split(",").map((model) => model.trim())
      .filter((model) => model !== ""),
  };
}

/**
 * `Retry-After` in milliseconds: delta-seconds or an HTTP date; undefined when absent or
 * unreadable. A date in the past means "now" (0).
 */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

const DEFAULT_MAX_RETRIES = 2;
const DEFAULT_MAX_RETRY_WAIT_MS = 30_000;
const DEFAULT_RETRY_BASE_DELAY_MS = 500;

/** Streams one chat completion; see the module comment for the event contract. */
export async function* streamChatCompletion(
  request: ChatCompletionRequest,
  options: StreamChatOptions,
): AsyncGenerator<LlmStreamEvent, void, undefined> {
  const signal = options.signal;
  const models = [options.model, ...(options.fallbackModels ?? [])];
  const maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES;
  let lastError: LlmErrorEvent | undefined;
  for (const model of models) {
    for (let attempt = 0;; attempt++) {
      if (signal?.aborted) {
        yield abortedError(false, model);
        return;
      }
      const outcome = yield* streamOneAttempt(request, model, options);
      if (outcome === "finished") return;
      if (outcome.partial || outcome.code === "aborted") {
        yield outcome;
        return;
      }
      lastError = outcome;
      const delay = attempt < maxRetries ? retryDelayMs(outcome, attempt, options) : undefined;
      if (delay === undefined) break;
      if (!(await abortableSleep(delay, signal))) {
        yield abortedError(false, model);
        return;
      }
    }
  }
  if (lastError) yield lastError;
}

/** How long to wait before retrying the same model, or undefined when it should not be. */
function retryDelayMs(
  error: LlmErrorEvent,
  attempt: number,
  options: StreamChatOptions,
): number | undefined {
  const sameModelMayRecover = error.code === "rate_limited" || error.code === "unavailable" ||
    error.code === "connection_lost" ||
    (error.code === "insufficient_credits" && error.retryAfterMs !== undefined) ||
    (error.code === "stream_error" && isTransientStatus(error.status));
  if (!sameModelMayRecover) return undefined;
  const cap = options.maxRetryWaitMs ?? DEFAULT_MAX_RETRY_WAIT_MS;
  if (error.retryAfterMs !== undefined) {
    return error.retryAfterMs <= cap ? error.retryAfterMs : undefined;
  }
  return Math.min(cap, (options.retryBaseDelayMs ?? DEFAULT_RETRY_BASE_DELAY_MS) * 2 ** attempt);
}

function isTransientStatus(status: number | undefined): boolean {
  return status === 429 || status === 502 || status === 503;
}

/**
 * One HTTP request. Yields output events; returns "finished" after yielding `done`, or the
 * error (not yet yielded) so the caller can decide between retry, fallback and giving up.
 */
async function* streamOneAttempt(
  request: ChatCompletionRequest,
  model: string,
  options: StreamChatOptions,
): AsyncGenerator<LlmStreamEvent, "finished" | LlmErrorEvent, undefined> {
  const upstream = new AbortController();
  const outerSignal = options.signal;
  const abortUpstream = () => upstream.abort(outerSignal?.reason);
  outerSignal?.addEventListener("abort", abortUpstream, { once: true });
  const silence = new SilenceTimer(options.timeoutMs, () => upstream.abort());
  let outputStarted = false;
  const failure = (error: unknown): LlmErrorEvent => {
    if (outerSignal?.aborted) return abortedError(outputStarted, model);
    if (silence.fired) {
      return {
        type: "error",
        code: "timeout",
        message: `no data from the LLM upstream for ${options.timeoutMs} ms`,
        retryable: true,
        partial: outputStarted,
        model,
      };
    }
    return {
      type: "error",
      code: "connection_lost",
      message: `connection to the LLM upstream failed: ${describe(error)}`,
      retryable: true,
      partial: outputStarted,
      model,
    };
  };

  let events: AsyncGenerator<SseEvent, void, undefined> | undefined;
  try {
    let response: Response;
    silence.touch();
    try {
      response = await (options.fetch ?? fetch)(completionsUrl(options.baseUrl), {
        method: "POST",
        headers: requestHeaders(options),
        body: JSON.stringify(requestBody(request, model, options)),
        signal: upstream.signal,
      });
    } catch (error) {
      return failure(error);
    }
    if (!response.ok || response.body === null) {
      let text: string;
      try {
        text = await response.text();
      } catch (error) {
        return failure(error);
      }
      return httpError(response.status, text, response.headers, model);
    }

    let generationId = response.headers.get("x-generation-id") ?? "";
    let answeredModel = model;
    let finishReason: string | undefined;
    let usage: LlmUsage = { promptTokens: 0, completionTokens: 0, cost: 0 };
    const toolCalls = new ToolCallAccumulator();
    let toolCallsYielded = false;

    silence.touch();
    events = readSseEvents(
      response.body,
      undefined,
      options.timeoutMs === undefined ? undefined : () => silence.touch(),
    );
    let sawDone = false;
    while (true) {
      let next: IteratorResult<SseEvent, void>;
      try {
        next = await events.next();
      } catch (error) {
        return failure(error);
      }
      if (next.done) break;
      // An event already decoded from the last network chunk must not outrun a cancel.
      if (outerSignal?.aborted) return failure(outerSignal.reason);
      const data = next.value.data;
      if (data === "[DONE]") {
        sawDone = true;
        break;
      }

      const chunk = parseJsonObject(data);
      if (chunk === undefined) {
        return streamError("the LLM upstream sent a chunk that is not JSON", outputStarted, model);
      }
      if (generationId === "" && typeof chunk.id === "string") generationId = chunk.id;
      if (typeof chunk.model === "string" && chunk.model !== "") answeredModel = chunk.model;
      const usageField = asRecord(chunk.usage);
      if (usageField) usage = readUsage(usageField);

      const errorField = asRecord(chunk.error);
      if (errorField) {
        const status = typeof errorField.code === "number" ? errorField.code : undefined;
        const message = typeof errorField.message === "string"
          ? errorField.message
          : "the LLM upstream reported an error mid-stream";
        return streamError(message, outputStarted, model, status);
      }

      const choice = asRecord(Array.isArray(chunk.choices) ? chunk.choices[0] : undefined);
      if (!choice) continue;
      const delta = asRecord(choice.delta);
      if (delta && typeof delta.content === "string" && delta.content !== "") {
        outputStarted = true;
        yield { type: "text", delta: delta.content };
      }
      if (delta && Array.isArray(delta.tool_calls) && !toolCallsYielded) {
        for (const fragment of delta.tool_calls) {
          const record = asRecord(fragment);
          if (record) toolCalls.add(record);
        }
        if (toolCalls.size > 0) outputStarted = true;
      }
      if (typeof choice.finish_reason === "string") {
        if (choice.finish_reason === "error") {
          return streamError(
            "the LLM upstream ended the stream with an error",
            outputStarted,
            model,
          );
        }
        finishReason = choice.finish_reason;
        if (finishReason === "tool_calls" && toolCalls.size > 0 && !toolCallsYielded) {
          toolCallsYielded = true;
          yield { type: "tool_calls", calls: toolCalls.finish() };
        }
      }
    }
    // Without [DONE], a finish_reason still proves the answer is complete.
    if (!sawDone && finishReason === undefined) {
      return {
        type: "error",
        code: "connection_lost",
        message: "the LLM upstream closed the stream before it was complete",
        retryable: true,
        partial: outputStarted,
        model,
      };
    }
    if (toolCalls.size > 0 && !toolCallsYielded) {
      yield { type: "tool_calls", calls: toolCalls.finish() };
    }
    yield {
      type: "done",
      finishReason: finishReason ?? (toolCalls.size > 0 ? "tool_calls" : "stop"),
      usage,
      model: answeredModel,
      generationId,
    };
    return "finished";
  } finally {
    silence.stop();
    outerSignal?.removeEventListener("abort", abortUpstream);
    await events?.return();
    // Closes the connection if we stopped before the body ended (consumer left, error).
    upstream.abort();
  }
}

function completionsUrl(baseUrl: string): string {
  return `${baseUrl.replace(/\/+$/, "")}/chat/completions`;
}

function requestHeaders(options: StreamChatOptions): Headers {
  const headers = new Headers(options.headers);
  headers.set("Content-Type", "application/json");
  headers.set("Accept", "text/event-stream");
  if (options.apiKey) headers.set("Authorization", `Bearer ${options.apiKey}`);
  if (options.referer) headers.set("HTTP-Referer", options.referer);
  if (options.title) headers.set("X-Title", options.title);
  return headers;
}

function requestBody(
  request: ChatCompletionRequest,
  model: string,
  options: StreamChatOptions,
): Record<string, unknown> {
  const body: Record<string, unknown> = {
    ...options.extraBody,
    model,
    messages: request.messages,
    stream: true,
    usage: { include: true },
  };
  if (request.tools && request.tools.length > 0) {
    body.tools = request.tools;
    if (request.toolChoice !== undefined) body.tool_choice = request.toolChoice;
  }
  if (request.temperature !== undefined) body.temperature = request.temperature;
  if (request.maxTokens !== undefined) body.max_tokens = request.maxTokens;
  return body;
}

function httpError(
  status: number,
  bodyText: string,
  headers: Headers,
  model: string,
): LlmErrorEvent {
  const errorField = asRecord(parseJsonObject(bodyText)?.error);
  const upstreamMessage = typeof errorField?.message === "string" ? errorField.message : undefined;
  const provider = asRecord(errorField?.metadata)?.provider_name;
  const message = (upstreamMessage ?? `the LLM upstream answered HTTP ${status}`) +
    (typeof provider === "string" ? ` (provider ${provider})` : "");
  const retryAfterMs = parseRetryAfter(headers.get("retry-after"));
  const base = {
    type: "error" as const,
    message,
    status,
    partial: false,
    model,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  };
  switch (status) {
    case 402:
      return { ...base, code: "insufficient_credits", retryable: retryAfterMs !== undefined };
    case 408:
      return { ...base, code: "timeout", retryable: true };
    case 429:
      return { ...base, code: "rate_limited", retryable: true };
    case 502:
    case 503:
      return { ...base, code: "unavailable", retryable: true };
    default:
      return { ...base, code: "upstream_http_error", retryable: status >= 500 };
  }
}

function streamError(
  message: string,
  partial: boolean,
  model: string,
  status?: number,
): LlmErrorEvent {
  return {
    type: "error",
    code: "stream_error",
    message,
    retryable: isTransientStatus(status),
    partial,
    model,
    ...(status === undefined ? {} : { status }),
  };
}

function abortedError(partial: boolean, model: string): LlmErrorEvent {
  return {
    type: "error",
    code: "aborted",
    message: "the LLM request was cancelled",
    retryable: false,
    partial,
    model,
  };
}

function readUsage(usage: Record<string, unknown>): LlmUsage {
  const count = (value: unknown) => typeof value === "number" && Number.isFinite(value) ? value : 0;
  return {
    promptTokens: count(usage.prompt_tokens),
    completionTokens: count(usage.completion_tokens),
    cost: count(usage.cost),
  };
}

/**
 * Merges streamed tool-call fragments. The OpenAI format keys fragments by `index`, but some
 * compatible backends send every parallel call at index 0, told apart only by a new `id`.
 */
class ToolCallAccumulator {
  private readonly calls: LlmToolCall[] = [];
  private readonly currentAtIndex = new Map<number, LlmToolCall>();
  private lastIndex = 0;

  get size(): number {
    return this.calls.length;
  }

  add(fragment: Record<string, unknown>): void {
    const index = typeof fragment.index === "number" ? fragment.index : this.lastIndex;
    this.lastIndex = index;
    const id = typeof fragment.id === "string" && fragment.id !== "" ? fragment.id : undefined;
    const call = this.target(index, id);
    const fn = asRecord(fragment.function);
    if (typeof fn?.name === "string" && fn.name !== "" && call.name !== fn.name) {
      // Normally sent once; appending covers backends that stream the name in pieces, the
      // inequality those that repeat it on every fragment.
      call.name += fn.name;
    }
    if (typeof fn?.arguments === "string") call.arguments += fn.arguments;
  }

  finish(): LlmToolCall[] {
    return this.calls.map((call, position) => ({
      ...call,
      id: call.id !== "" ? call.id : `call_${position}`,
    }));
  }

  private target(index: number, id: string | undefined): LlmToolCall {
    const current = this.currentAtIndex.get(index);
    if (id !== undefined) {
      const known = this.calls.find((call) => call.id === id);
      if (known) {
        this.currentAtIndex.set(index, known);
        return known;
      }
      if (current && current.id === "") {
        current.id = id;
        return current;
      }
    } else if (current) {
      return current;
    }
    const created: LlmToolCall = { id: id ?? "", name: "", arguments: "" };
    this.calls.push(created);
    this.currentAtIndex.set(index, created);
    return created;
  }
}

/**
 * Notices when the upstream stays silent for `ms` (headers or body bytes) and calls
 * `onSilence`, which aborts the request. Activity only notes the time (it comes with every
 * network chunk, so it must cost next to nothing); one timer checks the note when it fires
 * and sleeps again for the rest of the window if something arrived meanwhile.
 */
class SilenceTimer {
  fired = false;
  private lastActivity = 0;
  private handle: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly ms: number | undefined, private readonly onSilence: () => void) {}

  /** Something arrived: the silence starts again from now. */
  touch(): void {
    this.lastActivity = performance.now();
    if (this.ms !== undefined && this.handle === undefined) this.arm(this.ms);
  }

  stop(): void {
    clearTimeout(this.handle);
    this.handle = undefined;
  }

  private arm(delay: number): void {
    this.handle = setTimeout(() => {
      const quiet = performance.now() - this.lastActivity;
      if (quiet < this.ms!) return this.arm(this.ms! - quiet);
      this.handle = undefined;
      this.fired = true;
      this.onSilence();
    }, delay);
  }
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    return asRecord(JSON.parse(text));
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as Record<string, unknown>
    : undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
