-- Every new auth.users row gets the default grants and a limits row.

create schema if not exists private;
revoke all on schema private from public, anon, authenticated;
comment on schema private is 'Internals not exposed through the Data API.';

create function private.apply_new_user_defaults()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.permissions (user_id, tool, approval_mode, constraints)
  select new.id, d.tool, d.approval_mode, d.constraints from public.default_permissions d
  on conflict on constraint permissions_user_tool_key do nothing;
  insert into public.user_limits (user_id) values (new.id) on conflict do nothing;
  return new;
end;
$$;
revoke execute on function private.apply_new_user_defaults() from public, anon, authenticated;

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.apply_new_user_defaults();
