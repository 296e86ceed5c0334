/**
 * The `postgres_changes` entries of a join: validated against the publication and compiled
 * into what the dispatcher matches changes with. The join reply echoes every entry as sent,
 * in order, plus a numeric `id` derived from the entry itself — like Realtime's
 * `:erlang.phash2(params)` — so the same binding keeps its id across rejoins and restarts.
 */
import type { Catalog, PublishedTable } from "./catalog.ts";
import type { ChangeType } from "./change_feed.ts";
import { type CompiledFilter, compileFilter, parseFilter } from "./filters.ts";

export type BindingEvent = ChangeType | "*";

export interface PostgresBinding {
  id: number;
  event: BindingEvent;
  tableOids: ReadonlySet<number>;
  filter: CompiledFilter | null;
}

export type BindingsResult =
  | { ok: true; echo: Record<string, unknown>[]; bindings: PostgresBinding[] }
  | { ok: false; echo: Record<string, unknown>[]; message: string };

const EVENTS: readonly BindingEvent[] = ["INSERT", "UPDATE", "DELETE", "*"];

export function bindingId(params: Record<string, unknown>): number {
  const canonical = JSON.stringify(
    Object.keys(params).filter((key) => key !== "id").sort().map((key) => [key, params[key]]),
  );
  let hash = 0x811c9dc5;
  for (let i = 0; i < canonical.length; i++) {
    hash ^= canonical.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash & 0x7ffffff; // phash2's range: 0 .. 2^27 - 1
}

export async function compileBindings(
  entries: unknown,
  role: string,
  catalog: Catalog,
): Promise<BindingsResult> {
  const list = Array.isArray(entries) ? entries.filter((entry) => entry != null) : [];
  const echo = list.map((entry) =>
    typeof entry === "object" && !Array.isArray(entry)
      ? { ...(entry as Record<string, unknown>), id: bindingId(entry as Record<string, unknown>) }
      : { id: bindingId({ entry }) }
  );
  if (list.length === 0) return { ok: true, echo, bindings: [] };

  const roleInfo = await catalog.role(role);
  if (!roleInfo.exists) return { ok: false, echo, message: `role "${role}" does not exist` };
  const published = await catalog.publishedTables();

  const bindings: PostgresBinding[] = [];
  for (let index = 0; index < list.length; index++) {
    const compiled = await compileOne(list[index], role, published, catalog);
    if (!compiled.ok) return { ok: false, echo, message: compiled.message };
    bindings.push({ id: echo[index].id as number, ...compiled.binding });
  }
  return { ok: true, echo, bindings };
}

async function compileOne(
  entry: unknown,
  role: string,
  published: PublishedTable[],
  catalog: Catalog,
): Promise<
  { ok: true; binding: Omit<PostgresBinding, "id"> } | { ok: false; message: string }
> {
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    return { ok: false, message: "each postgres_changes entry must be an object" };
  }
  const params = entry as Record<string, unknown>;
  const event = typeof params.event === "string" ? params.event.toUpperCase() : undefined;
  if (!event || !(EVENTS as readonly string[]).includes(event)) {
    return { ok: false, message: `event must be one of ${EVENTS.join(", ")}` };
  }
  const schema = optionalString(params.schema) ?? "public";
  const table = optionalString(params.table);
  const filter = optionalString(params.filter);
  if (params.select !== undefined) {
    return { ok: false, message: "`select` is not supported by the local Realtime stand-in" };
  }
  const describe = `[event: ${event}, schema: ${schema}, table: ${table ?? "*"}, filter: ${
    filter ?? ""
  }]`;
  const matching = published.filter((candidate) =>
    (schema === "*" || candidate.schema === schema) &&
    (table === undefined || table === "*" || candidate.table === table)
  );
  if (matching.length === 0) {
    return {
      ok: false,
      message: "Unable to subscribe to changes with given parameters. Please check Realtime is " +
        `enabled for the given connect parameters: ${describe}`,
    };
  }
  let compiledFilter: CompiledFilter | null = null;
  if (filter !== undefined) {
    if (matching.length !== 1 || table === undefined || table === "*") {
      return { ok: false, message: `a filter needs one table: ${describe}` };
    }
    const info = await catalog.table(matching[0].oid);
    if (!info) return { ok: false, message: `table ${schema}.${table} no longer exists` };
    const parsed = parseFilter(filter);
    if (!parsed.ok) return { ok: false, message: `${parsed.message}: ${describe}` };
    const selectable = await catalog.selectableColumns(info.oid, role);
    const hidden = parsed.conditions.find((condition) => !selectable.has(condition.column));
    if (hidden && info.columns.some((column) => column.name === hidden.column)) {
      return { ok: false, message: `invalid column for filter ${hidden.column}` };
    }
    const result = await compileFilter(parsed.conditions, {
      table: info,
      type: (oid) => catalog.type(oid),
      castToText: (value, sqlType) => catalog.castToText(value, sqlType),
    });
    if (!result.ok) return { ok: false, message: `${result.message}: ${describe}` };
    compiledFilter = result.filter;
  }
  return {
    ok: true,
    binding: {
      event: event as BindingEvent,
      tableOids: new Set(matching.map((candidate) => candidate.oid)),
      filter: compiledFilter,
    },
  };
}

function optionalString(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}
