-- Continued answers. A model that continues a partial assistant message (an "assistant
-- prefill", as Anthropic's models and many others behind OpenRouter do) lets a turn whose
-- isolate died mid-answer go on from the text that was stored, instead of asking the step
-- again from its start and dropping what the user saw. Under churn (isolates ended by their
-- CPU budget every few seconds) a long answer otherwise never finishes: each takeover starts
-- it over, and the recovery budget ends it.
--
-- The catalogue says which models continue (off by default: OpenAI's models, for one, answer
-- a trailing assistant message with a new message). A takeover of such a model's turn keeps
-- the stored text; a flush that stores more of it is progress, so the recovery budget counts
-- takeovers without new text, as it counts takeovers without a new checkpoint.

alter table public.models
  add column continues_partial_answers boolean not null default false;
comment on column public.models.continues_partial_answers is
  'The model continues a trailing partial assistant message (assistant prefill): a turn taken '
  'over mid-answer goes on from its stored text.';

create or replace function public.agent_turn_resumption(p_turn_id uuid, p_kind text, p_answer jsonb)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select jsonb_build_object(
    'kind', p_kind,
    'turn_id', t.id,
    'user_id', t.user_id,
    'session_id', t.session_id,
    'assistant_row_id', t.assistant_message_id,
    'assistant_message_id', a.client_id,
    'user_message_id', u.client_id,
    'user_content', u.content,
    'model', t.model,
    'epoch', t.epoch,
    'steps', t.steps,
    'reserved_tokens', t.reserved_tokens,
    'reserved_cost_usd', t.reserved_cost_usd,
    'checkpoint', (select c.checkpoint from public.agent_turn_checkpoints c
                   where c.turn_id = t.id),
    'answer', p_answer,
    'last_seq', (select coalesce(max(e.last_seq), 0) from public.agent_turn_events e
                 where e.turn_id = t.id),
    'content', coalesce(a.content, ''),
    'tool_calls', coalesce(a.tool_calls, '[]'::jsonb),
    'restarts', t.restarts,
    'continues_partial', coalesce((select m.continues_partial_answers from public.models m
                                   where m.id = t.model), false),
    'refusal', public.account_refusal(t.user_id, null))
  from public.agent_turns t
  left join public.chat_history a on a.id = t.assistant_message_id
  left join public.chat_history u on u.id = t.user_message_id
  where t.id = p_turn_id
$$;

create or replace function public.agent_flush(
  p_owner text,
  p_turns jsonb,
  p_messages jsonb,
  p_events jsonb
)
returns table (id uuid, cancel_requested boolean, state public.turn_state, approval_answer jsonb)
language plpgsql
security invoker
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_owned jsonb;
  v_settle record;
begin
  perform 1 from public.user_limits l
  where l.user_id in (
    select (x ->> 'user_id')::uuid from jsonb_array_elements(p_turns) x
    where x ->> 'state' is not null)
  order by l.user_id
  for update;
  -- After the limits rows, as agent_adopt_turns takes them. An answer's transaction holds the
  -- turn's row until it commits: waiting for it here, not inside the statement below, lets
  -- that statement see the answer.
  perform 1 from public.agent_turns t
  where t.id in (
    select (x ->> 'id')::uuid from jsonb_array_elements(p_turns) x
    where x ->> 'state' = 'parked')
  order by t.id
  for update;

  with turn_input as (
    select * from jsonb_to_recordset(p_turns)
      as x(id uuid, epoch integer, steps integer, model text, state public.turn_state,
           error jsonb, checkpoint jsonb, parked_until timestamptz, used_tokens integer,
           used_cost numeric, progressed boolean)
  ),
  before as (
    select t.id, t.reserved_tokens, t.reserved_cost_usd,
      -- Settled now: an ending, or a park no answer overtook.
      x.state is not null and not (x.state = 'parked' and t.approval_answer is not null)
        as settles,
      coalesce(c.progress, 0) as stored_progress
    from public.agent_turns t join turn_input x on x.id = t.id
    left join public.agent_turn_checkpoints c on c.turn_id = t.id
  ),
  owned as (
    update public.agent_turns t
    set heartbeat_at = now(),
        steps = greatest(t.steps, x.steps),
        model = coalesce(x.model, t.model),
        state = case when b.settles then x.state else t.state end,
        error = coalesce(x.error, t.error),
        -- Progress ends a run of takeovers: a new checkpoint, or more of a continued answer.
        recoveries = case
          when coalesce((x.checkpoint ->> 'progress')::integer, -1) > b.stored_progress
            or coalesce(x.progressed, false) then 0
          else t.recoveries end,
        parked_until = case when b.settles and x.state = 'parked' then x.parked_until
          else t.parked_until end,
        reserved_tokens = case when b.settles then 0 else t.reserved_tokens end,
        reserved_cost_usd = case when b.settles then 0 else t.reserved_cost_usd end,
        finished_at = case when b.settles and x.state <> 'parked' then now()
          else t.finished_at end
    from turn_input x join before b on b.id = x.id
    where t.id = x.id and t.owner = p_owner and t.epoch = x.epoch and t.state = 'running'
    returning t.id, t.user_id, t.cancel_requested_at is not null as cancel_requested, t.state,
      t.approval_answer, b.settles, b.reserved_tokens, b.reserved_cost_usd,
      coalesce(x.used_tokens, 0) as used_tokens, coalesce(x.used_cost, 0) as used_cost
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
  ),
  checkpoints as (
    insert into public.agent_turn_checkpoints as c (turn_id, progress, checkpoint)
    select x.id, greatest(0, coalesce((x.checkpoint ->> 'progress')::integer, 0)), x.checkpoint
    from turn_input x join owned on owned.id = x.id
    where x.checkpoint is not null
    on conflict (turn_id) do update
    set progress = excluded.progress, checkpoint = excluded.checkpoint, updated_at = now()
  )
  select coalesce(jsonb_agg(to_jsonb(owned)), '[]') into v_owned from owned;

  for v_settle in
    select * from jsonb_to_recordset(v_owned)
      as o(user_id uuid, settles boolean, reserved_tokens integer, reserved_cost_usd numeric,
           used_tokens integer, used_cost numeric)
    where o.settles
    order by o.user_id
  loop
    perform public.settle_quota(v_settle.user_id, v_settle.reserved_tokens,
      greatest(0, v_settle.used_tokens), greatest(0, v_settle.used_cost),
      v_settle.reserved_cost_usd);
  end loop;

  return query
  select o.id, o.cancel_requested, o.state, o.approval_answer
  from jsonb_to_recordset(v_owned)
    as o(id uuid, cancel_requested boolean, state public.turn_state, approval_answer jsonb);
end;
$$;
revoke execute on function public.agent_turn_resumption(uuid, text, jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_turn_resumption(uuid, text, jsonb) to service_role;
revoke execute on function public.agent_flush(text, jsonb, jsonb, jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_flush(text, jsonb, jsonb, jsonb) to service_role;
