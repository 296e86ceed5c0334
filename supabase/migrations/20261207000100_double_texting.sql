-- Double-texting: a chat sent to a session whose turn is still running is refused
-- (`reject`, the default) or queued (`enqueue`) and started, in order, when the session is
-- free. The queue lives here, so whichever isolate ends the running turn — or whichever
-- notices first that nothing runs — starts the next chat; no isolate's memory holds it.

-- The hard guard: no two turns of one session stream at once, whatever a function forgets.
create unique index agent_turns_one_running_per_session on public.agent_turns (session_id)
  where state = 'running';

create table public.agent_chat_queue (
  -- The chat's id (the user message's client id): a retried enqueue is stored once.
  chat_id uuid not null,
  user_id uuid not null references auth.users (id) on delete cascade,
  session_id uuid not null references public.chat_sessions (id) on delete cascade,
  -- Chats of a session start in this order.
  position bigint generated always as identity,
  -- The turn id the chat will start with, told to the client when it is queued.
  turn_id uuid not null unique,
  -- The validated chat frame (content, model, tools).
  frame jsonb not null,
  -- Set when the chat could not start (e.g. its quota refused it): it leaves the queue.
  error jsonb,
  created_at timestamptz not null default now(),
  primary key (user_id, chat_id)
);
comment on table public.agent_chat_queue is
  'Chats waiting for their session''s running turn to end; written by the agent (service_role).';
create index agent_chat_queue_session_idx on public.agent_chat_queue (session_id, position)
  where error is null;

alter table public.agent_chat_queue enable row level security;
create policy "agent_chat_queue: owner reads" on public.agent_chat_queue
  for select to authenticated using (user_id = (select auth.uid()));
revoke all on public.agent_chat_queue from anon, authenticated, service_role;
-- The identity's sequence needs no grant: inserts draw from it without USAGE.
revoke all on sequence public.agent_chat_queue_position_seq from anon, authenticated,
  service_role;
grant select on public.agent_chat_queue to authenticated;
grant select, insert, update, delete on public.agent_chat_queue to service_role;

-- The turn that keeps a session busy, if any: a running turn whose isolate still heartbeats
-- (a stale one is interrupted by the next start). `enqueueable` is false for a turn a chat
-- must never queue behind.
-- HOOK (branch `turns`): a parked turn (waiting for an approval) holds its session too, and
-- refuses even `enqueue`: redefine this function to return it with enqueueable = false.
create function public.agent_session_busy_turn(p_user_id uuid, p_session_id uuid,
  p_stale_ms integer)
returns table (turn_id uuid, enqueueable boolean)
language sql
stable
security invoker
set search_path = ''
as $$
  select t.id, true
  from public.agent_turns t
  where t.session_id = p_session_id and t.user_id = p_user_id and t.state = 'running'
    and (p_stale_ms is null
      or t.heartbeat_at >= clock_timestamp() - make_interval(secs => p_stale_ms / 1000.0))
  limit 1
$$;
revoke all on function public.agent_session_busy_turn(uuid, uuid, integer) from public;
grant execute on function public.agent_session_busy_turn(uuid, uuid, integer) to service_role;

-- A chat's start under its double-texting policy, in one transaction. Under a per-session
-- advisory lock (taken by every start in the session, and by nothing else), so the check and
-- the start or the enqueue are one step for concurrent chats on any isolate:
--   `reject`:  the session is busy (a running turn, or chats queued before) → `busy`;
--   `enqueue`: the same → the chat is queued (`queued`, with the chats ahead of it);
--   `queued`:  the head of the queue starting now: if the session is free it starts and
--              leaves the queue; if not (`busy`) it stays queued; a chat no longer queued
--              (another isolate started it) → `gone`.
-- Otherwise the turn starts as agent_start_turn does (its outcome is returned).
create function public.agent_start_chat(
  p_policy text,
  p_frame jsonb,
  p_turn_id uuid,
  p_session_id uuid,
  p_title text,
  p_messages jsonb,
  p_owner text,
  p_model text,
  p_prompt_tokens integer,
  p_completion_tokens integer,
  p_stale_ms integer
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_user uuid := auth.uid();
  v_chat uuid := (p_messages -> 0 ->> 'id')::uuid;
  v_busy record;
  v_head public.agent_chat_queue;
  v_mine public.agent_chat_queue;
  v_ahead integer;
  v_outcome jsonb;
begin
  if v_user is null then
    raise exception 'not authenticated' using errcode = '42501';
  end if;
  if p_policy is null or p_policy not in ('reject', 'enqueue', 'queued') then
    raise exception 'p_policy must be reject, enqueue or queued' using errcode = '22023';
  end if;
  perform pg_advisory_xact_lock(hashtextextended('agent_session:' || p_session_id::text, 0));

  select b.turn_id, b.enqueueable into v_busy
  from public.agent_session_busy_turn(v_user, p_session_id, p_stale_ms) b;
  select * into v_head from public.agent_chat_queue q
  where q.session_id = p_session_id and q.user_id = v_user and q.error is null
  order by q.position limit 1;
  select * into v_mine from public.agent_chat_queue q
  where q.user_id = v_user and q.chat_id = v_chat;

  if exists (select 1 from public.chat_history h
             where h.user_id = v_user and h.client_id = v_chat) then
    -- A retry of a chat that was stored (and so started): agent_start_turn finds its turn.
    null;
  elsif p_policy = 'queued' then
    if v_mine.chat_id is null or v_mine.error is not null then
      return jsonb_build_object('kind', 'gone');
    end if;
    if v_busy.turn_id is not null or v_head.chat_id is distinct from v_chat then
      return jsonb_build_object('kind', 'busy', 'turn_id',
        coalesce(v_busy.turn_id, v_head.turn_id), 'enqueueable', true);
    end if;
  elsif v_mine.chat_id is not null and v_mine.error is null then
    -- A retried enqueue (same chat id): still queued, stored once.
    select count(*) into v_ahead from public.agent_chat_queue q
    where q.session_id = p_session_id and q.user_id = v_user and q.error is null
      and q.position < v_mine.position;
    return jsonb_build_object('kind', 'queued', 'turn_id', v_mine.turn_id, 'ahead', v_ahead,
      'running_turn_id', coalesce(v_busy.turn_id, v_head.turn_id));
  elsif v_busy.turn_id is not null or v_head.chat_id is not null then
    if p_policy = 'reject' or not coalesce(v_busy.enqueueable, true) then
      return jsonb_build_object('kind', 'busy', 'turn_id',
        coalesce(v_busy.turn_id, v_head.turn_id), 'enqueueable', v_busy.enqueueable);
    end if;
    -- The session must be the caller's (a queued chat is stored in it later, as him).
    if not exists (select 1 from public.chat_sessions s
                   where s.id = p_session_id and s.user_id = v_user) then
      raise exception 'no such session' using errcode = 'AG404';
    end if;
    insert into public.agent_chat_queue (chat_id, user_id, session_id, turn_id, frame)
    values (v_chat, v_user, p_session_id, p_turn_id, p_frame);
    select count(*) - 1 into v_ahead from public.agent_chat_queue q
    where q.session_id = p_session_id and q.user_id = v_user and q.error is null;
    return jsonb_build_object('kind', 'queued', 'turn_id', p_turn_id, 'ahead', v_ahead,
      'running_turn_id', coalesce(v_busy.turn_id, v_head.turn_id));
  end if;

  v_outcome := public.agent_start_turn(p_turn_id, p_session_id, p_title, p_messages, p_owner,
    p_model, p_prompt_tokens, p_completion_tokens, p_stale_ms);
  if p_policy = 'queued' and v_outcome ->> 'kind' in ('started', 'exists') then
    delete from public.agent_chat_queue q where q.user_id = v_user and q.chat_id = v_chat;
  end if;
  return v_outcome;
end;
$$;
revoke all on function public.agent_start_chat(text, jsonb, uuid, uuid, text, jsonb, text, text,
  integer, integer, integer) from public;
grant execute on function public.agent_start_chat(text, jsonb, uuid, uuid, text, jsonb, text,
  text, integer, integer, integer) to service_role;

-- A queued chat that could not start leaves the queue with its error (its follower reads it).
create function public.agent_fail_queued_chat(p_user_id uuid, p_chat_id uuid, p_error jsonb)
returns void
language sql
security invoker
set search_path = ''
as $$
  update public.agent_chat_queue q set error = p_error
  where q.user_id = p_user_id and q.chat_id = p_chat_id and q.error is null
$$;
revoke all on function public.agent_fail_queued_chat(uuid, uuid, jsonb) from public;
grant execute on function public.agent_fail_queued_chat(uuid, uuid, jsonb) to service_role;

-- The heads of the user's queues whose sessions are free (nothing running but turns of dead
-- isolates): what an isolate starts after a turn ends, or when it notices them.
create function public.agent_startable_chats(p_user_id uuid, p_session_id uuid,
  p_stale_ms integer)
returns table (chat_id uuid, session_id uuid, turn_id uuid, frame jsonb)
language sql
stable
security invoker
set search_path = ''
as $$
  select distinct on (q.session_id) q.chat_id, q.session_id, q.turn_id, q.frame
  from public.agent_chat_queue q
  where q.user_id = p_user_id and q.error is null
    and (p_session_id is null or q.session_id = p_session_id)
    and not exists (select 1 from public.agent_session_busy_turn(p_user_id, q.session_id,
      p_stale_ms))
  order by q.session_id, q.position
$$;
revoke all on function public.agent_startable_chats(uuid, uuid, integer) from public;
grant execute on function public.agent_startable_chats(uuid, uuid, integer) to service_role;
