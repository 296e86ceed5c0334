-- MCP servers a user connects (the connections function), the tools discovered on them, and
-- the credentials the agent calls them with.
--
-- - mcp_servers: the user's own, read (and followed over Realtime: its status) and deleted by
--   him; added by the connections function once the server answered (mcp_store_server).
-- - mcp_tools: what tools/list returned, as the agent offers it: `<slug>__<name>` plus the
--   original name the server is called with.
-- - mcp_credentials: AES-GCM ciphertext made in the function (the key is a function secret,
--   never in SQL text). No grant to `authenticated`, not even on his own row, and not in the
--   Realtime publication: only the service role reads it.

create table public.mcp_servers (
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  slug text not null check (slug ~ '^[a-z][a-z0-9]{0,15}$'),
  display_name text check (char_length(display_name) between 1 and 100),
  url text not null check (char_length(url) <= 2048),
  auth_mode text not null check (auth_mode in ('none', 'header')),
  status text not null default 'connected' check (status in ('connected', 'needs_sign_in')),
  -- What discovery left out, e.g. a tool whose input schema is not JSON Schema.
  warnings jsonb not null default '[]' check (jsonb_typeof(warnings) = 'array'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint mcp_servers_user_slug_key unique (user_id, slug)
);
comment on table public.mcp_servers is
  'MCP servers a user connected; the agent offers their tools as <slug>__<name>.';

create table public.mcp_tools (
  server_id uuid not null references public.mcp_servers (id) on delete cascade,
  -- Kept beside server_id so RLS needs no join.
  user_id uuid not null references auth.users (id) on delete cascade,
  -- As offered to the model and named in permissions: <slug>__<name>.
  name text not null check (name ~ '^[a-z][a-z0-9]{0,15}__[a-z0-9_]+$' and char_length(name) <= 64),
  -- As the server named it: what tools/call sends.
  original_name text not null check (char_length(original_name) between 1 and 256),
  title text,
  description text not null default '',
  input_schema jsonb not null check (jsonb_typeof(input_schema) = 'object'),
  output_schema jsonb check (output_schema is null or jsonb_typeof(output_schema) = 'object'),
  annotations jsonb not null default '{}' check (jsonb_typeof(annotations) = 'object'),
  primary key (server_id, original_name),
  constraint mcp_tools_user_name_key unique (user_id, name)
);
comment on table public.mcp_tools is
  'Tools discovered on an MCP server (tools/list), as the agent offers them.';

create table public.mcp_credentials (
  server_id uuid primary key references public.mcp_servers (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  -- 12-byte IV then AES-256-GCM ciphertext of the credential JSON, with the server id as
  -- additional data (a row copied to another server does not decrypt).
  secret bytea not null check (octet_length(secret) > 28),
  created_at timestamptz not null default now()
);
comment on table public.mcp_credentials is
  'Encrypted credentials for MCP servers. Service role only: never readable by users.';

alter table public.mcp_servers enable row level security;
alter table public.mcp_tools enable row level security;
alter table public.mcp_credentials enable row level security;

create policy "mcp_servers: owner reads" on public.mcp_servers
  for select to authenticated using (user_id = (select auth.uid()));
create policy "mcp_servers: owner deletes" on public.mcp_servers
  for delete to authenticated using (user_id = (select auth.uid()));
create policy "mcp_tools: owner reads" on public.mcp_tools
  for select to authenticated using (user_id = (select auth.uid()));
-- mcp_credentials: no policy for any API role; RLS on, so even a grant by mistake shows nothing.

-- As in 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke all on public.mcp_servers, public.mcp_tools, public.mcp_credentials
  from anon, authenticated, service_role;
grant select, delete on public.mcp_servers to authenticated;
grant select on public.mcp_tools to authenticated;
grant insert on public.mcp_servers to service_role;
-- A backend holding the secret key may follow every published table over Realtime.
grant select on public.mcp_servers to service_role;
grant insert on public.mcp_tools to service_role;
grant select, insert on public.mcp_credentials to service_role;

-- The web app follows its servers' status (a revoked grant shows "needs sign-in" live).
alter publication supabase_realtime add table public.mcp_servers;

-- permissions.tool may name every tool of one server: '<slug>__*'. Resolution prefers the
-- tool's own row, then its server's, then '*' (permissions.ts).
alter table public.permissions drop constraint permissions_tool_check;
alter table public.permissions add constraint permissions_tool_check check (
  tool = '*' or tool ~ '^[a-z][a-z0-9_]{0,63}$' or tool ~ '^[a-z][a-z0-9]{0,15}__\*$'
);

-- Stores a server that answered, with its tools, its credential and a `<slug>__*` grant set to
-- `ask`, in one transaction: nothing half-way. The server's earlier grants under the same slug
-- go (a new server starts asking). A slug the user already uses fails with 23505.
create function public.mcp_store_server(
  p_server_id uuid,
  p_user_id uuid,
  p_slug text,
  p_display_name text,
  p_url text,
  p_auth_mode text,
  p_secret bytea,
  p_tools jsonb,
  p_warnings jsonb
)
returns void
language plpgsql
security invoker
set search_path = ''
as $$
begin
  insert into public.mcp_servers (id, user_id, slug, display_name, url, auth_mode, warnings)
  values (p_server_id, p_user_id, p_slug, p_display_name, p_url, p_auth_mode, p_warnings);

  insert into public.mcp_tools (server_id, user_id, name, original_name, title, description,
    input_schema, output_schema, annotations)
  select p_server_id, p_user_id, t.name, t.original_name, t.title, coalesce(t.description, ''),
    t.input_schema, t.output_schema, coalesce(t.annotations, '{}')
  from jsonb_to_recordset(p_tools) as t(name text, original_name text, title text,
    description text, input_schema jsonb, output_schema jsonb, annotations jsonb);

  if p_secret is not null then
    insert into public.mcp_credentials (server_id, user_id, secret)
    values (p_server_id, p_user_id, p_secret);
  end if;

  delete from public.permissions
  where user_id = p_user_id and starts_with(tool, p_slug || '__');
  insert into public.permissions (user_id, tool, approval_mode)
  values (p_user_id, p_slug || '__*', 'ask');
end;
$$;

revoke execute on function public.mcp_store_server(uuid, uuid, text, text, text, text, bytea,
  jsonb, jsonb) from public, anon, authenticated;
grant execute on function public.mcp_store_server(uuid, uuid, text, text, text, text, bytea,
  jsonb, jsonb) to service_role;

-- POST /connections reaches out to the server it names: it takes from a request bucket of
-- its own, like the other HTTP surfaces.
alter table public.request_buckets drop constraint request_buckets_surface_check;
alter table public.request_buckets add constraint request_buckets_surface_check
  check (surface in ('mcp', 'history', 'connections'));

-- A user's deletion cascades to his credentials through this key.
create index mcp_credentials_user_idx on public.mcp_credentials (user_id);

-- Replaces a server's tools with a fresh discovery (POST /connections/:id/refresh), in one
-- transaction: the server's other state and its grants stay. Nothing happens for a server
-- that is not the user's; returns whether it was.
create function public.mcp_replace_tools(
  p_server_id uuid,
  p_user_id uuid,
  p_tools jsonb,
  p_warnings jsonb
)
returns boolean
language plpgsql
security invoker
set search_path = ''
as $$
begin
  update public.mcp_servers set warnings = p_warnings, updated_at = now()
  where id = p_server_id and user_id = p_user_id;
  if not found then
    return false;
  end if;
  delete from public.mcp_tools where server_id = p_server_id;
  insert into public.mcp_tools (server_id, user_id, name, original_name, title, description,
    input_schema, output_schema, annotations)
  select p_server_id, p_user_id, t.name, t.original_name, t.title, coalesce(t.description, ''),
    t.input_schema, t.output_schema, coalesce(t.annotations, '{}')
  from jsonb_to_recordset(p_tools) as t(name text, original_name text, title text,
    description text, input_schema jsonb, output_schema jsonb, annotations jsonb);
  return true;
end;
$$;

grant update on public.mcp_servers to service_role;
-- Deleting by server_id reads the column: select with delete.
grant select, delete on public.mcp_tools to service_role;
revoke execute on function public.mcp_replace_tools(uuid, uuid, jsonb, jsonb)
  from public, anon, authenticated;
grant execute on function public.mcp_replace_tools(uuid, uuid, jsonb, jsonb) to service_role;
