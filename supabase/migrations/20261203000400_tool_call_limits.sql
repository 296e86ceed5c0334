-- MCP tool calls count against the caller's limits. Before, they were neither metered against
-- his quota nor rate-limited: any number of calls, each free. Now each call takes one request
-- from a per-user request bucket (burst tool_call_capacity, default 30, refilled
-- tool_calls_per_minute, default 120) and tool_call_token_cost tokens (default 100) from his
-- token bucket and daily token allowance, like an LLM call; a day over its cost cap refuses
-- them too. An operator changes the numbers per user.

alter table public.user_limits
  add column tool_call_capacity integer not null default 30 check (tool_call_capacity > 0),
  add column tool_calls_per_minute integer not null default 120
    check (tool_calls_per_minute >= 0),
  add column tool_call_tokens double precision not null default 30,
  add column tool_call_updated_at timestamptz not null default now(),
  add column tool_call_token_cost integer not null default 100 check (tool_call_token_cost >= 0);

-- Admits p_calls tool calls of one request, or none: a request from the request bucket and
-- tool_call_token_cost tokens through consume_quota each. Refuses with reason `request_rate`
-- (the request bucket; retry_after_ms until it holds p_calls) or consume_quota's reason. One
-- row lock per user, as consume_quota: concurrent requests are admitted exactly.
create function public.consume_tool_calls(p_user_id uuid, p_calls integer)
returns table (
  allowed boolean,
  reason text,
  retry_after_ms bigint
)
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_limits public.user_limits;
  v_now timestamptz := clock_timestamp();
  v_calls double precision;
  v_quota record;
begin
  if p_calls is null or p_calls < 1 then
    raise exception 'p_calls must be a positive integer' using errcode = '22023';
  end if;

  insert into public.user_limits (user_id) values (p_user_id) on conflict do nothing;
  select * into v_limits from public.user_limits l where l.user_id = p_user_id for update;

  v_calls := least(
    v_limits.tool_call_capacity::double precision,
    v_limits.tool_call_tokens
      + v_limits.tool_calls_per_minute
        * extract(epoch from v_now - v_limits.tool_call_updated_at) / 60.0
  );
  allowed := false;
  if v_calls < p_calls then
    reason := 'request_rate';
    retry_after_ms := case
      when v_limits.tool_calls_per_minute = 0 or p_calls > v_limits.tool_call_capacity then null
      else ceil((p_calls - v_calls) * 60000.0 / v_limits.tool_calls_per_minute) end;
    return next;
    return;
  end if;

  select * into v_quota
  from public.consume_quota(p_user_id, p_calls * v_limits.tool_call_token_cost, 0);
  if not v_quota.allowed then
    reason := v_quota.reason;
    retry_after_ms := v_quota.retry_after_ms;
    return next;
    return;
  end if;

  -- Only the request bucket's columns: consume_quota has just written the others.
  update public.user_limits l
  set tool_call_tokens = v_calls - p_calls,
      tool_call_updated_at = v_now
  where l.user_id = p_user_id;
  allowed := true;
  return next;
end;
$$;

-- As in 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke execute on function public.consume_tool_calls(uuid, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.consume_tool_calls(uuid, integer) to service_role;
