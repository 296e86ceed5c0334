-- What the agent function needs beyond agent_turns: the frames of every turn (so a client
-- that reconnects to another isolate can resume), a registry of open WebSocket connections
-- (the per-user connection limit holds across isolates), cross-isolate cancellation, one turn
-- per user message, and tool approvals a user remembered for a session.

-- A cancel can reach an isolate that does not run the turn: it leaves the request here and
-- the running isolate sees it on its next flush.
alter table public.agent_turns add column cancel_requested_at timestamptz;

-- Likewise an `approve` for a tool call that waits on another isolate: the waiting turn names
-- its call here and polls for the answer.
alter table public.agent_turns
  add column awaiting_call_id text,
  add column approval_answer jsonb
    check (approval_answer is null or jsonb_typeof(approval_answer) = 'object');

-- One turn per user message: a retried `chat` (same client id) finds the turn it started.
drop index public.agent_turns_user_message_idx;
create unique index agent_turns_user_message_key on public.agent_turns (user_message_id);

-- Heartbeats and flushes address the running turns of one isolate.
create index agent_turns_owner_running_idx on public.agent_turns (owner) where state = 'running';

-- The server frames of a turn, written in batches with each flush: `frames` holds the frames
-- with seq from `seq` to `last_seq`, in order. A frame's seq and turn are its row's; a token
-- frame is stored as its bare delta (a JSON string), any other frame as its JSON object.
create table public.agent_turn_events (
  turn_id uuid not null references public.agent_turns (id) on delete cascade,
  seq integer not null check (seq > 0),
  last_seq integer not null,
  user_id uuid not null references auth.users (id) on delete cascade,
  frames jsonb not null check (jsonb_typeof(frames) = 'array'),
  created_at timestamptz not null default now(),
  primary key (turn_id, seq),
  constraint agent_turn_events_seq_range check (last_seq >= seq)
);
comment on table public.agent_turn_events is
  'Server frames of agent turns in seq batches, for resuming on any isolate. Written by service_role.';

create index agent_turn_events_user_idx on public.agent_turn_events (user_id);

-- Open agent WebSockets. A row lives while its isolate heartbeats it; rows with an old
-- heartbeat belong to dead isolates and are ignored (and removed by the next registration).
create table public.agent_connections (
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  -- The isolate (app instance) holding the socket.
  isolate_id text not null check (char_length(isolate_id) between 1 and 200),
  created_at timestamptz not null default clock_timestamp(),
  heartbeat_at timestamptz not null default clock_timestamp(),
  -- Set when a newer connection pushed this one over the user's limit; its isolate closes it.
  evicted_at timestamptz
);
comment on table public.agent_connections is
  'Open agent WebSocket connections with heartbeats, for the per-user limit. Written by service_role.';

create index agent_connections_user_created_idx on public.agent_connections (user_id, created_at);
create index agent_connections_isolate_idx on public.agent_connections (isolate_id);

-- Tools the user allowed for the rest of a session (`approve` with remember = "session").
-- Such a row only skips the question of an `ask` grant; it never overrides `deny` or a
-- missing grant, so users may write their own.
create table public.tool_approvals (
  id bigint generated always as identity primary key,
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  session_id uuid not null,
  tool text not null check (tool ~ '^[a-z][a-z0-9_]{0,63}$'),
  created_at timestamptz not null default now(),
  constraint tool_approvals_session_tool_key unique (user_id, session_id, tool),
  constraint tool_approvals_session_owner_fkey foreign key (session_id, user_id)
    references public.chat_sessions (id, user_id) on delete cascade
);
comment on table public.tool_approvals is
  'Tools a user approved for the rest of a chat session; consulted only for approval_mode ask.';

create index tool_approvals_session_idx on public.tool_approvals (session_id, user_id);

alter table public.agent_turn_events enable row level security;
alter table public.agent_connections enable row level security;
alter table public.tool_approvals enable row level security;

create policy "agent_turn_events: owner reads" on public.agent_turn_events
  for select to authenticated using (user_id = (select auth.uid()));
create policy "agent_connections: owner reads" on public.agent_connections
  for select to authenticated using (user_id = (select auth.uid()));
create policy "tool_approvals: owner reads" on public.tool_approvals
  for select to authenticated using (user_id = (select auth.uid()));
create policy "tool_approvals: owner creates" on public.tool_approvals
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy "tool_approvals: owner deletes" on public.tool_approvals
  for delete to authenticated using (user_id = (select auth.uid()));

revoke all on public.agent_turn_events, public.agent_connections, public.tool_approvals from anon;
revoke insert, update, delete, truncate on public.agent_turn_events, public.agent_connections
  from authenticated;
revoke update, truncate on public.tool_approvals from authenticated;

-- Registers a new connection and evicts the user's oldest live connections beyond his
-- max_connections. The user's limits row lock serialises concurrent registrations of one
-- user across isolates, so the limit holds exactly. Connections whose heartbeat is older than
-- p_stale_ms count as gone and are deleted.
create function public.agent_register_connection(
  p_connection_id uuid,
  p_user_id uuid,
  p_isolate_id text,
  p_stale_ms integer
)
returns table (max_connections integer, evicted uuid[])
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_now timestamptz := clock_timestamp();
  v_stale_before timestamptz := clock_timestamp() - make_interval(secs => p_stale_ms / 1000.0);
begin
  if p_stale_ms is null or p_stale_ms <= 0 then
    raise exception 'p_stale_ms must be positive' using errcode = '22023';
  end if;
  insert into public.user_limits (user_id) values (p_user_id) on conflict do nothing;
  select l.max_connections into max_connections
  from public.user_limits l where l.user_id = p_user_id for update;

  -- The user's rows, locked in id order (as heartbeats lock them), so a registration and a
  -- heartbeat touching the same rows cannot deadlock.
  perform 1 from public.agent_connections c where c.user_id = p_user_id order by c.id for update;
  delete from public.agent_connections c
  where c.user_id = p_user_id and c.heartbeat_at < v_stale_before;
  insert into public.agent_connections (id, user_id, isolate_id, created_at, heartbeat_at)
  values (p_connection_id, p_user_id, p_isolate_id, v_now, v_now)
  on conflict (id) do update set heartbeat_at = excluded.heartbeat_at;

  with ranked as (
    select c.id, row_number() over (order by c.created_at desc, c.id desc) as position
    from public.agent_connections c
    where c.user_id = p_user_id and c.evicted_at is null
  ),
  marked as (
    update public.agent_connections c set evicted_at = v_now
    from ranked
    where c.id = ranked.id and ranked.position > max_connections
    returning c.id
  )
  select coalesce(array_agg(marked.id), '{}') into evicted from marked;
  return next;
end;
$$;

-- Marks the user's running turns whose isolate stopped heartbeating (for p_stale_ms) as
-- interrupted: the turn, its streaming assistant message (its flushed text stays), and a
-- final `error` frame with code "interrupted" after the turn's last stored frame.
-- Optionally narrowed to one session or one turn. Returns the turns it interrupted.
create function public.agent_interrupt_stale_turns(
  p_user_id uuid,
  p_stale_ms integer,
  p_session_id uuid default null,
  p_turn_id uuid default null
)
returns table (turn_id uuid)
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_stale_before timestamptz := clock_timestamp() - make_interval(secs => p_stale_ms / 1000.0);
  v_turn record;
  v_seq integer;
begin
  if p_stale_ms is null or p_stale_ms <= 0 then
    raise exception 'p_stale_ms must be positive' using errcode = '22023';
  end if;
  for v_turn in
    update public.agent_turns t
    set state = 'interrupted',
        finished_at = clock_timestamp(),
        error = jsonb_build_object(
          'code', 'interrupted',
          'message', 'The server running this turn stopped before it finished')
    where t.user_id = p_user_id
      and t.state = 'running'
      and t.heartbeat_at < v_stale_before
      and (p_session_id is null or t.session_id = p_session_id)
      and (p_turn_id is null or t.id = p_turn_id)
    returning t.id, t.assistant_message_id
  loop
    update public.chat_history h
    set status = 'interrupted', updated_at = clock_timestamp()
    where h.id = v_turn.assistant_message_id and h.status = 'streaming';

    select coalesce(max(e.last_seq), 0) + 1 into v_seq
    from public.agent_turn_events e where e.turn_id = v_turn.id;
    insert into public.agent_turn_events (turn_id, seq, last_seq, user_id, frames)
    values (v_turn.id, v_seq, v_seq, p_user_id, jsonb_build_array(jsonb_build_object(
      'type', 'error',
      'turn_id', v_turn.id,
      'seq', v_seq,
      'code', 'interrupted',
      'message', 'The server running this turn stopped before it finished; the partial '
        || 'answer is kept',
      'retryable', true)))
    on conflict do nothing;

    turn_id := v_turn.id;
    return next;
  end loop;
end;
$$;

revoke execute on function public.agent_register_connection(uuid, uuid, text, integer)
  from public, anon, authenticated;
revoke execute on function public.agent_interrupt_stale_turns(uuid, integer, uuid, uuid)
  from public, anon, authenticated;
grant execute on function public.agent_register_connection(uuid, uuid, text, integer)
  to service_role;
grant execute on function public.agent_interrupt_stale_turns(uuid, integer, uuid, uuid)
  to service_role;
