/**
 * An OpenTelemetry collector double: `POST /v1/traces` with OTLP/JSON
 * (`ExportTraceServiceRequest`), as a real collector's OTLP/HTTP receiver takes it. It keeps
 * the spans flattened (attributes as plain values) and answers 200 `{}`, or the status a test
 * sets to play a collector that is down.
 */
export interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  start: bigint;
  end: bigint;
  attributes: Record<string, unknown>;
  status: { code: number; message?: string };
}

export interface OtlpDouble {
  /** The base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  endpoint: string;
  /** The traces URL (`…/v1/traces`). */
  url: string;
  spans: ReceivedSpan[];
  /** The headers of each POST, lower-cased names. */
  posts: Record<string, string>[];
  /** Answers every later POST with this status (200 again to recover). */
  answerWith(status: number): void;
  /** Resolves once `predicate` holds for the spans received, or rejects after `timeoutMs`. */
  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

interface OtlpKeyValue {
  key: string;
  value: OtlpAnyValue;
}
interface OtlpAnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: OtlpAnyValue[] };
}

export function startOtlpDouble(): OtlpDouble {
  const spans: ReceivedSpan[] = [];
  const posts: Record<string, string>[] = [];
  const waiters = new Set<() => void>();
  let status = 200;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = new URL(request.url).pathname;
    if (request.method !== "POST" || path !== "/v1/traces") {
      return new Response("not found", { status: 404 });
    }
    if (!request.headers.get("content-type")?.startsWith("application/json")) {
      return new Response("unsupported media type", { status: 415 });
    }
    const body = await request.json();
    posts.push(Object.fromEntries(request.headers));
    if (status !== 200) return Response.json({ code: 14, message: "unavailable" }, { status });
    for (const resourceSpans of body.resourceSpans ?? []) {
      const resource = flatten(resourceSpans.resource?.attributes);
      for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
        for (const span of scopeSpans.spans ?? []) {
          spans.push({
            service: String(resource["service.name"]),
            traceId: span.traceId,
            spanId: span.spanId,
            ...(span.parentSpanId ? { parentSpanId: span.parentSpanId } : {}),
            name: span.name,
            kind: span.kind,
            start: BigInt(span.startTimeUnixNano),
            end: BigInt(span.endTimeUnixNano),
            attributes: flatten(span.attributes),
            status: span.status ?? { code: 0 },
          });
        }
      }
    }
    for (const wake of waiters) wake();
    return Response.json({});
  });
  const endpoint = `http://127.0.0.1:${server.addr.port}`;
  return {
    endpoint,
    url: `${endpoint}/v1/traces`,
    spans,
    posts,
    answerWith: (next) => status = next,
    async waitFor(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(spans)) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`the OTLP double did not get the spans expected`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(left, 200));
          function done() {
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
        });
      }
    },
    close: () => server.shutdown(),
  };
}

function flatten(attributes: OtlpKeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((attributes ?? []).map(({ key, value }) => [key, plain(value)]));
}

function plain(value: OtlpAnyValue): unknown {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.arrayValue) return (value.arrayValue.values ?? []).map(plain);
  return undefined;
}
