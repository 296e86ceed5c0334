-- A turn waiting for the user's approval is parked: stored, held by no isolate, holding no
-- quota reservation, not counted among the user's running turns (which count state
-- 'running' only). Its own migration: a new enum value cannot be used in the transaction
-- that adds it, and 20261206000200 uses it.
alter type public.turn_state add value if not exists 'parked' after 'running';
