-- Per-user request buckets in front of the HTTP surfaces (`mcp`, `history`): before, a user
-- could send them any number of requests. Each request takes one token from the bucket of its
-- surface (burst request_capacity, default 30, refilled requests_per_minute, default 120); a
-- refused request answers 429 with Retry-After. An operator changes the numbers per user.

alter table public.user_limits
  add column request_capacity integer not null default 30 check (request_capacity > 0),
  add column requests_per_minute integer not null default 120
    check (requests_per_minute >= 0);

-- One bucket per user and surface: history traffic does not starve MCP clients.
create table public.request_buckets (
  user_id uuid not null references auth.users (id) on delete cascade,
  surface text not null check (surface in ('mcp', 'history')),
  tokens double precision not null,
  updated_at timestamptz not null default now(),
  primary key (user_id, surface)
);
alter table public.request_buckets enable row level security;
-- No policy: users neither see nor meter their buckets; the functions do, as service_role.

-- Admits one request of p_user_id on p_surface, or says after how many ms one would be
-- (null: never, with a refill of 0). One row lock per (user, surface): concurrent requests are
-- admitted exactly.
create function public.consume_request(p_user_id uuid, p_surface text)
returns table (allowed boolean, retry_after_ms bigint)
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_capacity integer;
  v_per_minute integer;
  v_now timestamptz := clock_timestamp();
  v_tokens double precision;
  v_bucket public.request_buckets;
begin
  insert into public.user_limits (user_id) values (p_user_id) on conflict do nothing;
  select l.request_capacity, l.requests_per_minute into v_capacity, v_per_minute
  from public.user_limits l where l.user_id = p_user_id;

  insert into public.request_buckets (user_id, surface, tokens, updated_at)
  values (p_user_id, p_surface, v_capacity, v_now)
  on conflict do nothing;
  select * into v_bucket from public.request_buckets b
  where b.user_id = p_user_id and b.surface = p_surface
  for update;

  v_tokens := least(
    v_capacity::double precision,
    v_bucket.tokens
      + v_per_minute * extract(epoch from v_now - v_bucket.updated_at) / 60.0
  );
  if v_tokens < 1 then
    allowed := false;
    retry_after_ms := case when v_per_minute = 0 then null
      else ceil((1 - v_tokens) * 60000.0 / v_per_minute) end;
    return next;
    return;
  end if;
  update public.request_buckets b
  set tokens = v_tokens - 1, updated_at = v_now
  where b.user_id = p_user_id and b.surface = p_surface;
  allowed := true;
  return next;
end;
$$;

-- As in 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke all on table public.request_buckets from anon, authenticated, service_role;
grant select, insert, update on table public.request_buckets to service_role;
revoke execute on function public.consume_request(uuid, text)
  from public, anon, authenticated, service_role;
grant execute on function public.consume_request(uuid, text) to service_role;
