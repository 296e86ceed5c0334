/**
 * A `chat` frame, up to the running turn, in two round trips:
 *
 * 1. Read as the user (`readChatContext`): an earlier attempt of the same chat (same client
 *    id → follow its turn, start nothing), his grants and the session's recent history.
 * 2. Start the turn (`startTurn`, one transaction): interrupt the session's turns of dead
 *    isolates, reserve the token quota, store the user message with its (still empty,
 *    `streaming`) answer, store the turn. A refused or failed start leaves nothing behind,
 *    so such a chat can simply be sent again later.
 *
 * Concurrent attempts of one chat end with one turn: an attempt that loses the race to store
 * the messages reads again and follows the winner's turn.
 */
import type { ChatFrame, ServerFrame } from "../agent_protocol.ts";
import { appendRow } from "../history/append.ts";
import { errorFromDatabase, isConflict, isRace } from "../history/database_errors.ts";
import { parseAppendInput } from "../history/input.ts";
import type { HistoryError } from "../history/protocol.ts";
import { type AgentRuntime, toolsFor } from "./runtime.ts";
import type { TurnClient } from "./turn_client.ts";
import { estimatePromptTokens } from "./limits.ts";
import { LiveTurn } from "./live_turn.ts";
import { readChatContext } from "./chat_context.ts";
import { buildMessages } from "./prompt.ts";
import { followTurn } from "./resume.ts";
import { llmToolDefinitions, offeredTools } from "./tools.ts";
import { startTurn } from "./turn_store.ts";

const TITLE_CHARACTERS = 80;
/** How often a chat that lost a race to a concurrent attempt of itself reads again. */
const RACE_RETRIES = 3;

export interface ChatOptions {
  /** Set when starting a queued chat (`chat_queue.ts`): the turn id its followers wait for. */
  queuedTurnId?: string;
  /**
   * Told once the chat is stored (started or queued) and the client heard so, before the
   * handler goes on to follow a turn (which lasts as long as the turn).
   */
  onAnswered?: () => void;
}

export async function handleChat(
  runtime: AgentRuntime,
  client: TurnClient,
  frame: ChatFrame,
  options: ChatOptions = {},
): Promise<void> {
  const { user } = client;
  const { sql, config, llm } = runtime.deps;
  const caller = { id: user.id, claims: user.claims, accessToken: () => client.accessToken };
  const registry = await toolsFor(runtime.deps, caller);

  const unknown = (frame.tools ?? []).findIndex((name) => !registry.some((t) => t.name === name));
  if (unknown >= 0) {
    return client.sendError({
      code: "bad_request",
      message: `tools[${unknown}]: there is no tool named "${frame.tools![unknown]}"`,
      retryable: false,
      ref: frame.id,
      path: `tools[${unknown}]`,
    });
  }

  const assistantId = await assistantMessageIdFor(frame.id);
  const model = frame.model ?? llm.model;
  for (let attempt = 0;; attempt++) {
    const context = await runtime.turnStarts.run(() =>
      readChatContext(sql, user.claims, {
        chatId: frame.id,
        sessionId: frame.session_id,
        historyMessages: config.historyMessages,
        exclude: [frame.id, assistantId],
      })
    );
    // A token outlives its user's deletion, ban or sign-out: no new turn for such a token.
    if (context.refusal) return client.revokeAccess(context.refusal);
    const { existing } = context;
    if (existing) {
      if (
        existing.role !== "user" || (frame.session_id && frame.session_id !== existing.sessionId)
      ) {
        return client.sendError({
          code: "conflict",
          message: "This message id is already used by another message",
          retryable: false,
          ref: frame.id,
        });
      }
      // A retry of a chat that already started its turn.
      if (existing.hasTurn && existing.turnId) {
        options.onAnswered?.();
        return await followTurn(runtime, client, existing.turnId, 0);
      }
    }

    const sessionId = existing?.sessionId ?? frame.session_id ?? crypto.randomUUID();
    const continuing = existing !== undefined || frame.session_id !== undefined;
    const messages = buildMessages(config.systemPrompt, context.history, frame.content);
    const llmTools = llmToolDefinitions(offeredTools(registry, context.grants, frame.tools));
    // The first LLM call's worst case; each further call is reserved before it is made.
    const promptTokens = estimatePromptTokens(messages, llmTools);
    const reserved = promptTokens + config.maxCompletionTokens;
    const proposedTurnId = existing?.turnId ?? options.queuedTurnId ?? crypto.randomUUID();
    const input = parseAppendInput({
      session_id: sessionId,
      title: continuing ? null : titleOf(frame.content),
      messages: [
        { id: frame.id, role: "user", content: frame.content, turn_id: proposedTurnId },
        {
          id: assistantId,
          role: "assistant",
          content: "",
          status: "streaming",
          model,
          turn_id: proposedTurnId,
        },
      ],
    });
    if (!input.ok) return refuseStorage(client, frame.id, input);

    let started;
    try {
      started = await runtime.turnStarts.run(() =>
        startTurn(sql, user.claims, {
          turnId: proposedTurnId,
          sessionId,
          title: input.value.title ?? null,
          messages: [appendRow(input.value.messages[0]), appendRow(input.value.messages[1])],
          owner: runtime.isolateId,
          model,
          promptTokens,
          completionTokens: config.maxCompletionTokens,
          // Always given: it also tells live turns from dead isolates' for the concurrent-turn
          // cap (for a new session, there is nothing of it to interrupt).
          staleAfterMs: config.staleAfterMs,
          policy: options.queuedTurnId ? "queued" : frame.policy ?? "reject",
          frame,
        })
      );
    } catch (error) {
      // A new chat names no session, so concurrent attempts of it each create one; the losers
      // find the winner's message in its session (AG409) and follow its turn on the next read.
      const lostRace = isRace(error) || (!continuing && isConflict(error));
      if (attempt < RACE_RETRIES && lostRace) continue;
      const refusal = errorFromDatabase(error);
      if (refusal) return refuseStorage(client, frame.id, refusal);
      throw error;
    }
    if (started.kind === "refused" && started.reason === "model_not_allowed") {
      return client.sendError({
        code: "model_not_allowed",
        message: `The model "${model}" is not offered by this server`,
        retryable: false,
        ref: frame.id,
        path: "model",
      });
    }
    if (started.kind === "refused") {
      return client.sendError({
        code: "rate_limited",
        reason: started.reason,
        message: quotaMessage(started.reason, reserved),
        retryable: started.reason !== "exceeds_capacity",
        ref: frame.id,
        ...(started.retryAfterMs === undefined ? {} : { retry_after_ms: started.retryAfterMs }),
      });
    }
    if (started.kind === "exists") return await followTurn(runtime, client, started.turnId, 0);
    // A queue head whose session is still busy stays queued; one already started is gone.
    if (started.kind === "gone" || (started.kind === "busy" && options.queuedTurnId)) return;
    if (started.kind === "busy") {
      return client.sendError({
        code: "session_busy",
        message: started.enqueueable === false
          ? "This session's turn waits for your approval; answer it (or stop it) first"
          : "This session is still answering; wait for its turn to end, or send the " +
            'chat with policy "enqueue"',
        retryable: true,
        ref: frame.id,
        running_turn_id: started.turnId,
      });
    }
    if (started.kind === "queued") {
      client.send({
        type: "queued",
        ref: frame.id,
        turn_id: started.turnId,
        session_id: sessionId,
        ahead: started.ahead,
        ...(started.runningTurnId ? { running_turn_id: started.runningTurnId } : {}),
      });
      options.onAnswered?.();
      return await followTurn(runtime, client, started.turnId, 0);
    }

    const turn = new LiveTurn({
      turnId: started.turnId,
      userId: user.id,
      sessionId: started.sessionId,
      assistantRowId: started.assistantRowId,
      assistantMessageId: assistantId,
      userMessageId: frame.id,
      model,
      reservedTokens: started.reservedTokens,
      reservedCostUsd: started.reservedCostUsd,
      ...(client.requestId ? { requestId: client.requestId } : {}),
      textFlushIntervalMs: config.textFlushIntervalMs,
    });
    turn.emit({
      type: "start",
      session_id: started.sessionId,
      message_id: assistantId,
      user_message_id: frame.id,
      model,
    });
    const send = (frame: ServerFrame) => client.send(frame);
    const unsubscribe = turn.subscribe(
      0,
      send,
      send,
      // Taken over, released or parked: follow it on from storage.
      (last) => void followTurn(runtime, client, turn.turnId, last, turn.epoch),
    );
    client.follow(turn.turnId, unsubscribe);
    void runtime.launch(turn, {
      caller,
      registry,
      grants: context.grants,
      llmTools,
      messages,
    }).finally(() => client.unfollow(turn.turnId, unsubscribe));
    return;
  }
}

/**
 * The assistant message's client id, derived from the user message's: a retried chat that
 * stores its pair again finds both already there instead of adding a second answer.
 */
export async function assistantMessageIdFor(userMessageId: string): Promise<string> {
  const input = new TextEncoder().encode(`agent-assistant:${userMessageId.toLowerCase()}`);
  const bytes = new Uint8Array(await crypto.subtle.digest("SHA-256", input)).slice(0, 16);
  bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: a custom, name-derived uuid
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

function titleOf(content: string): string {
  const firstLine = content.trim().split("\n")[0].trim();
  const characters = [...firstLine];
  return characters.length <= TITLE_CHARACTERS
    ? firstLine
    : `${characters.slice(0, TITLE_CHARACTERS - 1).join("")}…`;
}

function quotaMessage(reason: string, tokens: number): string {
  switch (reason) {
    case "exceeds_capacity":
      return `This chat needs about ${tokens} tokens, more than your token bucket holds`;
    case "daily_token_cap":
      return "Your daily token allowance is used up";
    case "daily_cost_cap":
      return "Your daily cost allowance is used up";
    case "concurrent_turns":
      return "You already have as many turns running as you may; wait for one to end";
    default:
      return `Your token bucket does not hold the ${tokens} tokens this chat reserves yet`;
  }
}

function refuseStorage(client: TurnClient, chatId: string, error: HistoryError): void {
  const code = error.code === "not_found"
    ? "not_found"
    : error.code === "conflict"
    ? "conflict"
    : "bad_request";
  const field = error.path?.startsWith("messages[0].") ? error.path.slice(12) : undefined;
  client.sendError({
    code,
    message: error.code === "not_found" ? "No session of yours has this id" : error.message,
    retryable: false,
    ref: chatId,
    ...(field === undefined ? {} : { path: field }),
  });
}
