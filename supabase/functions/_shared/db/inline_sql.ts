/**
 * SQL text with its values written in as literals, for the simple query protocol.
 *
 * Why not parameters: with `prepare: false` (required behind Supavisor's transaction pooler)
 * postgres.js sends every parameterised statement in two round trips, Parse/Describe first to
 * learn the parameter types and Bind/Execute after, and the extended protocol takes one
 * statement per message. The simple protocol takes several statements in one message, runs
 * them as one implicit transaction and answers in one round trip, but has no parameters.
 *
 * Literals are escaped completely rather than filtered: strings become `E'…'` literals with
 * `\` and `'` doubled, the only two characters special inside them, which holds whatever
 * `standard_conforming_strings` says (postgres.js always talks UTF-8, so no multi-byte
 * character can hide a quote). Postgres text cannot hold U+0000; such a string is refused
 * here, where a parameter would have been refused by the server.
 */
import type postgres from "postgres";

/**
 * SQL text ready to send. Build it with `inlineSql`, which writes every value as a literal;
 * constructing one by hand trusts the text as it stands, like `sql.unsafe`.
 */
export class InlineSql {
  constructor(readonly text: string) {}
}

export type InlineValue = string | number | bigint | boolean | null | undefined | InlineSql;

/**
 * `inlineSql\`select … where id = ${id}\``: every interpolated value becomes a literal
 * (`InlineSql` fragments are embedded as they are).
 */
export function inlineSql(strings: TemplateStringsArray, ...values: InlineValue[]): InlineSql {
  let text = strings[0];
  values.forEach((value, index) => {
    text += (value instanceof InlineSql ? value.text : sqlLiteral(value)) + strings[index + 1];
  });
  return new InlineSql(text);
}

/** One value as a SQL literal of unknown type (Postgres casts it where it is used). */
export function sqlLiteral(value: Exclude<InlineValue, InlineSql>): string {
  if (value === null || value === undefined) return "NULL";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "bigint":
      return value < 0n ? `(${value})` : String(value);
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`${value} has no SQL literal`);
      // Parentheses keep `x - ${-1}` from reading as a `--` comment.
      return value < 0 ? `(${value})` : String(value);
    case "string":
      if (value.includes("\u0000")) {
        throw new TypeError("A SQL string cannot contain U+0000");
      }
      return `E'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
  }
  throw new TypeError(`Cannot write a ${typeof value} as a SQL literal`);
}

/**
 * Runs one statement built with `inlineSql` and returns its rows: one simple-protocol message,
 * one round trip (the agent's hot paths — a turn's set-up, every flush, every heartbeat).
 */
export async function run<Row extends object = Record<string, unknown>>(
  tx: postgres.TransactionSql | postgres.Sql,
  statement: InlineSql,
): Promise<Row[]> {
  return [...await tx.unsafe(statement.text)] as Row[];
}

/** A value as JSON text, for an `inlineSql` literal cast with `::jsonb`. */
export function jsonText(value: unknown): string {
  return JSON.stringify(value);
}
