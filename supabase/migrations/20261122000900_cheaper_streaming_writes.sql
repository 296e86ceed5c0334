-- A streaming turn rewrites its assistant message and heartbeats its turn row on every flush
-- (every 500 ms per turn), so those updates must cost little more than the write itself.
--
-- 1. chat_history.content_search was recomputed (to_tsvector of the whole answer so far) and
--    re-indexed (GIN) on every flush. A message is now indexed for search once it stops
--    streaming (complete, interrupted or error); until then it has no search vector. Search
--    finds answers, not half-written ones.
-- 2. agent_turns_running_heartbeat_idx served no query: stale turns are looked up per user
--    (agent_turns_user_created_idx). While heartbeat_at was indexed, every heartbeat was a
--    non-HOT update that added entries to all of the table's indexes.

drop index public.chat_history_content_search_idx;
alter table public.chat_history drop column content_search;
alter table public.chat_history add column content_search tsvector
  generated always as (
    case when status = 'streaming' then null else to_tsvector('english', content) end
  ) stored;
create index chat_history_content_search_idx on public.chat_history using gin (content_search);

drop index public.agent_turns_running_heartbeat_idx;
