-- The sweep (POST /agent/sweep) starts queued chats nobody else will: a session's queue moves
-- on when the isolate that ended its turn does it, or when a connection of the user notices;
-- a turn that ends where no socket of its user is (adopted by the sweep), or whose isolate
-- died between storing the ending and starting the queue, left its queue waiting until the
-- user came back.

-- The claims the chat was queued with (verified by the isolate that stored it): the sweep
-- starts it as that user, as an adopted turn runs with the claims it started with. Taken from
-- the inserting transaction (agent_start_chat runs as the user, `request.jwt.claims` set), so
-- no caller can store claims of its choosing; null for rows queued before this column.
alter table public.agent_chat_queue
  add column claims jsonb default nullif(current_setting('request.jwt.claims', true), '')::jsonb;
comment on column public.agent_chat_queue.claims is
  'The verified JWT claims of the connection that queued the chat, from request.jwt.claims.';

-- The heads of queues, of any user, whose session has no running or parked turn at all: a
-- running turn of a dead isolate is the sweep's to adopt (it starts the queue when it ends),
-- not to supersede. At most p_limit, oldest first. Only a look: the start itself is
-- agent_start_chat's `queued` policy under the session's lock, so concurrent sweeps (and a
-- connection's look) start each chat once.
create function public.agent_sweep_queued_chats(p_limit integer)
returns table (user_id uuid, session_id uuid, claims jsonb)
language sql
stable
security invoker
set search_path = ''
as $$
  select h.user_id, h.session_id, h.claims
  from (
    select distinct on (q.session_id) q.user_id, q.session_id, q.claims, q.position
    from public.agent_chat_queue q
    where q.error is null
      and not exists (select 1 from public.agent_turns t
                      where t.session_id = q.session_id and t.state in ('running', 'parked'))
    order by q.session_id, q.position
  ) h
  where h.claims is not null
  order by h.position
  limit p_limit
$$;
revoke all on function public.agent_sweep_queued_chats(integer) from public;
grant execute on function public.agent_sweep_queued_chats(integer) to service_role;
