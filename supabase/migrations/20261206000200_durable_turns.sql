-- Durable turns (docs/agent.md, "Durable turns"): a turn outlives the isolate running it.
--
-- * Leases. Each isolate renews one lease (agent_isolates) for all its turns, every ~0.5 s;
--   a running turn whose owner's lease expired is adopted by another isolate, which bumps the
--   turn's epoch. Every flush is conditional on (owner, epoch): an isolate that lost a turn
--   writes nothing more of it.
-- * Checkpoints. At each step boundary (and around each tool call) the turn stores what it
--   needs to go on (agent_turn_checkpoints), with its flush. An adopter continues from it.
--   A table of its own: a checkpoint holds the system prompt, the grants and the claims the
--   turn runs with, which users do not read (agent_turns is theirs to read and is published to
--   Realtime; its rows stay small).
--   `recoveries` counts adoptions since the last checkpoint that made progress; past the
--   budget the turn ends interrupted, as before.
-- * Parked approvals. A turn waiting for an approval is parked (state 'parked'): it holds no
--   isolate and no reservation (settled when it parks), and is continued by whoever answers
--   it, or by the sweep once its wait expires (denied).
-- * Reservations are settled inside agent_flush, only for turns the flush still owns: a turn
--   is settled exactly once however many isolates touched it.

create table public.agent_isolates (
  id text primary key check (char_length(id) between 1 and 200),
  lease_expires_at timestamptz not null
);
comment on table public.agent_isolates is
  'Leases of agent isolates: a running turn whose owner''s lease expired may be adopted.';
alter table public.agent_isolates enable row level security;
revoke all on public.agent_isolates from anon, authenticated, service_role;
grant select, insert, update, delete on public.agent_isolates to service_role;

alter table public.agent_turns
  -- Bumped by each adoption (and each continuation of a parked turn).
  add column epoch integer not null default 0 check (epoch >= 0),
  -- Adoptions since the last checkpoint that made progress.
  add column recoveries integer not null default 0 check (recoveries >= 0),
  -- [{epoch, seq}]: the seq of the restart_step frame each adoption's isolate starts with.
  add column restarts jsonb not null default '[]' check (jsonb_typeof(restarts) = 'array'),
  -- A parked turn's approval wait ends here (then it is denied).
  add column parked_until timestamptz;

-- What a turn needs to go on (turn_checkpoint.ts); no row until its first flush. Written
-- by agent_flush with the turn's frames; read by the isolate that takes the turn over.
create table public.agent_turn_checkpoints (
  turn_id uuid primary key references public.agent_turns (id) on delete cascade,
  -- The checkpoint's `progress`: an adoption that finds it unchanged counts as a recovery.
  progress integer not null check (progress >= 0),
  checkpoint jsonb not null check (jsonb_typeof(checkpoint) = 'object'),
  updated_at timestamptz not null default now()
);
comment on table public.agent_turn_checkpoints is
  'Where each agent turn stands, for the isolate that adopts it. Service role only.';
alter table public.agent_turn_checkpoints enable row level security;
revoke all on public.agent_turn_checkpoints from anon, authenticated, service_role;
grant select, insert, update on public.agent_turn_checkpoints to service_role;

-- The sweep looks for running turns of dead isolates and expired parked turns.
create index agent_turns_live_idx on public.agent_turns (state, created_at)
  where state in ('running', 'parked');
-- A session's running or parked turn (session_busy).
create index agent_turns_session_live_idx on public.agent_turns (session_id)
  where state in ('running', 'parked');

-- Renews an isolate's lease for p_lease_ms from now.
create function public.agent_renew_lease(p_isolate text, p_lease_ms integer)
returns void
language sql
security invoker
set search_path = ''
as $$
  insert into public.agent_isolates as i (id, lease_expires_at)
  values (p_isolate, clock_timestamp() + make_interval(secs => p_lease_ms / 1000.0))
  on conflict (id) do update set lease_expires_at = excluded.lease_expires_at
$$;

-- Gives up an isolate's lease (its beforeunload): its running turns may be adopted at once.
create function public.agent_release_lease(p_isolate text)
returns void
language sql
security invoker
set search_path = ''
as $$
  delete from public.agent_isolates i where i.id = p_isolate
$$;

-- What an isolate needs to continue a turn it just took: the turn, its checkpoint, the
-- stored answer so far, the last stored seq, and whether its user may still act.
create function public.agent_turn_resumption(p_turn_id uuid, p_kind text, p_answer jsonb)
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
    'refusal', public.account_refusal(t.user_id, null))
  from public.agent_turns t
  left join public.chat_history a on a.id = t.assistant_message_id
  left join public.chat_history u on u.id = t.user_message_id
  where t.id = p_turn_id
$$;

-- Takes over up to p_limit turns for p_owner: running turns whose owner's lease expired, and
-- parked turns whose wait expired (continued with the answer {"decision":"expired"}).
-- Optionally narrowed to one user or one turn. A running turn already adopted
-- p_max_recoveries times since its last progress is ended as interrupted instead (its
-- partial text kept, its reservation settled, a final `error` frame stored).
-- Returns one agent_turn_resumption per turn taken ('adopted' or 'expired'), and
-- {kind: 'interrupted', turn_id} per turn ended.
create function public.agent_adopt_turns(
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
      select v_turn.id, v_seq, v_seq + 1, v_turn.user_id, jsonb_build_array(
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

-- The user's answer to a call a turn of his waits for (p_call_id), or his cancel of a parked
-- turn (p_turn_id, answer {"decision":"cancel"}). A parked turn is taken by p_owner at once
-- and continued there ('continue', with its agent_turn_resumption); a turn still running
-- (it has not parked yet) keeps the answer for its owner ('left'). Null when no turn of the
-- user waits for it.
create function public.agent_answer_parked(
  p_owner text,
  p_user_id uuid,
  p_turn_id uuid,
  p_call_id text,
  p_answer jsonb
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_turn public.agent_turns;
begin
  if jsonb_typeof(p_answer) is distinct from 'object' then
    raise exception 'p_answer must be an object' using errcode = '22023';
  end if;
  select * into v_turn from public.agent_turns t
  where t.user_id = p_user_id
    and (p_turn_id is null or t.id = p_turn_id)
    and (p_call_id is null or t.awaiting_call_id = p_call_id)
    and (t.state = 'parked' or (t.state = 'running' and p_call_id is not null
      and t.approval_answer is null))
  for update;
  if not found then
    return null;
  end if;
  if v_turn.state = 'running' then
    update public.agent_turns t set approval_answer = p_answer where t.id = v_turn.id;
    return jsonb_build_object('kind', 'left', 'turn_id', v_turn.id);
  end if;
  update public.agent_turns t
  set owner = p_owner, epoch = t.epoch + 1, state = 'running', parked_until = null,
      awaiting_call_id = null, approval_answer = null, heartbeat_at = now()
  where t.id = v_turn.id;
  return public.agent_turn_resumption(v_turn.id, 'continue', p_answer);
end;
$$;

-- As in 20261122001000_agent_cached_plans.sql, plus: each turn's row is written only while
-- (owner, epoch) is still the writer's; a turn's checkpoint is stored with its frames; a
-- turn may park (state 'parked', until parked_until) unless an answer overtook it; and the
-- reservation of every turn this flush ends or parks is settled here, against the row's
-- reservation, for owned turns only (so exactly once), the users' limits rows locked first.
-- Returns the turns still the writer's (or ended/parked by this flush), each with its state
-- after the flush, any cancel request and any approval answer waiting for it.
drop function public.agent_flush(text, jsonb, jsonb, jsonb);
create function public.agent_flush(
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

  with turn_input as (
    select * from jsonb_to_recordset(p_turns)
      as x(id uuid, epoch integer, steps integer, model text, state public.turn_state,
           error jsonb, checkpoint jsonb, parked_until timestamptz, used_tokens integer,
           used_cost numeric)
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
        recoveries = case
          when coalesce((x.checkpoint ->> 'progress')::integer, -1) > b.stored_progress then 0
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

-- As in 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke execute on function public.agent_flush(text, jsonb, jsonb, jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_flush(text, jsonb, jsonb, jsonb) to service_role;
revoke execute on function public.agent_renew_lease(text, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_renew_lease(text, integer) to service_role;
revoke execute on function public.agent_release_lease(text)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_release_lease(text) to service_role;
revoke execute on function public.agent_turn_resumption(uuid, text, jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_turn_resumption(uuid, text, jsonb) to service_role;
revoke execute on function public.agent_adopt_turns(text, uuid, uuid, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_adopt_turns(text, uuid, uuid, integer, integer)
  to service_role;
revoke execute on function public.agent_answer_parked(text, uuid, uuid, text, jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.agent_answer_parked(text, uuid, uuid, text, jsonb)
  to service_role;
