-- A turn ended as interrupted (past its recovery budget) before any of its frames was stored
-- got `restart_step` and `error` as its first frames: a client that retried its chat follows
-- the turn from seq 0 and learns which turn answers it from `start`, so `start` comes first
-- then, as a takeover's does (turn_takeover.ts).
create or replace function public.agent_adopt_turns(
  p_owner text,
  p_user_id uuid,
  p_turn_id uuid,
  p_limit integer,
  p_max_recoveries integer
)
returns setof jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_candidate record;
  v_turn public.agent_turns;
  v_seq integer;
  v_answer jsonb;
  v_used integer;
  v_cost numeric;
  v_checkpoint jsonb;
begin
  if p_owner is null or p_limit is null or p_limit < 1 or p_max_recoveries is null
    or p_max_recoveries < 0 then
    raise exception 'p_owner, p_limit >= 1 and p_max_recoveries >= 0 are required'
      using errcode = '22023';
  end if;
  for v_candidate in
    select t.id, t.user_id from public.agent_turns t
    where t.state in ('running', 'parked')
      -- Its own turns an isolate keeps (it renews its lease in the same statement).
      and (t.state = 'parked' or t.owner <> p_owner)
      and (p_user_id is null or t.user_id = p_user_id)
      and (p_turn_id is null or t.id = p_turn_id)
      and ((t.state = 'running' and not exists (
              select 1 from public.agent_isolates i
              where i.id = t.owner and i.lease_expires_at > clock_timestamp()))
        or (t.state = 'parked' and t.parked_until <= clock_timestamp()))
    order by t.created_at
    limit p_limit
  loop
    -- The user's limits row before the turn row, as agent_reserve_step and agent_flush lock
    -- them: a settlement here cannot deadlock with theirs.
    perform 1 from public.user_limits l where l.user_id = v_candidate.user_id for update;
    select * into v_turn from public.agent_turns t
    where t.id = v_candidate.id
      and ((t.state = 'running' and not exists (
              select 1 from public.agent_isolates i
              where i.id = t.owner and i.lease_expires_at > clock_timestamp()))
        or (t.state = 'parked' and t.parked_until <= clock_timestamp()))
    for update skip locked;
    if not found then
      continue;
    end if;

    if v_turn.state = 'running' and v_turn.recoveries >= p_max_recoveries then
      select coalesce(max(e.last_seq), 0) + 1 into v_seq
      from public.agent_turn_events e where e.turn_id = v_turn.id;
      select c.checkpoint into v_checkpoint
      from public.agent_turn_checkpoints c where c.turn_id = v_turn.id;
      v_used := greatest(0,
        coalesce((v_checkpoint #>> '{usage,prompt_tokens}')::integer, 0)
        + coalesce((v_checkpoint #>> '{usage,completion_tokens}')::integer, 0)
        - coalesce((v_checkpoint #>> '{settled,tokens}')::integer, 0));
      v_cost := greatest(0, coalesce((v_checkpoint #>> '{usage,cost}')::numeric, 0)
        - coalesce((v_checkpoint #>> '{settled,cost}')::numeric, 0));
      perform public.settle_quota(v_turn.user_id, v_turn.reserved_tokens, v_used, v_cost,
        v_turn.reserved_cost_usd);
      -- A takeover of its own (restart_step, then the ending): a client may hold frames the
      -- dead isolate sent but never stored, past this seq; the restart tells it to drop them
      -- (keeping all of the stored text), so the ending reaches it.
      update public.agent_turns t
      set state = 'interrupted', finished_at = clock_timestamp(), reserved_tokens = 0,
          reserved_cost_usd = 0, epoch = t.epoch + 1,
          restarts = t.restarts || jsonb_build_array(jsonb_build_object('epoch', t.epoch + 1,
            'seq', v_seq)),
          error = jsonb_build_object('code', 'interrupted',
            'message', 'The servers running this turn kept stopping before it progressed')
      where t.id = v_turn.id;
      update public.chat_history h
      set status = 'interrupted', updated_at = clock_timestamp()
      where h.id = v_turn.assistant_message_id and h.status = 'streaming';
      insert into public.agent_turn_events (turn_id, seq, last_seq, user_id, frames)
      select v_turn.id, v_seq, v_seq + 1 + case when v_seq = 1 then 1 else 0 end, v_turn.user_id,
        case when v_seq = 1 then jsonb_build_array(jsonb_build_object(
          'type', 'start',
          'session_id', v_turn.session_id,
          'message_id', h.client_id,
          'user_message_id', (select u.client_id from public.chat_history u
                              where u.id = v_turn.user_message_id),
          'model', v_turn.model)) else '[]'::jsonb end
        || jsonb_build_array(
        jsonb_build_object(
          'type', 'restart_step',
          'step', coalesce((v_checkpoint ->> 'step')::integer, 0) + 1,
          'epoch', v_turn.epoch + 1,
          -- UTF-16 units, as clients count: code points, plus one for each beyond the BMP.
          'keep_chars', char_length(h.content) + (
            select count(*) from regexp_matches(h.content, '[\U00010000-\U0010FFFF]', 'g'))),
        jsonb_build_object(
          'type', 'error',
          'code', 'interrupted',
          'message', 'The servers running this turn kept stopping before it progressed; the '
            || 'partial answer is kept',
          'retryable', true))
      from public.chat_history h where h.id = v_turn.assistant_message_id
      on conflict do nothing;
      return next jsonb_build_object('kind', 'interrupted', 'turn_id', v_turn.id);
      continue;
    end if;

    v_answer := null;
    if v_turn.state = 'parked' then
      v_answer := coalesce(v_turn.approval_answer, '{"decision": "expired"}'::jsonb);
    end if;
    select coalesce(max(e.last_seq), 0) into v_seq
    from public.agent_turn_events e where e.turn_id = v_turn.id;
    update public.agent_turns t
    set owner = p_owner,
        epoch = t.epoch + 1,
        recoveries = t.recoveries + case when t.state = 'running' then 1 else 0 end,
        restarts = case when t.state = 'running'
          then t.restarts || jsonb_build_array(jsonb_build_object('epoch', t.epoch + 1,
            'seq', v_seq + 1))
          else t.restarts end,
        state = 'running',
        parked_until = null,
        awaiting_call_id = case when t.state = 'parked' then null else t.awaiting_call_id end,
        approval_answer = case when t.state = 'parked' then null else t.approval_answer end,
        heartbeat_at = now()
    where t.id = v_turn.id;
    return next public.agent_turn_resumption(v_turn.id,
      case when v_turn.state = 'parked' then 'expired' else 'adopted' end, v_answer);
  end loop;
end;
$$;
revoke execute on function public.agent_adopt_turns(text, uuid, uuid, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_adopt_turns(text, uuid, uuid, integer, integer)
  to service_role;
