/**
 * The connected servers in Postgres: stored whole by `public.mcp_store_server` (service role:
 * it writes the credential and the `<slug>__*` grant, neither of which is the user's to
 * write), read as the user (RLS: his own), and the credential read as service role for the
 * one server a call goes to.
 */
import postgres from "postgres";
import {
  asServiceRole,
  asUser,
  type JwtClaims,
  queryAsServiceRole,
  queryAsUser,
  type Sql,
} from "../db/client.ts";
import { inlineSql } from "../db/inline_sql.ts";
import type { Json } from "../db/database.types.ts";
import type { ConnectedToolView, ServerView } from "./protocol.ts";

export interface StoredTool {
  name: string;
  original_name: string;
  title: string | null;
  description: string;
  input_schema: Record<string, unknown>;
  output_schema: Record<string, unknown> | null;
  annotations: Record<string, unknown>;
}

export interface NewServer {
  id: string;
  userId: string;
  slug: string;
  displayName: string | null;
  url: string;
  authMode: "none" | "header";
  secret: Uint8Array | null;
  tools: StoredTool[];
  warnings: string[];
}

export type StoreResult = { ok: true } | { ok: false; reason: "slug_taken" };

export async function storeServer(sql: Sql, server: NewServer): Promise<StoreResult> {
  // Service role: the credential and the `<slug>__*` grant are not the user's to write.
  return await storeResultOf(() =>
    asServiceRole(
      sql,
      (tx) =>
        tx`select public.mcp_store_server(${server.id}::uuid, ${server.userId}::uuid,
        ${server.slug}, ${server.displayName}, ${server.url}, ${server.authMode},
        ${server.secret}::bytea, ${tx.json(server.tools as unknown as Json[])}::jsonb,
        ${tx.json(server.warnings)}::jsonb)`,
    )
  );
}

/** Runs a store; a slug the user already uses is a value, any other failure throws. */
export async function storeResultOf(store: () => Promise<unknown>): Promise<StoreResult> {
  try {
    await store();
    return { ok: true };
  } catch (error) {
    if (
      error instanceof postgres.PostgresError && error.code === "23505" &&
      error.constraint_name === "mcp_servers_user_slug_key"
    ) {
      return { ok: false, reason: "slug_taken" };
    }
    throw error;
  }
}

/**
 * Replaces a server's tools with a fresh discovery, in one transaction; false when the server
 * is not the user's. Service role, like storing it.
 */
export async function replaceTools(
  sql: Sql,
  serverId: string,
  userId: string,
  tools: StoredTool[],
  warnings: string[],
): Promise<boolean> {
  const [row] = await asServiceRole(
    sql,
    (tx) =>
      tx<{ replaced: boolean }[]>`select public.mcp_replace_tools(${serverId}::uuid,
      ${userId}::uuid, ${tx.json(tools as unknown as Json[])}::jsonb,
      ${tx.json(warnings)}::jsonb) as replaced`,
  );
  return row.replaced;
}

/** A server as stored, its tools without their grants (`app.ts` adds those). */
export type StoredServerView = Omit<ServerView, "tools"> & {
  tools: Omit<ConnectedToolView, "approval_mode">[];
};

export function listServers(sql: Sql, claims: JwtClaims): Promise<StoredServerView[]> {
  return asUser(sql, claims, (tx) =>
    tx<StoredServerView[]>`
      select s.id, s.slug, s.display_name, s.url, s.auth_mode, s.status, s.warnings,
        s.created_at,
        coalesce((select jsonb_agg(jsonb_build_object('name', t.name,
            'original_name', t.original_name, 'title', t.title, 'description', t.description,
            'annotations', t.annotations) order by t.name)
          from public.mcp_tools t where t.server_id = s.id), '[]') as tools
      from public.mcp_servers s
      order by s.created_at, s.slug`);
}

/** Deletes one of the caller's servers (its tools and credential go with it). */
export async function deleteServer(sql: Sql, claims: JwtClaims, id: string): Promise<boolean> {
  const rows = await asUser(
    sql,
    claims,
    (tx) => tx`delete from public.mcp_servers where id = ${id}::uuid returning id`,
  );
  return rows.length > 0;
}

/** A connected server's tool with what calling it needs, as the agent loads it. */
export interface ServerTool extends StoredTool {
  server_id: string;
  slug: string;
  url: string;
  auth_mode: string;
  status: string;
}

/** The caller's connected tools, read as him. */
export function loadServerTools(sql: Sql, claims: JwtClaims): Promise<ServerTool[]> {
  // One round trip: every chat and every takeover reads it before the LLM is asked.
  return queryAsUser<ServerTool>(
    sql,
    claims,
    inlineSql`
      select t.name, t.original_name, t.title, t.description, t.input_schema, t.output_schema,
        t.annotations, s.id as server_id, s.slug, s.url, s.auth_mode, s.status
      from public.mcp_tools t join public.mcp_servers s on s.id = t.server_id
      order by s.created_at, t.name`,
  );
}

/**
 * The stored credential of the user's server, or null when it has none. Service role (no
 * user may read credentials), so the user id is matched here.
 */
export async function loadSecret(
  sql: Sql,
  userId: string,
  serverId: string,
): Promise<Uint8Array | null> {
  // One round trip (every call of a server with a credential reads this).
  const rows = await queryAsServiceRole<{ secret: Uint8Array }>(
    sql,
    inlineSql`select secret from public.mcp_credentials
      where server_id = ${serverId}::uuid and user_id = ${userId}::uuid`,
  );
  return rows[0]?.secret ?? null;
}
