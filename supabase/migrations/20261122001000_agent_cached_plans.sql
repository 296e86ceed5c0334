-- The agent's two most frequent statements besides agent_start_turn, as functions: reading a
-- chat's context (once per chat) and flushing streaming turns (every flush interval, and at
-- each turn's end). Sent as plain statements in the simple query protocol, Postgres planned
-- them again on every call: about 1 ms (the context) and 0.8 ms (the flush) of planning
-- against 0.5 and 1-2 ms of execution, under a load of 100 concurrent streaming sessions. A
-- plpgsql function keeps its statements' plans for the life of the connection, and the agent's
-- pooled connections live long.

-- What a chat needs before its turn starts, read as the user (security invoker: RLS decides):
--   existing: the user message stored with this client id by an earlier attempt, and its turn;
--   grants:   the user's tool grants;
--   history:  the session's last p_history_limit user and assistant messages, oldest first,
--             without the client ids in p_exclude (the chat's own pair).
-- The session is the earlier attempt's, else p_session_id (null for a new session).
create function public.agent_chat_context(
  p_chat_id uuid,
  p_session_id uuid,
  p_history_limit integer,
  p_exclude uuid[]
)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_existing jsonb;
  v_session uuid;
begin
  select to_jsonb(f) into v_existing
  from (
    select h.id as "rowId", h.session_id as "sessionId", h.role::text as role,
           coalesce(t.id, h.turn_id) as "turnId", t.id is not null as "hasTurn"
    from public.chat_history h
    left join public.agent_turns t on t.user_message_id = h.id
    where h.user_id = (select auth.uid()) and h.client_id = p_chat_id
  ) f;
  v_session := coalesce((v_existing ->> 'sessionId')::uuid, p_session_id);

  return jsonb_build_object(
    'existing', v_existing,
    'grants', (select coalesce(jsonb_agg(g), '[]'::jsonb) from public.my_permissions() g),
    'history', case
      when v_session is null or p_history_limit <= 0 then '[]'::jsonb
      else (
        select coalesce(jsonb_agg(to_jsonb(r) - 'seq' order by r.seq), '[]'::jsonb)
        from (
          select h.client_id, h.role, h.content, h.tool_calls, h.seq
          from public.chat_history h
          where h.session_id = v_session and h.role in ('user', 'assistant')
            and h.client_id <> all (coalesce(p_exclude, '{}'))
          order by h.seq desc
          limit p_history_limit
        ) r)
    end);
end;
$$;

revoke execute on function public.agent_chat_context(uuid, uuid, integer, uuid[])
  from public, anon, service_role;
grant execute on function public.agent_chat_context(uuid, uuid, integer, uuid[])
  to authenticated;

-- One flush of an isolate's turns (see turn_store.ts, writeFlush): heartbeat and update the
-- turns p_owner still runs, write their assistant messages' new text from the given
-- character on, store their new frames. Rows of turns no longer running as p_owner's are left
-- alone. Returns the turns still p_owner's (or ended by this flush), with any cancel request.
create function public.agent_flush(
  p_owner text,
  p_turns jsonb,
  p_messages jsonb,
  p_events jsonb
)
returns table (id uuid, cancel_requested boolean)
language plpgsql
security invoker
set search_path = ''
as $$
#variable_conflict use_column
begin
  return query
  with turn_input as (
    select * from jsonb_to_recordset(p_turns)
      as x(id uuid, steps integer, model text, state public.turn_state, error jsonb)
  ),
  owned as (
    update public.agent_turns t
    set heartbeat_at = now(),
        steps = greatest(t.steps, x.steps),
        model = coalesce(x.model, t.model),
        state = coalesce(x.state, t.state),
        error = coalesce(x.error, t.error),
        finished_at = case when x.state is null then t.finished_at else now() end
    from turn_input x
    where t.id = x.id and t.owner = p_owner and t.state = 'running'
    returning t.id, t.cancel_requested_at is not null as cancel_requested
  ),
  message_input as (
    select * from jsonb_to_recordset(p_messages)
      as m(turn_id uuid, id uuid, from_chars integer, text text, tool_calls jsonb,
           status public.message_status, model text)
  ),
  messages as (
    update public.chat_history h
    set content = case when m.text is null then h.content
                       else left(h.content, m.from_chars) || m.text end,
        tool_calls = coalesce(m.tool_calls, h.tool_calls),
        status = coalesce(m.status, h.status),
        model = m.model,
        updated_at = now()
    from message_input m
    join owned on owned.id = m.turn_id
    where h.id = m.id and h.status = 'streaming'
  ),
  event_input as (
    select * from jsonb_to_recordset(p_events)
      as e(turn_id uuid, user_id uuid, seq integer, last_seq integer, frames jsonb)
  ),
  stored_events as (
    insert into public.agent_turn_events (turn_id, seq, last_seq, user_id, frames)
    select e.turn_id, e.seq, e.last_seq, e.user_id, e.frames
    from event_input e join owned on owned.id = e.turn_id
    on conflict do nothing
  )
  select owned.id, owned.cancel_requested from owned;
end;
$$;

revoke execute on function public.agent_flush(text, jsonb, jsonb, jsonb)
  from public, anon, authenticated;
grant execute on function public.agent_flush(text, jsonb, jsonb, jsonb) to service_role;
