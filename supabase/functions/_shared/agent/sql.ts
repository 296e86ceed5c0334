/**
 * How the agent sends its statements: with their values written in as literals
 * (`inlineSql`), so each is one simple-protocol message and one round trip. A parameterised
 * statement costs two with `prepare: false` (Parse/Describe first, then Bind/Execute), and
 * the agent's hot paths — a turn's set-up, every flush, every heartbeat — run many of them.
 */
import type { Sql, Tx } from "../db.ts";
import type { InlineSql } from "../inline_sql.ts";

export { inlineSql } from "../inline_sql.ts";

/** Runs one statement built with `inlineSql` and returns its rows. */
export async function run<Row extends object = Record<string, unknown>>(
  tx: Tx | Sql,
  statement: InlineSql,
): Promise<Row[]> {
  return [...await tx.unsafe(statement.text)] as Row[];
}

/** A value as JSON text, for an `inlineSql` literal cast with `::jsonb`. */
export function jsonText(value: unknown): string {
  return JSON.stringify(value);
}
