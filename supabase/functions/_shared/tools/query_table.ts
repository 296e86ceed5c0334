/**
 * `query_table`: reads rows of the caller's own data with equality filters, ordering and a
 * limit. The query runs as the caller, so RLS decides which rows exist for him; this file
 * decides which SQL can be written at all.
 *
 * Identifiers never come from the input: every table, column and direction the input names is
 * looked up in the allow-lists below, and the SQL is built from the allow-list's own strings.
 * Values travel only as bind parameters.
 */
import { z } from "zod";
import type { Database } from "../db/database.types.ts";
import { READ_ONLY_ANNOTATIONS, type ToolDefinition } from "./types.ts";

type Tables = Database["public"]["Tables"];

/** What a column may be used for; json columns can be read but not compared or sorted. */
type ColumnUse = "any" | "read";

type ColumnList<T extends keyof Tables> = { [C in keyof Tables[T]["Row"]]?: ColumnUse };

/** Per table, the columns a caller may read, filter and sort on, typed by the generated rows. */
const COLUMNS: {
  chat_sessions: ColumnList<"chat_sessions">;
  chat_history: ColumnList<"chat_history">;
  usage_metrics: ColumnList<"usage_metrics">;
  permissions: ColumnList<"permissions">;
} = {
  chat_sessions: { id: "any", user_id: "any", title: "any", created_at: "any", updated_at: "any" },
  chat_history: {
    id: "any",
    session_id: "any",
    user_id: "any",
    client_id: "any",
    seq: "any",
    role: "any",
    content: "any",
    tool_calls: "read",
    tool_call_id: "any",
    model: "any",
    status: "any",
    turn_id: "any",
    created_at: "any",
    updated_at: "any",
  },
  usage_metrics: {
    id: "any",
    user_id: "any",
    session_id: "any",
    turn_id: "any",
    kind: "any",
    name: "any",
    source: "any",
    prompt_tokens: "any",
    completion_tokens: "any",
    cost_usd: "any",
    latency_ms: "any",
    status: "any",
    created_at: "any",
  },
  permissions: {
    id: "any",
    user_id: "any",
    tool: "any",
    approval_mode: "any",
    constraints: "read",
    created_at: "any",
    updated_at: "any",
  },
};

export type QueryableTable = keyof typeof COLUMNS;
export const QUERYABLE_TABLES = Object.keys(COLUMNS) as QueryableTable[];

/** Default order per table: newest first, where "newest" is what the table is read by. */
const DEFAULT_ORDER: Record<QueryableTable, OrderTerm[]> = {
  chat_sessions: [{ column: "updated_at", direction: "desc" }],
  chat_history: [{ column: "created_at", direction: "desc" }, { column: "seq", direction: "desc" }],
  usage_metrics: [{ column: "created_at", direction: "desc" }],
  permissions: [{ column: "tool", direction: "asc" }],
};

export const MAX_LIMIT = 100;
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;

const filterValue = z.union([z.string().max(10_000), z.number(), z.boolean(), z.null()]);

const input = z.object({
  table: z.enum(QUERYABLE_TABLES).describe("The table to read; you only ever see your own rows."),
  columns: z.array(z.string().max(63)).min(1).max(20).optional().describe(
    "Columns to return (default: all readable columns).",
  ),
  filters: z.record(z.string().max(63), filterValue).optional().describe(
    'Equality filters, column → value, all must hold; null means "is null". ' +
      'E.g. {"session_id": "…", "role": "user"}.',
  ),
  order_by: z.array(z.object({
    column: z.string().max(63),
    direction: z.enum(["asc", "desc"]).default("asc"),
  })).max(3).optional().describe("Sort order (default: newest first)."),
  limit: z.number().int().min(1).max(MAX_LIMIT).default(20).describe(
    `At most this many rows (1–${MAX_LIMIT}).`,
  ),
});

const output = z.object({
  table: z.string(),
  columns: z.array(z.string()),
  rows: z.array(z.record(z.string(), z.unknown())),
  count: z.number().int(),
});

export type QueryTableInput = z.output<typeof input>;

interface OrderTerm {
  column: string;
  direction: "asc" | "desc";
}

export type QueryPlan =
  | { ok: true; table: QueryableTable; columns: string[]; text: string; params: QueryParam[] }
  | { ok: false; error: { code: string; message: string } };

type QueryParam = string | number | boolean;

/**
 * The SQL for a query_table call, or why it cannot be written. Pure, so the allow-list can be
 * tested without a database. `text` uses $1… placeholders for `params`.
 */
export function planQuery(args: QueryTableInput): QueryPlan {
  if (!Object.hasOwn(COLUMNS, args.table)) {
    return failure("unknown_table", `Unknown table "${args.table}"; one of ${QUERYABLE_TABLES}`);
  }
  const table = args.table;
  const allowed: Record<string, ColumnUse | undefined> = COLUMNS[table];
  const readable = Object.keys(allowed);

  const lookUp = (name: string, use: "read" | "compare") => {
    const found = readable.find((column) => column === name);
    if (found === undefined) {
      return failure(
        "unknown_column",
        `Unknown column "${name}" for ${table}; readable: ${readable.join(", ")}`,
      );
    }
    if (use === "compare" && allowed[found] !== "any") {
      return failure("column_not_comparable", `Column "${found}" cannot be filtered or sorted on`);
    }
    return { ok: true as const, column: quote(found) };
  };

  const selected: string[] = [];
  for (const name of args.columns ?? readable) {
    const found = lookUp(name, "read");
    if (!found.ok) return found;
    if (!selected.includes(found.column)) selected.push(found.column);
  }

  const params: QueryParam[] = [];
  const conditions: string[] = [];
  for (const [name, value] of Object.entries(args.filters ?? {})) {
    const found = lookUp(name, "compare");
    if (!found.ok) return found;
    if (typeof value === "string" && value.includes("\u0000")) {
      // Postgres text cannot hold NUL; no row can match, and the error would be a server's.
      return failure("invalid_filter_value", `The filter on "${name}" contains a NUL character`);
    }
    if (value === null) {
      conditions.push(`${found.column} is null`);
    } else {
      params.push(value);
      conditions.push(`${found.column} = $${params.length}`);
    }
  }

  const ordering: string[] = [];
  for (const term of args.order_by ?? DEFAULT_ORDER[table]) {
    const found = lookUp(term.column, "compare");
    if (!found.ok) return found;
    ordering.push(`${found.column} ${term.direction === "desc" ? "desc" : "asc"}`);
  }

  if (!Number.isInteger(args.limit) || args.limit < 1 || args.limit > MAX_LIMIT) {
    return failure("invalid_limit", `limit must be an integer from 1 to ${MAX_LIMIT}`);
  }
  params.push(args.limit);

  const text = [
    `select ${selected.join(", ")} from public.${quote(table)}`,
    conditions.length > 0 ? `where ${conditions.join(" and ")}` : "",
    ordering.length > 0 ? `order by ${ordering.join(", ")}` : "",
    `limit $${params.length}`,
  ].filter((part) => part !== "").join(" ");
  return { ok: true, table, columns: selected.map(unquote), text, params };
}

/** Quotes an allow-listed identifier; refuses anything that is not a plain lower-case name. */
function quote(identifier: string): string {
  // Unreachable with the allow-lists above; a guard against a future careless entry.
  if (!IDENTIFIER.test(identifier)) throw new Error(`Not a plain identifier: ${identifier}`);
  return `"${identifier}"`;
}

function unquote(quoted: string): string {
  return quoted.slice(1, -1);
}

function failure(
  code: string,
  message: string,
): { ok: false; error: { code: string; message: string } } {
  return { ok: false, error: { code, message } };
}

/** Postgres errors that mean "a filter value does not fit its column", not a server fault. */
const BAD_VALUE_STATES = new Set([
  "22P02", // invalid text representation (bad uuid, enum, integer…)
  "22007", // invalid datetime format
  "22008", // datetime field overflow
  "22003", // numeric value out of range
  "42883", // operator does not exist (e.g. boolean compared to a text column)
  "42804", // datatype mismatch
  "22021", // character not in repertoire (e.g. NUL in text)
  "22P05", // untranslatable character
]);

export const queryTableTool: ToolDefinition<typeof input, typeof output> = {
  name: "query_table",
  title: "Query your data",
  description: `Reads rows of your own data from one of: ${QUERYABLE_TABLES.join(", ")}; ` +
    `with equality filters, ordering and a limit (at most ${MAX_LIMIT} rows).`,
  input,
  output,
  annotations: READ_ONLY_ANNOTATIONS,
  permission: "query_table",
  async run(args, { db }) {
    const plan = planQuery(args);
    if (!plan.ok) return plan;
    let rows: Record<string, unknown>[];
    try {
      rows = await db((tx) => tx.unsafe<Record<string, unknown>[]>(plan.text, plan.params));
    } catch (error) {
      const state = (error as { code?: unknown }).code;
      if (typeof state !== "string" || !BAD_VALUE_STATES.has(state)) throw error;
      return failure(
        "invalid_filter_value",
        `A filter value does not fit its column: ${(error as Error).message}`,
      );
    }
    return {
      ok: true,
      output: {
        table: plan.table,
        columns: plan.columns,
        rows: rows.map(jsonSafeRow),
        count: rows.length,
      },
    };
  },
};

/** Dates as ISO strings; everything else postgres.js returns is already JSON-safe. */
function jsonSafeRow(row: Record<string, unknown>): Record<string, unknown> {
  const safe: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(row)) {
    safe[key] = value instanceof Date ? value.toISOString() : value;
  }
  return safe;
}
