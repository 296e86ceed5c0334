-- Starting an agent turn in one statement: mark the session's turns of dead isolates
-- interrupted, reserve the quota, store the user message with its (empty, streaming) answer,
-- and store the turn. One call is one round trip and one transaction: a refused or failed
-- start leaves nothing behind, not even a reservation to give back.
--
-- The caller runs it as service_role with the user's claims set (auth.uid() is the user):
-- the quota and the turn are written as service_role, which users must not forge, while the
-- messages are appended as the user himself, so RLS decides about his session exactly as it
-- does for the history function. Errors of append_messages (AG404, AG409, AG422, checks) and
-- races with a concurrent attempt of the same chat (23505, 40P01) are raised as they are.
--
-- Returns {kind: "refused", reason, retry_after_ms}, {kind: "exists", turn_id} when a
-- concurrent attempt of the same chat started the turn (the reservation is given back), or
-- {kind: "started", turn_id, session_id, user_row_id, assistant_row_id}.
create function public.agent_start_turn(
  p_turn_id uuid,
  p_session_id uuid,
  p_title text,
  p_messages jsonb,
  p_owner text,
  p_model text,
  p_reserved_tokens integer,
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
begin
  if v_user is null then
    raise exception 'not authenticated' using errcode = '42501';
  end if;
  if jsonb_typeof(p_messages) is distinct from 'array' or jsonb_array_length(p_messages) <> 2 then
    raise exception 'p_messages must be the user message and its answer' using errcode = '22023';
  end if;

  if p_stale_ms is not null then
    perform public.agent_interrupt_stale_turns(v_user, p_stale_ms, p_session_id, null);
  end if;

  select * into v_quota from public.consume_quota(v_user, p_reserved_tokens);
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
    assistant_message_id, owner, model, reserved_tokens)
  values (v_turn_id, v_user, p_session_id, v_user_row, v_assistant_row, p_owner, p_model,
    p_reserved_tokens)
  on conflict do nothing;
  if not found then
    perform public.settle_quota(v_user, p_reserved_tokens, 0, 0);
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
    'assistant_row_id', v_assistant_row);
end;
$$;

revoke execute on function public.agent_start_turn(uuid, uuid, text, jsonb, text, text, integer,
  integer) from public, anon, authenticated;
grant execute on function public.agent_start_turn(uuid, uuid, text, jsonb, text, text, integer,
  integer) to service_role;
