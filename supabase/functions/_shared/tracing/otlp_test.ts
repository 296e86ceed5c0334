import assert from "node:assert/strict";
import { ROOT_CONTEXT, SpanStatusCode, trace } from "@opentelemetry/api";
import { configureLog, type LogLevel } from "../log.ts";
import { OtlpTracer, parseOtlpHeaders, traceExportConfigFromEnv } from "./otlp.ts";
import { contextFromTraceparent, startToolSpan, traceIdOf } from "./genai.ts";
import { startOtlpDouble } from "../../../tests/support/otlp_double.ts";

const env = (values: Record<string, string>) => ({ get: (name: string) => values[name] });

Deno.test("tracing config: the standard OTLP variables, off without an endpoint", () => {
  assert.equal(traceExportConfigFromEnv(env({}), "agent"), undefined);
  assert.deepEqual(
    traceExportConfigFromEnv(
      env({
        OTEL_EXPORTER_OTLP_ENDPOINT: "https://otlp.example.com/otlp/",
        OTEL_EXPORTER_OTLP_HEADERS: "authorization=Basic%20abc, x-team = ops",
      }),
      "agent",
    ),
    {
      url: "https://otlp.example.com/otlp/v1/traces",
      headers: { authorization: "Basic abc", "x-team": "ops" },
      serviceName: "agent",
    },
  );
  const specific = traceExportConfigFromEnv(
    env({
      OTEL_EXPORTER_OTLP_ENDPOINT: "https://ignored.example.com",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/custom",
      OTEL_SERVICE_NAME: "agent-eu",
    }),
    "agent",
  );
  assert.equal(specific?.url, "http://collector:4318/custom");
  assert.equal(specific?.serviceName, "agent-eu");
  assert.throws(
    () => traceExportConfigFromEnv(env({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }), "a"),
    /OTEL_EXPORTER_OTLP_ENDPOINT must be an http\(s\) URL/,
  );
  assert.throws(() => parseOtlpHeaders("secret-without-key"), /key=value pairs/);
});

Deno.test("tracing off: spans carry ids for stored trace ids, nothing is kept", async () => {
  const off = new OtlpTracer(undefined);
  const span = off.startSpan("x");
  assert.equal(span.isRecording(), false);
  assert.match(span.spanContext().traceId, /^[0-9a-f]{32}$/);
  const child = off.startSpan("y", {}, trace.setSpan(ROOT_CONTEXT, span));
  assert.equal(child.spanContext().traceId, span.spanContext().traceId);
  await off.flush();
});

Deno.test("tracing: a full queue drops and counts; a failing collector is logged once, never thrown", async () => {
  const collector = startOtlpDouble();
  const lines: { line: string; level: LogLevel }[] = [];
  configureLog({ write: (line, level) => lines.push({ line, level }) });
  try {
    const tracer = new OtlpTracer({
      url: collector.url,
      headers: {},
      serviceName: "test",
      maxQueue: 3,
      maxBatch: 100,
      batchDelayMs: 60_000,
    });
    for (let i = 0; i < 5; i++) tracer.startSpan(`s${i}`).end();
    assert.equal(tracer.droppedSpans, 2);
    await tracer.flush();
    assert.deepEqual(collector.spans.map((span) => span.name), ["s0", "s1", "s2"]);

    collector.answerWith(503);
    for (let round = 0; round < 3; round++) {
      tracer.startSpan("lost").end();
      await tracer.flush();
    }
    const failures = lines.filter(({ line }) => line.includes("trace_export_failed"));
    assert.equal(failures.length, 1, "once per interval");
    const logged = JSON.parse(failures[0].line);
    assert.deepEqual([logged.error, logged.failed_spans, logged.dropped_spans], [
      "HTTP 503",
      1,
      2,
    ]);
    assert.equal(logged.collector, new URL(collector.url).host);
  } finally {
    configureLog({ write: (line) => console.log(line) });
    await collector.close();
  }
});

Deno.test("tracing: a W3C traceparent parents a tool span; a malformed one is ignored", () => {
  const parent = contextFromTraceparent(
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  );
  assert.equal(traceIdOf(parent), "4bf92f3577b34da6a3ce929d0e0e4736");
  assert.equal(
    contextFromTraceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
    undefined,
  );
  assert.equal(contextFromTraceparent("garbage"), undefined);
  const span = startToolSpan(parent, { name: "calculator", source: "mcp" });
  assert.equal(span.spanContext().traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
  span.setStatus({ code: SpanStatusCode.OK });
  span.end();
});

Deno.test("tracing: every export handed to EdgeRuntime.waitUntil settles, a delayed one cut short by a flush too", async () => {
  const collector = startOtlpDouble();
  const waited: Promise<unknown>[] = [];
  const global = globalThis as { EdgeRuntime?: unknown };
  global.EdgeRuntime = { waitUntil: (promise: Promise<unknown>) => waited.push(promise) };
  try {
    const tracer = new OtlpTracer({
      url: collector.url,
      headers: {},
      serviceName: "test",
      batchDelayMs: 60_000,
      maxBatch: 2,
    });
    tracer.startSpan("delayed").end();
    assert.equal(waited.length, 1, "the delayed export keeps the worker");
    tracer.startSpan("fills the batch").end();
    await tracer.flush();
    // A worker is kept alive until these settle: none may hang (a liveness guard, not a clock).
    let guard: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(waited),
      new Promise((_, reject) => {
        guard = setTimeout(
          () => reject(new Error("an export given to waitUntil never settled")),
          5000,
        );
      }),
    ]).finally(() => clearTimeout(guard));
    assert.deepEqual(collector.spans.map((span) => span.name), ["delayed", "fills the batch"]);
  } finally {
    delete global.EdgeRuntime;
    await collector.close();
  }
});
