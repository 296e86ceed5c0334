-- Reservations that hold. Before, a turn reserved one LLM call's tokens at its start and the
-- daily cost cap was only compared with what earlier turns had settled: ten parallel turns
-- spent 50x a $0.01 cap, and turns of several LLM calls drove the bucket below zero.
--
-- Now every LLM call is reserved before it is made, at its worst case (its prompt, estimated,
-- plus a full completion) in tokens AND in money (the catalogue's prices, fixed for the turn
-- when it starts): agent_start_turn reserves the first call, agent_reserve_step each further
-- one, both through consume_quota under the user's limits row lock, so concurrent turns are
-- admitted exactly as far as the bucket and the cost cap go. A reserved cost counts against
-- the day at once; settle_quota gives back what the turn did not use.

alter table public.agent_turns
  add column reserved_cost_usd numeric(14, 8) not null default 0
    check (reserved_cost_usd >= 0),
  -- The model's prices when the turn started: its later steps are reserved at them.
  add column prompt_usd_per_token numeric(20, 12) not null default 0
    check (prompt_usd_per_token >= 0),
  add column completion_usd_per_token numeric(20, 12) not null default 0
    check (completion_usd_per_token >= 0);

drop function public.agent_start_turn(uuid, uuid, text, jsonb, text, text, integer, integer);
drop function public.consume_quota(uuid, integer);
drop function public.settle_quota(uuid, integer, integer, numeric);

-- As in 20261122000300, plus p_cost_usd: refused when it would take the day's cost (settled
-- and reserved) over the cap, else added to it.
create function public.consume_quota(
  p_user_id uuid,
  p_tokens integer,
  p_cost_usd numeric default 0
)
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
  if p_cost_usd is null or p_cost_usd < 0 then
    raise exception 'p_cost_usd must be non-negative' using errcode = '22023';
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
  elsif v_limits.day_cost_usd >= v_limits.daily_cost_cap_usd
    or v_limits.day_cost_usd + p_cost_usd > v_limits.daily_cost_cap_usd then
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
    v_limits.day_cost_usd := v_limits.day_cost_usd + p_cost_usd;
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

-- As in 20261122000300, plus p_reserved_cost_usd: the reserved cost is given back and the
-- real cost taken.
create function public.settle_quota(
  p_user_id uuid,
  p_reserved_tokens integer,
  p_used_tokens integer,
  p_cost_usd numeric,
  -- The cost reserved with the tokens (consume_quota's p_cost_usd), given back here.
  p_reserved_cost_usd numeric default 0
)
returns void
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_today date := (clock_timestamp() at time zone 'utc')::date;
begin
  if p_reserved_tokens < 0 or p_used_tokens < 0 or p_cost_usd < 0 or p_reserved_cost_usd < 0 then
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
        then greatest(0, l.day_cost_usd + p_cost_usd - p_reserved_cost_usd) else p_cost_usd end,
      usage_day = v_today,
      updated_at = clock_timestamp()
  where l.user_id = p_user_id;
end;
$$;

-- As in 20261203000100_models, but reserving the first call's worst case in tokens and cost
-- (p_prompt_tokens, p_completion_tokens at the model's prices) and storing the prices with the
-- turn. 'started' also returns the turn's reservation (reserved_tokens, reserved_cost_usd).
create function public.agent_start_turn(
  p_turn_id uuid,
  p_session_id uuid,
  p_title text,
  p_messages jsonb,
  p_owner text,
  p_model text,
  -- This first LLM call's worst case: its prompt (estimated) and a full completion.
  p_prompt_tokens integer,
  p_completion_tokens integer,
  -- Null for a new session: there is nothing of it to interrupt.
  p_stale_ms integer
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_user uuid := auth.uid();
  v_quota record;
  v_user_row uuid;
  v_user_inserted boolean;
  v_assistant_row uuid;
  v_turn_id uuid;
  v_model public.models;
  v_tokens integer;
  v_cost numeric;
begin
  if v_user is null then
    raise exception 'not authenticated' using errcode = '42501';
  end if;
  if jsonb_typeof(p_messages) is distinct from 'array' or jsonb_array_length(p_messages) <> 2 then
    raise exception 'p_messages must be the user message and its answer' using errcode = '22023';
  end if;

  -- The model is the client's choice, but only among the catalogue's enabled models: an
  -- unknown one could be any upstream model at any price. Checked before anything is
  -- interrupted or reserved, so a refusal leaves nothing behind.
  select * into v_model from public.models m where m.id = p_model and m.enabled;
  if not found then
    return jsonb_build_object('kind', 'refused', 'reason', 'model_not_allowed',
      'retry_after_ms', null);
  end if;

  if p_stale_ms is not null then
    perform public.agent_interrupt_stale_turns(v_user, p_stale_ms, p_session_id, null);
  end if;

  if p_prompt_tokens is null or p_prompt_tokens < 0 or p_completion_tokens is null
    or p_completion_tokens < 0 then
    raise exception 'token estimates must be non-negative integers' using errcode = '22023';
  end if;
  -- The call is reserved at its worst case in tokens and in money, at the catalogue's prices.
  v_tokens := p_prompt_tokens + p_completion_tokens;
  v_cost := p_prompt_tokens * v_model.prompt_usd_per_token
    + p_completion_tokens * v_model.completion_usd_per_token;
  select * into v_quota from public.consume_quota(v_user, v_tokens, v_cost);
  if not v_quota.allowed then
    return jsonb_build_object(
      'kind', 'refused',
      'reason', v_quota.reason,
      'retry_after_ms', v_quota.retry_after_ms);
  end if;

  set local role authenticated;
  with appended as (
    select a.id, a.client_id, a.inserted
    from public.append_messages(p_session_id, p_messages, p_title) a
  )
  select
    (select a.id from appended a where a.client_id = (p_messages -> 0 ->> 'id')::uuid),
    (select a.inserted from appended a where a.client_id = (p_messages -> 0 ->> 'id')::uuid),
    (select a.id from appended a where a.client_id = (p_messages -> 1 ->> 'id')::uuid)
  into v_user_row, v_user_inserted, v_assistant_row;
  set local role service_role;

  -- A user message stored before (by a retry, or through the history function) keeps the
  -- turn id it was stored with.
  v_turn_id := p_turn_id;
  if not v_user_inserted then
    select coalesce(h.turn_id, p_turn_id) into v_turn_id
    from public.chat_history h where h.id = v_user_row;
  end if;

  insert into public.agent_turns (id, user_id, session_id, user_message_id,
    assistant_message_id, owner, model, reserved_tokens, reserved_cost_usd,
    prompt_usd_per_token, completion_usd_per_token)
  values (v_turn_id, v_user, p_session_id, v_user_row, v_assistant_row, p_owner, p_model,
    v_tokens, v_cost, v_model.prompt_usd_per_token, v_model.completion_usd_per_token)
  on conflict do nothing;
  if not found then
    perform public.settle_quota(v_user, v_tokens, 0, 0, v_cost);
    return jsonb_build_object(
      'kind', 'exists',
      'turn_id', coalesce(
        (select t.id from public.agent_turns t where t.user_message_id = v_user_row),
        v_turn_id));
  end if;

  return jsonb_build_object(
    'kind', 'started',
    'turn_id', v_turn_id,
    'session_id', p_session_id,
    'user_row_id', v_user_row,
    'assistant_row_id', v_assistant_row,
    'reserved_tokens', v_tokens,
    'reserved_cost_usd', v_cost);
end;
$$;


-- Reserves a running turn's next LLM call (see the top): p_prompt_tokens + p_completion_tokens
-- tokens, priced at the turn's prices, through consume_quota (the user's limits row lock).
-- The turn's reservation grows by as much, to be settled when it ends. The limits row is
-- locked before the turn row, in the order a flush with settlements locks them (see
-- writeFlush): the two cannot deadlock.
-- Returns {allowed, reason, retry_after_ms, reserved_tokens, reserved_cost_usd} (the turn's
-- totals); reason `not_running` when the turn is no longer running.
create function public.agent_reserve_step(
  p_turn_id uuid,
  p_prompt_tokens integer,
  p_completion_tokens integer
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_turn public.agent_turns;
  v_tokens integer;
  v_cost numeric;
  v_quota record;
  v_total_tokens integer;
  v_total_cost numeric;
begin
  if p_prompt_tokens is null or p_prompt_tokens < 0 or p_completion_tokens is null
    or p_completion_tokens < 0 then
    raise exception 'token estimates must be non-negative integers' using errcode = '22023';
  end if;
  select * into v_turn from public.agent_turns t where t.id = p_turn_id;
  if not found or v_turn.state <> 'running' then
    return jsonb_build_object('allowed', false, 'reason', 'not_running');
  end if;
  v_tokens := p_prompt_tokens + p_completion_tokens;
  v_cost := p_prompt_tokens * v_turn.prompt_usd_per_token
    + p_completion_tokens * v_turn.completion_usd_per_token;

  select * into v_quota from public.consume_quota(v_turn.user_id, v_tokens, v_cost);
  if not v_quota.allowed then
    return jsonb_build_object(
      'allowed', false,
      'reason', v_quota.reason,
      'retry_after_ms', v_quota.retry_after_ms);
  end if;

  update public.agent_turns t
  set reserved_tokens = t.reserved_tokens + v_tokens,
      reserved_cost_usd = t.reserved_cost_usd + v_cost
  where t.id = p_turn_id and t.state = 'running'
  returning t.reserved_tokens, t.reserved_cost_usd into v_total_tokens, v_total_cost;
  if not found then
    -- Ended meanwhile: nothing will settle this reservation, so it is given back now.
    perform public.settle_quota(v_turn.user_id, v_tokens, 0, 0, v_cost);
    return jsonb_build_object('allowed', false, 'reason', 'not_running');
  end if;
  return jsonb_build_object(
    'allowed', true,
    'reserved_tokens', v_total_tokens,
    'reserved_cost_usd', v_total_cost);
end;
$$;

-- As in 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke execute on function public.consume_quota(uuid, integer, numeric)
  from public, anon, authenticated, service_role;
revoke execute on function public.settle_quota(uuid, integer, integer, numeric, numeric)
  from public, anon, authenticated, service_role;
revoke execute on function public.agent_start_turn(uuid, uuid, text, jsonb, text, text, integer,
  integer, integer) from public, anon, authenticated, service_role;
revoke execute on function public.agent_reserve_step(uuid, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.consume_quota(uuid, integer, numeric) to service_role;
grant execute on function public.settle_quota(uuid, integer, integer, numeric, numeric)
  to service_role;
grant execute on function public.agent_start_turn(uuid, uuid, text, jsonb, text, text, integer,
  integer, integer) to service_role;
grant execute on function public.agent_reserve_step(uuid, integer, integer) to service_role;
