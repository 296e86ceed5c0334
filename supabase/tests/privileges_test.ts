/**
 * The privilege matrix and the hosted roles it relies on. Hosted Supabase connects the
 * functions as `postgres` (no superuser, BYPASSRLS) and may create tables with no privileges
 * for the API roles ("default privileges for new entities" off); the local database is shaped
 * the same way, so everything the product may do must be granted by a migration
 * (20261202000100_explicit_privileges.sql). This file holds the expected matrix: any grant
 * added, dropped or widened without updating it fails here.
 *
 * That each grant is actually needed is the other tests' job: `deno task test:mutations`
 * revokes each one in turn and runs the database tests without this file.
 */
import assert from "node:assert/strict";
import { connectTestDatabase } from "./support/database.ts";

const API_ROLES = ["anon", "authenticated", "service_role"] as const;
type ApiRole = typeof API_ROLES[number];
const TABLE_PRIVILEGES = [
  "SELECT",
  "INSERT",
  "UPDATE",
  "DELETE",
  "TRUNCATE",
  "REFERENCES",
  "TRIGGER",
] as const;

/** Per table and role, the privileges held; a role not named holds none (`anon` nowhere). */
const EXPECTED_TABLES: Record<string, Partial<Record<ApiRole, string>>> = {
  agent_chat_queue: { authenticated: "SELECT", service_role: "SELECT INSERT UPDATE DELETE" },
  agent_connections: { authenticated: "SELECT", service_role: "SELECT INSERT UPDATE DELETE" },
  agent_isolates: { service_role: "SELECT INSERT UPDATE DELETE" },
  agent_turn_checkpoints: { service_role: "SELECT INSERT UPDATE" },
  agent_turn_events: { authenticated: "SELECT", service_role: "SELECT INSERT" },
  agent_turns: { authenticated: "SELECT", service_role: "SELECT INSERT UPDATE" },
  chat_history: { authenticated: "SELECT INSERT UPDATE DELETE", service_role: "SELECT UPDATE" },
  chat_sessions: { authenticated: "SELECT INSERT UPDATE DELETE", service_role: "SELECT" },
  default_permissions: { authenticated: "SELECT", service_role: "SELECT INSERT UPDATE DELETE" },
  mcp_credentials: { service_role: "SELECT INSERT UPDATE" },
  mcp_oauth_flows: { service_role: "SELECT INSERT DELETE" },
  mcp_servers: { authenticated: "SELECT DELETE", service_role: "SELECT INSERT UPDATE" },
  mcp_tools: { authenticated: "SELECT", service_role: "SELECT INSERT DELETE" },
  models: { authenticated: "SELECT", service_role: "SELECT INSERT UPDATE DELETE" },
  permissions: { authenticated: "SELECT", service_role: "SELECT INSERT UPDATE DELETE" },
  refusal_counts: { service_role: "SELECT INSERT UPDATE DELETE" },
  request_buckets: { service_role: "SELECT INSERT UPDATE" },
  tool_approvals: { authenticated: "SELECT INSERT DELETE" },
  usage_metrics: { authenticated: "SELECT", service_role: "SELECT INSERT" },
  user_limits: { authenticated: "SELECT", service_role: "SELECT INSERT UPDATE" },
};

/** Per function in `public`, the roles that may execute it (through PUBLIC too). */
const EXPECTED_FUNCTIONS: Record<string, ApiRole[]> = {
  "account_refusal(uuid,uuid)": ["service_role"],
  "agent_adopt_turns(text,uuid,uuid,integer,integer)": ["service_role"],
  "agent_answer_parked(text,uuid,uuid,text,jsonb)": ["service_role"],
  "agent_chat_context(uuid,uuid,integer,uuid[])": ["authenticated"],
  "agent_fail_queued_chat(uuid,uuid,jsonb)": ["service_role"],
  "agent_flush(text,jsonb,jsonb,jsonb)": ["service_role"],
  "agent_interrupt_stale_turns(uuid,integer,uuid,uuid)": ["service_role"],
  "agent_register_connection(uuid,uuid,text,integer)": ["service_role"],
  "agent_release_lease(text)": ["service_role"],
  "agent_renew_lease(text,integer)": ["service_role"],
  "agent_reserve_step(uuid,integer,integer)": ["service_role"],
  "agent_session_busy_turn(uuid,uuid,integer)": ["service_role"],
  "agent_start_chat(text,jsonb,uuid,uuid,text,jsonb,text,text,integer,integer,integer)": [
    "service_role",
  ],
  "agent_start_turn(uuid,uuid,text,jsonb,text,text,integer,integer,integer)": ["service_role"],
  "agent_turn_resumption(uuid,text,jsonb)": ["service_role"],
  "agent_startable_chats(uuid,uuid,integer)": ["service_role"],
  "agent_sweep_queued_chats(integer)": ["service_role"],
  "append_messages(uuid,jsonb,text)": ["authenticated"],
  "caller_account_refusal()": ["authenticated"],
  "consume_quota(uuid,integer,numeric)": ["service_role"],
  "consume_request(uuid,text)": ["service_role"],
  "consume_tool_calls(uuid,integer)": ["service_role"],
  "mcp_end_refresh(uuid,uuid,boolean)": ["service_role"],
  "mcp_replace_oauth_credential(uuid,uuid,bytea,timestamp with time zone)": ["service_role"],
  "mcp_replace_tools(uuid,uuid,jsonb,jsonb)": ["service_role"],
  "mcp_store_oauth_server(uuid,uuid,text,text,text,bytea,timestamp with time zone,jsonb,jsonb)": [
    "service_role",
  ],
  "mcp_store_refreshed(uuid,uuid,integer,bytea,timestamp with time zone)": ["service_role"],
  "mcp_store_server(uuid,uuid,text,text,text,text,bytea,jsonb,jsonb)": ["service_role"],
  "mcp_take_refresh_lease(uuid,uuid,integer,integer)": ["service_role"],
  "my_permissions()": ["authenticated"],
  "operator_metrics(integer,integer)": ["service_role"],
  "settle_quota(uuid,integer,integer,numeric,numeric)": ["service_role"],
};

Deno.test("the functions' database role is hosted's postgres: no superuser, BYPASSRLS", async () => {
  const sql = connectTestDatabase(1);
  try {
    const [me] = await sql`
      select current_user as name, r.rolsuper, r.rolbypassrls, r.rolcreatedb, r.rolcreaterole,
        r.rolreplication,
        array(select g.rolname::text from pg_auth_members m join pg_roles g on g.oid = m.roleid
              where m.member = r.oid order by 1) as member_of,
        (select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'public')
          as public_owner,
        (select pg_get_userbyid(datdba) from pg_database where datname = current_database())
          as database_owner,
        (select pg_get_userbyid(pubowner) from pg_publication
         where pubname = 'supabase_realtime') as publication_owner,
        (select pg_get_userbyid(relowner) from pg_class where oid = 'auth.users'::regclass)
          as auth_users_owner
      from pg_roles r where r.rolname = current_user`;
    assert.deepEqual({ ...me }, {
      name: "postgres",
      rolsuper: false,
      rolbypassrls: true,
      rolcreatedb: true,
      rolcreaterole: true,
      rolreplication: true,
      member_of: ["anon", "authenticated", "service_role", "supabase_auth_admin"],
      public_owner: "postgres",
      database_owner: "postgres",
      publication_owner: "postgres",
      auth_users_owner: "supabase_auth_admin",
    });
  } finally {
    await sql.end();
  }
});

Deno.test("default privileges are off: a new table or function grants the API roles nothing", async () => {
  const sql = connectTestDatabase(1);
  try {
    const rows = await sql.begin(async (tx) => {
      await tx`create table public.privilege_probe (id int)`;
      await tx`create function public.privilege_probe_fn() returns int language sql as 'select 1'`;
      const found = await tx`
        select r.role,
          has_table_privilege(r.role, 'public.privilege_probe', 'SELECT') as can_select,
          has_table_privilege(r.role, 'public.privilege_probe', 'INSERT') as can_insert,
          has_table_privilege(r.role, 'public.privilege_probe', 'UPDATE') as can_update,
          has_table_privilege(r.role, 'public.privilege_probe', 'DELETE') as can_delete
        from unnest(${API_ROLES as unknown as string[]}::text[]) as r(role) order by 1`;
      // Postgres grants EXECUTE to PUBLIC on every new function; only migrations revoke it.
      const [fn] = await tx`
        select has_function_privilege('anon', 'public.privilege_probe_fn()', 'EXECUTE')
          as anon_executes`;
      await tx`drop function public.privilege_probe_fn()`;
      await tx`drop table public.privilege_probe`;
      return { found, anonExecutes: fn.anon_executes };
    });
    for (const row of rows.found) {
      assert.deepEqual(
        [row.can_select, row.can_insert, row.can_update, row.can_delete],
        [false, false, false, false],
        `${row.role} was granted privileges on a new table`,
      );
    }
    assert.equal(rows.anonExecutes, true, "PUBLIC's EXECUTE on new functions is Postgres's own");
  } finally {
    await sql.end();
  }
});

Deno.test("every API role holds exactly the table privileges in the matrix", async () => {
  const sql = connectTestDatabase(1);
  try {
    const rows = await sql<{ table: string; role: ApiRole; privilege: string }[]>`
      select c.relname as table, r.role, p.privilege
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      cross join unnest(${API_ROLES as unknown as string[]}::text[]) as r(role)
      cross join unnest(${TABLE_PRIVILEGES as unknown as string[]}::text[])
        with ordinality as p(privilege, position)
      where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm')
        and has_table_privilege(r.role, c.oid, p.privilege)
      order by c.relname, r.role, p.position`;
    const actual: Record<string, Partial<Record<ApiRole, string>>> = {};
    for (const { table, role, privilege } of rows) {
      const held = (actual[table] ??= {});
      held[role] = held[role] ? `${held[role]} ${privilege}` : privilege;
    }
    const tables = await sql<{ relname: string }[]>`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm') order by 1`;
    for (const { relname } of tables) actual[relname] ??= {};
    assert.deepEqual(actual, normalise(EXPECTED_TABLES));
  } finally {
    await sql.end();
  }
});

Deno.test("every API role may execute exactly the functions in the matrix", async () => {
  const sql = connectTestDatabase(1);
  try {
    const rows = await sql<{ signature: string; role: ApiRole | null }[]>`
      select regexp_replace(p.oid::regprocedure::text, '^public\.', '') as signature, r.role
      from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace
      left join unnest(${API_ROLES as unknown as string[]}::text[]) as r(role)
        on has_function_privilege(r.role, p.oid, 'EXECUTE')
      where n.nspname = 'public'
      order by 1, 2`;
    const actual: Record<string, ApiRole[]> = {};
    for (const { signature, role } of rows) {
      actual[signature] ??= [];
      if (role) actual[signature].push(role);
    }
    assert.deepEqual(actual, EXPECTED_FUNCTIONS);
  } finally {
    await sql.end();
  }
});

Deno.test("the API roles hold nothing on sequences or in the private schema", async () => {
  const sql = connectTestDatabase(1);
  try {
    const rows = await sql`
      select c.relname, r.role
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      cross join unnest(${API_ROLES as unknown as string[]}::text[]) as r(role)
      where n.nspname = 'public' and c.relkind = 'S'
        and (has_sequence_privilege(r.role, c.oid, 'USAGE')
          or has_sequence_privilege(r.role, c.oid, 'SELECT')
          or has_sequence_privilege(r.role, c.oid, 'UPDATE'))
      union all
      select 'schema private', r.role
      from unnest(${API_ROLES as unknown as string[]}::text[]) as r(role)
      where has_schema_privilege(r.role, 'private', 'USAGE')`;
    assert.deepEqual(rows.map((row) => `${row.role} on ${row.relname}`), []);
  } finally {
    await sql.end();
  }
});

function normalise(
  matrix: Record<string, Partial<Record<ApiRole, string>>>,
): Record<string, Partial<Record<ApiRole, string>>> {
  const sorted: Record<string, Partial<Record<ApiRole, string>>> = {};
  for (const [table, roles] of Object.entries(matrix)) {
    sorted[table] = {};
    for (const role of API_ROLES) {
      const held = roles[role];
      if (held) {
        sorted[table][role] = TABLE_PRIVILEGES.filter((p) => held.split(" ").includes(p)).join(
          " ",
        );
      }
    }
  }
  return sorted;
}
