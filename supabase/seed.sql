-- Demo users for local runs (password: password123), with different grants.
-- Written as GoTrue writes users: its token columns hold '' (GoTrue reads them into non-null
-- strings, so a NULL there makes every sign-in fail with "Database error querying schema").
-- alice: the defaults plus execute_workflow (asks first) for the "demo-echo" workflow; an admin
--        (app_metadata.role, which only the service role can set): the web app's Admin page.
-- bob:   the defaults, but calculator asks first and query_table is denied.

insert into auth.users (
  instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
  raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
  confirmation_token, recovery_token, email_change_token_new, email_change
) values
  ('00000000-0000-0000-0000-000000000000', 'a11ce000-0000-4000-8000-000000000001',
   'authenticated', 'authenticated', 'alice@example.com',
   extensions.crypt('password123', extensions.gen_salt('bf', 10)), now(),
   '{"provider": "email", "providers": ["email"], "role": "admin"}', '{"name": "Alice"}', now(), now(),
   '', '', '', ''),
  ('00000000-0000-0000-0000-000000000000', 'b0b00000-0000-4000-8000-000000000002',
   'authenticated', 'authenticated', 'bob@example.com',
   extensions.crypt('password123', extensions.gen_salt('bf', 10)), now(),
   '{"provider": "email", "providers": ["email"]}', '{"name": "Bob"}', now(), now(),
   '', '', '', '')
on conflict (id) do nothing;

insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
select u.id::text, u.id, jsonb_build_object('sub', u.id::text, 'email', u.email), 'email', now(), now()
from auth.users u
where u.id in ('a11ce000-0000-4000-8000-000000000001', 'b0b00000-0000-4000-8000-000000000002')
on conflict (provider_id, provider) do nothing;

insert into public.permissions (user_id, tool, approval_mode, constraints) values
  ('a11ce000-0000-4000-8000-000000000001', 'execute_workflow', 'ask',
   '{"workflow_ids": ["demo-echo"]}')
on conflict on constraint permissions_user_tool_key do nothing;

update public.permissions set approval_mode = 'ask'
where user_id = 'b0b00000-0000-4000-8000-000000000002' and tool = 'calculator';
update public.permissions set approval_mode = 'deny'
where user_id = 'b0b00000-0000-4000-8000-000000000002' and tool = 'query_table';
