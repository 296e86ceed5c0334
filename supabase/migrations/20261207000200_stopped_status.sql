-- A stopped answer (the user pressed Stop: its turn was cancelled) is stored as such, so every
-- tab and every later reader shows "Stopped", distinct from `interrupted` (the server running
-- the turn went away).
alter type public.message_status add value if not exists 'stopped' after 'complete';
