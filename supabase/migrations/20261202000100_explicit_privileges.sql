-- Every privilege the API roles hold in `public`, granted explicitly and nowhere else.
--
-- Supabase projects may switch "default privileges for new entities" off (announced as the
-- default for new projects): new tables then grant `anon`, `authenticated` and `service_role`
-- nothing, and every query fails with 42501 unless a migration grants. Projects with the
-- defaults on hold far more than they need. This migration makes both end the same way: it
-- takes everything away, then grants each role exactly what the product does with it.
-- supabase/tests/privileges_test.ts holds the same matrix and fails on any drift.
--
-- Who does what:
-- - `anon`: nothing. Every surface needs a signed-in user.
-- - `authenticated`: the web app and the functions acting as the caller (RLS decides the rows):
--   reads its own rows everywhere, writes its chats and its tool approvals.
-- - `service_role`: the functions acting for a user beyond what RLS lets him do (starting and
--   flushing agent turns, metering, connections), an operator managing grants and limits, and
--   a backend following the Realtime tables (it reads every published table).

revoke all on all tables in schema public from anon, authenticated, service_role;
revoke all on all sequences in schema public from anon, authenticated, service_role;
revoke all on all functions in schema public from public, anon, authenticated, service_role;

-- One statement per object and role, so each can be dropped alone (deno task test:mutations).

-- Chats: the user's own, through the history function, the agent and the web app (the agent
-- stores a turn's messages as the user, too); its flush writes the answer as service role.
grant select, insert, update, delete on public.chat_sessions to authenticated;
grant select, insert, update, delete on public.chat_history to authenticated;
grant select, update on public.chat_history to service_role;
-- A backend holding the secret key may follow every published table over Realtime.
grant select on public.chat_sessions to service_role;

-- Tool grants: users read theirs; an operator manages them with the secret key.
grant select on public.permissions to authenticated;
grant select on public.default_permissions to authenticated;
grant select, insert, update, delete on public.permissions to service_role;
grant select, insert, update, delete on public.default_permissions to service_role;

-- Metering and limits: users read theirs; the functions meter, an operator sets the caps.
grant select on public.usage_metrics to authenticated;
grant select on public.user_limits to authenticated;
grant select, insert on public.usage_metrics to service_role;
grant select, insert, update on public.user_limits to service_role;

-- Agent turns: users read (and follow over Realtime) theirs; the agent writes them.
grant select on public.agent_turns to authenticated;
grant select on public.agent_turn_events to authenticated;
grant select on public.agent_connections to authenticated;
grant select, insert, update on public.agent_turns to service_role;
grant select, insert on public.agent_turn_events to service_role;
grant select, insert, update, delete on public.agent_connections to service_role;

-- Tool approvals: users answer the agent's questions and withdraw their standing answers.
grant select, insert, delete on public.tool_approvals to authenticated;

-- Functions.
grant execute on function public.append_messages(uuid, jsonb, text) to authenticated;
grant execute on function public.my_permissions() to authenticated;
grant execute on function public.agent_chat_context(uuid, uuid, integer, uuid[]) to authenticated;
grant execute on function public.consume_quota(uuid, integer) to service_role;
grant execute on function public.settle_quota(uuid, integer, integer, numeric) to service_role;
grant execute on function public.agent_register_connection(uuid, uuid, text, integer)
  to service_role;
grant execute on function public.agent_interrupt_stale_turns(uuid, integer, uuid, uuid)
  to service_role;
grant execute on function public.agent_start_turn(uuid, uuid, text, jsonb, text, text, integer,
  integer) to service_role;
grant execute on function public.agent_flush(text, jsonb, jsonb, jsonb) to service_role;
