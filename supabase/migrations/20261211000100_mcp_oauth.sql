-- OAuth 2.1 sign-in to a user's MCP server (the connections function), and token refresh that
-- is single-flight across every isolate.
--
-- - mcp_oauth_flows: a sign-in under way, from POST /connections (auth "oauth") to the callback,
--   found by its random `state`, taken once (delete … returning) and only before it expires.
--   The PKCE verifier and the registered client sit in `secret`, sealed in the function like a
--   credential (the key is a function secret, never in SQL text). Service role only.
-- - mcp_credentials gains the access token's expiry (not secret: it says when to refresh), a
--   `version` that moves with each stored refresh, and a refresh lease (holder, until): the one
--   isolate holding a live lease refreshes; the others wait for `version` to move. The lease is
--   a row value, taken in one statement: no row lock is held while the token request runs.

alter table public.mcp_servers drop constraint mcp_servers_auth_mode_check;
alter table public.mcp_servers add constraint mcp_servers_auth_mode_check
  check (auth_mode in ('none', 'header', 'oauth'));

alter table public.mcp_credentials
  add column expires_at timestamptz,
  add column version integer not null default 0,
  add column lease_holder uuid,
  add column lease_until timestamptz;
comment on column public.mcp_credentials.expires_at is
  'When the sealed access token expires (OAuth); null: it does not.';
comment on column public.mcp_credentials.lease_until is
  'The refresh lease: while it is in the future, lease_holder alone may refresh.';

create table public.mcp_oauth_flows (
  state text primary key check (char_length(state) between 32 and 128),
  user_id uuid not null references auth.users (id) on delete cascade,
  -- The id the server will have (or has: `reconnect`): its sealed values are bound to it.
  server_id uuid not null,
  -- A new sign-in for a server already stored (it needs one): its credential is replaced.
  reconnect boolean not null default false,
  slug text not null check (slug ~ '^[a-z][a-z0-9]{0,15}$'),
  display_name text check (char_length(display_name) between 1 and 100),
  url text not null check (char_length(url) <= 2048),
  -- The web app's origin (the request's Origin), which the callback page tells; null: nobody.
  return_origin text check (char_length(return_origin) <= 300),
  -- 12-byte IV then AES-256-GCM ciphertext of the verifier, the client and the server's
  -- authorization metadata, with server_id as additional data.
  secret bytea not null check (octet_length(secret) > 28),
  expires_at timestamptz not null,
  created_at timestamptz not null default now()
);
comment on table public.mcp_oauth_flows is
  'OAuth sign-ins under way (connections function). Service role only.';
create index mcp_oauth_flows_user_idx on public.mcp_oauth_flows (user_id);
create index mcp_oauth_flows_expires_idx on public.mcp_oauth_flows (expires_at);

alter table public.mcp_oauth_flows enable row level security;
-- No policy for any API role: RLS on, so even a grant by mistake shows nothing.
revoke all on public.mcp_oauth_flows from anon, authenticated, service_role;
grant select, insert, delete on public.mcp_oauth_flows to service_role;
-- A refreshed token is stored in place (mcp_store_refreshed) and leases are set on the row.
grant update on public.mcp_credentials to service_role;

-- Stores a server signed in with OAuth: as mcp_store_server does, plus the access token's expiry,
-- in one transaction.
create function public.mcp_store_oauth_server(
  p_server_id uuid,
  p_user_id uuid,
  p_slug text,
  p_display_name text,
  p_url text,
  p_secret bytea,
  p_expires_at timestamptz,
  p_tools jsonb,
  p_warnings jsonb
)
returns void
language plpgsql
security invoker
set search_path = ''
as $$
begin
  perform public.mcp_store_server(p_server_id, p_user_id, p_slug, p_display_name, p_url,
    'oauth', p_secret, p_tools, p_warnings);
  update public.mcp_credentials set expires_at = p_expires_at where server_id = p_server_id;
end;
$$;

-- Takes the refresh lease of a credential for `p_lease_ms`, only when no live lease is held and
-- the credential is still the version the caller read (one who read an older token must use the
-- newer one, not refresh it). True when taken. One statement: no lock outlives it.
create function public.mcp_take_refresh_lease(
  p_server_id uuid,
  p_holder uuid,
  p_version integer,
  p_lease_ms integer
)
returns boolean
language sql
security invoker
set search_path = ''
as $$
  with taken as (
    update public.mcp_credentials
    set lease_holder = p_holder,
      lease_until = clock_timestamp() + make_interval(secs => p_lease_ms / 1000.0)
    where server_id = p_server_id
      and version = p_version
      and (lease_until is null or lease_until <= clock_timestamp())
    returning 1
  )
  select exists (select 1 from taken);
$$;

-- Stores a refreshed token set, only for the lease's holder and the version it refreshed; the
-- version moves and the lease ends. False: the lease was lost (expired and taken by another).
create function public.mcp_store_refreshed(
  p_server_id uuid,
  p_holder uuid,
  p_version integer,
  p_secret bytea,
  p_expires_at timestamptz
)
returns boolean
language sql
security invoker
set search_path = ''
as $$
  with stored as (
    update public.mcp_credentials
    set secret = p_secret, expires_at = p_expires_at, version = version + 1,
      lease_holder = null, lease_until = null
    where server_id = p_server_id and version = p_version and lease_holder = p_holder
    returning 1
  )
  select exists (select 1 from stored);
$$;

-- Ends a refresh that did not store: the lease is given up at once (a transient failure), and
-- with `p_needs_sign_in` the server is marked as needing a new sign-in (the grant is revoked),
-- which the web app sees live.
create function public.mcp_end_refresh(
  p_server_id uuid,
  p_holder uuid,
  p_needs_sign_in boolean
)
returns void
language plpgsql
security invoker
set search_path = ''
as $$
begin
  update public.mcp_credentials set lease_holder = null, lease_until = null
  where server_id = p_server_id and lease_holder = p_holder;
  if p_needs_sign_in then
    update public.mcp_servers set status = 'needs_sign_in', updated_at = now()
    where id = p_server_id;
  end if;
end;
$$;

-- A new sign-in for a stored server (it needed one): the token set replaced, a new version,
-- no lease, and the server connected again. False when it is not the user's OAuth server.
create function public.mcp_replace_oauth_credential(
  p_server_id uuid,
  p_user_id uuid,
  p_secret bytea,
  p_expires_at timestamptz
)
returns boolean
language plpgsql
security invoker
set search_path = ''
as $$
begin
  update public.mcp_credentials
  set secret = p_secret, expires_at = p_expires_at, version = version + 1,
    lease_holder = null, lease_until = null
  where server_id = p_server_id and user_id = p_user_id;
  if not found then
    return false;
  end if;
  update public.mcp_servers set status = 'connected', updated_at = now()
  where id = p_server_id and user_id = p_user_id and auth_mode = 'oauth';
  return found;
end;
$$;

revoke execute on function public.mcp_replace_oauth_credential(uuid, uuid, bytea, timestamptz)
  from public, anon, authenticated;
grant execute on function public.mcp_replace_oauth_credential(uuid, uuid, bytea, timestamptz)
  to service_role;
revoke execute on function public.mcp_store_oauth_server(uuid, uuid, text, text, text, bytea,
  timestamptz, jsonb, jsonb) from public, anon, authenticated;
grant execute on function public.mcp_store_oauth_server(uuid, uuid, text, text, text, bytea,
  timestamptz, jsonb, jsonb) to service_role;
revoke execute on function public.mcp_take_refresh_lease(uuid, uuid, integer, integer)
  from public, anon, authenticated;
grant execute on function public.mcp_take_refresh_lease(uuid, uuid, integer, integer)
  to service_role;
revoke execute on function public.mcp_store_refreshed(uuid, uuid, integer, bytea, timestamptz)
  from public, anon, authenticated;
grant execute on function public.mcp_store_refreshed(uuid, uuid, integer, bytea, timestamptz)
  to service_role;
revoke execute on function public.mcp_end_refresh(uuid, uuid, boolean)
  from public, anon, authenticated;
grant execute on function public.mcp_end_refresh(uuid, uuid, boolean) to service_role;
