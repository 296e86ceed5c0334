-- Usage (one row per LLM call and per tool call) and per-user limits: a token bucket
-- (default capacity 100,000 tokens, refilled 1,000 per minute) plus daily token and cost
-- caps. Limits are consumed atomically in Postgres, never in isolate memory.

create type public.usage_kind as enum ('llm', 'tool');
create type public.usage_source as enum ('agent', 'mcp');
create type public.usage_status as enum ('ok', 'error', 'denied', 'cancelled');

create table public.usage_metrics (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  session_id uuid references public.chat_sessions (id) on delete set null,
  turn_id uuid,
  kind public.usage_kind not null,
  -- The model for kind 'llm', the tool for kind 'tool'.
  name text not null check (char_length(name) between 1 and 200),
  -- Which surface made the call: the agent or the MCP server.
  source public.usage_source not null default 'agent',
  prompt_tokens integer not null default 0 check (prompt_tokens >= 0),
  completion_tokens integer not null default 0 check (completion_tokens >= 0),
  cost_usd numeric(14, 8) not null default 0 check (cost_usd >= 0),
  latency_ms integer not null default 0 check (latency_ms >= 0),
  status public.usage_status not null,
  created_at timestamptz not null default now()
);
comment on table public.usage_metrics is 'One row per LLM call and per tool call.';

create index usage_metrics_user_created_idx on public.usage_metrics (user_id, created_at desc);
create index usage_metrics_session_idx on public.usage_metrics (session_id)
  where session_id is not null;
create index usage_metrics_turn_idx on public.usage_metrics (turn_id) where turn_id is not null;

create table public.user_limits (
  user_id uuid primary key references auth.users (id) on delete cascade,
  bucket_capacity integer not null default 100000 check (bucket_capacity > 0),
  refill_per_minute integer not null default 1000 check (refill_per_minute >= 0),
  bucket_tokens double precision not null default 100000,
  bucket_updated_at timestamptz not null default now(),
  daily_token_cap bigint not null default 1000000 check (daily_token_cap > 0),
  daily_cost_cap_usd numeric(12, 4) not null default 5 check (daily_cost_cap_usd >= 0),
  -- The UTC day the day_* counters belong to; a new day starts them at zero.
  usage_day date not null default (now() at time zone 'utc')::date,
  day_tokens bigint not null default 0,
  day_cost_usd numeric(14, 8) not null default 0,
  max_connections integer not null default 3 check (max_connections > 0),
  updated_at timestamptz not null default now()
);
comment on table public.user_limits is
  'Per-user token bucket, daily caps and connection limit. Changed only by service_role.';

alter table public.usage_metrics enable row level security;
alter table public.user_limits enable row level security;

create policy "usage_metrics: owner reads" on public.usage_metrics
  for select to authenticated using (user_id = (select auth.uid()));
create policy "user_limits: owner reads" on public.user_limits
  for select to authenticated using (user_id = (select auth.uid()));

revoke all on public.usage_metrics, public.user_limits from anon;
revoke insert, update, delete, truncate on public.usage_metrics, public.user_limits
  from authenticated;

-- Takes p_tokens from the user's bucket and daily allowance, or refuses and says when to
-- retry. One row lock per user makes concurrent consumers admit exactly the capacity.
create function public.consume_quota(p_user_id uuid, p_tokens integer)
returns table (
  allowed boolean,
  reason text,
  remaining_tokens bigint,
  retry_after_ms bigint
)
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_limits public.user_limits;
  v_now timestamptz := clock_timestamp();
  v_today date := (clock_timestamp() at time zone 'utc')::date;
  v_tokens double precision;
  v_ms_to_midnight bigint;
begin
  if p_tokens is null or p_tokens < 0 then
    raise exception 'p_tokens must be a non-negative integer' using errcode = '22023';
  end if;

  insert into public.user_limits (user_id) values (p_user_id) on conflict do nothing;
  select * into v_limits from public.user_limits l where l.user_id = p_user_id for update;

  v_tokens := least(
    v_limits.bucket_capacity::double precision,
    v_limits.bucket_tokens
      + v_limits.refill_per_minute * extract(epoch from v_now - v_limits.bucket_updated_at) / 60.0
  );
  if v_limits.usage_day <> v_today then
    v_limits.usage_day := v_today;
    v_limits.day_tokens := 0;
    v_limits.day_cost_usd := 0;
  end if;
  v_ms_to_midnight := ceil(extract(epoch from ((v_today + 1)::timestamp - (v_now at time zone 'utc'))) * 1000);

  allowed := false;
  if p_tokens > v_limits.bucket_capacity then
    reason := 'exceeds_capacity';
  elsif v_limits.day_tokens + p_tokens > v_limits.daily_token_cap then
    reason := 'daily_token_cap';
    retry_after_ms := v_ms_to_midnight;
  elsif v_limits.day_cost_usd >= v_limits.daily_cost_cap_usd then
    reason := 'daily_cost_cap';
    retry_after_ms := v_ms_to_midnight;
  elsif v_tokens < p_tokens then
    reason := 'token_bucket';
    retry_after_ms := case when v_limits.refill_per_minute = 0 then null
      else ceil((p_tokens - v_tokens) * 60000.0 / v_limits.refill_per_minute) end;
  else
    allowed := true;
    v_tokens := v_tokens - p_tokens;
    v_limits.day_tokens := v_limits.day_tokens + p_tokens;
  end if;

  update public.user_limits l
  set bucket_tokens = v_tokens,
      bucket_updated_at = v_now,
      usage_day = v_limits.usage_day,
      day_tokens = v_limits.day_tokens,
      day_cost_usd = v_limits.day_cost_usd,
      updated_at = v_now
  where l.user_id = p_user_id;

  remaining_tokens := floor(v_tokens)::bigint;
  return next;
end;
$$;

-- Settles a reservation made with consume_quota against what the call really used:
-- unused tokens go back to the bucket (never above capacity), overuse is taken, and the
-- cost counts against the daily cost cap.
create function public.settle_quota(
  p_user_id uuid,
  p_reserved_tokens integer,
  p_used_tokens integer,
  p_cost_usd numeric
)
returns void
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_today date := (clock_timestamp() at time zone 'utc')::date;
begin
  if p_reserved_tokens < 0 or p_used_tokens < 0 or p_cost_usd < 0 then
    raise exception 'settle_quota arguments must be non-negative' using errcode = '22023';
  end if;
  update public.user_limits l
  set bucket_tokens = least(
        l.bucket_capacity::double precision,
        l.bucket_tokens + (p_reserved_tokens - p_used_tokens)
      ),
      day_tokens = case when l.usage_day = v_today
        then greatest(0, l.day_tokens + p_used_tokens - p_reserved_tokens)
        else p_used_tokens end,
      day_cost_usd = case when l.usage_day = v_today
        then l.day_cost_usd + p_cost_usd else p_cost_usd end,
      usage_day = v_today,
      updated_at = clock_timestamp()
  where l.user_id = p_user_id;
end;
$$;

-- Quota is spent by the functions on the user's behalf; a user must not refill himself.
revoke execute on function public.consume_quota(uuid, integer) from public, anon, authenticated;
revoke execute on function public.settle_quota(uuid, integer, integer, numeric)
  from public, anon, authenticated;
grant execute on function public.consume_quota(uuid, integer) to service_role;
grant execute on function public.settle_quota(uuid, integer, integer, numeric) to service_role;
