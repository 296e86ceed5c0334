/**
 * Whether a signed-in user may still act. An access token stays valid until `exp` after its
 * user is deleted, banned or signed out everywhere (tokens are stateless), so what a socket
 * does long after its upgrade is checked against Auth's own rows (`public.account_refusal`,
 * 20261203000500_account_access.sql): at the socket's start, at each heartbeat, and before
 * each new turn.
 */
import type { JwtClaims, Tx } from "./db/client.ts";
import { inlineSql, jsonText, run } from "./db/inline_sql.ts";

/** Why a user may not act any more. */
export const ACCOUNT_REFUSALS = ["user_deleted", "user_banned", "session_ended"] as const;
export type AccountRefusal = (typeof ACCOUNT_REFUSALS)[number];

export interface Account {
  /** The key the answer comes back under (a connection's id, say). */
  key: string;
  userId: string;
  /** The token's `session_id`; none is not checked. */
  sessionId?: string;
}

const MESSAGES: Record<AccountRefusal, string> = {
  user_deleted: "This user no longer exists",
  user_banned: "This user is banned",
  session_ended: "This session was signed out; sign in again",
};

export function accountRefusalMessage(refusal: AccountRefusal): string {
  return MESSAGES[refusal];
}

/** The token's session id, when it names one. */
export function sessionIdOf(claims: JwtClaims): string | undefined {
  const sessionId = claims.session_id;
  return typeof sessionId === "string" && UUID.test(sessionId) ? sessionId : undefined;
}

/** The refused accounts among `accounts`, by key; `tx` runs as service_role. */
export async function accountRefusals(
  tx: Tx,
  accounts: readonly Account[],
): Promise<Map<string, AccountRefusal>> {
  if (accounts.length === 0) return new Map();
  const rows = await run<{ key: string; refusal: AccountRefusal }>(
    tx,
    inlineSql`
      select a.key, r.refusal
      from jsonb_to_recordset(${
      jsonText(accounts.map((a) => ({
        key: a.key,
        user_id: a.userId,
        session_id: a.sessionId ?? null,
      })))
    }::jsonb) as a(key text, user_id uuid, session_id uuid)
      cross join lateral public.account_refusal(a.user_id, a.session_id) as r(refusal)
      where r.refusal is not null`,
  );
  return new Map(rows.map((row) => [row.key, row.refusal]));
}

const UUID = /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i;
