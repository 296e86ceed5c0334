/**
 * A user's permission for a tool, as the `permissions` table states it: a row for the tool
 * itself wins over a '*' row, whatever their modes, so a user can hold "everything" with one
 * tool denied or set to `ask`. No row at all means no permission.
 *
 * Grants are read as the user (RLS: he sees only his own), never as service_role: a bug here
 * then cannot hand one user another's grants.
 */
import type { Database, Json } from "./database.types.ts";
import { asUser, type JwtClaims, type Sql, type Tx } from "./db.ts";

export type ApprovalMode = Database["public"]["Enums"]["approval_mode"];

type PermissionRow = Database["public"]["Tables"]["permissions"]["Row"];

/** The columns of a permissions row that decide a call. */
export type PermissionGrant = Pick<PermissionRow, "tool" | "approval_mode" | "constraints">;

export const WILDCARD_TOOL = "*";

export interface ResolvedPermission {
  /** The tool asked about. */
  tool: string;
  /** The row that decided: the tool's own name, or '*'. */
  grantedBy: string;
  mode: ApprovalMode;
  /** The deciding row's constraints; always an object (the table checks that). */
  constraints: { [key: string]: Json | undefined };
}

/** The deciding grant for `tool` among a user's grants, or null when none applies. */
export function resolvePermission(
  grants: readonly PermissionGrant[],
  tool: string,
): ResolvedPermission | null {
  const grant = grants.find((g) => g.tool === tool) ??
    grants.find((g) => g.tool === WILDCARD_TOOL);
  if (!grant) return null;
  return {
    tool,
    grantedBy: grant.tool,
    mode: grant.approval_mode,
    constraints: isObject(grant.constraints) ? grant.constraints : {},
  };
}

function isObject(value: Json): value is { [key: string]: Json | undefined } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The caller's own grants, read inside a transaction that already runs as him. */
export function readGrants(tx: Tx): Promise<PermissionGrant[]> {
  // The explicit owner filter only helps the (user_id, tool) index; RLS is what guards.
  return tx<PermissionGrant[]>`
    select p.tool, p.approval_mode, p.constraints
    from public.permissions p
    where p.user_id = (select auth.uid())`;
}

/** The grants of the user the claims describe, read as that user. */
export function loadGrants(sql: Sql, claims: JwtClaims): Promise<PermissionGrant[]> {
  return asUser(sql, claims, readGrants);
}

/** The user's permission for one tool, or null when he has none. */
export async function permissionFor(
  sql: Sql,
  claims: JwtClaims,
  tool: string,
): Promise<ResolvedPermission | null> {
  return resolvePermission(await loadGrants(sql, claims), tool);
}
