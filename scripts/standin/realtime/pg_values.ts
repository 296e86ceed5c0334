/**
 * Column values from their Postgres text form (what pgoutput sends) to the JSON Supabase
 * Realtime puts in `record`: the same value `to_jsonb(column)` gives — numbers and booleans
 * as JSON scalars, json/jsonb as JSON, arrays as arrays, timestamps in ISO 8601 with a `T`,
 * everything else as its text.
 *
 * The text must come from a session with `TimeZone=UTC` and `DateStyle=ISO` (change_feed.ts
 * opens the replication connection that way).
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | {
  [key: string]: JsonValue;
};

export interface PgType {
  oid: number;
  /** `pg_type.typname`, e.g. int8, timestamptz, _text, message_role. */
  name: string;
  /** `pg_type.typcategory`: A array, B boolean, N numeric, E enum, … */
  category: string;
  /** For arrays, the element type; 0 otherwise. */
  elementOid: number;
  /** Array element delimiter (`,` for nearly every type). */
  delimiter: string;
  /** Enum labels in sort order; empty for other types. */
  enumLabels: string[];
}

export type TypeLookup = (oid: number) => PgType | undefined;

const INTEGER_TYPES = new Set(["int2", "int4", "oid", "int8"]);
const FLOAT_TYPES = new Set(["float4", "float8", "numeric"]);

/** The JSON form of one non-null column value. */
export function toJsonValue(text: string, type: PgType | undefined, types: TypeLookup): JsonValue {
  if (!type) return text;
  if (type.category === "A" && type.elementOid !== 0) {
    const elementType = types(type.elementOid);
    const parsed = parseArrayLiteral(text, elementType?.delimiter ?? ",");
    if (parsed === undefined) return text;
    return mapArray(parsed, (element) => toJsonValue(element, elementType, types));
  }
  switch (type.name) {
    case "bool":
      return text === "t" ? true : text === "f" ? false : text;
    case "json":
    case "jsonb":
      try {
        return JSON.parse(text);
      } catch {
        return text;
      }
    case "timestamptz":
      return isoTimestamp(text, true);
    case "timestamp":
      return isoTimestamp(text, false);
  }
  if (INTEGER_TYPES.has(type.name)) {
    const value = Number(text);
    // Beyond 2^53 a JSON number would silently change the value; the text keeps it exact.
    return Number.isSafeInteger(value) ? value : text;
  }
  if (FLOAT_TYPES.has(type.name)) {
    const value = Number(text);
    // to_jsonb writes NaN and ±Infinity as strings: JSON has no such numbers.
    return Number.isFinite(value) ? value : text;
  }
  return text;
}

/** `2026-01-01 10:00:00.5+00` → `2026-01-01T10:00:00.5+00:00`, as to_jsonb writes it. */
function isoTimestamp(text: string, withZone: boolean): string {
  const match = /^(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d(?::\d\d){0,2})?$/.exec(
    text,
  );
  if (!match) return text; // infinity, -infinity, BC dates
  const [, date, time, zone] = match;
  if (!withZone || zone === undefined) return `${date}T${time}`;
  return `${date}T${time}${zone.length === 3 ? `${zone}:00` : zone}`;
}

type NestedStrings = (string | null | NestedStrings)[];

function mapArray(values: NestedStrings, convert: (text: string) => JsonValue): JsonValue[] {
  return values.map((value) =>
    value === null ? null : Array.isArray(value) ? mapArray(value, convert) : convert(value)
  );
}

/**
 * Parses Postgres's array output (`{a,"b c",NULL,{1,2}}`, optionally with a dimension
 * prefix such as `[0:1]={…}`). `undefined` when the text is not an array literal.
 */
export function parseArrayLiteral(text: string, delimiter = ","): NestedStrings | undefined {
  let input = text;
  if (input.startsWith("[")) {
    const equals = input.indexOf("=");
    if (equals < 0) return undefined;
    input = input.slice(equals + 1);
  }
  let position = 0;

  const parseArray = (): NestedStrings | undefined => {
    if (input[position] !== "{") return undefined;
    position++;
    const values: NestedStrings = [];
    if (input[position] === "}") {
      position++;
      return values;
    }
    while (position < input.length) {
      if (input[position] === "{") {
        const nested = parseArray();
        if (nested === undefined) return undefined;
        values.push(nested);
      } else if (input[position] === '"') {
        position++;
        let value = "";
        while (position < input.length && input[position] !== '"') {
          if (input[position] === "\\") position++;
          value += input[position++];
        }
        if (input[position] !== '"') return undefined;
        position++;
        values.push(value);
      } else {
        const start = position;
        while (
          position < input.length && input[position] !== delimiter && input[position] !== "}"
        ) {
          position++;
        }
        const raw = input.slice(start, position).trim();
        values.push(raw === "NULL" ? null : raw);
      }
      if (input[position] === delimiter) {
        position++;
        continue;
      }
      if (input[position] === "}") {
        position++;
        return values;
      }
      return undefined;
    }
    return undefined;
  };

  const parsed = parseArray();
  return parsed !== undefined && position === input.length ? parsed : undefined;
}
