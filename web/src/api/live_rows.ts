/**
 * `useLiveRows`: the caller's rows of one table, loaded once the Realtime channel is joined (and
 * again after every rejoin, so nothing changed while it was down is missed) and then kept
 * current by its INSERT, UPDATE and DELETE events. The list views (sessions, grants) are this
 * plus how they load, which fields they keep and their order.
 */
import { useEffect, useState } from "react";
import { type AppError, toAppError } from "./app_error.ts";
import { watchTable } from "./realtime.ts";

export interface LiveRowsState<Row> {
  rows: Row[];
  loading: boolean;
  error?: AppError;
}

export interface LiveRowsOptions<Row extends { id: string | number }> {
  table: string;
  /** The owner column's filter value: only his rows are watched (RLS decides anyway). */
  userId: string;
  /** The current rows; a thrown error is shown, the last rows stay. */
  load(): Promise<Row[]>;
  /** The fields kept from a Realtime row. */
  pick(row: Record<string, unknown>): Row;
  compare(a: Row, b: Row): number;
}

export function useLiveRows<Row extends { id: string | number }>(
  options: LiveRowsOptions<Row>,
): LiveRowsState<Row> {
  const [state, setState] = useState<LiveRowsState<Row>>({ rows: [], loading: true });
  const { table, userId } = options;
  useEffect(() => {
    const { load, pick, compare } = options;
    let active = true;
    const byId = new Map<Row["id"], Row>();
    const publish = (error?: AppError) => {
      if (active) setState({ rows: [...byId.values()].sort(compare), loading: false, error });
    };
    const reload = async () => {
      try {
        const rows = await load();
        byId.clear();
        for (const row of rows) byId.set(row.id, row);
        publish();
      } catch (error) {
        publish(toAppError(error));
      }
    };
    const unwatch = watchTable<Record<string, unknown>>({
      table,
      filter: `user_id=eq.${userId}`,
      onSubscribed: reload,
      onError: publish,
      onChange(change) {
        if (change.eventType === "DELETE") {
          const id = change.old.id;
          if (typeof id === "string" || typeof id === "number") byId.delete(id as Row["id"]);
        } else {
          const row = pick(change.new);
          byId.set(row.id, row);
        }
        publish();
      },
    });
    return () => {
      active = false;
      unwatch();
    };
    // The callbacks are fixed per view; only the table and the user decide what is watched.
  }, [table, userId]);
  return state;
}
