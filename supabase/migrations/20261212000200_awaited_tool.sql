-- The tool of the call a turn waits for, named with the call (awaiting_call_id) before the
-- prompt goes out. The call itself reaches the turn's checkpoint only with the park's flush,
-- so an `approve` with edited arguments that came back at once found no tool to check them
-- against and let them through unchecked.
alter table public.agent_turns add column awaiting_tool text;
comment on column public.agent_turns.awaiting_tool is
  'The tool of awaiting_call_id, set with it: what edited arguments of an approval are checked against.';
