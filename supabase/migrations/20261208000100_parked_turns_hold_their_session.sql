-- A parked turn (waiting for an approval, 20261206000200_durable_turns.sql) holds its session
-- as a running one does, and more firmly: a chat sent to it is refused with `session_busy`
-- naming the parked turn even under `enqueue` (enqueueable = false), since the turn may wait
-- a day and goes on only when the user answers. Chats queued while it still ran wait for it
-- to end (agent_startable_chats finds the session busy). As in
-- 20261207000100_double_texting.sql otherwise: a running turn whose isolate still heartbeats
-- keeps the session busy and may be queued behind.
create or replace function public.agent_session_busy_turn(p_user_id uuid, p_session_id uuid,
  p_stale_ms integer)
returns table (turn_id uuid, enqueueable boolean)
language sql
stable
security invoker
set search_path = ''
as $$
  select t.id, t.state = 'running'
  from public.agent_turns t
  where t.session_id = p_session_id and t.user_id = p_user_id
    and (t.state = 'parked'
      or (t.state = 'running'
        and (p_stale_ms is null
          or t.heartbeat_at >= clock_timestamp() - make_interval(secs => p_stale_ms / 1000.0))))
  -- The parked turn first: it refuses what a running one would queue.
  order by t.state = 'parked' desc
  limit 1
$$;
-- `create or replace` keeps the function's grants (20261207000100: service_role only).
