/**
 * The cross-isolate registry of open agent connections (`agent_connections`): the per-user
 * connection limit must hold although each isolate sees only its own sockets. Registration
 * evicts the oldest live connections beyond the limit; each isolate learns of evictions of
 * its sockets from its heartbeat (or at once, when it registered the newcomer itself).
 */
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

/**
 * Keeps this isolate's connections alive (re-registering any whose row was cleaned up while
 * the isolate stalled) and returns those another registration evicted.
 */
export async function heartbeatConnections(
  tx: Tx,
  isolateId: string,
  connections: { id: string; user_id: string }[],
): Promise<string[]> {
  if (connections.length === 0) return [];
  const rows = await run<{ id: string; evicted: boolean }>(
    tx,
    inlineSql`
      insert into public.agent_connections as c (id, user_id, isolate_id)
      select x.id, x.user_id, ${isolateId}
      from jsonb_to_recordset(${jsonText(connections)}::jsonb) as x(id uuid, user_id uuid)
      -- Rows locked in id order, as registration locks them: no deadlock between the two.
      order by x.id
      on conflict (id) do update set heartbeat_at = clock_timestamp()
      returning c.id, c.evicted_at is not null as evicted`,
  );
  return rows.filter((row) => row.evicted).map((row) => row.id);
}
