/**
 * A read-only stand-in for PostgREST (`/rest/v1`): the part `supabase.from(table).select()`
 * uses, so the web client reads its usage, limits and grants exactly as it would from
 * Supabase. Each request runs as its caller (`asUser`: role and `request.jwt.claims`
 * transaction-locally), so RLS decides what comes back; the JSON is built by Postgres with
 * `json_agg`, as PostgREST builds it (numeric as numbers, timestamps with their offset).
 *
 * Supported: `GET /rest/v1/<table>` in the public schema with
 *   select=*|col,col…   filters col=eq|neq|gt|gte|lt|lte|like|ilike.<value>, col=in.(a,b),
 *   col=is.null|true|false   order=col[.asc|.desc][.nullsfirst|.nullslast],…   limit, offset
 * Anything else (embedding, writes, rpc, other schemas) is refused with a PostgREST-style
 * error that says so, never silently ignored.
 */
import { bearerToken, type TokenVerifier } from "./token_verifier.ts";
import { asUser, type JwtClaims, type Sql } from "../../supabase/functions/_shared/db.ts";
import { roleOfApiKey } from "./keys.ts";

export type RestHandler = (request: Request) => Promise<Response>;

export interface RestHandlerOptions {
  /** A superuser pool; every query runs as the caller inside it. */
  sql: Sql;
  verifier: TokenVerifier;
  /** PostgREST's `max_rows` (config.toml `[api] max_rows`). */
  maxRows?: number;
}

const PREFIX = "/rest/v1/";
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
const COMPARISONS: Record<string, string> = {
  eq: "=",
  neq: "<>",
  gt: ">",
  gte: ">=",
  lt: "<",
  lte: "<=",
  like: "like",
  ilike: "ilike",
};
/** Query parameters that are not filters. */
const RESERVED = new Set(["select", "order", "limit", "offset"]);
const CORS_HEADERS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Expose-Headers": "Content-Range",
};

class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint: string | null = null,
  ) {
    super(message);
  }

  toResponse(): Response {
    return Response.json(
      { code: this.code, details: null, hint: this.hint, message: this.message },
      { status: this.status, headers: CORS_HEADERS },
    );
  }
}

export function createRestHandler(options: RestHandlerOptions): RestHandler {
  const maxRows = options.maxRows ?? 1000;
  const columnsOf = tableColumns(options.sql);
  return async (request) => {
    try {
      if (request.method === "OPTIONS") return preflight();
      if (request.method !== "GET" && request.method !== "HEAD") {
        throw new RestError(
          405,
          "PGRST117",
          `${request.method} is not supported by the local REST stand-in, which only reads`,
        );
      }
      const claims = await callerClaims(request, options.verifier);
      const url = new URL(request.url);
      const table = url.pathname.slice(PREFIX.length);
      const profile = request.headers.get("accept-profile");
      if (profile && profile !== "public") {
        throw new RestError(406, "PGRST106", "The schema must be one of the following: public");
      }
      if (!IDENTIFIER.test(table)) throw noSuchTable(table);
      const columns = await columnsOf(table);
      if (!columns) throw noSuchTable(table);
      const query = buildQuery(table, columns, url.searchParams, maxRows);
      const [row] = await asUser(
        options.sql,
        claims,
        (tx) => tx.unsafe<{ body: string; count: number }[]>(query.text, query.params),
      );
      const range = row.count === 0 ? "*/*" : `${query.offset}-${query.offset + row.count - 1}/*`;
      return new Response(request.method === "HEAD" ? null : row.body, {
        headers: {
          ...CORS_HEADERS,
          "Content-Type": "application/json; charset=utf-8",
          "Content-Range": range,
        },
      });
    } catch (error) {
      if (error instanceof RestError) return error.toResponse();
      const state = (error as { code?: unknown }).code;
      if (typeof state === "string" && /^[0-9A-Z]{5}$/.test(state)) {
        // A Postgres error (a value the column type refuses, a privilege): PostgREST's shape.
        const status = state === "42501" ? 403 : 400;
        return new RestError(status, state, (error as Error).message).toResponse();
      }
      throw error;
    }
  };
}

/** The caller: a verified user token, else the role of the apikey (anon or service_role). */
async function callerClaims(request: Request, verifier: TokenVerifier): Promise<JwtClaims> {
  const bearer = bearerToken(request);
  const apikey = request.headers.get("apikey") ?? (bearer?.startsWith("sb_") ? bearer : null);
  const keyRole = roleOfApiKey(apikey);
  if (!keyRole) throw new RestError(401, "PGRST301", "No valid API key found in the request");
  if (!bearer || bearer.startsWith("sb_")) return { role: keyRole };
  const verdict = await verifier.verify(bearer);
  if (!verdict.ok) throw new RestError(401, "PGRST303", verdict.message);
  return verdict.user.claims;
}

/** Column names of a public table (cached briefly), or undefined when there is none. */
function tableColumns(sql: Sql): (table: string) => Promise<string[] | undefined> {
  const cache = new Map<string, { columns: Promise<string[]>; until: number }>();
  return async (table) => {
    const now = Date.now();
    let entry = cache.get(table);
    if (!entry || entry.until < now) {
      const columns = sql<{ name: string }[]>`
        select a.attname as name
        from pg_catalog.pg_attribute a
        join pg_catalog.pg_class c on c.oid = a.attrelid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relname = ${table} and c.relkind in ('r', 'v', 'm', 'p')
          and a.attnum > 0 and not a.attisdropped
        order by a.attnum`.then((rows) => rows.map((r) => r.name));
      entry = { columns, until: now + 5_000 };
      cache.set(table, entry);
    }
    const columns = await entry.columns;
    return columns.length > 0 ? columns : undefined;
  };
}

interface BuiltQuery {
  text: string;
  params: string[];
  offset: number;
}

/** The statement for one read; identifiers are checked against the table, values are bound. */
export function buildQuery(
  table: string,
  columns: string[],
  search: URLSearchParams,
  maxRows: number,
): BuiltQuery {
  const known = new Set(columns);
  const column = (name: string, where: string) => {
    if (!known.has(name)) {
      throw new RestError(400, "42703", `column ${table}.${name} does not exist (${where})`);
    }
    return `"${name}"`;
  };
  const params: string[] = [];
  const bind = (value: string) => {
    params.push(value);
    return `$${params.length}`;
  };

  const select = (search.get("select") ?? "*").replaceAll(/\s/g, "");
  const selected = select === "*" ? "*" : select.split(",").map((name) => {
    if (!IDENTIFIER.test(name)) {
      throw new RestError(
        400,
        "PGRST100",
        `"${name}" in select: the local REST stand-in reads plain columns only`,
      );
    }
    return column(name, "select");
  }).join(", ");

  const conditions: string[] = [];
  for (const [name, expression] of search) {
    if (RESERVED.has(name)) continue;
    const target = column(name, "filter");
    const dot = expression.indexOf(".");
    const operator = dot > 0 ? expression.slice(0, dot) : expression;
    const value = dot > 0 ? expression.slice(dot + 1) : "";
    if (operator in COMPARISONS) {
      conditions.push(`${target} ${COMPARISONS[operator]} ${bind(value)}`);
    } else if (operator === "in" && /^\(.*\)$/.test(value)) {
      const values = value.slice(1, -1).split(",").map((v) => v.trim().replace(/^"(.*)"$/, "$1"));
      conditions.push(`${target} in (${values.map(bind).join(", ")})`);
    } else if (operator === "is" && ["null", "true", "false"].includes(value)) {
      conditions.push(`${target} is ${value}`);
    } else {
      throw new RestError(
        400,
        "PGRST100",
        `"${name}=${expression}": the local REST stand-in supports ` +
          `${Object.keys(COMPARISONS).join(", ")}, in and is`,
      );
    }
  }

  const order = (search.get("order") ?? "").split(",").filter((term) => term !== "").map(
    (term) => {
      const [name, ...modifiers] = term.split(".");
      const parts = [column(name, "order")];
      for (const modifier of modifiers) {
        if (modifier === "asc" || modifier === "desc") parts.push(modifier);
        else if (modifier === "nullsfirst") parts.push("nulls first");
        else if (modifier === "nullslast") parts.push("nulls last");
        else throw new RestError(400, "PGRST100", `"${term}" in order: unknown modifier`);
      }
      return parts.join(" ");
    },
  );

  const limit = Math.min(integerParam(search, "limit") ?? maxRows, maxRows);
  const offset = integerParam(search, "offset") ?? 0;
  const text = `select coalesce(json_agg(t), '[]')::text as body, count(*)::int as count
    from (select ${selected} from public."${table}"
          ${conditions.length > 0 ? `where ${conditions.join(" and ")}` : ""}
          ${order.length > 0 ? `order by ${order.join(", ")}` : ""}
          limit ${limit} offset ${offset}) t`;
  return { text, params, offset };
}

function integerParam(search: URLSearchParams, name: string): number | undefined {
  const value = search.get(name);
  if (value === null) return undefined;
  if (!/^\d{1,9}$/.test(value)) {
    throw new RestError(400, "PGRST100", `${name} must be a non-negative integer`);
  }
  return Number(value);
}

function noSuchTable(table: string): RestError {
  return new RestError(
    404,
    "PGRST205",
    `Could not find the table 'public.${table}' in the schema cache`,
  );
}

function preflight(): Response {
  return new Response(null, {
    status: 204,
    headers: {
      ...CORS_HEADERS,
      "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
      "Access-Control-Allow-Headers":
        "authorization, apikey, content-type, x-client-info, prefer, accept-profile, range, " +
        "x-supabase-api-version",
      "Access-Control-Max-Age": "86400",
    },
  });
}
