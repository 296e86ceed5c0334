/**
 * The user's connected MCP servers, kept current: loaded from the connections function once
 * the Realtime channels are joined, and again whenever one of his `mcp_servers` rows (a status
 * such as "needs sign-in") or his grants change.
 */
import { useCallback, useEffect, useState } from "react";
import { type AppError, toAppError } from "../api/app_error.ts";
import { watchTable } from "../api/realtime.ts";
import { listServers, type ServerView } from "./connections_api.ts";

export interface ConnectionsState {
  servers: ServerView[];
  loading: boolean;
  error?: AppError;
  reload(): Promise<void>;
}

export function useConnections(userId: string): ConnectionsState {
  const [state, setState] = useState<Omit<ConnectionsState, "reload">>({
    servers: [],
    loading: true,
  });
  const reload = useCallback(async () => {
    try {
      const servers = await listServers();
      setState({ servers, loading: false });
    } catch (error) {
      setState((old) => ({ ...old, loading: false, error: toAppError(error) }));
    }
  }, []);
  useEffect(() => {
    const onError = (error: AppError) => setState((old) => ({ ...old, error }));
    const stops = ["mcp_servers", "permissions"].map((table) =>
      watchTable({
        table,
        filter: `user_id=eq.${userId}`,
        onSubscribed: () => void reload(),
        onError,
        onChange: () => void reload(),
      })
    );
    return () => stops.forEach((stop) => stop());
  }, [userId, reload]);
  return { ...state, reload };
}
