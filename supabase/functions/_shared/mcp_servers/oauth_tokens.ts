/**
 * A connected server's OAuth access token for one call, refreshed single-flight across every
 * isolate. Many isolates call one server at once (several agent workers, each many turns); a
 * rotating server answers a refresh with a new refresh token and revokes the whole grant when an
 * old one comes back, so two isolates refreshing at once would sign the user out.
 *
 * - A token is refreshed `refreshMarginMs` before it expires, by the one isolate that takes the
 *   lease (`mcp_take_refresh_lease`: a row value set in one statement, never a row lock held
 *   over the token request, never a mutex in memory), for the version it read.
 * - The others use the current token while it is still valid, else poll the row until its
 *   version moves (the holder stored) or the lease runs out (the holder died before its token
 *   request; the next one refreshes with the same, still valid, refresh token). Waiting is
 *   bounded: a lease and a little more.
 * - The holder stores with `mcp_store_refreshed` (only as holder, only over the version it
 *   refreshed). A holder killed after the server rotated, before the store, leaves the old
 *   refresh token; the next refresh is then a reuse, the server revokes the family, and its
 *   `invalid_grant` marks the server "needs sign-in" (live in the web app) and the call fails
 *   with `mcp_reauth_required`.
 */
import { abortableSleep } from "../abortable_sleep.ts";
import { log } from "../log.ts";
import type { Sql } from "../db/client.ts";
import { type CredentialKey, decryptCredential, encryptCredential } from "./credentials.ts";
import { type OAuthSettings, refreshTokens } from "./oauth.ts";
import { endRefresh, loadToken, storeRefreshed, takeRefreshLease } from "./oauth_store.ts";
import type { RemoteSettings } from "./remote.ts";

export interface OAuthTokenDependencies {
  sql: Sql;
  credentialKey: CredentialKey;
  remote: RemoteSettings;
  oauth: Pick<OAuthSettings, "refreshMarginMs" | "leaseMs">;
  /** How often a waiting caller looks at the row again (default 100 ms). */
  pollMs?: number;
}

export type AccessToken =
  | { ok: true; token: string; version: number }
  | { ok: false; error: { code: string; message: string } };

/**
 * The stored access token if it can be used as is (signed in, not refused, farther than the
 * margin from its expiry), else undefined: one read, no lease, no refresh, nothing written.
 * What a call may do before it is admitted (server_tools.ts `prepare`).
 */
export async function storedAccessToken(
  deps: Pick<OAuthTokenDependencies, "sql" | "credentialKey" | "oauth">,
  userId: string,
  serverId: string,
): Promise<{ token: string; version: number; expiresAt: number } | undefined> {
  const row = await loadToken(deps.sql, userId, serverId);
  if (!row || row.status === "needs_sign_in") return undefined;
  const expiresAt = row.expiresAt?.getTime() ?? Infinity;
  if (expiresAt - deps.oauth.refreshMarginMs <= Date.now()) return undefined;
  const credential = await decryptCredential(deps.credentialKey, serverId, row.secret);
  if (credential.kind !== "oauth") return undefined;
  return { token: credential.access_token, version: row.version, expiresAt };
}

/**
 * The access token to call the server with. `refused`: the version whose token the server just
 * refused (401) although it had not expired: that one is refreshed whatever its expiry says.
 */
export async function oauthAccessToken(
  deps: OAuthTokenDependencies,
  userId: string,
  serverId: string,
  slug: string,
  options: { refused?: number; signal?: AbortSignal } = {},
): Promise<AccessToken> {
  const { sql, oauth } = deps;
  const holder = crypto.randomUUID();
  const deadline = Date.now() + oauth.leaseMs + 2_000;
  const reauth = (message: string): AccessToken => ({
    ok: false,
    error: { code: "mcp_reauth_required", message: `${slug}: ${message}` },
  });
  for (;;) {
    const row = await loadToken(sql, userId, serverId);
    if (!row) return reauth("no sign-in is stored; connect the server again");
    if (row.status === "needs_sign_in") return reauth("the user must sign in to it again");
    const credential = await decryptCredential(deps.credentialKey, serverId, row.secret);
    if (credential.kind !== "oauth") return reauth("the stored credential is not a sign-in");
    const now = Date.now();
    const expiresAt = row.expiresAt?.getTime() ?? Infinity;
    const refused = options.refused === row.version;
    const valid = expiresAt > now && !refused;
    if (valid && expiresAt - oauth.refreshMarginMs > now) {
      return { ok: true, token: credential.access_token, version: row.version };
    }
    if (
      !row.leased &&
      await takeRefreshLease(sql, serverId, holder, row.version, oauth.leaseMs)
    ) {
      const refreshed = await refreshTokens(credential, deps.remote, oauth.leaseMs / 2);
      if (!refreshed.ok) {
        const revoked = refreshed.error.code === "invalid_grant";
        await endRefresh(sql, serverId, holder, revoked);
        if (revoked) {
          return reauth(`the server refused the refresh (${refreshed.error.message})`);
        }
        return {
          ok: false,
          error: {
            code: `mcp_${refreshed.error.code}`,
            message: `${slug}: ${refreshed.error.message}`,
          },
        };
      }
      const { credential: next, expiresAt: nextExpiry } = refreshed.value;
      const sealed = await encryptCredential(deps.credentialKey, serverId, next);
      if (!await storeRefreshed(sql, serverId, holder, row.version, sealed, nextExpiry)) {
        // The lease ran out first: another isolate may refresh too; this call still has a token.
        log("warn", "failure", {
          what: "storing a refreshed OAuth token: the refresh lease ran out first",
          server: slug,
        });
      }
      return { ok: true, token: next.access_token, version: row.version + 1 };
    }
    // Another isolate refreshes (or just did): its token soon; this one while it is valid.
    if (valid) return { ok: true, token: credential.access_token, version: row.version };
    if (Date.now() > deadline) {
      return {
        ok: false,
        error: {
          code: "mcp_server_timeout",
          message: `${slug}: the token refresh under way elsewhere did not finish in time`,
        },
      };
    }
    if (!await abortableSleep(deps.pollMs ?? 100, options.signal)) {
      return { ok: false, error: { code: "cancelled", message: "the call was cancelled" } };
    }
  }
}
