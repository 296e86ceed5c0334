/**
 * A `chat` frame, up to the running turn, in two transactions:
 *
 * 1. As the user: find an earlier attempt of the same chat (same client id → follow that
 *    turn, start nothing), read his grants and the session's history; then as service_role:
 *    mark dead isolates' turns in the session interrupted and reserve the token quota.
 * 2. As the user: store the user message with its (still empty, `streaming`) assistant
 *    message; then as service_role: store the turn. Message and turn commit together.
 *
 * The user message is stored only once the quota admitted it, so a refused chat leaves
 * nothing behind and can simply be sent again later. Concurrent attempts of one chat end
 * with one turn: the others give their reservation back and follow it.
 */
import type { ChatFrame } from "../agent_protocol.ts";
import { asServiceRole, asUser } from "../db.ts";
import { appendMessages, type HistoryError } from "../history.ts";
import type { ChatMessage, ToolDefinition as LlmToolDefinition } from "../llm_client.ts";
import { type PermissionGrant, readGrants } from "../permissions.ts";
import type { AgentConnection } from "./connection.ts";
import { type QuotaDecision, reservationTokens, reserveQuota, settleQuota } from "./limits.ts";
import { LiveTurn } from "./live_turn.ts";
import { buildMessages, loadHistory } from "./prompt.ts";
import { followTurn } from "./resume.ts";
import { llmToolDefinitions, offeredTools } from "./tools.ts";
import {
  becomeServiceRole,
  findMessage,
  insertTurn,
  interruptStaleTurns,
  type MessageTurn,
} from "./turn_store.ts";

const TITLE_CHARACTERS = 80;

/** What the first transaction decided. */
type Preparation =
  | { kind: "retry"; turnId: string }
  | { kind: "conflict" }
  | {
    kind: "reserved";
    quota: QuotaDecision;
    existing: MessageTurn | undefined;
    sessionId: string;
    continuing: boolean;
    grants: PermissionGrant[];
    messages: ChatMessage[];
    llmTools: LlmToolDefinition[];
    reserved: number;
  };

export async function handleChat(connection: AgentConnection, frame: ChatFrame): Promise<void> {
  const { runtime, user } = connection;
  const { sql, config, registry, llm } = runtime.deps;

  const unknown = (frame.tools ?? []).findIndex((name) => !registry.some((t) => t.name === name));
  if (unknown >= 0) {
    return connection.sendError({
      code: "bad_request",
      message: `tools[${unknown}]: there is no tool named "${frame.tools![unknown]}"`,
      retryable: false,
      ref: frame.id,
      path: `tools[${unknown}]`,
    });
  }

  const assistantId = await assistantMessageIdFor(frame.id);
  const prepared = await asUser(sql, user.claims, async (tx): Promise<Preparation> => {
    const [existing, grants] = await Promise.all([findMessage(tx, frame.id), readGrants(tx)]);
    if (existing) {
      if (
        existing.role !== "user" || (frame.session_id && frame.session_id !== existing.sessionId)
      ) {
        return { kind: "conflict" };
      }
      // A retry of a chat that already started its turn.
      if (existing.hasTurn && existing.turnId) return { kind: "retry", turnId: existing.turnId };
    }
    const sessionId = existing?.sessionId ?? frame.session_id ?? crypto.randomUUID();
    const continuing = existing !== undefined || frame.session_id !== undefined;
    const history = continuing
      ? await loadHistory(tx, sessionId, config.historyMessages, [frame.id, assistantId])
      : [];
    const messages = buildMessages(config.systemPrompt, history, frame.content);
    const llmTools = llmToolDefinitions(offeredTools(registry, grants, frame.tools));
    const reserved = reservationTokens(messages, llmTools, config.maxCompletionTokens);

    // Issued together: postgres.js sends a transaction's statements in order, in one write,
    // so the role changes before the next two run, and all three cost one round trip.
    const [, , quota] = await Promise.all([
      becomeServiceRole(tx),
      continuing
        ? interruptStaleTurns(tx, user.id, config.staleAfterMs, { sessionId })
        : Promise.resolve([]),
      reserveQuota(tx, user.id, reserved),
    ]);
    return {
      kind: "reserved",
      quota,
      existing,
      sessionId,
      continuing,
      grants,
      messages,
      llmTools,
      reserved,
    };
  });

  if (prepared.kind === "retry") return await followTurn(connection, prepared.turnId, 0);
  if (prepared.kind === "conflict") {
    return connection.sendError({
      code: "conflict",
      message: "This message id is already used by another message",
      retryable: false,
      ref: frame.id,
    });
  }
  const { quota, reserved, continuing } = prepared;
  if (!quota.allowed) {
    return connection.sendError({
      code: "rate_limited",
      reason: quota.reason,
      message: quotaMessage(quota.reason, reserved),
      retryable: quota.reason !== "exceeds_capacity",
      ref: frame.id,
      ...(quota.retryAfterMs === undefined ? {} : { retry_after_ms: quota.retryAfterMs }),
    });
  }

  const model = frame.model ?? llm.model;
  const proposedTurnId = prepared.existing?.turnId ?? crypto.randomUUID();
  const refund = [{ userId: user.id, reservedTokens: reserved, usedTokens: 0, costUsd: 0 }];
  let stored;
  try {
    stored = await asUser(sql, user.claims, async (tx) => {
      const appended = await appendMessages(tx, {
        // A new chat names no session: concurrent attempts of it then share the session the
        // first one creates, instead of failing on each other's message ids.
        ...(continuing ? { session_id: prepared.sessionId } : {}),
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
      if (!appended.ok) {
        await Promise.all([becomeServiceRole(tx), settleQuota(tx, refund)]);
        return { ok: false as const, error: appended };
      }
      const [userRow, assistantRow] = appended.value.messages;
      // Stored meanwhile by a concurrent attempt of this chat: its turn id is the one to use.
      const turnId = userRow.inserted
        ? proposedTurnId
        : (await findMessage(tx, frame.id))?.turnId ?? proposedTurnId;
      const [, created] = await Promise.all([
        becomeServiceRole(tx),
        insertTurn(tx, {
          turnId,
          userId: user.id,
          sessionId: appended.value.session_id,
          userRowId: userRow.row_id,
          assistantRowId: assistantRow.row_id,
          owner: runtime.isolateId,
          model,
          reservedTokens: reserved,
        }),
      ]);
      if (!created) await settleQuota(tx, refund);
      return {
        ok: true as const,
        created,
        turnId,
        sessionId: appended.value.session_id,
        assistantRowId: assistantRow.row_id,
      };
    });
  } catch (error) {
    // Nothing of this chat was stored: its reservation goes back before the error surfaces.
    await asServiceRole(sql, (tx) => settleQuota(tx, refund));
    throw error;
  }
  if (!stored.ok) return refuseStorage(connection, frame.id, stored.error);
  if (!stored.created) return await followTurn(connection, stored.turnId, 0);

  const turn = new LiveTurn({
    turnId: stored.turnId,
    userId: user.id,
    sessionId: stored.sessionId,
    assistantRowId: stored.assistantRowId,
    assistantMessageId: assistantId,
    userMessageId: frame.id,
    model,
    reservedTokens: reserved,
  });
  turn.emit({
    type: "start",
    session_id: stored.sessionId,
    message_id: assistantId,
    user_message_id: frame.id,
    model,
  });
  const unsubscribe = turn.subscribe(0, (frame) => connection.send(frame));
  connection.follow(turn.turnId, unsubscribe);
  void runtime.launch(turn, {
    sql,
    claims: user.claims,
    llm,
    config,
    registry,
    llmTools: prepared.llmTools,
    grants: prepared.grants,
    approvals: runtime.approvals,
    messages: prepared.messages,
  }).finally(() => connection.unfollow(turn.turnId, unsubscribe));
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
    default:
      return `Your token bucket does not hold the ${tokens} tokens this chat reserves yet`;
  }
}

function refuseStorage(connection: AgentConnection, chatId: string, error: HistoryError): void {
  const code = error.code === "not_found"
    ? "not_found"
    : error.code === "conflict"
    ? "conflict"
    : "bad_request";
  const field = error.path?.startsWith("messages[0].") ? error.path.slice(12) : undefined;
  connection.sendError({
    code,
    message: error.code === "not_found" ? "No session of yours has this id" : error.message,
    retryable: false,
    ref: chatId,
    ...(field === undefined ? {} : { path: field }),
  });
}
