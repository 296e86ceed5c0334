-- Chat sessions and their messages, with a per-session sequence, idempotent client ids and
-- full-text search. Users own their chat: they read and write only their own rows.

create type public.message_role as enum ('user', 'assistant', 'system', 'tool');
create type public.message_status as enum ('streaming', 'complete', 'interrupted', 'error');

create table public.chat_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  title text check (char_length(title) <= 200),
  created_at timestamptz not null default now(),
  -- Bumped by every append, so "newest first" means "most recently active first".
  updated_at timestamptz not null default now(),
  -- What chat_history's owner check looks up: a message lives in its owner's session.
  constraint chat_sessions_id_user_key unique (id, user_id)
);
comment on table public.chat_sessions is 'A conversation. Newest first by updated_at.';

create index chat_sessions_user_recent_idx
  on public.chat_sessions (user_id, updated_at desc, id desc);

create table public.chat_history (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null,
  -- No foreign key of its own: the owner check below ties (session_id, user_id) to the
  -- session's owner, an auth.users row whose deletion cascades through the session.
  user_id uuid not null default auth.uid(),
  -- The id the client chose; a retried write with the same id is stored once.
  client_id uuid not null,
  seq integer not null check (seq > 0),
  role public.message_role not null,
  content text not null default '' check (octet_length(content) <= 1048576),
  -- Assistant messages: [{id, name, arguments, result?, is_error?}].
  tool_calls jsonb check (tool_calls is null or jsonb_typeof(tool_calls) = 'array'),
  -- Tool messages: the call they answer.
  tool_call_id text,
  model text,
  status public.message_status not null default 'complete',
  turn_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  content_search tsvector generated always as (to_tsvector('english', content)) stored,
  constraint chat_history_client_id_key unique (user_id, client_id),
  -- Unique per session as (session_id, seq) would be (a session has one owner), but with
  -- user_id inside it serves queries under RLS, which adds `user_id = auth.uid()`: a session's
  -- newest seq is one index probe instead of a bitmap AND over all the owner's messages. It
  -- also finds a deleted session's messages.
  constraint chat_history_session_seq_key unique (session_id, user_id, seq)
);
comment on table public.chat_history is
  'Messages of a session in seq order; assistant rows stream (status) and are flushed while they grow.';

-- The session owner check: what `foreign key (session_id, user_id) references
-- chat_sessions (id, user_id) on delete cascade` would do, per statement instead of per row.
-- A foreign key runs one lookup per inserted message; a 500-message append spent a quarter of
-- its time there. One set-based check per statement does the same work, with the same
-- locks: it takes FOR KEY SHARE on every session it relies on, so a concurrent delete of the
-- session waits for the insert to commit (and its cascade then sees the new messages), and an
-- insert waits for an uncommitted delete (and then fails). Security definer, like the
-- foreign-key checks Postgres runs, because it must see sessions whatever the caller's RLS.
create schema if not exists private;
revoke all on schema private from public, anon, authenticated;

create function private.chat_history_check_session_owner()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_missing uuid;
begin
  with wanted as (
    select distinct n.session_id, n.user_id from new_messages n
  ),
  held as (
    select s.id, s.user_id
    from public.chat_sessions s
    where (s.id, s.user_id) in (select w.session_id, w.user_id from wanted w)
    for key share of s
  )
  select w.session_id into v_missing
  from wanted w
  where not exists (select 1 from held h where h.id = w.session_id and h.user_id = w.user_id)
  limit 1;
  if found then
    raise exception 'session % does not exist for this message''s owner', v_missing
      using errcode = '23503', constraint = 'chat_history_session_owner_check';
  end if;
  return null;
end;
$$;

create trigger chat_history_session_owner_on_insert
  after insert on public.chat_history
  referencing new table as new_messages
  for each statement execute function private.chat_history_check_session_owner();

-- ON DELETE CASCADE of that key. Keys never change: a message stays in its session, a session
-- with its owner (stricter than the key's NO ACTION, and no check is needed on updates).
create function private.chat_sessions_delete_messages()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.chat_history h
  using old_sessions o
  where h.session_id = o.id and h.user_id = o.user_id;
  return null;
end;
$$;

create trigger chat_sessions_delete_messages
  after delete on public.chat_sessions
  referencing old table as old_sessions
  for each statement execute function private.chat_sessions_delete_messages();

create function private.refuse_key_change()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception '%: a row''s session and owner cannot change', tg_table_name
    using errcode = '23503';
end;
$$;

create trigger chat_sessions_keep_key
  before update of id, user_id on public.chat_sessions
  for each row when (old.id is distinct from new.id or old.user_id is distinct from new.user_id)
  execute function private.refuse_key_change();
create trigger chat_history_keep_key
  before update of session_id, user_id on public.chat_history
  for each row
  when (old.session_id is distinct from new.session_id or old.user_id is distinct from new.user_id)
  execute function private.refuse_key_change();

revoke execute on function private.chat_history_check_session_owner(),
  private.chat_sessions_delete_messages(), private.refuse_key_change()
  from public, anon, authenticated;

create index chat_history_content_search_idx on public.chat_history using gin (content_search);
create index chat_history_turn_idx on public.chat_history (turn_id) where turn_id is not null;
-- Served by the unique (user_id, client_id) index: idempotency look-ups.

alter table public.chat_sessions enable row level security;
alter table public.chat_history enable row level security;

create policy "chat_sessions: owner reads" on public.chat_sessions
  for select to authenticated using (user_id = (select auth.uid()));
create policy "chat_sessions: owner creates" on public.chat_sessions
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy "chat_sessions: owner updates" on public.chat_sessions
  for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy "chat_sessions: owner deletes" on public.chat_sessions
  for delete to authenticated using (user_id = (select auth.uid()));

create policy "chat_history: owner reads" on public.chat_history
  for select to authenticated using (user_id = (select auth.uid()));
-- The session owner check keeps the message in the writer's own session.
create policy "chat_history: owner appends" on public.chat_history
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy "chat_history: owner updates" on public.chat_history
  for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy "chat_history: owner deletes" on public.chat_history
  for delete to authenticated using (user_id = (select auth.uid()));

revoke all on public.chat_sessions, public.chat_history from anon;

-- Appends a batch of messages to a session, creating the session when absent.
-- Idempotent by client id: a message already stored is returned as it was (inserted=false).
-- All or nothing; seq strictly increasing per session, also under concurrent appends,
-- because every append holds the session row lock while it numbers its rows.
-- Runs as the caller, so RLS decides what he may touch. Errors (SQLSTATE → meaning):
--   AG404 the session does not exist for this user
--   AG409 a client id is already used by another session or with another role
--   AG422 the batch itself is invalid
create function public.append_messages(
  p_session_id uuid,
  p_messages jsonb,
  p_title text default null
)
returns table (
  id uuid,
  client_id uuid,
  seq integer,
  created_at timestamptz,
  inserted boolean
)
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_user uuid := auth.uid();
  v_ids uuid[];
  v_existing uuid[];
  v_conflict uuid;
  v_max_seq integer;
begin
  if v_user is null then
    raise exception 'not authenticated' using errcode = '42501';
  end if;
  if p_session_id is null then
    raise exception 'session_id is required' using errcode = 'AG422';
  end if;
  if jsonb_typeof(p_messages) is distinct from 'array' or jsonb_array_length(p_messages) = 0 then
    raise exception 'messages must be a non-empty array' using errcode = 'AG422';
  end if;

  v_ids := array(
    select (m.value ->> 'id')::uuid
    from jsonb_array_elements(p_messages) with ordinality as m (value, ord)
    order by m.ord
  );
  if array_position(v_ids, null) is not null then
    raise exception 'every message needs an id' using errcode = 'AG422';
  end if;
  if cardinality(v_ids) <> (select count(distinct x) from unnest(v_ids) as x) then
    raise exception 'message ids must be unique within a batch' using errcode = 'AG422';
  end if;

  insert into public.chat_sessions (id, user_id, title)
  values (p_session_id, v_user, p_title)
  on conflict do nothing;

  perform 1 from public.chat_sessions s where s.id = p_session_id for update;
  if not found then
    raise exception 'session % not found', p_session_id using errcode = 'AG404';
  end if;

  -- Messages of this batch that an earlier (retried) append already stored.
  select coalesce(array_agg(h.client_id), '{}'),
         (array_agg(h.client_id) filter (
            where h.session_id <> p_session_id
               or h.role::text is distinct from (
                 select m.value ->> 'role' from jsonb_array_elements(p_messages) as m (value)
                 where (m.value ->> 'id')::uuid = h.client_id
               )
          ))[1]
  into v_existing, v_conflict
  from public.chat_history h
  where h.user_id = v_user and h.client_id = any (v_ids);
  if v_conflict is not null then
    raise exception 'message id % is already used', v_conflict using errcode = 'AG409';
  end if;

  select max(h.seq) into v_max_seq
  from public.chat_history h where h.session_id = p_session_id and h.user_id = v_user;

  return query
  with fresh as (
    select m.ord, (m.value ->> 'id')::uuid as client_id, m.value
    from jsonb_array_elements(p_messages) with ordinality as m (value, ord)
    where not ((m.value ->> 'id')::uuid = any (v_existing))
  ),
  stored as (
    insert into public.chat_history as h
      (session_id, user_id, client_id, seq, role, content, tool_calls, tool_call_id, model,
       status, turn_id)
    select p_session_id, v_user, f.client_id,
           coalesce(v_max_seq, 0) + (row_number() over (order by f.ord))::integer,
           (f.value ->> 'role')::public.message_role, coalesce(f.value ->> 'content', ''),
           f.value -> 'tool_calls', f.value ->> 'tool_call_id', f.value ->> 'model',
           coalesce(f.value ->> 'status', 'complete')::public.message_status,
           (f.value ->> 'turn_id')::uuid
    from fresh f
    returning h.id, h.client_id, h.seq, h.created_at
  )
  select st.id, st.client_id, st.seq, st.created_at, true from stored st
  union all
  select old.id, old.client_id, old.seq, old.created_at, false
  from public.chat_history old
  where cardinality(v_existing) > 0 and old.user_id = v_user and old.client_id = any (v_existing)
  order by 3;

  update public.chat_sessions s
  set updated_at = now(), title = coalesce(s.title, p_title)
  where s.id = p_session_id;
end;
$$;

revoke execute on function public.append_messages(uuid, jsonb, text) from public, anon;
grant execute on function public.append_messages(uuid, jsonb, text) to authenticated, service_role;
