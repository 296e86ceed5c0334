/**
 * Appending a batch of messages as the caller, idempotently (a retried client id is stored
 * once) and all or nothing; a failed append runs inside a savepoint, so the caller's
 * transaction stays usable after an error value.
 */
import type { Tx } from "../db/client.ts";
import type { Json } from "../db/database.types.ts";
import { errorFromDatabase, isConflict, isRace } from "./database_errors.ts";
import { type AppendInput, type NewMessage, parseAppendInput } from "./input.ts";
import type { HistoryResult } from "./protocol.ts";

/** One row `public.append_messages` returns. `created_at` as Postgres prints it in JSON. */
export interface AppendedRow {
  /** The server's row id (`chat_history.id`). */
  id: string;
  client_id: string;
  seq: number;
  created_at: string;
  /** False when an earlier attempt had already stored this message. */
  inserted: boolean;
}

/**
 * The one call site of `public.append_messages`, unvalidated: database errors are thrown as
 * they are. Use `appendMessages` unless you are testing the SQL function itself.
 */
export function callAppendMessages(
  tx: Tx,
  sessionId: string,
  messages: readonly unknown[],
  title: string | null = null,
): Promise<AppendedRow[]> {
  return tx<AppendedRow[]>`
    select a.id, a.client_id, a.seq, to_json(a.created_at) #>> '{}' as created_at, a.inserted
    from public.append_messages(${sessionId}, ${tx.json(messages as Json[] as never)}, ${title}) a`;
}

export interface AppendedMessage {
  /** The client's id. */
  id: string;
  /** The server's row id, for references such as `agent_turns.user_message_id`. */
  row_id: string;
  seq: number;
  created_at: string;
  inserted: boolean;
}

export interface AppendResult {
  session_id: string;
  /** In the order of the input batch. */
  messages: AppendedMessage[];
  /** True when at least one message was new; false for a pure retry. */
  inserted: boolean;
}

/** How often an append that lost a race is tried again (it then sees the winner's rows). */
const RACE_RETRIES = 3;

/**
 * Appends a batch, all or nothing, creating the session when absent. Idempotent by client
 * id: a retried batch returns the seqs it got the first time, also when it names no session
 * (it then lands in the session its first attempt created).
 */
export async function appendMessages(
  tx: Tx,
  input: AppendInput,
): Promise<HistoryResult<AppendResult>> {
  const parsed = parseAppendInput(input);
  if (!parsed.ok) return parsed;
  const { session_id: requestedSession, title, messages } = parsed.value;
  const clientIds = messages.map((m) => m.id);
  const rows = messages.map(appendRow);

  const earlierSession = () => sessionOfEarlierAttempt(tx, clientIds);
  let sessionId = requestedSession ?? await earlierSession() ?? crypto.randomUUID();
  for (let attempt = 0;; attempt++) {
    try {
      const stored = await tx.savepoint((sp) =>
        callAppendMessages(sp, sessionId, rows, title ?? null)
      );
      return { ok: true, value: appendResult(sessionId, messages, stored) };
    } catch (error) {
      // Lost a race against an attempt of the same batch that committed meanwhile. With no
      // session named, the batch belongs in the winner's session: try there.
      if (attempt < RACE_RETRIES && (isRace(error) || isConflict(error))) {
        const winner = requestedSession ?? await earlierSession();
        if (isRace(error) || (winner !== null && winner !== sessionId)) {
          sessionId = winner ?? crypto.randomUUID();
          continue;
        }
      }
      const known = errorFromDatabase(error);
      if (known) return known;
      throw error;
    }
  }
}

/** A validated message as `public.append_messages` takes it (an element of its array). */
export type AppendRow = Record<string, unknown>;

/**
 * `append_messages` reads fields with `->`, which turns a JSON null into the jsonb value
 * `null` rather than SQL NULL (and `tool_calls` must be an array or NULL): absent it is.
 */
export function appendRow(message: NewMessage): AppendRow {
  return Object.fromEntries(Object.entries(message).filter(([, value]) => value != null));
}

async function sessionOfEarlierAttempt(tx: Tx, clientIds: string[]): Promise<string | null> {
  const [row] = await tx<{ session_id: string }[]>`
    select h.session_id from public.chat_history h
    where h.user_id = (select auth.uid()) and h.client_id = any (${clientIds}::uuid[])
    limit 1`;
  return row?.session_id ?? null;
}

function appendResult(
  sessionId: string,
  messages: readonly { id: string }[],
  rows: AppendedRow[],
): AppendResult {
  const byClientId = new Map(rows.map((row) => [row.client_id, row]));
  const stored = messages.map((message) => {
    // Postgres prints uuids in lower case; the client may have sent upper case.
    const row = byClientId.get(message.id.toLowerCase());
    if (!row) throw new Error(`append_messages returned no row for message ${message.id}`);
    return {
      id: message.id,
      row_id: row.id,
      seq: row.seq,
      created_at: row.created_at,
      inserted: row.inserted,
    };
  });
  return { session_id: sessionId, messages: stored, inserted: stored.some((m) => m.inserted) };
}
