-- What `/metrics` (Prometheus text, behind METRICS_TOKEN) reports, computed in Postgres so that
-- every isolate of every function reports the same numbers: usage (calls, tokens, cost, latency
-- histogram) by kind, source, name and status, turns by state and by error code, over a bounded
-- window (60 s to 24 h, read through created_at indexes: never a scan of the whole table), and
-- the agent sockets alive now.

create index usage_metrics_created_idx on public.usage_metrics (created_at);
create index agent_turns_created_idx on public.agent_turns (created_at);

create function public.operator_metrics(p_window_seconds integer, p_stale_seconds integer)
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
      ) as latency_buckets
    from public.usage_metrics u, since s
    where u.created_at >= s.at
    group by 1, 2, 3, 4
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
    'open_sockets', (
      select count(*) from public.agent_connections c
      where c.evicted_at is null
        and c.heartbeat_at > now() - make_interval(secs => greatest(coalesce(p_stale_seconds, 30), 1))
    )
  );
$$;

revoke execute on function public.operator_metrics(integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.operator_metrics(integer, integer) to service_role;
