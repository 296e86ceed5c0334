-- Room on each page for the rows a streaming turn updates on every flush: its agent_turns row
-- (heartbeat, steps) and its assistant message in chat_history (the growing text).
--
-- An update stays on the row's page (a HOT update: no new entry in any of the table's
-- indexes) only when the page has room for the new version. Tables filled to 100% left none:
-- flushing 1,000 streaming turns, 96% of these updates were not HOT, each adding entries to
-- all seven indexes of agent_turns or the five of chat_history. With this room, 81% of the
-- turn rows' and 50% of the messages' updates are HOT, and such a flush takes 55–58 ms
-- instead of 86–88 ms (p50; "agent: one flush of 1000 streaming turns" in `deno task bench`).
--
-- agent_turns is small and every row is updated many times: 30% free. chat_history is the
-- largest table and most of its rows never change after they are written: 10% free. The
-- setting applies to pages written from now on; existing pages keep their layout.

alter table public.agent_turns set (fillfactor = 70);
alter table public.chat_history set (fillfactor = 90);
