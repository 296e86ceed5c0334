/**
 * Fans a batch of captured changes out to the channels that may see them, in commit order:
 *
 * 1. bindings: the change's table, event and filter (filters see the new row; a DELETE's
 *    filters see the old row, i.e. usually only the primary key);
 * 2. privileges: the channel's role must be able to SELECT the primary key columns; other
 *    columns it cannot SELECT are left out of the payload;
 * 3. RLS: on a table with RLS, for a role that does not bypass it, Postgres is asked whether
 *    the row exists under the channel's claims — all questions of the batch in one call
 *    per table (authorize.ts). DELETEs skip this check, as in Realtime: the row is gone.
 *
 * One frame per change per channel, listing every matching binding id. The payload is
 * built and serialized once per (change, role) and reused by every channel with that role.
 */
import type { VisibilityCheck } from "./authorize.ts";
import type { Catalog } from "./catalog.ts";
import type { Change } from "./change_feed.ts";
import { changeData } from "./change_payload.ts";
import type { Channel, ChannelRegistry } from "./channels.ts";

export interface DispatcherDependencies {
  registry: ChannelRegistry;
  catalog: Catalog;
  authorizer: { visible(checks: VisibilityCheck[]): Promise<boolean[]> };
}

interface RoleAccess {
  canSeeKey: boolean;
  bypassRls: boolean;
}

interface Delivery {
  change: number;
  channel: Channel;
  ids: number[];
  role: string;
  /** Index into the batch's checks, or -1 when no RLS check is needed. */
  check: number;
}

export function createDispatcher(deps: DispatcherDependencies) {
  const { registry, catalog, authorizer } = deps;

  return async function dispatch(changes: Change[]): Promise<void> {
    const access = new Map<string, Promise<RoleAccess>>();
    const roleAccessOnce = (change: Change, role: string) => {
      const key = `${change.table.oid}\u0000${role}`;
      let entry = access.get(key);
      if (!entry) access.set(key, entry = roleAccess(change, role));
      return entry;
    };
    const deliveries: Delivery[] = [];
    const checks: VisibilityCheck[] = [];
    const checkIndex = new Map<string, number>();

    for (let index = 0; index < changes.length; index++) {
      const change = changes[index];
      const subscribers = registry.subscribedTo(change.table.oid);
      if (subscribers.size === 0) continue;
      const row = change.type === "DELETE" ? change.oldRow : change.newRow;
      if (!row) continue;
      for (const channel of subscribers) {
        const ids = matchingBindingIds(channel, change, row);
        if (ids.length === 0) continue;
        const { role, claims } = channel.identity;
        const { canSeeKey, bypassRls } = await roleAccessOnce(change, role);
        if (!canSeeKey) continue;
        let check = -1;
        if (change.table.rlsEnabled && change.type !== "DELETE" && !bypassRls) {
          const key = change.table.primaryKey.map((column) => row.get(column));
          if (key.some((value) => typeof value !== "string")) continue;
          const dedupeKey = `${index}\u0000${role}\u0000${claims}`;
          check = checkIndex.get(dedupeKey) ?? -1;
          if (check < 0) {
            check = checks.push({
              table: change.table,
              key: key as string[],
              role,
              claims,
              xid: change.xid,
            }) - 1;
            checkIndex.set(dedupeKey, check);
          }
        }
        deliveries.push({ change: index, channel, ids, role, check });
      }
    }
    if (deliveries.length === 0) return;

    const answers = checks.length > 0 ? await authorizer.visible(checks) : [];
    const payloads = new Map<string, string>();
    for (const delivery of deliveries) {
      if (delivery.check >= 0 && !answers[delivery.check]) continue;
      if (delivery.channel.closed) continue;
      const change = changes[delivery.change];
      const cacheKey = `${delivery.change}\u0000${delivery.role}`;
      let json = payloads.get(cacheKey);
      if (json === undefined) {
        const selectable = await catalog.selectableColumns(change.table.oid, delivery.role);
        json = JSON.stringify(changeData(change, selectable, (oid) => catalog.type(oid)));
        payloads.set(cacheKey, json);
      }
      delivery.channel.pushChange(delivery.ids, json);
    }
  };

  async function roleAccess(change: Change, role: string): Promise<RoleAccess> {
    const [info, selectable] = await Promise.all([
      catalog.role(role),
      catalog.selectableColumns(change.table.oid, role),
    ]);
    const keyColumns = change.table.primaryKey;
    return {
      canSeeKey: info.exists && keyColumns.length > 0 &&
        keyColumns.every((column) => selectable.has(column)),
      bypassRls: info.bypassRls,
    };
  }
}

function matchingBindingIds(
  channel: Channel,
  change: Change,
  row: ReadonlyMap<string, string | null | undefined>,
): number[] {
  const ids: number[] = [];
  for (const binding of channel.bindings) {
    if (!binding.tableOids.has(change.table.oid)) continue;
    if (binding.event !== "*" && binding.event !== change.type) continue;
    if (binding.filter && !binding.filter.matches(row)) continue;
    if (!ids.includes(binding.id)) ids.push(binding.id);
  }
  return ids;
}
