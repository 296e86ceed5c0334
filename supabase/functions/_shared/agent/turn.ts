/**
 * The turn loop: stream the model, and while it asks for tools, run them and stream it
 * again, at most `maxSteps` LLM calls. It emits the turn's frames as things happen and
 * returns how the turn ended; storing that ending is the runtime's job.
 */
import type { ErrorCode, UnnumberedTurnFrame, Usage } from "../agent_protocol.ts";
import {
  type LlmErrorEvent,
  type LlmToolCall,
  type LlmUsage,
  streamChatCompletion,
} from "../llm_client.ts";
import type { UsageStatus } from "../usage.ts";
import { endLlmSpan, startLlmSpan, traceIdOfTurn } from "../tracing/genai.ts";
import { errorFrame, type LiveTurn, type TurnOutcome } from "./live_turn.ts";
import { awaitApproval } from "./approvals.ts";
import { estimatePromptTokens } from "./limits.ts";
import { executeToolCall } from "./tools.ts";
import {
  type CheckpointCall,
  initialCheckpoint,
  type ParkedAnswer,
  type TurnCheckpoint,
  unsettled,
} from "./turn_checkpoint.ts";
import type { TurnScope } from "./turn_scope.ts";
import { logFailure } from "../log.ts";

export interface TurnEnding {
  kind: "ended";
  outcome: TurnOutcome;
  /** The frames that close the turn. */
  closing: UnnumberedTurnFrame[];
  usage: Usage;
}

/**
 * How a run of the loop stops: the turn ended; it parked (waiting for an approval, stored,
 * held by no isolate); or it left this isolate (taken over, or released at shutdown).
 */
export type TurnRun = TurnEnding | { kind: "parked" } | { kind: "left" };

/** Where a run starts when it continues a turn (adopted, or parked and answered). */
export interface TurnResumePoint {
  /** The answer to the call the turn was parked on. */
  answer?: ParkedAnswer;
  /** The first LLM call of this run needs a reservation of its own (a takeover's re-request). */
  reserveFirst?: boolean;
}

/**
 * Runs the turn from its checkpoint (`turn.checkpoint`: the first one for a new turn) until
 * it ends, parks or leaves. Every step boundary and every tool call is checkpointed with the
 * turn's flush; a tool call is marked running (stored) before it runs, so a takeover never
 * runs a completed call again and knows which one was interrupted.
 */
export async function runTurn(
  turn: LiveTurn,
  scope: TurnScope,
  resume: TurnResumePoint = {},
): Promise<TurnRun> {
  const { config } = scope;
  if (!turn.checkpoint) turn.setCheckpoint(initialCheckpoint(scope));
  let checkpoint = turn.checkpoint!;
  const usage: Usage = { ...checkpoint.usage };
  const left = () => turn.abortReason === "lost" || turn.abortReason === "released";
  try {
    if (checkpoint.calls.length > 0) {
      const stop = await runCalls(turn, scope, resume.answer);
      if (stop === "parked") return { kind: "parked" };
      if (turn.signal.aborted) return left() ? { kind: "left" } : aborted(turn, usage);
      checkpoint = turn.checkpoint!;
    }
    for (let step = checkpoint.step + 1;; step++) {
      const lastStep = step >= config.maxSteps;
      // The first call was reserved when the turn started; each further one (and a call asked
      // again after a takeover) is reserved at its worst case before it is made, so parallel
      // turns cannot spend past the user's limits.
      if (step > 1 || (resume.reserveFirst && step === checkpoint.step + 1)) {
        const refusal = await reserveNextStep(turn, scope);
        if (turn.signal.aborted) return left() ? { kind: "left" } : aborted(turn, usage);
        if (refusal) return refused(refusal, usage);
      }
      turn.emit({ type: "step", step: "calling_model", index: step });
      const result = await streamStep(turn, scope, lastStep);
      turn.steps = step;
      usage.prompt_tokens += result.usage.promptTokens;
      usage.completion_tokens += result.usage.completionTokens;
      usage.cost += result.usage.cost;
      if (turn.signal.aborted) return left() ? { kind: "left" } : aborted(turn, usage);
      if (result.error) return llmFailed(result.error, usage);
      if (result.calls.length === 0) return completed(turn, usage);
      if (lastStep) {
        return failed(
          "step_limit",
          `The model still asked for tools after ${config.maxSteps} steps`,
          false,
          usage,
        );
      }

      const calls = result.calls.map((call) => ({ ...call, id: newCallId() }));
      checkpoint = {
        ...turn.checkpoint!,
        progress: turn.checkpoint!.progress + 1,
        step,
        usage: { ...usage },
        // This step's text is complete: a takeover from here keeps it.
        text: turn.textPosition,
        messages: [...turn.checkpoint!.messages, {
          role: "assistant",
          content: result.text === "" ? null : result.text,
          tool_calls: calls.map((call) => ({
            id: call.id,
            type: "function",
            function: { name: call.name, arguments: call.arguments },
          })),
        }],
        calls: calls.map((call) => ({
          id: call.id,
          name: call.name,
          arguments: call.arguments,
          status: "pending",
        })),
      };
      turn.setCheckpoint(checkpoint);
      const stop = await runCalls(turn, scope, undefined);
      if (stop === "parked") return { kind: "parked" };
      if (turn.signal.aborted) return left() ? { kind: "left" } : aborted(turn, usage);
      checkpoint = turn.checkpoint!;
    }
  } catch (error) {
    if (turn.signal.aborted) return left() ? { kind: "left" } : aborted(turn, usage);
    logFailure("turn", error, { request_id: turn.requestId, turn_id: turn.turnId });
    return failed(
      "internal_error",
      "The turn failed on the server",
      true,
      usage,
    );
  }
}

/** Stores the turn's checkpoint now (with its frames); false when the turn is not ours. */
async function persist(turn: LiveTurn, scope: TurnScope, checkpoint: TurnCheckpoint) {
  turn.setCheckpoint(checkpoint);
  await scope.flushTurn(turn);
  return !turn.signal.aborted;
}

function withCall(
  checkpoint: TurnCheckpoint,
  id: string,
  change: Partial<CheckpointCall>,
  progressed = false,
): TurnCheckpoint {
  return {
    ...checkpoint,
    progress: checkpoint.progress + (progressed ? 1 : 0),
    calls: checkpoint.calls.map((call) => call.id === id ? { ...call, ...change } : call),
  };
}

/**
 * Runs the current step's tool calls that are not done, in order, then stores their results
 * in the conversation. A call that was running when an earlier isolate died is run again only
 * when its tool says it is idempotent; otherwise its outcome is `unknown`, and the model is
 * told so. A call that needs an approval parks the turn.
 */
async function runCalls(
  turn: LiveTurn,
  scope: TurnScope,
  answer: ParkedAnswer | undefined,
): Promise<"parked" | undefined> {
  for (const call of turn.checkpoint!.calls) {
    if (call.status === "done") continue;
    if (turn.signal.aborted) return undefined;
    if (call.status === "awaiting" && answer?.decision === "cancel") {
      turn.abort("cancelled");
      return undefined;
    }
    if (call.status === "running") {
      const tool = scope.registry.find((candidate) => candidate.name === call.name);
      if (!tool?.annotations.idempotentHint) {
        const content = unknownOutcome(turn, call);
        if (
          !await persist(
            turn,
            scope,
            withCall(turn.checkpoint!, call.id, { status: "done", content }, true),
          )
        ) return undefined;
        continue;
      }
    }
    const callAnswer = call.status === "awaiting" ? answer ?? { decision: "expired" } : undefined;
    turn.emit({
      type: "step",
      step: "running_tool",
      index: turn.checkpoint!.step,
      tool: call.name,
      call_id: call.id,
    });
    const outcome = await executeToolCall(scope, turn, call, {
      announce: call.status !== "awaiting",
      ...(callAnswer ? { answer: callAnswer } : {}),
      beforeRun: () =>
        persist(turn, scope, withCall(turn.checkpoint!, call.id, { status: "running" })),
    });
    if ("park" in outcome) {
      const parked = await park(turn, scope, call.id, outcome.waitMs);
      if (parked === true) return "parked";
      if (parked === false) return undefined;
      // An answer overtook the park: go on with it here.
      return await runCalls(turn, scope, parked);
    }
    turn.setCheckpoint(
      withCall(turn.checkpoint!, call.id, { status: "done", content: outcome.content }, true),
    );
  }
  if (turn.signal.aborted) return undefined;
  const checkpoint = turn.checkpoint!;
  await persist(turn, scope, {
    ...checkpoint,
    progress: checkpoint.progress + 1,
    messages: [
      ...checkpoint.messages,
      ...checkpoint.calls.map((call) => ({
        role: "tool" as const,
        tool_call_id: call.id,
        content: call.content ?? "",
      })),
    ],
    calls: [],
    text: turn.textPosition,
  });
  return undefined;
}

/**
 * Parks the turn on `callId` (its reservation settled with the park, in one flush). True:
 * parked; false: the turn is not ours any more; an answer: it overtook the park.
 */
async function park(
  turn: LiveTurn,
  scope: TurnScope,
  callId: string,
  waitMs: number,
): Promise<boolean | ParkedAnswer> {
  const before = turn.checkpoint!;
  const used = unsettled(before);
  const total = before.usage.prompt_tokens + before.usage.completion_tokens;
  // When the question was asked: whoever runs the answered call reports the wait.
  const askedAt = Date.now();
  turn.setCheckpoint({
    ...withCall(before, callId, { status: "awaiting", askedAt }),
    settled: { tokens: Math.round(total), cost: before.usage.cost },
  });
  turn.requestPark({
    state: "parked",
    parkedUntil: new Date(Date.now() + waitMs).toISOString(),
    used: { tokens: used.tokens, costUsd: used.cost },
  });
  await scope.flushTurn(turn);
  if (turn.signal.aborted) return false;
  const stored = turn.storedState;
  if (stored?.state === "parked") return true;
  // Not parked: the answer is here already, and nothing was settled.
  turn.setCheckpoint(withCall(before, callId, { status: "awaiting", askedAt }));
  await awaitApproval(scope.sql, turn.turnId, null);
  return (stored?.approvalAnswer ?? { decision: "expired" }) as ParkedAnswer;
}

/** Records a call that was running when its isolate died as `unknown`; returns the model's text. */
function unknownOutcome(turn: LiveTurn, call: CheckpointCall): string {
  const error = {
    code: "outcome_unknown",
    message: `The server running ${call.name} stopped before it reported back: the call may or ` +
      "may not have taken effect. It was not run again.",
  };
  turn.recordToolCall({
    id: call.id,
    name: call.name,
    arguments: call.arguments,
    result: error,
    is_error: true,
    outcome: "unknown",
  });
  turn.emit({
    type: "tool_result",
    call_id: call.id,
    tool: call.name,
    result: error,
    is_error: true,
  });
  return JSON.stringify({ error });
}

/** Reserves the next LLM call; returns the refusal, or undefined when it may be made. */
async function reserveNextStep(
  turn: LiveTurn,
  scope: TurnScope,
): Promise<{ reason: string; retryAfterMs?: number } | undefined> {
  const reservation = await scope.reserveStep(
    turn.turnId,
    estimatePromptTokens(turn.checkpoint!.messages, scope.llmTools),
    scope.config.maxCompletionTokens,
  );
  if (!reservation.allowed) return reservation;
  turn.reservedTokens = reservation.reservedTokens;
  turn.reservedCostUsd = reservation.reservedCostUsd;
  return undefined;
}

interface StepResult {
  text: string;
  calls: LlmToolCall[];
  usage: LlmUsage;
  error?: LlmErrorEvent;
}

/** One LLM call, streamed into the turn; leaves one usage row. */
async function streamStep(
  turn: LiveTurn,
  scope: TurnScope,
  lastStep: boolean,
): Promise<StepResult> {
  const { llm, llmTools } = scope;
  const started = performance.now();
  // A step continued after a takeover starts with its stored partial text (see
  // `keepsPartialText`): the model is asked to go on from it, as an assistant prefill.
  const prefill = turn.content.slice(turn.checkpoint!.text.units);
  const result: StepResult = {
    text: prefill,
    calls: [],
    usage: { promptTokens: 0, completionTokens: 0, cost: 0 },
  };
  let answeredModel = turn.model;
  const span = startLlmSpan(scope.trace, {
    model: turn.model,
    baseUrl: llm.baseUrl,
    maxTokens: scope.config.maxCompletionTokens,
  });
  const events = streamChatCompletion({
    messages: prefill === ""
      ? turn.checkpoint!.messages
      : [...turn.checkpoint!.messages, { role: "assistant", content: prefill }],
    ...(llmTools.length > 0 ? { tools: llmTools } : {}),
    // The last step must answer in words: its tool calls could not be fed back.
    ...(llmTools.length > 0 && lastStep ? { toolChoice: "none" as const } : {}),
    maxTokens: scope.config.maxCompletionTokens,
  }, {
    baseUrl: llm.baseUrl,
    apiKey: llm.apiKey,
    model: turn.model,
    fallbackModels: turn.model === llm.model ? llm.fallbackModels : [],
    signal: turn.signal,
    timeoutMs: scope.config.llmTimeoutMs,
    fetch: llm.fetch,
    title: "Supabase agent",
  });
  let firstTokenMs: number | undefined;
  for await (const event of events) {
    switch (event.type) {
      case "text":
        firstTokenMs ??= performance.now() - started;
        result.text += event.delta;
        turn.appendText(event.delta);
        turn.emit({ type: "token", delta: event.delta });
        if (turn.awaitsProgress) {
          turn.awaitsProgress = false;
          scope.flushTurn(turn).catch((error) =>
            logFailure("storing a continued turn's first text", error, { turn_id: turn.turnId })
          );
        }
        break;
      case "tool_calls":
        result.calls = event.calls;
        break;
      case "done":
        result.usage = event.usage;
        answeredModel = event.model || answeredModel;
        break;
      case "error":
        result.error = event;
        break;
    }
  }
  turn.model = answeredModel;
  endLlmSpan(span, {
    model: answeredModel,
    inputTokens: result.usage.promptTokens,
    outputTokens: result.usage.completionTokens,
    ...(result.error ? { errorCode: result.error.code } : {}),
  });
  const status: UsageStatus = result.error
    ? (result.error.code === "aborted" ? "cancelled" : "error")
    : "ok";
  try {
    await scope.recordUsage({
      user_id: turn.userId,
      session_id: turn.sessionId,
      turn_id: turn.turnId,
      kind: "llm",
      source: "agent",
      name: answeredModel.slice(0, 200),
      prompt_tokens: Math.max(0, Math.round(result.usage.promptTokens)),
      completion_tokens: Math.max(0, Math.round(result.usage.completionTokens)),
      cost_usd: Math.max(0, result.usage.cost),
      latency_ms: performance.now() - started,
      status,
      trace_id: traceIdOfTurn(turn.turnId),
      ...(firstTokenMs === undefined ? {} : { ttft_ms: Math.round(firstTokenMs) }),
    });
  } catch (error) {
    logFailure("record_usage", error, { turn_id: turn.turnId });
  }
  return result;
}

function completed(turn: LiveTurn, usage: Usage): TurnEnding {
  return {
    kind: "ended",
    outcome: { state: "complete", messageStatus: "complete" },
    closing: [
      {
        type: "response",
        message_id: turn.assistantMessageId,
        content: turn.content,
      },
      {
        type: "complete",
        usage,
        steps: turn.steps,
        duration_ms: turn.elapsedMs(),
        model: turn.model,
      },
    ],
    usage,
  };
}

function failed(
  code: ErrorCode,
  message: string,
  retryable: boolean,
  usage: Usage,
): TurnEnding {
  return {
    kind: "ended",
    outcome: {
      state: "error",
      messageStatus: "error",
      error: { code, message },
    },
    closing: [errorFrame(code, message, retryable)],
    usage,
  };
}

/**
 * The user's limits refused the turn's next LLM call: the turn ends with what it has so far,
 * as a `rate_limited` error with consume_quota's `reason` (as a refused chat has).
 */
function refused(
  refusal: { reason: string; retryAfterMs?: number },
  usage: Usage,
): TurnEnding {
  if (refusal.reason === "not_running") {
    // Ended elsewhere (another isolate took it over as dead): as an interruption.
    const ending = failed("interrupted", "The turn stopped running on this server", true, usage);
    return {
      ...ending,
      outcome: { ...ending.outcome, state: "interrupted", messageStatus: "interrupted" },
    };
  }
  const message = `Your limits do not hold this turn's next model call (${refusal.reason})`;
  const ending = failed("rate_limited", message, refusal.reason !== "exceeds_capacity", usage);
  return {
    ...ending,
    closing: [{
      ...errorFrame("rate_limited", message, refusal.reason !== "exceeds_capacity"),
      reason: refusal.reason,
      ...(refusal.retryAfterMs === undefined ? {} : { retry_after_ms: refusal.retryAfterMs }),
    }],
  };
}

function llmFailed(error: LlmErrorEvent, usage: Usage): TurnEnding {
  // The upstream request is aborted only when the turn is, and that ending is `aborted`'s.
  const code: ErrorCode = error.code === "aborted" ? "cancelled" : `llm_${error.code}`;
  return failed(
    code,
    `The language model failed: ${error.message}`,
    error.retryable,
    usage,
  );
}

/** Ended by `cancel`, by a takeover (another isolate declared it dead), or by shutdown. */
export function aborted(turn: LiveTurn, usage: Usage): TurnEnding {
  if (turn.abortReason === "cancelled") {
    return {
      kind: "ended",
      outcome: {
        state: "cancelled",
        messageStatus: "stopped",
        error: { code: "cancelled", message: "Cancelled by the user" },
      },
      closing: [errorFrame("cancelled", "The turn was cancelled", false)],
      usage,
    };
  }
  const message = "The server running this turn stopped before it finished; the partial " +
    "answer is kept";
  return {
    kind: "ended",
    outcome: {
      state: "interrupted",
      messageStatus: "interrupted",
      error: { code: "interrupted", message },
    },
    closing: [errorFrame("interrupted", message, true)],
    usage,
  };
}

function newCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}
