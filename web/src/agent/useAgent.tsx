/**
 * `useAgent`: the React side of the agent. `AgentProvider` owns one AgentClient (and so one
 * WebSocket) per signed-in user; the hooks below read the store with fine-grained
 * subscriptions, so a component re-renders only when what it shows changed.
 */
import {
  createContext,
  type ReactNode,
  useContext,
  useEffect,
  useMemo,
  useSyncExternalStore,
} from "react";
import { AGENT_URL } from "../config.ts";
import { supabase } from "../supabase.ts";
import { AgentClient } from "./agent_client.ts";
import type { ConnectionStatus } from "./connection.ts";
import type { Notice, PendingChat } from "./store.ts";
import type { TurnView } from "./turns.ts";

const AgentContext = createContext<AgentClient | undefined>(undefined);

export function AgentProvider({ userId, children }: { userId: string; children: ReactNode }) {
  // One client per user: signing in as someone else starts a fresh socket and store.
  const client = useMemo(
    () =>
      new AgentClient({
        url: AGENT_URL,
        token: async () => {
          const { data, error } = await supabase.auth.getSession();
          if (error) throw error;
          return data.session?.access_token;
        },
        findRunningTurns: async () => {
          // RLS: only this user's turns. A parked turn (waiting for an approval) is followed
          // too: its prompt and Stop show in every tab.
          const { data, error } = await supabase.from("agent_turns").select("id")
            .in("state", ["running", "parked"]);
          if (error) throw error;
          return data.map((row) => row.id);
        },
      }),
    [userId],
  );
  useEffect(() => {
    client.start();
    const { data } = supabase.auth.onAuthStateChange((event, session) => {
      if (event === "TOKEN_REFRESHED" && session) client.renewToken(session.access_token);
    });
    return () => {
      data.subscription.unsubscribe();
      client.stop();
    };
  }, [client]);
  return <AgentContext.Provider value={client}>{children}</AgentContext.Provider>;
}

/** The agent of the signed-in user: send, cancel, approve, reconnect. */
export function useAgent(): AgentClient {
  const client = useContext(AgentContext);
  if (!client) throw new Error("useAgent must be used inside <AgentProvider>");
  return client;
}

function useStoreValue<T>(key: string, read: (client: AgentClient) => T): T {
  const client = useAgent();
  return useSyncExternalStore(
    (listener) => client.store.subscribe(key, listener),
    () => read(client),
  );
}

export function useConnectionStatus(): ConnectionStatus {
  return useStoreValue("status", (client) => client.store.status);
}

export function useNotices(): readonly Notice[] {
  return useStoreValue("notices", (client) => client.store.notices);
}

/** The live turn that streams into this assistant message, if this tab follows it. */
export function useTurnOfMessage(messageId: string): TurnView | undefined {
  return useStoreValue(`message:${messageId}`, (client) => client.store.turnOfMessage(messageId));
}

export function usePendingChat(id: string): PendingChat | undefined {
  return useStoreValue(`message:${id}`, (client) => client.store.pendingChat(id));
}

export function useRunningTurn(sessionId: string | undefined): TurnView | undefined {
  return useStoreValue(
    `session:${sessionId ?? ""}`,
    (client) => (sessionId ? client.store.runningTurnIn(sessionId) : undefined),
  );
}

export function usePendingChats(sessionKey: string): readonly PendingChat[] {
  return useStoreValue(`session:${sessionKey}`, (client) => client.store.pendingIn(sessionKey));
}
