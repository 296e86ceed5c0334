/**
 * The agent's spans, named and attributed by OpenTelemetry's GenAI semantic conventions: a
 * turn (`invoke_agent`) → each LLM call (`chat <model>`) → each tool call
 * (`execute_tool <tool>`).
 *
 * A turn's trace id is its id (a UUID: 32 random hex digits), and its first run's span id is
 * the last 16 of them. So every isolate that runs a part of the turn (adopted after a crash,
 * or continued where a parked approval was answered) names the same trace and hangs its run
 * under the same root without reading anything: `agent_turns.trace_id` holds the same value
 * for operators, and each usage row stores its trace id beside it.
 */
import {
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { tracer } from "./otlp.ts";

export type { Context as TraceContext } from "@opentelemetry/api";

const AGENT_NAME = "supabase-agent";

/** The trace id of a turn: its UUID's hex digits. */
export function traceIdOfTurn(turnId: string): string {
  return turnId.replaceAll("-", "").toLowerCase();
}

/** The span id of a turn's first run, the root of its trace. */
export function rootSpanIdOfTurn(turnId: string): string {
  return traceIdOfTurn(turnId).slice(16);
}

/** The trace id of the span a context carries, for the usage row written beside it. */
export function traceIdOf(context: Context | undefined): string | undefined {
  const spanContext = context && trace.getSpanContext(context);
  return spanContext && trace.isSpanContextValid(spanContext) ? spanContext.traceId : undefined;
}

export function contextOf(span: Span): Context {
  return trace.setSpan(ROOT_CONTEXT, span);
}

/**
 * The span of one run of a turn on this isolate: the root of the turn's trace for its first
 * run, a child of that root for a run that continues it (`continued`).
 */
export function startTurnSpan(
  turn: { turnId: string; sessionId: string; model: string },
  continued: boolean,
): Span {
  const traceId = traceIdOfTurn(turn.turnId);
  const root = rootSpanIdOfTurn(turn.turnId);
  return tracer().startSpanWithIds(`invoke_agent ${AGENT_NAME}`, {
    kind: SpanKind.INTERNAL,
    attributes: {
      "gen_ai.operation.name": "invoke_agent",
      "gen_ai.agent.name": AGENT_NAME,
      "gen_ai.conversation.id": turn.sessionId,
      "gen_ai.request.model": turn.model,
      "agent.turn.id": turn.turnId,
      "agent.turn.continued": continued,
    },
  }, continued ? { traceId, parentSpanId: root } : { traceId, spanId: root });
}

/** How a run ended: the turn's state (or `parked` / `left`), its error code, its totals. */
export function endTurnSpan(
  span: Span,
  run: {
    state: string;
    code?: string;
    steps?: number;
    inputTokens?: number;
    outputTokens?: number;
    model?: string;
  },
): void {
  span.setAttributes({
    "agent.turn.state": run.state,
    ...(run.steps === undefined ? {} : { "agent.turn.steps": run.steps }),
    ...(run.inputTokens === undefined ? {} : { "gen_ai.usage.input_tokens": run.inputTokens }),
    ...(run.outputTokens === undefined ? {} : { "gen_ai.usage.output_tokens": run.outputTokens }),
    ...(run.model ? { "gen_ai.response.model": run.model } : {}),
  });
  failWith(span, run.code);
  span.end();
}

/** One LLM call of a turn (a CLIENT span under the turn's run). */
export function startLlmSpan(
  parent: Context | undefined,
  request: { model: string; baseUrl: string; maxTokens?: number },
): Span {
  let host = "";
  try {
    host = new URL(request.baseUrl).hostname;
  } catch {
    // A base URL that does not parse fails the call itself; the span just lacks the host.
  }
  return tracer().startSpan(`chat ${request.model}`, {
    kind: SpanKind.CLIENT,
    attributes: {
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": host.endsWith("openrouter.ai") ? "openrouter" : "openai",
      "gen_ai.request.model": request.model,
      ...(request.maxTokens ? { "gen_ai.request.max_tokens": request.maxTokens } : {}),
      ...(host ? { "server.address": host } : {}),
    },
  }, parent);
}

export function endLlmSpan(
  span: Span,
  result: {
    model: string;
    inputTokens: number;
    outputTokens: number;
    finishReason?: string;
    errorCode?: string;
  },
): void {
  span.setAttributes({
    "gen_ai.response.model": result.model,
    "gen_ai.usage.input_tokens": Math.round(result.inputTokens),
    "gen_ai.usage.output_tokens": Math.round(result.outputTokens),
  });
  failWith(span, result.errorCode);
  span.end();
}

/** One tool call (agent or MCP); a root span when the call belongs to no trace yet. */
export function startToolSpan(
  parent: Context | undefined,
  call: { name: string; callId?: string; source: string },
): Span {
  return tracer().startSpan(`execute_tool ${call.name}`, {
    kind: SpanKind.INTERNAL,
    attributes: {
      "gen_ai.operation.name": "execute_tool",
      "gen_ai.tool.name": call.name,
      ...(call.callId ? { "gen_ai.tool.call.id": call.callId } : {}),
      "agent.tool.source": call.source,
    },
  }, parent);
}

export function endToolSpan(span: Span, outcome: { status: string; code?: string }): void {
  span.setAttribute("agent.tool.status", outcome.status);
  failWith(span, outcome.code);
  span.end();
}

/** `error.type` and an ERROR status: the conventions' mark of a failed operation. */
function failWith(span: Span, code: string | undefined): void {
  if (!code) return;
  span.setAttribute("error.type", code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: code });
}

/**
 * The parent a caller named in a W3C `traceparent` header (an MCP client's trace), or
 * undefined for none or a malformed one.
 */
export function contextFromTraceparent(header: string | null): Context | undefined {
  const match = header?.trim().match(/^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/);
  if (!match) return undefined;
  const spanContext = {
    traceId: match[1],
    spanId: match[2],
    traceFlags: parseInt(match[3], 16),
    isRemote: true,
  };
  if (!trace.isSpanContextValid(spanContext)) return undefined;
  return trace.setSpanContext(ROOT_CONTEXT, spanContext);
}
