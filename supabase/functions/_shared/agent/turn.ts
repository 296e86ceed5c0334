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
import { errorFrame, type LiveTurn, type TurnOutcome } from "./live_turn.ts";
import { estimatePromptTokens } from "./limits.ts";
import { executeToolCall } from "./tools.ts";
import type { TurnScope } from "./turn_scope.ts";

export interface TurnEnding {
  outcome: TurnOutcome;
  /** The frames that close the turn. */
  closing: UnnumberedTurnFrame[];
  usage: Usage;
}

export async function runTurn(
  turn: LiveTurn,
  scope: TurnScope,
): Promise<TurnEnding> {
  const usage: Usage = { prompt_tokens: 0, completion_tokens: 0, cost: 0 };
  const { config } = scope;
  try {
    for (let step = 1;; step++) {
      const lastStep = step >= config.maxSteps;
      // The first call was reserved when the turn started; each further one is reserved at its
      // worst case before it is made, so parallel turns cannot spend past the user's limits.
      if (step > 1) {
        const refusal = await reserveNextStep(turn, scope);
        if (turn.signal.aborted) return aborted(turn, usage);
        if (refusal) return refused(refusal, usage);
      }
      turn.emit({ type: "step", step: "calling_model", index: step });
      const result = await streamStep(turn, scope, lastStep);
      turn.steps = step;
      usage.prompt_tokens += result.usage.promptTokens;
      usage.completion_tokens += result.usage.completionTokens;
      usage.cost += result.usage.cost;
      if (turn.signal.aborted) return aborted(turn, usage);
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
      scope.messages.push({
        role: "assistant",
        content: result.text === "" ? null : result.text,
        tool_calls: calls.map((call) => ({
          id: call.id,
          type: "function",
          function: { name: call.name, arguments: call.arguments },
        })),
      });
      for (const call of calls) {
        turn.emit({
          type: "step",
          step: "running_tool",
          index: step,
          tool: call.name,
          call_id: call.id,
        });
        const outcome = await executeToolCall(scope, turn, call);
        scope.messages.push({
          role: "tool",
          tool_call_id: call.id,
          content: outcome.content,
        });
        if (turn.signal.aborted) return aborted(turn, usage);
      }
    }
  } catch (error) {
    if (turn.signal.aborted) return aborted(turn, usage);
    console.error(`agent: turn ${turn.turnId} failed`, error);
    return failed(
      "internal_error",
      "The turn failed on the server",
      true,
      usage,
    );
  }
}

/** Reserves the next LLM call; returns the refusal, or undefined when it may be made. */
async function reserveNextStep(
  turn: LiveTurn,
  scope: TurnScope,
): Promise<{ reason: string; retryAfterMs?: number } | undefined> {
  const reservation = await scope.reserveStep(
    turn.turnId,
    estimatePromptTokens(scope.messages, scope.llmTools),
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
  const result: StepResult = {
    text: "",
    calls: [],
    usage: { promptTokens: 0, completionTokens: 0, cost: 0 },
  };
  let answeredModel = turn.model;
  const events = streamChatCompletion({
    messages: scope.messages,
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
  for await (const event of events) {
    switch (event.type) {
      case "text":
        result.text += event.delta;
        turn.appendText(event.delta);
        turn.emit({ type: "token", delta: event.delta });
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
    });
  } catch (error) {
    console.error(
      `agent: could not record usage of turn ${turn.turnId}`,
      error,
    );
  }
  return result;
}

function completed(turn: LiveTurn, usage: Usage): TurnEnding {
  return {
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
