/**
 * The stored messages of one session: subscribe to its chat_history rows through Realtime
 * first, then load them from the history function, so no change falls between the two. The
 * partial text of a streaming answer arrives with each of the agent's flushes.
 */
import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { type AppError, toAppError } from "../api/app_error.ts";
import { listMessages } from "../api/history_api.ts";
import { watchTable } from "../api/realtime.ts";
import type { Database } from "../../../supabase/functions/_shared/db/database.types.ts";
import { type ChatRow, ChatRows, rowFromHistory, rowFromRecord } from "./chat_rows.ts";

type HistoryRow = Database["public"]["Tables"]["chat_history"]["Row"];

export interface ChatRowsState {
  rows: ChatRows;
  loading: boolean;
  error?: AppError;
}

export function useChatRows(sessionId: string | undefined): ChatRowsState {
  const rows = useMemo(() => new ChatRows(), [sessionId]);
  const [status, setStatus] = useState<{ loading: boolean; error?: AppError }>({
    loading: sessionId !== undefined,
  });
  useEffect(() => {
    if (!sessionId) return setStatus({ loading: false });
    setStatus({ loading: true });
    let active = true;
    const unwatch = watchTable<HistoryRow>({
      table: "chat_history",
      filter: `session_id=eq.${sessionId}`,
      async onSubscribed() {
        try {
          const messages = await listMessages(sessionId);
          if (!active) return;
          rows.upsert(messages.map(rowFromHistory));
          setStatus({ loading: false });
        } catch (error) {
          if (active) setStatus({ loading: false, error: toAppError(error) });
        }
      },
      onError: (error) => active && setStatus((current) => ({ ...current, error })),
      onChange(change) {
        if (change.eventType === "DELETE") return;
        const row = rowFromRecord(change.new);
        if (row) rows.upsert([row]);
      },
    });
    return () => {
      active = false;
      unwatch();
    };
  }, [rows]);
  return { rows, ...status };
}

export function useRowOrder(rows: ChatRows): readonly string[] {
  return useSyncExternalStore((listener) => rows.subscribe("order", listener), () => rows.order);
}

export function useRow(rows: ChatRows, id: string): ChatRow | undefined {
  return useSyncExternalStore(
    (listener) => rows.subscribe(`row:${id}`, listener),
    () => rows.row(id),
  );
}
