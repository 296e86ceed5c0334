/**
 * Watching a table through Supabase Realtime (postgres_changes; RLS decides which rows reach
 * this user). `onSubscribed` fires after every (re)join: the moment to (re)load the initial
 * state, so nothing that changed while the channel was down is missed.
 */
import type { RealtimePostgresChangesPayload } from "@supabase/supabase-js";
import { supabase } from "../supabase.ts";
import { AppError } from "./app_error.ts";

export interface WatchOptions<Row extends Record<string, unknown>> {
  table: string;
  /** A postgres_changes filter, e.g. `session_id=eq.<uuid>`. */
  filter?: string;
  event?: "*" | "INSERT" | "UPDATE" | "DELETE";
  onChange(change: RealtimePostgresChangesPayload<Row>): void;
  onSubscribed?(): void;
  onError?(error: AppError): void;
}

/** Subscribes; the returned function unsubscribes. */
export function watchTable<Row extends Record<string, unknown>>(
  options: WatchOptions<Row>,
): () => void {
  const name = `${options.table}:${options.filter ?? "all"}:${crypto.randomUUID().slice(0, 8)}`;
  const channel = supabase.channel(name).on(
    "postgres_changes",
    {
      event: options.event ?? "*",
      schema: "public",
      table: options.table,
      ...(options.filter ? { filter: options.filter } : {}),
    } as { event: "*"; schema: string; table: string; filter?: string },
    (payload: RealtimePostgresChangesPayload<Row>) => options.onChange(payload),
  );
  channel.subscribe((status, error) => {
    if (status === "SUBSCRIBED") options.onSubscribed?.();
    else if (status === "CHANNEL_ERROR" || status === "TIMED_OUT") {
      options.onError?.(
        new AppError(
          "realtime_unavailable",
          `Live updates of ${options.table} are interrupted (${status}${
            error ? `: ${error.message}` : ""
          }); retrying`,
        ),
      );
    }
  });
  return () => {
    void supabase.removeChannel(channel);
  };
}
