-- Whether a signed-in user may still act: his access token stays valid until `exp` after he is
-- deleted, banned or signed out everywhere (tokens are stateless), so the agent asks the
-- database at a socket's start, at each heartbeat and before each new turn. Auth's tables are
-- readable by `postgres` (on hosted as here), not by the API roles: these functions run as
-- their owner (security definer) and answer only whether, never what.

-- Why (user, session) may not act any more, or null: `user_deleted` (no such user, or
-- soft-deleted), `user_banned` (banned_until in the future), `session_ended` (the token's
-- session was signed out or is past its not_after). A null session is not checked: tokens
-- minted without one (service tooling) name none.
create function public.account_refusal(p_user_id uuid, p_session_id uuid)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select case
    when u.id is null or u.deleted_at is not null then 'user_deleted'
    when u.banned_until is not null and u.banned_until > now() then 'user_banned'
    when p_session_id is not null and not exists (
      select 1 from auth.sessions s
      where s.id = p_session_id and s.user_id = p_user_id
        and (s.not_after is null or s.not_after > now())
    ) then 'session_ended'
  end
  from (select p_user_id as id) as wanted
  left join auth.users u on u.id = wanted.id
$$;

-- The same question for the caller, about himself only: lets a read that runs as the user
-- (the agent's chat context) ask it in the same round trip.
create function public.caller_account_refusal()
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select public.account_refusal(
    auth.uid(),
    case when auth.jwt() ->> 'session_id' ~* '^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$'
      then (auth.jwt() ->> 'session_id')::uuid end
  )
$$;

-- As in 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke execute on function public.account_refusal(uuid, uuid)
  from public, anon, authenticated, service_role;
grant execute on function public.account_refusal(uuid, uuid) to service_role;
revoke execute on function public.caller_account_refusal()
  from public, anon, authenticated, service_role;
grant execute on function public.caller_account_refusal() to authenticated;
