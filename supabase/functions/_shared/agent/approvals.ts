/**
 * Approvals for tools whose grant says `ask`: the turn parks in Postgres until the user's
 * `approve` frame (through any isolate: the one it reaches takes the turn and continues it)
 * or until its wait expires (denied). A decision may be remembered — for the rest of the
 * session (`tool_approvals`, written as the user: it only ever skips the question of an `ask`
 * grant) or for good (the user's grant becomes `auto`, written as service_role like every
 * grant).
 */
import type { AccountRefusal } from "../account_access.ts";
import { type JwtClaims, queryAsServiceRole, queryAsUser, type Sql } from "../db/client.ts";
import type { StoredToolCall } from "../history/protocol.ts";
import type { ParkedAnswer, TurnCheckpoint } from "./turn_checkpoint.ts";
import type { ResolvedPermission } from "../permissions.ts";
import { inlineSql, jsonText } from "../db/inline_sql.ts";

/**
 * Names the call the turn now waits for, and its tool, so an `approve` on another isolate can
 * find it and check edited arguments against the tool (its checkpoint has the call only once
 * the turn has parked). `null`: it waits for none.
 */
export async function awaitApproval(
  sql: Sql,
  turnId: string,
  call: { id: string; tool: string } | null,
) {
  await queryAsServiceRole(
    sql,
    inlineSql`
      update public.agent_turns
      set awaiting_call_id = ${call?.id ?? null}, awaiting_tool = ${call?.tool ?? null},
        approval_answer = null
      where id = ${turnId}::uuid`,
  );
}

/** What `agent_answer_parked` and `agent_adopt_turns` hand the isolate that takes a turn. */
export interface TurnResumption {
  kind: "adopted" | "expired" | "continue";
  turn_id: string;
  user_id: string;
  session_id: string;
  assistant_row_id: string;
  assistant_message_id: string;
  user_message_id: string;
  user_content: string;
  model: string;
  epoch: number;
  steps: number;
  reserved_tokens: number;
  /** numeric: a number in JSON. */
  reserved_cost_usd: number | string;
  checkpoint: TurnCheckpoint | null;
  answer: ParkedAnswer | null;
  last_seq: number;
  content: string;
  tool_calls: StoredToolCall[];
  restarts: { epoch: number; seq: number }[];
  /** The turn's model continues a partial answer (`models.continues_partial_answers`). */
  continues_partial: boolean;
  /** Why the user may not act any more (`account_refusal`), or null. */
  refusal: AccountRefusal | null;
}

export type ParkedAnswerOutcome =
  /** No turn of the user waits for this call (or is parked, for a cancel). */
  | { kind: "none" }
  /** The turn has not parked yet: its isolate picks the answer up with its park. */
  | { kind: "left"; turn_id: string }
  /** The turn was parked: it is ours now, to continue. */
  | TurnResumption;

/**
 * Answers a parked turn's approval (by `callId`), or cancels a parked turn (by `turnId`, with
 * the answer `cancel`); a parked turn is taken by `owner` on the way, in the same statement.
 */
export async function answerParked(
  sql: Sql,
  owner: string,
  userId: string,
  target: { callId?: string; turnId?: string },
  answer: ParkedAnswer,
): Promise<ParkedAnswerOutcome> {
  const [row] = await queryAsServiceRole<{ outcome: ParkedAnswerOutcome | null }>(
    sql,
    inlineSql`select public.agent_answer_parked(${owner}, ${userId}::uuid,
      ${target.turnId ?? null}::uuid, ${target.callId ?? null}, ${jsonText(answer)}::jsonb)
      as outcome`,
  );
  return row.outcome ?? { kind: "none" };
}

/** The call a turn of the user waits for approval of, with its tool's name, if any. */
export async function awaitedCall(
  sql: Sql,
  userId: string,
  callId: string,
): Promise<{ tool: string } | undefined> {
  const [row] = await queryAsServiceRole<{ tool: string | null }>(
    sql,
    inlineSql`
      select coalesce(t.awaiting_tool,
               -- Named before awaiting_tool existed: the parked checkpoint has the call.
               (select c ->> 'name' from jsonb_array_elements(k.checkpoint -> 'calls') c
                where c ->> 'id' = t.awaiting_call_id)) as tool
      from public.agent_turns t
      left join public.agent_turn_checkpoints k on k.turn_id = t.id
      where t.user_id = ${userId}::uuid and t.awaiting_call_id = ${callId}
        and t.state in ('running', 'parked')`,
  );
  return row?.tool ? { tool: row.tool } : undefined;
}

/** Whether the user allowed `tool` for the rest of this session (read as the user). */
export async function approvedForSession(
  sql: Sql,
  claims: JwtClaims,
  sessionId: string,
  tool: string,
): Promise<boolean> {
  const rows = await queryAsUser(
    sql,
    claims,
    inlineSql`
      select 1 from public.tool_approvals a
      where a.user_id = (select auth.uid()) and a.session_id = ${sessionId}::uuid
        and a.tool = ${tool}`,
  );
  return rows.length > 0;
}

/** Remembers an approval for the rest of the session (written as the user). */
export async function rememberForSession(
  sql: Sql,
  claims: JwtClaims,
  sessionId: string,
  tool: string,
): Promise<void> {
  await queryAsUser(
    sql,
    claims,
    inlineSql`
      insert into public.tool_approvals (session_id, tool) values (${sessionId}::uuid, ${tool})
      on conflict on constraint tool_approvals_session_tool_key do nothing`,
  );
}

/**
 * "Always allow": the user's own grant for the tool's permission becomes `auto`, keeping the
 * constraints of the grant that decided (a '*' grant is left alone: the tool gets its own).
 */
export async function rememberAlways(
  sql: Sql,
  userId: string,
  permission: ResolvedPermission,
): Promise<void> {
  await queryAsServiceRole(
    sql,
    inlineSql`
      insert into public.permissions (user_id, tool, approval_mode, constraints)
      values (${userId}::uuid, ${permission.tool}, 'auto',
        ${jsonText(permission.constraints)}::jsonb)
      on conflict on constraint permissions_user_tool_key
      do update set approval_mode = 'auto', updated_at = now()`,
  );
}
