-- The model catalogue: which upstream models the agent may call, and at what price. The
-- client names a model per chat; before this, any name was passed upstream and billed
-- (`openai/o1-pro` included). Now a chat may only use an enabled row, and the prices are the
-- server's, for reserving a turn's worst-case cost before it runs.
--
-- Managed by service_role (an operator adds, prices and disables models); users read the
-- enabled rows (the web app's model picker).

create table public.models (
  -- The upstream model name, as sent to the LLM API.
  id text primary key check (char_length(id) between 1 and 200),
  display_name text check (char_length(display_name) between 1 and 200),
  prompt_usd_per_token numeric(20, 12) not null check (prompt_usd_per_token >= 0),
  completion_usd_per_token numeric(20, 12) not null check (completion_usd_per_token >= 0),
  enabled boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.models is
  'Models the agent may call, with prices per token (USD). Changed only by service_role.';

alter table public.models enable row level security;
-- A disabled model is withdrawn: users no longer see it, the agent no longer accepts it.
create policy "models: enabled rows readable" on public.models
  for select to authenticated using (enabled);

-- The project's default model (LLM_MODEL's default), at OpenRouter's list price. Other models
-- (LLM_MODEL set otherwise, LLM_FALLBACK_MODELS) are added by an operator; the local stand-in
-- adds its offline demo model when it starts its LLM fixture.
insert into public.models (id, display_name, prompt_usd_per_token, completion_usd_per_token)
values ('openai/gpt-4o-mini', 'GPT-4o mini', 0.00000015, 0.0000006);

-- As in 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke all on public.models from anon, authenticated, service_role;
grant select on public.models to authenticated;
grant select, insert, update, delete on public.models to service_role;

-- agent_start_turn as before (20261122000800), but refusing a model the catalogue does not
-- offer with reason `model_not_allowed`.
create or replace function public.agent_start_turn(
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

  -- The model is the client's choice, but only among the catalogue's enabled models: an
  -- unknown one could be any upstream model at any price. Checked before anything is
  -- interrupted or reserved, so a refusal leaves nothing behind.
  if not exists (select 1 from public.models m where m.id = p_model and m.enabled) then
    return jsonb_build_object('kind', 'refused', 'reason', 'model_not_allowed',
      'retry_after_ms', null);
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

