/**
 * Stored messages of the open session, as loaded from the history function and kept live by
 * Realtime: one shape for both sources, and a store with a subscription per message and one
 * for the order, so a Realtime update of the streaming row re-renders that row only.
 */
import type { Database } from "../../../supabase/functions/_shared/db/database.types.ts";
import type { StoredToolCall } from "../../../supabase/functions/_shared/history/protocol.ts";
import type { HistoryMessage } from "../api/history_api.ts";

type HistoryRow = Database["public"]["Tables"]["chat_history"]["Row"];

export type { StoredToolCall };

export interface ChatRow {
  /** The client's id (chat_history.client_id): what the agent's frames call message ids. */
  id: string;
  seq: number;
  role: HistoryRow["role"];
  content: string;
  toolCalls: StoredToolCall[];
  status: HistoryRow["status"];
  model: string | null;
  turnId: string | null;
  updatedAt: string;
}

export function rowFromHistory(message: HistoryMessage): ChatRow {
  return {
    id: message.id,
    seq: message.seq,
    role: message.role,
    content: message.content,
    toolCalls: toolCallsOf(message.tool_calls),
    status: message.status,
    model: message.model,
    turnId: message.turn_id,
    updatedAt: message.updated_at,
  };
}

/** A chat_history record as Realtime delivers it (every column the user may read). */
export function rowFromRecord(record: Partial<HistoryRow>): ChatRow | undefined {
  if (typeof record.client_id !== "string" || typeof record.seq !== "number") return undefined;
  return {
    id: record.client_id,
    seq: record.seq,
    role: record.role ?? "assistant",
    content: record.content ?? "",
    toolCalls: toolCallsOf(record.tool_calls ?? null),
    status: record.status ?? "complete",
    model: record.model ?? null,
    turnId: record.turn_id ?? null,
    updatedAt: record.updated_at ?? "",
  };
}

function toolCallsOf(value: unknown): StoredToolCall[] {
  if (!Array.isArray(value)) return [];
  return value.filter((call): call is StoredToolCall =>
    typeof call === "object" && call !== null && typeof call.id === "string" &&
    typeof call.name === "string"
  );
}

/** Whether `incoming` is at least as new as `current` (Realtime and a load may cross). */
export function isNewer(incoming: ChatRow, current: ChatRow | undefined): boolean {
  if (!current) return true;
  const a = Date.parse(incoming.updatedAt);
  const b = Date.parse(current.updatedAt);
  if (Number.isNaN(a) || Number.isNaN(b)) return true;
  if (a !== b) return a > b;
  // Same millisecond: the longer text is the later flush of a streaming row.
  return incoming.content.length >= current.content.length;
}

export class ChatRows {
  readonly #rows = new Map<string, ChatRow>();
  #order: readonly string[] = [];
  readonly #listeners = new Map<string, Set<() => void>>();

  subscribe(key: string, listener: () => void): () => void {
    let set = this.#listeners.get(key);
    if (!set) this.#listeners.set(key, set = new Set());
    set.add(listener);
    return () => set.delete(listener);
  }

  row(id: string): ChatRow | undefined {
    return this.#rows.get(id);
  }

  /** Message ids in seq order. */
  get order(): readonly string[] {
    return this.#order;
  }

  upsert(rows: ChatRow[]): void {
    let reorder = false;
    const changed: string[] = [];
    for (const row of rows) {
      const current = this.#rows.get(row.id);
      if (!isNewer(row, current)) continue;
      this.#rows.set(row.id, row);
      changed.push(row.id);
      if (!current || current.seq !== row.seq) reorder = true;
    }
    if (reorder) {
      this.#order = [...this.#rows.values()].sort((a, b) => a.seq - b.seq).map((row) => row.id);
      this.#notify("order");
    }
    for (const id of changed) this.#notify(`row:${id}`);
  }

  #notify(key: string): void {
    for (const listener of [...(this.#listeners.get(key) ?? [])]) listener();
  }
}
