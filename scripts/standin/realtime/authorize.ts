/**
 * Row visibility per subscriber, decided by Postgres as Supabase Realtime decides it: inside
 * a transaction, `set_config('role', <claims.role>, true)` and
 * `set_config('request.jwt.claims', <claims>, true)`, then ask whether the row with that
 * primary key exists — RLS policies answer.
 *
 * Batched: all checks of a batch of changes on one table go to Postgres as one call of a
 * session-local (pg_temp) PL/pgSQL function. It switches to each distinct (role, claims)
 * once and asks about all of that subscriber group's keys in one query
 * (`… (select true from <table> where <pk> = key limit 1)`), so the cost is one round trip
 * per table per batch and one query per distinct claims set per batch, not one transaction
 * per subscriber per change. Same answers: each key is still checked under exactly those
 * claims with RLS in force.
 */
import postgres from "postgres";
import type { Sql, TableInfo } from "./catalog.ts";

export interface VisibilityCheck {
  table: TableInfo;
  /** Primary-key values as text, in `table.primaryKey` order. */
  key: string[];
  role: string;
  /** The claims as the JSON text `request.jwt.claims` gets. */
  claims: string;
  /** The transaction that wrote the row; the check waits until it is visible. */
  xid?: number;
}

export interface Authorizer {
  /** One answer per check, in order. A check Postgres cannot evaluate answers false. */
  visible(checks: VisibilityCheck[]): Promise<boolean[]>;
  close(): Promise<void>;
}

interface Session {
  sql: postgres.ReservedSql;
  functions: Set<string>;
}

export function createAuthorizer(pool: Sql): Authorizer {
  let session: Promise<Session> | undefined;
  let closed = false;

  const open = (): Promise<Session> => {
    session ??= pool.reserve().then((sql) => ({ sql, functions: new Set<string>() }));
    return session;
  };

  const discard = async (broken: Session) => {
    if (session && (await session) === broken) session = undefined;
    broken.sql.release();
  };

  const callOnce = async (table: TableInfo, checks: VisibilityCheck[]): Promise<boolean[]> => {
    const current = await open();
    const name = functionName(table);
    if (!current.functions.has(name)) {
      await current.sql.unsafe(functionDefinition(name, table));
      current.functions.add(name);
    }
    // Checks of one (role, claims) side by side; groups of one role next to each other,
    // since a role switch makes Postgres plan the query again.
    const order = checks.map((_, index) => index).sort((a, b) =>
      compare(checks[a].role, checks[b].role) || compare(checks[a].claims, checks[b].claims)
    );
    const roles: string[] = [];
    const claims: string[] = [];
    const ends: number[] = [];
    order.forEach((index, position) => {
      const check = checks[index];
      const last = roles.length - 1;
      if (last < 0 || roles[last] !== check.role || claims[last] !== check.claims) {
        roles.push(check.role);
        claims.push(check.claims);
        ends.push(position + 1);
      } else {
        ends[last] = position + 1;
      }
    });
    const keyArrays = table.primaryKey.map((_, column) =>
      order.map((index) => checks[index].key[column])
    );
    const xids = [...new Set(checks.flatMap((check) => check.xid ?? []))];
    const placeholders = keyArrays.map((_, index) => `$${index + 5}::text[]`).join(", ");
    const [row] = await current.sql.unsafe<{ visible: number[] }[]>(
      `select pg_temp.${name}($1::int8[], $2::text[], $3::text[], $4::int4[], ${placeholders})
         as visible`,
      [xids, roles, claims, ends, ...keyArrays],
    );
    const answers = new Array<boolean>(checks.length).fill(false);
    for (const position of row.visible) answers[order[position - 1]] = true;
    return answers;
  };

  /** Retries once on a fresh session when the connection (and its pg_temp) went away. */
  const call = async (table: TableInfo, checks: VisibilityCheck[]): Promise<boolean[]> => {
    try {
      return await callOnce(table, checks);
    } catch (error) {
      if (closed) throw error;
      if (error instanceof postgres.PostgresError && error.code !== "42883") throw error;
      const broken = await session;
      if (broken) await discard(broken);
      return await callOnce(table, checks);
    }
  };

  const visibleOnTable = async (table: TableInfo, checks: VisibilityCheck[]) => {
    try {
      return await call(table, checks);
    } catch (error) {
      if (!(error instanceof postgres.PostgresError)) throw error;
      // One subscriber group's claims broke the batch (e.g. a `sub` that is not a uuid makes
      // auth.uid() raise): ask per group so only that group sees nothing.
      const answers = new Array<boolean>(checks.length).fill(false);
      const groups = new Map<string, number[]>();
      checks.forEach((check, index) => {
        const key = `${check.role}\u0000${check.claims}`;
        const members = groups.get(key);
        if (members) members.push(index);
        else groups.set(key, [index]);
      });
      for (const indexes of groups.values()) {
        const group = indexes.map((index) => checks[index]);
        try {
          const results = await call(table, group);
          indexes.forEach((index, position) => answers[index] = results[position]);
        } catch (single) {
          if (!(single instanceof postgres.PostgresError)) throw single;
          console.error(
            `realtime: visibility check on ${table.schema}.${table.table} failed for role ` +
              `${group[0].role}: ${single.message}`,
          );
        }
      }
      return answers;
    }
  };

  return {
    async visible(checks) {
      const answers = new Array<boolean>(checks.length).fill(false);
      const byTable = new Map<number, number[]>();
      checks.forEach((check, index) => {
        const indexes = byTable.get(check.table.oid) ?? [];
        indexes.push(index);
        byTable.set(check.table.oid, indexes);
      });
      for (const indexes of byTable.values()) {
        const group = indexes.map((index) => checks[index]);
        const results = await visibleOnTable(group[0].table, group);
        indexes.forEach((index, position) => answers[index] = results[position] === true);
      }
      return answers;
    },
    async close() {
      closed = true;
      const current = await session?.catch(() => undefined);
      session = undefined;
      current?.sql.release();
    },
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Named after the table and its key's shape, so a changed key gets a new function. */
function functionName(table: TableInfo): string {
  const shape = table.primaryKey.map((name) => {
    const column = table.columns.find((c) => c.name === name);
    return `${name}:${column?.sqlType}`;
  }).join(",");
  return `realtime_visible_${table.oid}_${fnv1a(shape).toString(36)}`;
}

function functionDefinition(name: string, table: TableInfo): string {
  if (table.primaryKey.length === 0) {
    throw new Error(`${table.schema}.${table.table} has no primary key`);
  }
  const keys = table.primaryKey.map((_, index) => `p_key${index + 1}`);
  const conditions = table.primaryKey.map((name, index) => {
    const column = table.columns.find((c) => c.name === name);
    if (!column) throw new Error(`primary key column ${name} missing from ${table.table}`);
    return `t.${quoteIdent(name)} = c.k${index + 1}::${column.sqlType}`;
  }).join(" and ");
  const relation = `${quoteIdent(table.schema)}.${quoteIdent(table.table)}`;
  const slices = keys.map((key) => `${key}[v_start:p_ends[g]]`).join(", ");
  return `
    create or replace function pg_temp.${name}(
      p_xids int8[], p_roles text[], p_claims text[], p_ends int4[],
      ${keys.map((k) => `${k} text[]`).join(", ")})
    returns int4[]
    language plpgsql
    as $realtime$
    declare
      v_visible int4[] := '{}';
      v_found int4[];
      v_role text;
      v_start int4 := 1;
      v_snapshot pg_snapshot;
      v_epoch int8;
      v_deadline timestamptz := clock_timestamp() + interval '2 seconds';
    begin
      -- A transaction's commit record reaches the WAL (and so this feed) a moment before the
      -- transaction becomes visible to other snapshots. Checking in that moment would find
      -- no row and wrongly answer "not visible": wait until the writers' commits show.
      loop
        v_snapshot := pg_current_snapshot();
        v_epoch := (pg_snapshot_xmax(v_snapshot)::text::int8 >> 32) << 32;
        exit when coalesce((
          select bool_and(pg_visible_in_snapshot(
            (case when v_epoch + x > pg_snapshot_xmax(v_snapshot)::text::int8
                  then v_epoch + x - 4294967296 else v_epoch + x end)::text::xid8,
            v_snapshot))
          from unnest(p_xids) x), true);
        exit when clock_timestamp() > v_deadline;
        perform pg_sleep(0.0002);
      end loop;
      -- The probe below runs once per subscriber group: it must be planned once, not per run
      -- (custom plans for the array parameters cost more than the lookup), and that cached
      -- plan must stay an index lookup however the table grows after it was made.
      perform set_config('plan_cache_mode', 'force_generic_plan', true);
      perform set_config('enable_seqscan', 'off', true);
      -- Group g holds the keys at positions v_start .. p_ends[g].
      for g in 1 .. coalesce(array_length(p_roles, 1), 0) loop
        if v_role is distinct from p_roles[g] then
          perform set_config('role', p_roles[g], true);
          v_role := p_roles[g];
        end if;
        perform set_config('request.jwt.claims', p_claims[g], true);
        select array_agg((v_start + c.ord - 1)::int4) into v_found
        from unnest(${slices}) with ordinality
          as c(${keys.map((_, i) => `k${i + 1}`).join(", ")}, ord)
        -- A scalar subquery, not EXISTS: EXISTS becomes a semi-join that may hash the whole
        -- table; this probes the primary key once per key.
        where coalesce((select true from ${relation} t where ${conditions} limit 1), false);
        if v_found is not null then
          v_visible := v_visible || v_found;
        end if;
        v_start := p_ends[g] + 1;
      end loop;
      return v_visible;
    end
    $realtime$`;
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}
