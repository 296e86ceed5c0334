-- A per-user cap on concurrent turns: each running turn holds a reservation and an upstream
-- stream, so a user's parallel chats are bounded whatever his quota (default 3, as
-- max_connections; an operator changes it per user).

alter table public.user_limits
  add column max_concurrent_turns integer not null default 3 check (max_concurrent_turns > 0);

-- As in 20261203000200_turn_reservations, but refusing with reason `concurrent_turns` when the
-- user already runs max_concurrent_turns live turns.
create or replace function public.agent_start_turn(
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
  v_max_turns integer;
  v_running integer;
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
  -- At most max_concurrent_turns running turns per user. Counted under the user's limits row
  -- lock, held until this transaction (and its new turn) commits: concurrent starts on any
  -- isolate count one after the other. Turns whose heartbeat stopped belong to dead isolates
  -- and do not count (p_stale_ms, when given).
  insert into public.user_limits (user_id) values (v_user) on conflict do nothing;
  select l.max_concurrent_turns into v_max_turns
  from public.user_limits l where l.user_id = v_user for update;
  select count(*) into v_running
  from public.agent_turns t
  where t.user_id = v_user and t.state = 'running'
    and (p_stale_ms is null
      or t.heartbeat_at >= clock_timestamp() - make_interval(secs => p_stale_ms / 1000.0));
  if v_running >= v_max_turns then
    return jsonb_build_object('kind', 'refused', 'reason', 'concurrent_turns',
      'retry_after_ms', null);
  end if;

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
