/**
 * What a chat needs before its turn starts, read as the user in one statement: an earlier
 * attempt of the same chat, the user's grants, the session's recent history, and whether the
 * user may still act. A taken-over turn that had no checkpoint yet is rebuilt from it too.
 */
import type { AccountRefusal } from "../account_access.ts";
import { type JwtClaims, queryAsUser, type Sql } from "../db/client.ts";
import { inlineSql } from "../db/inline_sql.ts";
import type { PermissionGrant } from "../permissions.ts";
import type { HistoryRow } from "./prompt.ts";
import type { MessageTurn } from "./turn_store.ts";

/** What a chat needs to know before it can start its turn. */
export interface ChatContext {
  /** The user's message with the chat's client id, stored by an earlier attempt. */
  existing: MessageTurn | undefined;
  grants: PermissionGrant[];
  /** The session's recent messages, oldest first (none for a new session). */
  history: HistoryRow[];
  /** Why the caller may not act any more (`public.caller_account_refusal`), if so. */
  refusal: AccountRefusal | null;
}

/** What `public.agent_chat_context` returns. */
interface ChatContextRow {
  existing: MessageTurn | null;
  grants: PermissionGrant[];
  history: HistoryRow[];
}

/** Reads a chat's context as the user, in one statement (one round trip). */
export async function readChatContext(
  sql: Sql,
  claims: JwtClaims,
  request: { chatId: string; sessionId?: string; historyMessages: number; exclude: string[] },
): Promise<ChatContext> {
  // Uuids only (the chat frame's id is validated, the other derived from it).
  const exclude = `{${request.exclude.join(",")}}`;
  const [{ context, refusal }] = await queryAsUser<
    { context: ChatContextRow; refusal: AccountRefusal | null }
  >(
    sql,
    claims,
    inlineSql`select public.agent_chat_context(${request.chatId}::uuid,
      ${request.sessionId ?? null}::uuid, ${request.historyMessages}, ${exclude}::uuid[])
      as context, public.caller_account_refusal() as refusal`,
  );
  const row = context;
  return {
    existing: row.existing ?? undefined,
    grants: row.grants,
    history: row.history,
    refusal,
  };
}
