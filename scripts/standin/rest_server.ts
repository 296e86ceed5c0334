/**
 * A read-only stand-in for PostgREST (`/rest/v1`): the part `supabase.from(table).select()`
 * uses, so the web client reads its usage, limits and grants exactly as it would from
 * Supabase. Each request runs as its caller (`asUser`: role and `request.jwt.claims`
 * transaction-locally), so RLS decides what comes back; the JSON is built by Postgres with
 * `json_agg`, as PostgREST builds it (numeric as numbers, timestamps with their offset).
 *
 * Supported: `GET`/`HEAD /rest/v1/<table>` in the public schema with
 *   select=*|col,col…   filters and or/and trees (rest_filters.ts)
 *   order=col[.asc|.desc][.nullsfirst|.nullslast],…   limit, offset, a `Range: a-b` header
 *   Accept: application/json (the array) or application/vnd.pgrst.object+json (`.single()`:
 *     exactly one row, else 406 PGRST116)
 *   Prefer: count=exact|planned|estimated (all three counted exactly): `Content-Range: 0-9/42`,
 *     206 when the page is not everything, 416 PGRST103 past the end
 * Anything else (embedding, writes, rpc, other schemas, other media types) is refused with
 * the error PostgREST gives or, for what it implements and the stand-in does not, PGRST100;
 * never silently ignored.
 */
import { bearerToken, type TokenVerifier } from "./token_verifier.ts";
import { asUser, type JwtClaims, type Sql } from "../../supabase/functions/_shared/db/client.ts";
import { type ApiKeys, roleOfApiKey, STANDARD_API_KEYS } from "./keys.ts";
import { compileFilter, compileLogicTree, FilterError } from "./rest_filters.ts";

export type RestHandler = (request: Request) => Promise<Response>;

export interface RestHandlerOptions {
  /** A superuser pool; every query runs as the caller inside it. */
  sql: Sql;
  verifier: TokenVerifier;
  /** Which `apikey`s open it; the `sb_` keys by default. */
  apiKeys?: ApiKeys;
  /** PostgREST's `max_rows` (config.toml `[api] max_rows`). */
  maxRows?: number;
}

const PREFIX = "/rest/v1/";
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
/** Query parameters that are not column filters. */
const RESERVED = new Set(["select", "order", "limit", "offset", "columns", "on_conflict"]);
const LOGIC_KEYS = new Set(["or", "and", "not.or", "not.and"]);
const CORS_HEADERS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Expose-Headers": "Content-Range",
};

class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly more: { details?: string | null; hint?: string | null; headers?: HeadersInit } = {},
  ) {
    super(message);
  }

  toResponse(): Response {
    const body = {
      code: this.code,
      details: this.more.details ?? null,
      hint: this.more.hint ?? null,
      message: this.message,
    };
    const headers = new Headers(CORS_HEADERS);
    headers.set("Proxy-Status", `PostgREST; error=${this.code}`);
    for (const [name, value] of new Headers(this.more.headers)) headers.set(name, value);
    return Response.json(body, { status: this.status, headers });
  }
}

export function createRestHandler(options: RestHandlerOptions): RestHandler {
  const maxRows = options.maxRows ?? 1000;
  const columnsOf = tableColumns(options.sql);
  return async (request) => {
    let claims: JwtClaims | undefined;
    try {
      if (request.method === "OPTIONS") return preflight();
      const url = new URL(request.url);
      const path = url.pathname;
      if (path === PREFIX || path.startsWith(`${PREFIX}rpc/`)) {
        // PostgREST's own answer for a feature it lacks (PGRST127).
        throw new RestError(400, "PGRST127", "Feature not implemented", {
          details: `the local REST stand-in serves table reads only, not ${
            path === PREFIX ? "the OpenAPI root" : "rpc()"
          }`,
        });
      }
      if (request.method !== "GET" && request.method !== "HEAD") {
        throw new RestError(
          405,
          "PGRST117",
          `${request.method} is not supported by the local REST stand-in, which only reads`,
        );
      }
      claims = await callerClaims(request, options.verifier, options.apiKeys ?? STANDARD_API_KEYS);
      const table = path.slice(PREFIX.length);
      const profile = request.headers.get("accept-profile");
      if (profile && profile !== "public") {
        throw new RestError(406, "PGRST106", `Invalid schema: ${profile}`, {
          hint: "Only the following schemas are exposed: public",
        });
      }
      if (!IDENTIFIER.test(table)) throw noSuchTable(table);
      const columns = await columnsOf(table);
      if (!columns) throw noSuchTable(table);
      const representation = negotiate(request.headers.get("accept"));
      const counted = /(^|[\s,;])count=(exact|planned|estimated)\b/.test(
        request.headers.get("prefer") ?? "",
      );
      const query = buildQuery(table, columns, url.searchParams, maxRows, {
        counted,
        single: representation === "object",
        range: request.headers.get("range"),
      });
      const [row] = await asUser(
        options.sql,
        claims,
        (tx) =>
          tx.unsafe<{ body: string | null; count: number; total: number | null }[]>(
            query.text,
            query.params,
          ),
      );
      // PostgREST's Content-Range and status (App.hs rangeStatus / contentRangeH).
      const lower = query.offset;
      const upper = lower + row.count - 1;
      const total = row.total;
      const range = `${total !== 0 && lower <= upper ? `${lower}-${upper}` : "*"}/${total ?? "*"}`;
      if (total !== null && lower > total) {
        throw new RestError(416, "PGRST103", "Requested range not satisfiable", {
          details: `An offset of ${lower} was requested, but there are only ${total} rows.`,
          headers: { "Content-Range": range },
        });
      }
      if (representation === "object" && row.count !== 1) {
        throw new RestError(406, "PGRST116", "Cannot coerce the result to a single JSON object", {
          details: `The result contains ${row.count} rows`,
        });
      }
      const status = total !== null && 1 + upper - lower < total ? 206 : 200;
      return new Response(request.method === "HEAD" ? null : row.body, {
        status,
        headers: {
          ...CORS_HEADERS,
          "Content-Type": representation === "object"
            ? "application/vnd.pgrst.object+json; charset=utf-8"
            : "application/json; charset=utf-8",
          "Content-Range": range,
        },
      });
    } catch (error) {
      if (error instanceof RestError) return error.toResponse();
      if (error instanceof FilterError) {
        return new RestError(400, error.code, error.message, { details: error.details })
          .toResponse();
      }
      const { code: state, detail, hint } = error as {
        code?: unknown;
        detail?: string;
        hint?: string;
      };
      if (typeof state === "string" && /^[0-9A-Z]{5}$/.test(state)) {
        // A Postgres error (a value the column type refuses, a privilege): PostgREST's shape,
        // and its status: 42501 is 401 for the anonymous role, 403 for anyone signed in.
        const status = state === "42501" ? (claims?.role === "anon" ? 401 : 403) : 400;
        return new RestError(status, state, (error as Error).message, { details: detail, hint })
          .toResponse();
      }
      throw error;
    }
  };
}

/** The caller: a verified user token, else the role of the apikey (anon or service_role). */
async function callerClaims(
  request: Request,
  verifier: TokenVerifier,
  apiKeys: ApiKeys,
): Promise<JwtClaims> {
  const bearer = bearerToken(request);
  // supabase-js sends the API key as the Bearer token too until a user signs in.
  const bearerRole = roleOfApiKey(bearer, apiKeys);
  const bearerIsKey = bearer?.startsWith("sb_") || bearerRole !== undefined;
  const apikey = request.headers.get("apikey") ?? (bearerIsKey ? bearer : null);
  const keyRole = roleOfApiKey(apikey, apiKeys);
  if (!keyRole) throw new RestError(401, "PGRST301", "No valid API key found in the request");
  if (!bearer || bearerIsKey) return { role: bearerRole ?? keyRole };
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

interface QueryOptions {
  /** Also count every matching row (`Prefer: count=…`), as `total`. */
  counted?: boolean;
  /** The body is the one row as an object (`null` unless exactly one row matched). */
  single?: boolean;
  /** A `Range: <first>-[<last>]` header, intersected with limit/offset as PostgREST does. */
  range?: string | null;
}

/** The statement for one read; identifiers are checked against the table, values are bound. */
export function buildQuery(
  table: string,
  columns: string[],
  search: URLSearchParams,
  maxRows: number,
  options: QueryOptions = {},
): BuiltQuery {
  const known = new Set(columns);
  const column = (name: string) => {
    if (!known.has(name)) {
      throw new RestError(400, "42703", `column ${table}.${name} does not exist`);
    }
    return `"${name}"`;
  };
  const params: string[] = [];
  const bind = (value: string) => {
    params.push(value);
    return `$${params.length}`;
  };

  for (const name of search.keys()) {
    const path = name.split(".");
    if (path.length > 1 && !LOGIC_KEYS.has(name)) {
      // An embedded resource's filter, order, limit or logic tree; nothing is ever embedded.
      const resource = path[0] === "not" ? path[1] : path[0];
      throw new RestError(
        400,
        "PGRST108",
        `'${resource}' is not an embedded resource in this request`,
        {
          hint: `Verify that '${resource}' is included in the 'select' query parameter.`,
        },
      );
    }
  }

  const select = (search.get("select") ?? "*").replaceAll(/\s/g, "");
  const selected = select === "*" ? "*" : select.split(",").map((name) => {
    if (!IDENTIFIER.test(name)) {
      throw new RestError(
        400,
        "PGRST100",
        `"${name}" in select: the local REST stand-in reads plain columns only`,
      );
    }
    return column(name);
  }).join(", ");

  const conditions: string[] = [];
  const context = { column, bind };
  for (const [name, expression] of search) {
    if (RESERVED.has(name)) continue;
    conditions.push(
      LOGIC_KEYS.has(name)
        ? compileLogicTree(name, expression, context)
        : compileFilter(name, expression, context),
    );
  }

  const order = (search.get("order") ?? "").split(",").filter((term) => term !== "").map(
    (term) => {
      const [name, ...modifiers] = term.split(".");
      const parts = [column(name)];
      for (const modifier of modifiers) {
        if (modifier === "asc" || modifier === "desc") parts.push(modifier);
        else if (modifier === "nullsfirst") parts.push("nulls first");
        else if (modifier === "nullslast") parts.push("nulls last");
        else throw new RestError(400, "PGRST100", `"${term}" in order: unknown modifier`);
      }
      return parts.join(" ");
    },
  );

  let offset = integerParam(search, "offset") ?? 0;
  const limited = integerParam(search, "limit");
  let last = limited === undefined ? Infinity : offset + limited - 1;
  const range = /^\s*(\d+)-(\d*)\s*$/.exec(options.range ?? "");
  if (range) {
    const first = Number(range[1]);
    const rangeLast = range[2] === "" ? Infinity : Number(range[2]);
    if (first > rangeLast) {
      throw new RestError(416, "PGRST103", "Requested range not satisfiable", {
        details:
          "The lower boundary must be lower than or equal to the upper boundary in the Range header.",
      });
    }
    offset = Math.max(offset, first);
    last = Math.min(last, rangeLast);
  }
  const limit = Math.max(0, Math.min(last - offset + 1, maxRows));

  const where = conditions.length > 0 ? `where ${conditions.join(" and ")}` : "";
  const body = options.single
    ? `case when count(*) = 1 then (json_agg(t) -> 0)::text end`
    : `coalesce(json_agg(t), '[]')::text`;
  const total = options.counted
    ? `(select count(*) from public."${table}" ${where})::int`
    : "null::int";
  const text = `select ${body} as body, count(*)::int as count, ${total} as total
    from (select ${selected} from public."${table}"
          ${where}
          ${order.length > 0 ? `order by ${order.join(", ")}` : ""}
          limit ${limit} offset ${offset}) t`;
  return { text, params, offset };
}

/** Which representation the Accept header asks for; PGRST107 when none is served here. */
function negotiate(accept: string | null): "array" | "object" {
  if (accept === null || accept.trim() === "") return "array";
  const ranges = accept.split(",").map((part, index) => {
    const [type, ...parameters] = part.split(";").map((piece) => piece.trim());
    const q = parameters.find((p) => p.startsWith("q="));
    return {
      type: type.toLowerCase(),
      parameters: parameters.filter((p) => !p.startsWith("q=")),
      quality: q ? Number(q.slice(2)) : 1,
      index,
    };
  }).filter((range) => range.quality > 0)
    .sort((a, b) => b.quality - a.quality || a.index - b.index);
  for (const range of ranges) {
    if (range.parameters.length > 0) continue; // e.g. nulls=stripped: not implemented here
    if (["application/json", "application/*", "*/*"].includes(range.type)) return "array";
    if (/^application\/vnd\.pgrst\.array(\+json)?$/.test(range.type)) return "array";
    if (/^application\/vnd\.pgrst\.object(\+json)?$/.test(range.type)) return "object";
  }
  throw new RestError(
    406,
    "PGRST107",
    `None of these media types are available: ${
      accept.split(",").map((part) => part.trim()).join(", ")
    }`,
  );
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
