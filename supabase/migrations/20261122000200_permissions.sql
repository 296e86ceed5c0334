-- Which tools a user may use, and how: `auto` runs at once, `ask` waits for the user's
-- approval, `deny` refuses. Users read their own grants; only the service role grants.

create type public.approval_mode as enum ('auto', 'ask', 'deny');

create table public.permissions (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  -- A tool name, or '*' for every tool.
  tool text not null check (tool = '*' or tool ~ '^[a-z][a-z0-9_]{0,63}$'),
  approval_mode public.approval_mode not null default 'auto',
  -- Per-tool constraints, e.g. {"workflow_ids": ["daily-report"]} for execute_workflow.
  constraints jsonb not null default '{}' check (jsonb_typeof(constraints) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint permissions_user_tool_key unique (user_id, tool)
);
comment on table public.permissions is
  'Tool grants per user (tool or *), with approval mode and constraints. Granted by service_role.';

-- Grants every new user receives; edit these rows to change the defaults.
create table public.default_permissions (
  tool text primary key check (tool = '*' or tool ~ '^[a-z][a-z0-9_]{0,63}$'),
  approval_mode public.approval_mode not null default 'auto',
  constraints jsonb not null default '{}' check (jsonb_typeof(constraints) = 'object')
);
comment on table public.default_permissions is
  'Copied into permissions for every new auth.users row by a trigger.';

insert into public.default_permissions (tool, approval_mode) values
  ('calculator', 'auto'),
  ('search_history', 'auto'),
  ('get_usage', 'auto'),
  ('query_table', 'auto');

alter table public.permissions enable row level security;
alter table public.default_permissions enable row level security;

create policy "permissions: owner reads" on public.permissions
  for select to authenticated using (user_id = (select auth.uid()));
create policy "default_permissions: signed-in users read" on public.default_permissions
  for select to authenticated using (true);

-- Grants are the service role's business: users only read.
revoke all on public.permissions, public.default_permissions from anon;
revoke insert, update, delete, truncate on public.permissions, public.default_permissions
  from authenticated;

-- The caller's own grants, exactly what selecting from permissions shows him (security
-- invoker: RLS decides). It exists for the MCP server, which reads grants on every call: as
-- PL/pgSQL its plan is cached per connection, where the same SELECT sent as text (the
-- functions cannot use prepared statements behind the transaction pooler) is planned anew
-- every time, which costs more than running it.
create function public.my_permissions()
returns table (tool text, approval_mode public.approval_mode, constraints jsonb)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  return query
    select p.tool, p.approval_mode, p.constraints
    from public.permissions p
    where p.user_id = (select auth.uid());
end;
$$;

revoke execute on function public.my_permissions() from public, anon, service_role;
grant execute on function public.my_permissions() to authenticated;
