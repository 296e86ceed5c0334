/**
 * The OAuth rows in Postgres, all as the service role (no user reads a flow or a token, not even
 * his own): sign-ins under way (`mcp_oauth_flows`, taken once by `state`), servers stored with
 * their sealed token set, and the refresh lease on a credential (holder, until; taken in one
 * statement, so no row lock outlives it) with the `version` that moves at each stored refresh.
 */
import { asServiceRole, queryAsServiceRole, type Sql } from "../db/client.ts";
import { inlineSql } from "../db/inline_sql.ts";
import type { Json } from "../db/database.types.ts";
import { type NewServer, type StoreResult, storeResultOf } from "./store.ts";

export interface PendingFlow {
  state: string;
  userId: string;
  /** The id the server will have (or has): the flow's secret is sealed to it. */
  serverId: string;
  /** A new sign-in for a stored server: its credential is replaced, nothing else. */
  reconnect: boolean;
  slug: string;
  displayName: string | null;
  url: string;
  /** The web app's origin the callback page tells, if the request came from one. */
  returnOrigin: string | null;
  /** Sealed: the PKCE verifier, the registered client, the authorization server's metadata. */
  secret: Uint8Array;
  expiresAt: Date;
}

/** Stores a sign-in under way; expired ones of anybody go in the same statement. */
export async function insertFlow(sql: Sql, flow: PendingFlow): Promise<void> {
  await asServiceRole(
    sql,
    (tx) =>
      tx`with expired as (
        delete from public.mcp_oauth_flows where expires_at < now()
      )
      insert into public.mcp_oauth_flows (state, user_id, server_id, reconnect, slug,
        display_name, url, return_origin, secret, expires_at)
      values (${flow.state}, ${flow.userId}::uuid, ${flow.serverId}::uuid, ${flow.reconnect},
        ${flow.slug},
        ${flow.displayName}, ${flow.url}, ${flow.returnOrigin}, ${flow.secret}::bytea,
        ${flow.expiresAt})`,
  );
}

/** The flow of this `state`, removed as it is read (single use); null if none or expired. */
export async function takeFlow(sql: Sql, state: string): Promise<PendingFlow | null> {
  const [row] = await asServiceRole(sql, (tx) =>
    tx<
      (Omit<PendingFlow, "expiresAt"> & { expiresAt: Date; live: boolean })[]
    >`delete from public.mcp_oauth_flows where state = ${state}
      returning state, user_id as "userId", server_id as "serverId", reconnect, slug,
        display_name as "displayName", url, return_origin as "returnOrigin", secret,
        expires_at as "expiresAt", expires_at > now() as live`);
  if (!row?.live) return null;
  const { live: _live, ...flow } = row;
  return flow;
}

/** Stores a signed-in server whole (`mcp_store_server`) with its access token's expiry. */
export async function storeOAuthServer(
  sql: Sql,
  server: Omit<NewServer, "authMode" | "secret"> & { secret: Uint8Array; expiresAt: Date | null },
): Promise<StoreResult> {
  return await storeResultOf(() =>
    asServiceRole(
      sql,
      (tx) =>
        tx`select public.mcp_store_oauth_server(${server.id}::uuid, ${server.userId}::uuid,
        ${server.slug}, ${server.displayName}, ${server.url}, ${server.secret}::bytea,
        ${server.expiresAt}, ${tx.json(server.tools as unknown as Json[])}::jsonb,
        ${tx.json(server.warnings)}::jsonb)`,
    )
  );
}

/** A new sign-in's token set for the user's stored OAuth server; it is connected again. */
export async function replaceOAuthCredential(
  sql: Sql,
  serverId: string,
  userId: string,
  secret: Uint8Array,
  expiresAt: Date | null,
): Promise<boolean> {
  const [row] = await asServiceRole(
    sql,
    (tx) =>
      tx<{ replaced: boolean }[]>`select public.mcp_replace_oauth_credential(${serverId}::uuid,
      ${userId}::uuid, ${secret}::bytea, ${expiresAt}) as replaced`,
  );
  return row.replaced;
}

/** A server's stored token set as a call reads it. */
export interface StoredToken {
  secret: Uint8Array;
  version: number;
  expiresAt: Date | null;
  /** Another isolate holds a live refresh lease. */
  leased: boolean;
  status: string;
}

export async function loadToken(
  sql: Sql,
  userId: string,
  serverId: string,
): Promise<StoredToken | null> {
  // One round trip (every call of a signed-in server reads this): no transaction around it.
  const [row] = await queryAsServiceRole<StoredToken>(
    sql,
    inlineSql`
      select c.secret, c.version, c.expires_at as "expiresAt",
        coalesce(c.lease_until > clock_timestamp(), false) as leased, s.status
      from public.mcp_credentials c join public.mcp_servers s on s.id = c.server_id
      where c.server_id = ${serverId}::uuid and c.user_id = ${userId}::uuid`,
  );
  return row ?? null;
}

/** True when `holder` now holds the lease for `leaseMs` (none live, `version` unchanged). */
export async function takeRefreshLease(
  sql: Sql,
  serverId: string,
  holder: string,
  version: number,
  leaseMs: number,
): Promise<boolean> {
  const [row] = await asServiceRole(
    sql,
    (tx) =>
      tx<{ taken: boolean }[]>`select public.mcp_take_refresh_lease(${serverId}::uuid,
      ${holder}::uuid, ${version}::int, ${leaseMs}::int) as taken`,
  );
  return row.taken;
}

/** Stores a refreshed token set for the lease's holder; false when the lease was lost. */
export async function storeRefreshed(
  sql: Sql,
  serverId: string,
  holder: string,
  version: number,
  secret: Uint8Array,
  expiresAt: Date | null,
): Promise<boolean> {
  const [row] = await asServiceRole(
    sql,
    (tx) =>
      tx<{ stored: boolean }[]>`select public.mcp_store_refreshed(${serverId}::uuid,
      ${holder}::uuid, ${version}::int, ${secret}::bytea, ${expiresAt}) as stored`,
  );
  return row.stored;
}

/** Gives the lease up; with `needsSignIn` the server is marked "needs sign-in" too. */
export async function endRefresh(
  sql: Sql,
  serverId: string,
  holder: string,
  needsSignIn: boolean,
): Promise<void> {
  await asServiceRole(
    sql,
    (tx) => tx`select public.mcp_end_refresh(${serverId}::uuid, ${holder}::uuid, ${needsSignIn})`,
  );
}
