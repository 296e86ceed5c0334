-- The numbers /metrics did not report yet, each from Postgres and written with what is written
-- anyway: an LLM call's time to first token and a tool call's approval wait go on their usage
-- row (its one insert; nothing more on the first-token path), and refusals of client frames
-- (limits, bad input: no turn, so no usage row) are counted per minute and code.

alter table public.usage_metrics
  add column ttft_ms integer check (ttft_ms >= 0),
  add column approval_wait_ms integer check (approval_wait_ms >= 0),
  add column approval text check (approval in ('allowed', 'denied', 'expired')),
  add constraint usage_metrics_approval_wait check ((approval is null) = (approval_wait_ms is null));
comment on column public.usage_metrics.ttft_ms is
  'LLM calls: ms from the request to the first streamed token or tool-call delta.';
comment on column public.usage_metrics.approval_wait_ms is
  'Tool calls that asked the user: ms from the question to the answer (or its expiry).';
comment on column public.usage_metrics.approval is
  'How the approval wait ended: allowed, denied, or expired (no answer in time).';

-- One row per minute, code and reason: bounded by what the codes are, not by traffic. Rows
-- older than two days are deleted by the statement that counts (the metrics window is 24 h).
create table public.refusal_counts (
  minute timestamptz not null,
  code text not null check (length(code) between 1 and 64),
  reason text not null default '' check (length(reason) <= 64),
  refusals bigint not null check (refusals > 0),
  primary key (minute, code, reason)
);
comment on table public.refusal_counts is
  'Refusals of agent client frames per minute, by error code and reason; for /metrics.';
alter table public.refusal_counts enable row level security;
-- Written and read by the functions as service_role only; no user reads it. As in
-- 20261202000100_explicit_privileges.sql: nothing by default, each grant explicit.
revoke all on public.refusal_counts from anon, authenticated, service_role;
grant select, insert, update, delete on public.refusal_counts to service_role;

create or replace function public.operator_metrics(p_window_seconds integer, p_stale_seconds integer)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  with bounds as (
    select least(greatest(coalesce(p_window_seconds, 3600), 60), 86400) as window_seconds
  ),
  since as (
    select now() - make_interval(secs => b.window_seconds) as at, b.window_seconds
    from bounds b
  ),
  usage_groups as (
    select
      u.kind::text as kind,
      u.source::text as source,
      u.name,
      u.status::text as status,
      count(*) as calls,
      coalesce(sum(u.prompt_tokens), 0) as prompt_tokens,
      coalesce(sum(u.completion_tokens), 0) as completion_tokens,
      coalesce(sum(u.cost_usd), 0) as cost_usd,
      coalesce(sum(u.latency_ms), 0) as latency_ms_sum,
      -- Cumulative counts for the histogram's le buckets: 250, 500, 1000, 2500, 5000, 10000,
      -- 30000, 60000 ms (and +Inf = calls).
      jsonb_build_array(
        count(*) filter (where u.latency_ms <= 250),
        count(*) filter (where u.latency_ms <= 500),
        count(*) filter (where u.latency_ms <= 1000),
        count(*) filter (where u.latency_ms <= 2500),
        count(*) filter (where u.latency_ms <= 5000),
        count(*) filter (where u.latency_ms <= 10000),
        count(*) filter (where u.latency_ms <= 30000),
        count(*) filter (where u.latency_ms <= 60000)
      ) as latency_buckets,
      -- Time to first token (LLM calls that streamed): 100, 250, 500, 1000, 2500, 5000, 10000,
      -- 30000 ms; +Inf = ttft_calls.
      count(u.ttft_ms) as ttft_calls,
      coalesce(sum(u.ttft_ms), 0) as ttft_ms_sum,
      jsonb_build_array(
        count(*) filter (where u.ttft_ms <= 100),
        count(*) filter (where u.ttft_ms <= 250),
        count(*) filter (where u.ttft_ms <= 500),
        count(*) filter (where u.ttft_ms <= 1000),
        count(*) filter (where u.ttft_ms <= 2500),
        count(*) filter (where u.ttft_ms <= 5000),
        count(*) filter (where u.ttft_ms <= 10000),
        count(*) filter (where u.ttft_ms <= 30000)
      ) as ttft_buckets
    from public.usage_metrics u, since s
    where u.created_at >= s.at
    group by 1, 2, 3, 4
  ),
  approval_groups as (
    -- How long tool calls waited for their approval, by how the wait ended: 1 s, 5 s, 15 s,
    -- 30 s, 1 min, 5 min, 15 min, 1 h; +Inf = calls.
    select
      u.approval as outcome,
      count(*) as calls,
      coalesce(sum(u.approval_wait_ms), 0) as wait_ms_sum,
      jsonb_build_array(
        count(*) filter (where u.approval_wait_ms <= 1000),
        count(*) filter (where u.approval_wait_ms <= 5000),
        count(*) filter (where u.approval_wait_ms <= 15000),
        count(*) filter (where u.approval_wait_ms <= 30000),
        count(*) filter (where u.approval_wait_ms <= 60000),
        count(*) filter (where u.approval_wait_ms <= 300000),
        count(*) filter (where u.approval_wait_ms <= 900000),
        count(*) filter (where u.approval_wait_ms <= 3600000)
      ) as wait_buckets
    from public.usage_metrics u, since s
    where u.created_at >= s.at and u.approval is not null
    group by 1
  ),
  refusal_groups as (
    -- Counted per minute: the window's first minute counts whole.
    select r.code, r.reason, sum(r.refusals) as refusals
    from public.refusal_counts r, since s
    where r.minute >= date_trunc('minute', s.at)
    group by 1, 2
  ),
  turn_groups as (
    select t.state::text as state, coalesce(t.error ->> 'code', '') as code, count(*) as turns
    from public.agent_turns t, since s
    where t.created_at >= s.at
    group by 1, 2
  )
  select jsonb_build_object(
    'window_seconds', (select window_seconds from bounds),
    'usage', coalesce((select jsonb_agg(to_jsonb(g) order by g.kind, g.source, g.name, g.status)
                       from usage_groups g), '[]'::jsonb),
    'turns', coalesce((select jsonb_agg(to_jsonb(g) order by g.state, g.code)
                       from turn_groups g), '[]'::jsonb),
    'approval_waits', coalesce((select jsonb_agg(to_jsonb(g) order by g.outcome)
                                from approval_groups g), '[]'::jsonb),
    'refusals', coalesce((select jsonb_agg(to_jsonb(g) order by g.code, g.reason)
                          from refusal_groups g), '[]'::jsonb),
    'open_sockets', (
      select count(*) from public.agent_connections c
      where c.evicted_at is null
        and c.heartbeat_at > now() - make_interval(secs => greatest(coalesce(p_stale_seconds, 30), 1))
    )
  );
$$;

