-- An agent turn: who runs it, where it stands, and a heartbeat from the isolate running it.
-- A turn whose heartbeat stopped belongs to a dead isolate and is marked interrupted by
-- whoever observes it next.

create type public.turn_state as enum ('running', 'complete', 'cancelled', 'interrupted', 'error');

create table public.agent_turns (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  session_id uuid not null references public.chat_sessions (id) on delete cascade,
  user_message_id uuid references public.chat_history (id) on delete set null,
  assistant_message_id uuid references public.chat_history (id) on delete set null,
  state public.turn_state not null default 'running',
  -- The connection (isolate) running the turn.
  owner text not null,
  heartbeat_at timestamptz not null default now(),
  model text,
  reserved_tokens integer not null default 0 check (reserved_tokens >= 0),
  steps integer not null default 0 check (steps >= 0),
  error jsonb,
  created_at timestamptz not null default now(),
  finished_at timestamptz
);
comment on table public.agent_turns is
  'Agent turns with state and heartbeat; written by the agent function (service_role).';

create index agent_turns_user_created_idx on public.agent_turns (user_id, created_at desc);
create index agent_turns_session_idx on public.agent_turns (session_id);
create index agent_turns_user_message_idx on public.agent_turns (user_message_id)
  where user_message_id is not null;
create index agent_turns_assistant_message_idx on public.agent_turns (assistant_message_id)
  where assistant_message_id is not null;
create index agent_turns_running_heartbeat_idx on public.agent_turns (heartbeat_at)
  where state = 'running';

alter table public.agent_turns enable row level security;
create policy "agent_turns: owner reads" on public.agent_turns
  for select to authenticated using (user_id = (select auth.uid()));

revoke all on public.agent_turns from anon;
revoke insert, update, delete, truncate on public.agent_turns from authenticated;
