-- Trace ids beside turns and usage rows: an operator goes from a turn or a usage row to its
-- trace in the collector (OpenTelemetry, `_shared/tracing/`), and from a trace back to rows.
--
-- A turn's trace id is its id's 32 hex digits (every isolate that runs a part of the turn
-- derives it without a read), so the turn's column is generated from the id: no writer can get
-- it wrong, and no SQL function that inserts turns changes.
alter table public.agent_turns
  add column trace_id text generated always as (replace(id::text, '-', '')) stored;
comment on column public.agent_turns.trace_id is
  'The OpenTelemetry trace id of the turn''s spans (its id''s hex digits).';

-- A usage row's trace id is written with the row: the turn's for an agent row, the call's own
-- (or the MCP client's traceparent) for an MCP row. Null for rows written before traces.
alter table public.usage_metrics
  add column trace_id text check (trace_id ~ '^[0-9a-f]{32}$');
comment on column public.usage_metrics.trace_id is
  'The OpenTelemetry trace id of the call''s span; null for rows from before traces.';
