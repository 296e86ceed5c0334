/**
 * The cross-isolate registry of open agent connections (`agent_connections`): the per-user
 * connection limit must hold although each isolate sees only its own sockets. Registration
 * evicts the oldest live connections beyond the limit; each isolate learns of evictions of
 * its sockets from its heartbeat (or at once, when it registered the newcomer itself).
 */
import { type AccountRefusal, accountRefusals } from "../account_access.ts";
import { queryAsServiceRole, type Sql, type Tx } from "../db/client.ts";
import { inlineSql, jsonText, run } from "../db/inline_sql.ts";

export interface Registration {
  maxConnections: number;
  /** Connections (of this user, on any isolate) that must now close with 4001. */
  evicted: string[];
}

/** Registers a connection and evicts what it pushes over the limit; `tx` runs as service_role. */
export async function registerConnection(
  tx: Tx,
  connection: { id: string; userId: string; isolateId: string; staleAfterMs: number },
): Promise<Registration> {
  const [row] = await run<{ max_connections: number; evicted: string[] }>(
    tx,
    inlineSql`
      select r.max_connections, r.evicted from public.agent_register_connection(
        ${connection.id}::uuid, ${connection.userId}::uuid, ${connection.isolateId},
        ${connection.staleAfterMs}) r`,
  );
  return { maxConnections: row.max_connections, evicted: row.evicted };
}

export async function unregisterConnection(sql: Sql, connectionId: string): Promise<void> {
  await queryAsServiceRole(
    sql,
    inlineSql`delete from public.agent_connections c where c.id = ${connectionId}::uuid`,
  );
}

export interface Heartbeat {
  /** Connections another registration evicted: they close with 4001. */
  evicted: string[];
  /** Connections whose user may not act any more, and why: they close with 4003. */
  revoked: Map<string, AccountRefusal>;
}

/**
 * Checks that the users of this isolate's connections may still act, keeps the others alive
 * (re-registering any whose row was cleaned up while the isolate stalled) and returns those
 * another registration evicted. `tx` runs as service_role.
 */
export async function heartbeatConnections(
  tx: Tx,
  isolateId: string,
  connections: readonly { id: string; userId: string; sessionId?: string }[],
): Promise<Heartbeat> {
  if (connections.length === 0) return { evicted: [], revoked: new Map() };
  const revoked = await accountRefusals(
    tx,
    connections.map(({ id, userId, sessionId }) => ({ key: id, userId, sessionId })),
  );
  // A deleted user's row could not be written back (its user is gone); a revoked one closes.
  const alive = connections
    .filter((connection) => !revoked.has(connection.id))
    .map((connection) => ({ id: connection.id, user_id: connection.userId }));
  if (alive.length === 0) return { evicted: [], revoked };
  const rows = await run<{ id: string; evicted: boolean }>(
    tx,
    inlineSql`
      insert into public.agent_connections as c (id, user_id, isolate_id)
      select x.id, x.user_id, ${isolateId}
      from jsonb_to_recordset(${jsonText(alive)}::jsonb) as x(id uuid, user_id uuid)
      -- Rows locked in id order, as registration locks them: no deadlock between the two.
      order by x.id
      on conflict (id) do update set heartbeat_at = clock_timestamp()
      returning c.id, c.evicted_at is not null as evicted`,
  );
  return { evicted: rows.filter((row) => row.evicted).map((row) => row.id), revoked };
}
