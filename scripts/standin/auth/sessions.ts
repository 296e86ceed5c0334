/**
 * Sessions and rotating refresh tokens, stored like GoTrue stores them: one `auth.sessions`
 * row per sign-in, and in `auth.refresh_tokens` a chain of tokens for it, each new one
 * naming the one it replaced as `parent`. Only the newest token of a session is unrevoked.
 *
 * Every change to a session's tokens happens while holding that session's row lock, taken
 * before any token row is touched, so concurrent refreshes of one session queue up instead
 * of racing (and cannot deadlock against a family revocation).
 */
import { base64url } from "jose";
import type { Tx } from "../../../supabase/functions/_shared/db/client.ts";

const INSTANCE_ID = "00000000-0000-0000-0000-000000000000";
const REFRESH_TOKEN_BYTES = 24;

export interface IssuedSession {
  sessionId: string;
  refreshToken: string;
}

/** An unguessable opaque token (GoTrue's are random too; nothing parses them). */
function newRefreshToken(): string {
  return base64url.encode(crypto.getRandomValues(new Uint8Array(REFRESH_TOKEN_BYTES)));
}

export async function startSession(
  tx: Tx,
  userId: string,
  now: Date,
  userAgent: string | null,
): Promise<IssuedSession> {
  const sessionId = crypto.randomUUID();
  await tx`
    insert into auth.sessions (id, user_id, created_at, updated_at, aal, user_agent)
    values (${sessionId}, ${userId}, ${now}, ${now}, 'aal1', ${userAgent})`;
  const refreshToken = await insertRefreshToken(tx, { userId, sessionId, parent: null, now });
  return { sessionId, refreshToken };
}

async function insertRefreshToken(
  tx: Tx,
  input: { userId: string; sessionId: string; parent: string | null; now: Date },
): Promise<string> {
  const token = newRefreshToken();
  await tx`
    insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at,
      updated_at, parent, session_id)
    values (${INSTANCE_ID}, ${token}, ${input.userId}, false, ${input.now}, ${input.now},
      ${input.parent}, ${input.sessionId})`;
  return token;
}

export type RefreshOutcome =
  | { kind: "rotated"; userId: string; sessionId: string; refreshToken: string }
  | { kind: "not_found" }
  /** A revoked token came back outside the reuse window: the session's tokens are revoked. */
  | { kind: "reused" };

interface TokenRow {
  token: string;
  user_id: string;
  revoked: boolean;
  updated_at: Date;
  parent: string | null;
  session_id: string | null;
}

/**
 * Exchanges a refresh token for the next one of its session.
 *
 * An unrevoked token is revoked and gets a child. A revoked token that is the parent of the
 * session's current token, replayed within `reuseIntervalMs` of its rotation, gets that same
 * current token back (a client that lost the answer, or two tabs refreshing at once). Any
 * other revoked token is treated as stolen: every token of its session is revoked.
 */
export async function rotateRefreshToken(
  tx: Tx,
  presented: string,
  now: Date,
  reuseIntervalMs: number,
): Promise<RefreshOutcome> {
  const [located] = await tx<{ session_id: string | null }[]>`
    select session_id from auth.refresh_tokens where token = ${presented}`;
  if (!located?.session_id) return { kind: "not_found" };

  const [session] = await tx<{ id: string; user_id: string }[]>`
    select id, user_id from auth.sessions where id = ${located.session_id} for update`;
  if (!session) return { kind: "not_found" };

  // Read again under the session lock: a concurrent refresh may have rotated it meanwhile.
  const [token] = await tx<TokenRow[]>`
    select token, user_id, revoked, updated_at, parent, session_id
    from auth.refresh_tokens where token = ${presented}`;
  if (!token || token.session_id !== session.id) return { kind: "not_found" };

  if (!token.revoked) {
    await tx`
      update auth.refresh_tokens set revoked = true, updated_at = ${now}
      where token = ${presented}`;
    const refreshToken = await insertRefreshToken(tx, {
      userId: session.user_id,
      sessionId: session.id,
      parent: presented,
      now,
    });
    await touchSession(tx, session.id, now);
    return { kind: "rotated", userId: session.user_id, sessionId: session.id, refreshToken };
  }

  const [current] = await tx<{ token: string; parent: string | null }[]>`
    select token, parent from auth.refresh_tokens
    where session_id = ${session.id} and revoked = false
    order by id desc limit 1`;
  const withinReuseWindow = now.getTime() - token.updated_at.getTime() <= reuseIntervalMs;
  if (current && current.parent === presented && withinReuseWindow) {
    await touchSession(tx, session.id, now);
    return {
      kind: "rotated",
      userId: session.user_id,
      sessionId: session.id,
      refreshToken: current.token,
    };
  }

  await tx`
    update auth.refresh_tokens set revoked = true, updated_at = ${now}
    where session_id = ${session.id} and revoked = false`;
  return { kind: "reused" };
}

async function touchSession(tx: Tx, sessionId: string, now: Date): Promise<void> {
  await tx`
    update auth.sessions set updated_at = ${now}, refreshed_at = ${now}
    where id = ${sessionId}`;
}

export async function sessionExists(tx: Tx, sessionId: string, userId: string): Promise<boolean> {
  const [row] = await tx`
    select 1 from auth.sessions where id = ${sessionId} and user_id = ${userId}`;
  return row !== undefined;
}

export type LogoutScope = "global" | "local" | "others";

/** Deletes sessions (their refresh tokens go with them, by cascade), as GoTrue's logout. */
export async function endSessions(
  tx: Tx,
  userId: string,
  sessionId: string | undefined,
  scope: LogoutScope,
): Promise<void> {
  if (scope === "global" || sessionId === undefined) {
    await tx`delete from auth.sessions where user_id = ${userId}`;
  } else if (scope === "local") {
    await tx`delete from auth.sessions where id = ${sessionId} and user_id = ${userId}`;
  } else {
    await tx`delete from auth.sessions where user_id = ${userId} and id <> ${sessionId}`;
  }
}
