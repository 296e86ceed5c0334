-- The tables the web client watches through Supabase Realtime (postgres_changes).
alter publication supabase_realtime add table
  public.chat_sessions,
  public.chat_history,
  public.usage_metrics,
  public.permissions,
  public.agent_turns;
