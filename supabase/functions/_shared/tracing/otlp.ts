/**
 * A small OpenTelemetry tracer that exports over OTLP/HTTP JSON with `fetch`.
 *
 * Why not Deno's built-in OpenTelemetry: hosted Supabase runs functions on the Edge Runtime's
 * Deno 2.1.4, where it sits behind `--unstable-otel`, a flag a deployed function cannot pass.
 * So the functions use `@opentelemetry/api` for spans, and this provider (the api's `Tracer`
 * and `Span`, nothing more: no sampler, no processors) sends the ended spans in batches.
 *
 * Configured by the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (a base; `/v1/traces` is appended), `OTEL_EXPORTER_OTLP_HEADERS`
 * (`key=value,…`, values URL-encoded) and `OTEL_SERVICE_NAME`. Off when no endpoint is set:
 * spans still get ids (the stored trace ids need them) but nothing is kept or sent.
 *
 * An export never blocks a turn and never throws into one: spans wait in a capped queue (full:
 * dropped and counted), a batch leaves after a short delay on a promise handed to
 * `EdgeRuntime.waitUntil` (so the worker is not retired under it), each POST is bounded by a
 * timeout, and failures are logged once per minute with their count.
 */
import {
  type Attributes,
  type AttributeValue,
  type Context,
  type Exception,
  type Link,
  ROOT_CONTEXT,
  type Span,
  type SpanAttributes,
  type SpanContext,
  SpanKind,
  type SpanOptions,
  type SpanStatus,
  SpanStatusCode,
  type TimeInput,
  trace,
  TraceFlags,
  type Tracer,
} from "@opentelemetry/api";
import { z } from "zod";
import type { Env } from "../env.ts";
import { describeError, log } from "../log.ts";
import { waitUntil } from "../wait_until.ts";

export interface TraceExportConfig {
  /** Where spans are POSTed: `…/v1/traces`. */
  url: string;
  headers: Record<string, string>;
  serviceName: string;
  /** Spans waiting at most; more are dropped (and counted). */
  maxQueue?: number;
  /** How long an ended span waits for others to share its POST. */
  batchDelayMs?: number;
  /** Spans per POST. */
  maxBatch?: number;
  /** A POST that takes longer is abandoned (its spans counted as failed). */
  timeoutMs?: number;
}

const DEFAULTS = { maxQueue: 2048, batchDelayMs: 500, maxBatch: 512, timeoutMs: 5000 };
/** Export failures are logged at most this often. */
const FAILURE_LOG_INTERVAL_MS = 60_000;

const endpointSchema = z.url({ protocol: /^https?$/ });

/**
 * The export settings from the standard OTLP variables; undefined when no endpoint is set.
 * A malformed endpoint or header list throws at boot with the variable's name.
 */
export function traceExportConfigFromEnv(
  env: Env,
  defaultServiceName: string,
): TraceExportConfig | undefined {
  const tracesEndpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?.trim();
  const baseEndpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")?.trim();
  const url = tracesEndpoint ||
    (baseEndpoint ? `${baseEndpoint.replace(/\/+$/, "")}/v1/traces` : undefined);
  if (!url) return undefined;
  const variable = tracesEndpoint
    ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    : "OTEL_EXPORTER_OTLP_ENDPOINT";
  if (!endpointSchema.safeParse(url).success) {
    throw new Error(`${variable} must be an http(s) URL`);
  }
  return {
    url,
    headers: parseOtlpHeaders(env.get("OTEL_EXPORTER_OTLP_HEADERS") ?? ""),
    serviceName: env.get("OTEL_SERVICE_NAME")?.trim() || defaultServiceName,
  };
}

/** `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas, values URL-encoded. */
export function parseOtlpHeaders(text: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of text.split(",")) {
    if (pair.trim() === "") continue;
    const at = pair.indexOf("=");
    const key = pair.slice(0, at).trim();
    if (at <= 0 || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(key)) {
      // The value may be a secret: name the position, not the text.
      throw new Error("OTEL_EXPORTER_OTLP_HEADERS must be key=value pairs separated by commas");
    }
    headers[key] = decodeURIComponent(pair.slice(at + 1).trim());
  }
  return headers;
}

/** What the exporter holds of an ended span. */
interface EndedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: SpanKind;
  start: bigint;
  end: bigint;
  attributes: Attributes;
  events: { name: string; time: bigint; attributes: Attributes }[];
  links: Link[];
  status: SpanStatus;
}

/** Explicit ids for a span the caller must be able to name without asking anyone (see genai.ts). */
export interface SpanIds {
  traceId: string;
  spanId?: string;
  parentSpanId?: string;
}

export class OtlpTracer implements Tracer {
  readonly #exporter: OtlpExporter | undefined;

  constructor(config: TraceExportConfig | undefined) {
    this.#exporter = config ? new OtlpExporter(config) : undefined;
  }

  get enabled(): boolean {
    return this.#exporter !== undefined;
  }

  startSpan(name: string, options: SpanOptions = {}, context: Context = ROOT_CONTEXT): Span {
    const parent = options.root ? undefined : trace.getSpanContext(context);
    const valid = parent && trace.isSpanContextValid(parent);
    return this.startSpanWithIds(name, options, {
      traceId: valid ? parent.traceId : randomHex(16),
      ...(valid ? { parentSpanId: parent.spanId } : {}),
    });
  }

  /** `startSpan` with ids the caller chose: a turn's spans live in the trace named by its id. */
  startSpanWithIds(name: string, options: SpanOptions, ids: SpanIds): Span {
    const spanContext: SpanContext = {
      traceId: ids.traceId,
      spanId: ids.spanId ?? randomHex(8),
      traceFlags: this.#exporter ? TraceFlags.SAMPLED : TraceFlags.NONE,
    };
    if (!this.#exporter) return trace.wrapSpanContext(spanContext);
    return new RecordingSpan(this.#exporter, name, spanContext, ids.parentSpanId, options);
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, fn: F): ReturnType<F>;
  startActiveSpan<F extends (span: Span) => unknown>(
    name: string,
    options: SpanOptions,
    fn: F,
  ): ReturnType<F>;
  startActiveSpan<F extends (span: Span) => unknown>(
    name: string,
    options: SpanOptions,
    context: Context,
    fn: F,
  ): ReturnType<F>;
  // No context manager: the span is handed to `fn`, which passes it on explicitly.
  startActiveSpan<F extends (span: Span) => unknown>(
    name: string,
    ...rest: [F] | [SpanOptions, F] | [SpanOptions, Context, F]
  ): ReturnType<F> {
    const fn = rest.at(-1) as F;
    const options = rest.length > 1 ? rest[0] as SpanOptions : {};
    const context = rest.length > 2 ? rest[1] as Context : ROOT_CONTEXT;
    return fn(this.startSpan(name, options, context)) as ReturnType<F>;
  }

  /** Sends what waits now (at shutdown, and in tests); never rejects. */
  flush(): Promise<void> {
    return this.#exporter?.flush() ?? Promise.resolve();
  }

  /** Spans dropped because the queue was full, since the start. */
  get droppedSpans(): number {
    return this.#exporter?.dropped ?? 0;
  }
}

class RecordingSpan implements Span {
  readonly #start: bigint;
  readonly #attributes: Attributes = {};
  readonly #events: EndedSpan["events"] = [];
  readonly #links: Link[];
  #status: SpanStatus = { code: SpanStatusCode.UNSET };
  #ended = false;

  constructor(
    readonly exporter: OtlpExporter,
    public name: string,
    readonly context: SpanContext,
    readonly parentSpanId: string | undefined,
    options: SpanOptions,
  ) {
    this.#start = nanos(options.startTime);
    this.#links = [...options.links ?? []];
    if (options.attributes) this.setAttributes(options.attributes);
    this.kind = options.kind ?? SpanKind.INTERNAL;
  }

  readonly kind: SpanKind;

  spanContext(): SpanContext {
    return this.context;
  }

  setAttribute(key: string, value: AttributeValue | undefined): this {
    if (!this.#ended && value !== undefined) this.#attributes[key] = value;
    return this;
  }

  setAttributes(attributes: SpanAttributes): this {
    for (const [key, value] of Object.entries(attributes)) this.setAttribute(key, value);
    return this;
  }

  addEvent(
    name: string,
    attributesOrStartTime?: SpanAttributes | TimeInput,
    startTime?: TimeInput,
  ): this {
    if (this.#ended || this.#events.length >= 32) return this;
    const isTime = typeof attributesOrStartTime === "number" ||
      attributesOrStartTime instanceof Date || Array.isArray(attributesOrStartTime);
    this.#events.push({
      name,
      time: nanos(isTime ? attributesOrStartTime as TimeInput : startTime),
      attributes: isTime ? {} : { ...attributesOrStartTime as SpanAttributes | undefined },
    });
    return this;
  }

  addLink(link: Link): this {
    if (!this.#ended) this.#links.push(link);
    return this;
  }

  addLinks(links: Link[]): this {
    for (const link of links) this.addLink(link);
    return this;
  }

  setStatus(status: SpanStatus): this {
    if (!this.#ended) this.#status = status;
    return this;
  }

  updateName(name: string): this {
    if (!this.#ended) this.name = name;
    return this;
  }

  end(endTime?: TimeInput): void {
    if (this.#ended) return;
    this.#ended = true;
    this.exporter.enqueue({
      traceId: this.context.traceId,
      spanId: this.context.spanId,
      ...(this.parentSpanId ? { parentSpanId: this.parentSpanId } : {}),
      name: this.name,
      kind: this.kind,
      start: this.#start,
      end: nanos(endTime),
      attributes: this.#attributes,
      events: this.#events,
      links: this.#links,
      status: this.#status,
    });
  }

  isRecording(): boolean {
    return !this.#ended;
  }

  recordException(exception: Exception, time?: TimeInput): void {
    const attributes: SpanAttributes = typeof exception === "string"
      ? { "exception.message": exception }
      : {
        "exception.type": exception.name ?? "Error",
        "exception.message": exception.message ?? "",
      };
    this.addEvent("exception", attributes, time);
  }
}

class OtlpExporter {
  readonly #config: Required<TraceExportConfig>;
  readonly #queue: EndedSpan[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Settles the delayed export's promise: it must not stay pending once the timer is cut. */
  #wake: (() => void) | undefined;
  /** One POST at a time: a slow collector gets no pile of parallel requests. */
  #chain: Promise<void> = Promise.resolve();
  dropped = 0;
  #failedSpans = 0;
  #lastFailureLog = -Infinity;

  constructor(config: TraceExportConfig) {
    this.#config = { ...DEFAULTS, ...config };
  }

  enqueue(span: EndedSpan): void {
    if (this.#queue.length >= this.#config.maxQueue) {
      this.dropped++;
      return;
    }
    this.#queue.push(span);
    if (this.#queue.length >= this.#config.maxBatch) {
      this.#background(this.flush());
    } else if (this.#timer === undefined) {
      const delayed = new Promise<void>((resolve) => this.#wake = resolve);
      this.#timer = setTimeout(() => this.#cutDelay(), this.#config.batchDelayMs);
      this.#background(delayed.then(() => this.flush()));
    }
  }

  /** Keeps the worker alive while spans wait or leave; elsewhere the promise just runs. */
  #background(promise: Promise<void>): void {
    waitUntil(promise);
  }

  #cutDelay(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Sends everything queued; resolves once it is sent (or failed); never rejects. */
  flush(): Promise<void> {
    this.#cutDelay();
    this.#chain = this.#chain.then(async () => {
      while (this.#queue.length > 0) {
        await this.#send(this.#queue.splice(0, this.#config.maxBatch));
      }
    });
    return this.#chain;
  }

  async #send(batch: EndedSpan[]): Promise<void> {
    let problem: string | undefined;
    try {
      const response = await fetch(this.#config.url, {
        method: "POST",
        headers: { ...this.#config.headers, "content-type": "application/json" },
        body: JSON.stringify(otlpBody(this.#config.serviceName, batch)),
        signal: AbortSignal.timeout(this.#config.timeoutMs),
      });
      await response.body?.cancel();
      if (!response.ok) problem = `HTTP ${response.status}`;
    } catch (error) {
      problem = describeError(error);
    }
    if (problem === undefined) return;
    this.#failedSpans += batch.length;
    const now = performance.now();
    if (now - this.#lastFailureLog < FAILURE_LOG_INTERVAL_MS) return;
    this.#lastFailureLog = now;
    log("warn", "trace_export_failed", {
      // The URL may carry a key: the host only.
      collector: new URL(this.#config.url).host,
      error: problem,
      failed_spans: this.#failedSpans,
      dropped_spans: this.dropped,
    });
    this.#failedSpans = 0;
  }
}

/** OTLP/JSON (`ExportTraceServiceRequest`): ids in hex, times as decimal strings of nanoseconds. */
function otlpBody(serviceName: string, spans: readonly EndedSpan[]) {
  return {
    resourceSpans: [{
      resource: { attributes: keyValues({ "service.name": serviceName }) },
      scopeSpans: [{
        scope: { name: "supabase-functions" },
        spans: spans.map((span) => ({
          traceId: span.traceId,
          spanId: span.spanId,
          ...(span.parentSpanId ? { parentSpanId: span.parentSpanId } : {}),
          name: span.name,
          // OTLP counts from UNSPECIFIED = 0; the api from INTERNAL = 0.
          kind: span.kind + 1,
          startTimeUnixNano: String(span.start),
          endTimeUnixNano: String(span.end),
          attributes: keyValues(span.attributes),
          events: span.events.map((event) => ({
            name: event.name,
            timeUnixNano: String(event.time),
            attributes: keyValues(event.attributes),
          })),
          links: span.links.map((link) => ({
            traceId: link.context.traceId,
            spanId: link.context.spanId,
            attributes: keyValues(link.attributes ?? {}),
          })),
          status: {
            code: span.status.code,
            ...(span.status.message ? { message: span.status.message } : {}),
          },
        })),
      }],
    }],
  };
}

function keyValues(attributes: Attributes) {
  return Object.entries(attributes)
    .filter(([, value]) => value !== undefined && value !== null)
    .map(([key, value]) => ({ key, value: anyValue(value!) }));
}

function anyValue(value: AttributeValue): Record<string, unknown> {
  if (Array.isArray(value)) {
    return {
      arrayValue: {
        values: (value as unknown[]).filter((item) => item !== null && item !== undefined)
          .map((item) => anyValue(item as AttributeValue)),
      },
    };
  }
  if (typeof value === "boolean") return { boolValue: value };
  if (typeof value === "number") {
    return Number.isInteger(value) ? { intValue: String(value) } : { doubleValue: value };
  }
  return { stringValue: String(value) };
}

/** A time as nanoseconds since the epoch; now when not given. */
function nanos(time?: TimeInput): bigint {
  if (time === undefined) {
    return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
  }
  if (Array.isArray(time)) return BigInt(time[0]) * 1_000_000_000n + BigInt(time[1]);
  const ms = time instanceof Date ? time.getTime() : time;
  return BigInt(Math.round(ms * 1000)) * 1000n;
}

function randomHex(bytes: number): string {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  // All zeros is the invalid id.
  if (values.every((value) => value === 0)) values[0] = 1;
  return [...values].map((value) => value.toString(16).padStart(2, "0")).join("");
}

let current: OtlpTracer | undefined;

/** A tracer as the environment configures it (each function's index.ts names its service). */
export function tracerFromEnv(env: Env, serviceName: string): OtlpTracer {
  return new OtlpTracer(traceExportConfigFromEnv(env, serviceName));
}

/** The functions' tracer: the one `useTracer` installed, else one from the environment. */
export function tracer(): OtlpTracer {
  if (!current) useTracer(tracerFromEnv(Deno.env, "supabase-functions"));
  return current!;
}

/**
 * Installs the tracer (each function's index.ts; tests point one at an OTLP double), also as
 * the api's global provider, so `trace.getTracer()` in code added later finds it.
 */
export function useTracer(next: OtlpTracer): void {
  current = next;
  trace.disable();
  trace.setGlobalTracerProvider({ getTracer: () => next });
}
