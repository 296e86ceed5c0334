/**
 * The `data` of a postgres_changes frame, as Realtime (walrus `apply_rls`) builds it for one
 * role: schema, table, commit_timestamp, type, the columns the role may SELECT with their
 * type names, `record` (INSERT/UPDATE), `old_record` (UPDATE/DELETE) and `errors`.
 *
 * - Columns the role cannot SELECT are left out of `columns`, `record` and `old_record`.
 * - `old_record` holds what the WAL holds: with the default replica identity only the
 *   primary key (for an UPDATE, the key before the update); with REPLICA IDENTITY FULL the
 *   whole old row — except for a DELETE on a table with RLS, which carries the primary key
 *   only, because no policy can be checked against a row that is gone.
 * - An unchanged TOASTed value is not in the WAL; the column is left out of `record`
 *   (filled from `old_record` when REPLICA IDENTITY FULL logged it).
 * - A change bigger than 1 MiB keeps only values of at most 64 bytes and reports
 *   `Error 413: Payload Too Large`.
 */
import type { Change } from "./change_feed.ts";
import { type JsonValue, toJsonValue, type TypeLookup } from "./pg_values.ts";

export const MAX_RECORD_BYTES = 1024 * 1024;
const MAX_VALUE_BYTES_WHEN_TOO_LARGE = 64;
const PAYLOAD_TOO_LARGE = "Error 413: Payload Too Large";

export function changeData(change: Change, selectable: ReadonlySet<string>, types: TypeLookup) {
  const { table } = change;
  const tooLarge = rawSize(change) > MAX_RECORD_BYTES;
  const typeOf = new Map(table.columns.map((column) => [column.name, column.typeOid]));

  const convert = (row: ReadonlyMap<string, string | null | undefined>, only?: Set<string>) => {
    const record: Record<string, JsonValue> = {};
    for (const [name, text] of row) {
      if (!selectable.has(name) || (only && !only.has(name))) continue;
      if (text === undefined) continue; // unchanged TOAST: not in the WAL
      if (tooLarge && text !== null && byteLength(text) > MAX_VALUE_BYTES_WHEN_TOO_LARGE) continue;
      const typeOid = typeOf.get(name);
      record[name] = text === null
        ? null
        : toJsonValue(text, typeOid === undefined ? undefined : types(typeOid), types);
    }
    return record;
  };

  const data: Record<string, unknown> = {
    schema: table.schema,
    table: table.table,
    commit_timestamp: change.commitTimestamp,
    type: change.type,
    columns: table.columns
      .filter((column) => selectable.has(column.name))
      .map((column) => ({ name: column.name, type: column.typeName })),
  };
  if (change.newRow) {
    const record = convert(change.newRow);
    if (change.oldRow) {
      // REPLICA IDENTITY FULL logged the unchanged TOASTed values in the old row.
      const old = convert(change.oldRow);
      for (const [name, text] of change.newRow) {
        if (text === undefined && name in old) record[name] = old[name];
      }
    }
    data.record = record;
  }
  if (change.oldRow) {
    const keyOnly = change.type === "DELETE" && table.rlsEnabled
      ? new Set(table.primaryKey)
      : undefined;
    data.old_record = convert(change.oldRow, keyOnly);
  }
  data.errors = tooLarge ? [PAYLOAD_TOO_LARGE] : null;
  return data;
}

function rawSize(change: Change): number {
  let size = 0;
  for (const row of [change.newRow, change.oldRow]) {
    if (!row) continue;
    for (const [name, text] of row) size += name.length + (text ? text.length : 4);
  }
  return size;
}

const encoder = new TextEncoder();

function byteLength(text: string): number {
  // Cheap bound first: UTF-8 never uses more than 3 bytes per UTF-16 unit.
  if (text.length * 3 <= MAX_VALUE_BYTES_WHEN_TOO_LARGE) return text.length;
  return encoder.encode(text).length;
}
