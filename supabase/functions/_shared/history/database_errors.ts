/**
 * Errors of `append_messages` and of the rows' checks as values ("bad input", "conflict"), and
 * the races a retry resolves; anything else stays thrown.
 */
import postgres from "postgres";
import { invalid } from "./input.ts";
import type { HistoryError } from "./protocol.ts";

/** The SQLSTATEs of `append_messages` and of the columns' checks that mean "bad input". */
const INVALID_INPUT_STATES = new Set([
  "AG422", // append_messages: the batch itself is invalid
  "22P02", // invalid text representation: a uuid or enum value
  "23514", // check violation: content over 1 MiB, title over 200 characters
  "22001", // string too long
  "22P05", // untranslatable character: \u0000 inside tool_calls
  "22021", // character not in repertoire
]);

/** An error of `append_messages` (or of the rows' checks) as a value; undefined for others. */
export function errorFromDatabase(error: unknown): HistoryError | undefined {
  if (!(error instanceof postgres.PostgresError)) return undefined;
  if (error.code === "AG404") {
    return { ok: false, code: "not_found", message: "No such session" };
  }
  if (error.code === "AG409") {
    return {
      ok: false,
      code: "conflict",
      message: "A message id of this batch is already used by another message",
    };
  }
  if (error.code === "42501") {
    return { ok: false, code: "forbidden", message: "Not allowed for this role" };
  }
  if (INVALID_INPUT_STATES.has(error.code)) return invalid(error.message);
  return undefined;
}

/** `append_messages` found a client id of the batch already used (AG409). */
export function isConflict(error: unknown): boolean {
  return error instanceof postgres.PostgresError && error.code === "AG409";
}

/**
 * Unique keys concurrent attempts of one batch can collide on: the client ids, and the session
 * row itself when several attempts create the same new session at once (`append_messages`
 * names only the primary key as its ON CONFLICT arbiter, so the (id, user_id) key can raise).
 */
const RACED_CONSTRAINTS = new Set([
  "chat_history_client_id_key",
  "chat_sessions_pkey",
  "chat_sessions_id_user_key",
]);

/**
 * An error a concurrent attempt caused and that a retry resolves, since the retry sees what
 * that attempt committed. Deadlocks belong here too: two attempts inserting the same keys into
 * two unique indexes can wait for each other, and Postgres breaks the cycle by failing one.
 */
export function isRace(error: unknown): boolean {
  if (!(error instanceof postgres.PostgresError)) return false;
  if (error.code === "40P01") return true;
  return error.code === "23505" && RACED_CONSTRAINTS.has(error.constraint_name ?? "");
}
