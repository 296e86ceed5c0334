/**
 * A user's permission for a tool, as the `permissions` table states it: a row for the tool
 * itself wins over a '*' row, whatever their modes, so a user can hold "everything" with one
 * tool denied or set to `ask`. A connected server's tool (`<slug>__<name>`) has a rung between:
 * its server's `<slug>__*` row. No row at all means no permission.
 *
 * Grants are read as the user (RLS: he sees only his own), never as service_role: a bug here
 * then cannot hand one user another's grants.
 */
import type { Database, Json } from "./db/database.types.ts";
import { type JwtClaims, queryAsUser, type Sql } from "./db/client.ts";
import { inlineSql } from "./db/inline_sql.ts";
import { serverWildcardOf } from "./mcp_servers/tool_names.ts";

export type ApprovalMode = Database["public"]["Enums"]["approval_mode"];

type PermissionRow = Database["public"]["Tables"]["permissions"]["Row"];

/** The columns of a permissions row that decide a call. */
export type PermissionGrant = Pick<PermissionRow, "tool" | "approval_mode" | "constraints">;

export const WILDCARD_TOOL = "*";

export interface ResolvedPermission {
  /** The tool asked about. */
  tool: string;
  /** The row that decided: the tool's own name, its server's `<slug>__*`, or '*'. */
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
  const server = serverWildcardOf(tool);
  const grant = grants.find((g) => g.tool === tool) ??
    (server === undefined ? undefined : grants.find((g) => g.tool === server)) ??
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

/**
 * The caller's own grants, through `public.my_permissions()`: the one definition of that
 * SELECT (security invoker, so RLS decides), with its plan cached per connection.
 * Parameter-free, so it goes out as one simple-protocol message.
 */
export const MY_GRANTS = inlineSql`select g.tool, g.approval_mode, g.constraints
  from public.my_permissions() g`;

/** The grants of the user the claims describe, read as that user in one round trip. */
export function loadGrants(sql: Sql, claims: JwtClaims): Promise<PermissionGrant[]> {
  return queryAsUser<PermissionGrant>(sql, claims, MY_GRANTS);
}

/** Reads the caller's grants, as `loadGrants` does. */
export type GrantsReader = (claims: JwtClaims) => Promise<PermissionGrant[]>;

/**
 * `loadGrants` for a server that often gets several requests with the same token at once (an
 * MCP client calling tools in parallel). Requests that arrive while a read for the same claims
 * is under way share the next read, which starts when that one ends: every request still
 * gets grants read after it arrived (a revocation is never missed because a read was shared),
 * and a burst of N requests costs two reads instead of N. Nothing is kept once reads end.
 */
export function createGrantsReader(sql: Sql): GrantsReader {
  const reads = new Map<string, SharedReads>();
  return (claims) => {
    const key = JSON.stringify(claims);
    let entry = reads.get(key);
    if (!entry) {
      entry = { current: undefined, next: undefined };
      reads.set(key, entry);
    }
    if (!entry.current) return startRead(key, entry, claims);
    entry.next ??= Promise.withResolvers<PermissionGrant[]>();
    return entry.next.promise;
  };

  function startRead(key: string, entry: SharedReads, claims: JwtClaims) {
    const read = loadGrants(sql, claims);
    entry.current = read;
    const done = () => {
      const waiting = entry.next;
      entry.next = undefined;
      entry.current = undefined;
      if (waiting) {
        startRead(key, entry, claims).then(waiting.resolve, waiting.reject);
      } else {
        reads.delete(key);
      }
    };
    read.then(done, done);
    return read;
  }
}

interface SharedReads {
  current: Promise<PermissionGrant[]> | undefined;
  next: PromiseWithResolvers<PermissionGrant[]> | undefined;
}

/** The user's permission for one tool, or null when he has none. */
export async function permissionFor(
  sql: Sql,
  claims: JwtClaims,
  tool: string,
): Promise<ResolvedPermission | null> {
  return resolvePermission(await loadGrants(sql, claims), tool);
}
