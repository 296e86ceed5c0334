/**
 * postgres_changes filters: `column=operator.value`, operators eq, neq, lt, lte, gt, gte and
 * in (`in.(a,b,"c,d")`). Several conditions joined by commas must all hold. Values are cast
 * to the column's type by Postgres when the channel joins (a value the type refuses fails
 * the subscription, as in Realtime) and compared with the type's ordering when a change
 * arrives: numbers numerically, enums by their declared order, timestamps by instant, other
 * types by their canonical text.
 *
 * A condition on a column the change does not carry (a DELETE with the default replica
 * identity only carries the primary key) never matches, and neither does a NULL value.
 */
import type { ColumnInfo, TableInfo } from "./catalog.ts";
import type { PgType } from "./pg_values.ts";

export const FILTER_OPERATORS = ["eq", "neq", "lt", "lte", "gt", "gte", "in"] as const;
export type FilterOperator = typeof FILTER_OPERATORS[number];

/** `in` accepts at most this many values, like Realtime. */
export const MAX_IN_VALUES = 100;

export interface FilterCondition {
  column: string;
  operator: FilterOperator;
  /** One value, or the list for `in`; unquoted, not yet cast. */
  values: string[];
}

export type ParseResult =
  | { ok: true; conditions: FilterCondition[] }
  | { ok: false; code: "invalid_filter"; message: string };

/** Text values of a row as pgoutput printed them; `undefined` when the change lacks it. */
export type RawRow = ReadonlyMap<string, string | null | undefined>;

export interface CompiledFilter {
  matches(row: RawRow): boolean;
}

export function parseFilter(filter: string): ParseResult {
  const conditions: FilterCondition[] = [];
  for (const part of splitOutside(filter, ",")) {
    const condition = parseCondition(part.trim());
    if (!condition.ok) return condition;
    conditions.push(condition.condition);
  }
  if (conditions.length === 0) return invalid("empty filter");
  return { ok: true, conditions };
}

function parseCondition(
  text: string,
): { ok: true; condition: FilterCondition } | {
  ok: false;
  code: "invalid_filter";
  message: string;
} {
  const match = /^([^=]+)=([a-z]+)\.([\s\S]*)$/.exec(text);
  if (!match) return invalid(`"${text}" is not column=operator.value`);
  const [, column, operator, rawValue] = match;
  if (!(FILTER_OPERATORS as readonly string[]).includes(operator)) {
    return invalid(
      `operator "${operator}" is not supported (use ${FILTER_OPERATORS.join(", ")})`,
    );
  }
  if (operator === "in") {
    const list = /^\(([\s\S]*)\)$/.exec(rawValue);
    if (!list) return invalid(`in needs a list: ${column}=in.(a,b)`);
    const values = list[1].trim() === "" ? [] : splitOutside(list[1], ",").map(unquote);
    if (values.length === 0) return invalid("in needs at least one value");
    if (values.length > MAX_IN_VALUES) {
      return invalid(`too many values for in (maximum ${MAX_IN_VALUES})`);
    }
    return { ok: true, condition: { column, operator, values } };
  }
  return {
    ok: true,
    condition: { column, operator: operator as FilterOperator, values: [unquote(rawValue)] },
  };
}

/** Splits on `separator` outside double quotes and parentheses. */
function splitOutside(text: string, separator: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (quoted) {
      if (char === "\\") i++;
      else if (char === '"') quoted = false;
    } else if (char === '"') quoted = true;
    else if (char === "(") depth++;
    else if (char === ")") depth--;
    else if (char === separator && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

/** PostgREST-style quoting: `"a,b"` → `a,b`, with `\"` and `\\` escapes. */
function unquote(value: string): string {
  const trimmed = value.trim();
  if (trimmed.length >= 2 && trimmed.startsWith('"') && trimmed.endsWith('"')) {
    return trimmed.slice(1, -1).replace(/\\(.)/g, "$1");
  }
  return trimmed;
}

function invalid(message: string): { ok: false; code: "invalid_filter"; message: string } {
  return { ok: false, code: "invalid_filter", message };
}

/** What compiling needs from the database: the column's type and a cast of a value. */
export interface FilterContext {
  table: TableInfo;
  type(oid: number): PgType | undefined;
  castToText(value: string, sqlType: string): Promise<
    { ok: true; text: string } | {
      ok: false;
      message: string;
    }
  >;
}

export type CompileResult =
  | { ok: true; filter: CompiledFilter }
  | { ok: false; code: "invalid_filter"; message: string };

export async function compileFilter(
  conditions: FilterCondition[],
  context: FilterContext,
): Promise<CompileResult> {
  const predicates: ((row: RawRow) => boolean)[] = [];
  for (const condition of conditions) {
    const column = context.table.columns.find((c) => c.name === condition.column);
    if (!column) {
      return invalid(
        `column "${condition.column}" does not exist in ${context.table.schema}.${context.table.table}`,
      );
    }
    const canonical: string[] = [];
    for (const value of condition.values) {
      const cast = await context.castToText(value, column.sqlType);
      if (!cast.ok) {
        return invalid(
          `invalid value for ${condition.column} (${column.sqlType}): ${cast.message}`,
        );
      }
      canonical.push(cast.text);
    }
    predicates.push(predicate(condition, column, context.type(column.typeOid), canonical));
  }
  return { ok: true, filter: { matches: (row) => predicates.every((test) => test(row)) } };
}

function predicate(
  condition: FilterCondition,
  column: ColumnInfo,
  type: PgType | undefined,
  values: string[],
): (row: RawRow) => boolean {
  const compare = comparatorFor(type);
  const operand = values[0];
  const test = (actual: string): boolean => {
    switch (condition.operator) {
      case "eq":
        return compare(actual, operand) === 0;
      case "neq":
        return compare(actual, operand) !== 0;
      case "lt":
        return compare(actual, operand) < 0;
      case "lte":
        return compare(actual, operand) <= 0;
      case "gt":
        return compare(actual, operand) > 0;
      case "gte":
        return compare(actual, operand) >= 0;
      case "in":
        return values.some((value) => compare(actual, value) === 0);
    }
  };
  return (row) => {
    const actual = row.get(column.name);
    return typeof actual === "string" && test(actual);
  };
}

type Comparator = (a: string, b: string) => number;

const NUMERIC_TYPES = new Set(["int2", "int4", "int8", "oid", "float4", "float8", "numeric"]);

/** Postgres's ordering for the type, on canonical text values. */
export function comparatorFor(type: PgType | undefined): Comparator {
  if (!type) return compareText;
  if (NUMERIC_TYPES.has(type.name)) return compareNumeric;
  if (type.name === "bool") return compareText; // 'f' < 't', as false < true
  if (type.name === "timestamptz") return compareInstants;
  if (type.category === "E" && type.enumLabels.length > 0) {
    const order = new Map(type.enumLabels.map((label, index) => [label, index]));
    return (a, b) => (order.get(a) ?? -1) - (order.get(b) ?? -1);
  }
  return compareText;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** NaN sorts above every number in Postgres. */
function compareNumeric(a: string, b: string): number {
  const x = Number(a);
  const y = Number(b);
  if (Number.isNaN(x) || Number.isNaN(y)) {
    return Number.isNaN(x) === Number.isNaN(y) ? 0 : Number.isNaN(x) ? 1 : -1;
  }
  if (x === y && /^-?\d+$/.test(a) && /^-?\d+$/.test(b)) {
    // Integers past 2^53 collapse to one double; BigInt keeps them apart.
    const big = BigInt(a) - BigInt(b);
    return big < 0n ? -1 : big > 0n ? 1 : 0;
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Both sides are UTC (`2026-01-01 10:00:00.25+00`); compare as microsecond instants. */
function compareInstants(a: string, b: string): number {
  const x = instantMicros(a);
  const y = instantMicros(b);
  if (x === undefined || y === undefined) return compareText(a, b);
  return x < y ? -1 : x > y ? 1 : 0;
}

function instantMicros(text: string): number | undefined {
  if (text === "infinity") return Infinity;
  if (text === "-infinity") return -Infinity;
  const match = /^(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))?([+-]\d\d(?::\d\d){0,2})$/.exec(
    text,
  );
  if (!match) return undefined;
  const [, date, time, fraction = "", zone] = match;
  const zoneText = zone.length === 3 ? `${zone}:00` : zone.slice(0, 6);
  const millis = Date.parse(`${date}T${time}${zoneText}`);
  if (Number.isNaN(millis)) return undefined;
  return millis * 1000 + Number(fraction.padEnd(6, "0").slice(0, 6));
}
