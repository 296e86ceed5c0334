/**
 * Approvals for tools whose grant says `ask`: the turn waits for the user's `approve` frame
 * (denied after a timeout), and a decision may be remembered — for the rest of the session
 * (`tool_approvals`, written as the user: it only ever skips the question of an `ask` grant)
 * or for good (the user's grant becomes `auto`, written as service_role like every grant).
 */
import type { ApproveFrame } from "../agent_protocol.ts";
import { type JwtClaims, queryAsServiceRole, queryAsUser, type Sql } from "../db/client.ts";
import type { ResolvedPermission } from "../permissions.ts";
import { inlineSql, jsonText } from "../db/inline_sql.ts";

export type ApprovalOutcome =
  | { kind: "allow"; remember?: ApproveFrame["remember"] }
  | { kind: "deny" }
  | { kind: "timeout" }
  | { kind: "aborted" };

interface Pending {
  userId: string;
  resolve: (outcome: ApprovalOutcome) => void;
}

/** Looks for an answer that arrived through another isolate. */
export interface RemoteAnswers {
  check(): Promise<ApprovalOutcome | undefined>;
  intervalMs: number;
}

/** The approvals this isolate's turns are waiting for, by call id. */
export class PendingApprovals {
  readonly #pending = new Map<string, Pending>();

  /**
   * Waits for the user's decision on `callId`: an `approve` on this isolate, or one `remote`
   * finds; at most `timeoutMs`, or until `signal` aborts.
   */
  wait(
    userId: string,
    callId: string,
    timeoutMs: number,
    signal: AbortSignal,
    remote?: RemoteAnswers,
  ): Promise<ApprovalOutcome> {
    if (signal.aborted) return Promise.resolve({ kind: "aborted" });
    return new Promise((resolve) => {
      let settled = false;
      let poll: ReturnType<typeof setTimeout> | undefined;
      const finish = (outcome: ApprovalOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearTimeout(poll);
        signal.removeEventListener("abort", onAbort);
        this.#pending.delete(callId);
        resolve(outcome);
      };
      const onAbort = () => finish({ kind: "aborted" });
      const timer = setTimeout(() => finish({ kind: "timeout" }), timeoutMs);
      signal.addEventListener("abort", onAbort, { once: true });
      this.#pending.set(callId, { userId, resolve: finish });
      const schedule = () => {
        if (!remote || settled) return;
        poll = setTimeout(() => {
          remote.check().then(
            (outcome) => outcome ? finish(outcome) : schedule(),
            (error) => {
              console.error(
                "agent: could not look for a remote approval",
                error,
              );
              schedule();
            },
          );
        }, remote.intervalMs);
      };
      schedule();
    });
  }

  /** Hands the decision to the waiting turn; false when no call of this user waits for it. */
  answer(userId: string, frame: ApproveFrame): boolean {
    const pending = this.#pending.get(frame.call_id);
    if (!pending || pending.userId !== userId) return false;
    pending.resolve(
      frame.decision === "allow"
        ? {
          kind: "allow",
          ...(frame.remember ? { remember: frame.remember } : {}),
        }
        : { kind: "deny" },
    );
    return true;
  }

  get size(): number {
    return this.#pending.size;
  }
}

/** Names the call the turn now waits for, so an `approve` on another isolate can find it. */
export async function awaitApproval(sql: Sql, turnId: string, callId: string | null) {
  await queryAsServiceRole(
    sql,
    inlineSql`
      update public.agent_turns
      set awaiting_call_id = ${callId}, approval_answer = null
      where id = ${turnId}::uuid`,
  );
}

/**
 * Leaves the user's decision for a call that waits on another isolate; false when none of
 * the user's running turns waits for this call.
 */
export async function answerRemotely(sql: Sql, userId: string, frame: ApproveFrame) {
  const answer = {
    decision: frame.decision,
    ...(frame.remember ? { remember: frame.remember } : {}),
  };
  const rows = await queryAsServiceRole(
    sql,
    inlineSql`
      update public.agent_turns
      set approval_answer = ${jsonText(answer)}::jsonb
      where user_id = ${userId}::uuid and state = 'running'
        and awaiting_call_id = ${frame.call_id}
      returning id`,
  );
  return rows.length > 0;
}

/** The answer another isolate left for the call, if any. */
export async function remoteAnswer(
  sql: Sql,
  turnId: string,
  callId: string,
): Promise<ApprovalOutcome | undefined> {
  const [row] = await queryAsServiceRole<{
    answer: { decision?: string; remember?: ApproveFrame["remember"] } | null;
  }>(
    sql,
    inlineSql`
      select t.approval_answer as answer from public.agent_turns t
      where t.id = ${turnId}::uuid and t.awaiting_call_id = ${callId}`,
  );
  const answer = row?.answer;
  if (!answer) return undefined;
  if (answer.decision === "allow") {
    return { kind: "allow", ...(answer.remember ? { remember: answer.remember } : {}) };
  }
  return { kind: "deny" };
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
