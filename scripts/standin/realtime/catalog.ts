/**
 * What the Realtime stand-in needs to know about the database: which tables the publication
 * holds, their columns, types, primary keys and RLS flag, which roles exist or bypass RLS,
 * and which columns a role may SELECT. Cached for a few seconds, so ALTER TABLE, GRANT and
 * REVOKE take effect shortly; a table's entry is dropped at once when the change feed sees
 * its columns change.
 */
import postgres from "postgres";
import type { PgType } from "./pg_values.ts";

export type Sql = postgres.Sql;

export interface ColumnInfo {
  name: string;
  typeOid: number;
  /** `pg_type.typname`, what Realtime's `columns` array reports. */
  typeName: string;
  /** `format_type(...)`, usable in a cast. */
  sqlType: string;
}

export interface TableInfo {
  oid: number;
  schema: string;
  table: string;
  columns: ColumnInfo[];
  primaryKey: string[];
  rlsEnabled: boolean;
}

export interface RoleInfo {
  exists: boolean;
  /** Superuser or BYPASSRLS: every row is visible, no per-row check needed. */
  bypassRls: boolean;
}

export interface PublishedTable {
  oid: number;
  schema: string;
  table: string;
}

export type CastResult = { ok: true; text: string } | { ok: false; message: string };

const CACHE_TTL_MS = 5_000;

interface Expiring<T> {
  value: Promise<T>;
  expiresAt: number;
}

/** A pool on which every session shows timestamps in UTC ISO form, like the change feed. */
export function openRealtimePool(databaseUrl: string, max: number): Sql {
  return postgres(databaseUrl, {
    max,
    idle_timeout: 30,
    onnotice: () => {},
    connection: {
      application_name: "local-realtime",
      TimeZone: "UTC",
      DateStyle: "ISO, MDY",
    } as Record<string, string>,
  });
}

export class Catalog {
  readonly #tables = new Map<string, Expiring<TableInfo | undefined>>();
  readonly #types = new Map<number, PgType>();
  readonly #roles = new Map<string, Expiring<RoleInfo>>();
  readonly #privileges = new Map<string, Expiring<Set<string>>>();

  constructor(readonly sql: Sql, readonly publication: string) {}

  async publishedTables(): Promise<PublishedTable[]> {
    const rows = await this.sql<{ oid: number; schema: string; table: string }[]>`
      select c.oid::int4 as oid, p.schemaname as schema, p.tablename as table
      from pg_catalog.pg_publication_tables p
      join pg_catalog.pg_namespace n on n.nspname = p.schemaname
      join pg_catalog.pg_class c on c.relnamespace = n.oid and c.relname = p.tablename
      where p.pubname = ${this.publication}
      order by p.schemaname, p.tablename`;
    return rows.map((row) => ({ oid: row.oid, schema: row.schema, table: row.table }));
  }

  table(oid: number): Promise<TableInfo | undefined> {
    return this.#expiring(this.#tables, String(oid), () => this.#loadTable(oid));
  }

  /** The table changed shape: forget what we knew, privileges included. */
  invalidateTable(oid: number): void {
    this.#tables.delete(String(oid));
    for (const key of this.#privileges.keys()) {
      if (key.startsWith(`${oid}:`)) this.#privileges.delete(key);
    }
  }

  async #loadTable(oid: number): Promise<TableInfo | undefined> {
    const [relation] = await this.sql<
      { schema: string; table: string; rls: boolean; primary_key: string[] | null }[]
    >`
      select n.nspname as schema, c.relname as table, c.relrowsecurity as rls,
             (select array_agg(a.attname::text order by array_position(i.indkey::int2[], a.attnum))
              from pg_catalog.pg_index i
              join pg_catalog.pg_attribute a
                on a.attrelid = i.indrelid and a.attnum = any (i.indkey::int2[])
              where i.indrelid = c.oid and i.indisprimary) as primary_key
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where c.oid = ${oid}`;
    if (!relation) return undefined;
    const columns = await this.sql<ColumnInfo[]>`
      select a.attname::text as "name", a.atttypid::int4 as "typeOid", t.typname::text as "typeName",
             pg_catalog.format_type(a.atttypid, a.atttypmod) as "sqlType"
      from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
      where a.attrelid = ${oid} and a.attnum > 0 and not a.attisdropped
      order by a.attnum`;
    await this.loadTypes(columns.map((column) => column.typeOid));
    return {
      oid,
      schema: relation.schema,
      table: relation.table,
      columns: [...columns],
      primaryKey: relation.primary_key ?? [],
      rlsEnabled: relation.rls,
    };
  }

  type(oid: number): PgType | undefined {
    return this.#types.get(oid);
  }

  /** Loads the given types and, for arrays, their element types. */
  async loadTypes(oids: Iterable<number>): Promise<void> {
    let missing = [...new Set(oids)].filter((oid) => oid !== 0 && !this.#types.has(oid));
    while (missing.length > 0) {
      const rows = await this.sql<
        {
          oid: number;
          name: string;
          category: string;
          element_oid: number;
          delimiter: string;
          enum_labels: string[] | null;
        }[]
      >`
        select t.oid::int4 as oid, t.typname::text as name, t.typcategory::text as category,
               t.typelem::int4 as element_oid, t.typdelim::text as delimiter,
               (select array_agg(e.enumlabel::text order by e.enumsortorder)
                from pg_catalog.pg_enum e where e.enumtypid = t.oid) as enum_labels
        from pg_catalog.pg_type t where t.oid = any (${missing}::oid[])`;
      for (const row of rows) {
        this.#types.set(row.oid, {
          oid: row.oid,
          name: row.name,
          category: row.category,
          elementOid: row.element_oid,
          delimiter: row.delimiter,
          enumLabels: row.enum_labels ?? [],
        });
      }
      const found = new Set(rows.map((row) => row.oid));
      const elements = rows.map((row) => row.element_oid);
      missing = elements.filter((oid) => oid !== 0 && !this.#types.has(oid) && !found.has(oid));
      if (rows.length === 0) break;
    }
  }

  /** Types changed (pgoutput sent a Type message): reload on next use. */
  forgetType(oid: number): void {
    this.#types.delete(oid);
  }

  role(name: string): Promise<RoleInfo> {
    return this.#expiring(this.#roles, name, async () => {
      const [row] = await this.sql<{ bypass: boolean }[]>`
        select rolsuper or rolbypassrls as bypass from pg_catalog.pg_roles where rolname = ${name}`;
      return { exists: row !== undefined, bypassRls: row?.bypass ?? false };
    });
  }

  /** The columns of `oid` that `role` may SELECT. */
  selectableColumns(oid: number, role: string): Promise<Set<string>> {
    return this.#expiring(this.#privileges, `${oid}:${role}`, async () => {
      const rows = await this.sql<{ name: string }[]>`
        select a.attname::text as name
        from pg_catalog.pg_attribute a
        where a.attrelid = ${oid} and a.attnum > 0 and not a.attisdropped
          and pg_catalog.has_column_privilege(${role}, a.attrelid, a.attnum, 'SELECT')`;
      return new Set(rows.map((row) => row.name));
    });
  }

  /**
   * `value` cast to `sqlType` and printed back, so a filter compares against exactly what
   * pgoutput prints for the column; a value the type refuses is an error, as in Realtime.
   */
  async castToText(value: string, sqlType: string): Promise<CastResult> {
    try {
      // sqlType comes from format_type() over the catalog, which quotes what needs quoting.
      const [row] = await this.sql.unsafe<{ text: string }[]>(
        `select ($1::text)::${sqlType}::text as text`,
        [value],
      );
      return { ok: true, text: row.text };
    } catch (error) {
      if (error instanceof postgres.PostgresError) return { ok: false, message: error.message };
      throw error;
    }
  }

  #expiring<T>(map: Map<string, Expiring<T>>, key: string, load: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const entry = map.get(key);
    if (entry && entry.expiresAt > now) return entry.value;
    const value = load();
    map.set(key, { value, expiresAt: now + CACHE_TTL_MS });
    value.catch(() => map.delete(key));
    return value;
  }
}
