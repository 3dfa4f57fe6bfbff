-- The Supabase shim's auth functions read the caller from both claim styles.
begin;
set local search_path = tests, public;
select plan(10);

select is(auth.uid(), null, 'auth.uid() is null without claims');
select is(auth.jwt(), null, 'auth.jwt() is null without claims');

select set_config('request.jwt.claims', '{"sub": "6c7e2a9e-6a43-4b8e-9a57-1d5a1f0e1a01", "role": "authenticated",'
    || ' "email": "a@example.com"}', true);
select is(auth.uid(), '6c7e2a9e-6a43-4b8e-9a57-1d5a1f0e1a01'::uuid, 'auth.uid() reads sub from request.jwt.claims');
select is(auth.role(), 'authenticated', 'auth.role() reads role from request.jwt.claims');
select is(auth.email(), 'a@example.com', 'auth.email() reads email from request.jwt.claims');
select is(auth.jwt() ->> 'email', 'a@example.com', 'auth.jwt() returns request.jwt.claims');

-- The legacy per-claim settings (PostgREST < 9) win over the JSON claims.
select set_config('request.jwt.claim.sub', '0b9d1a4c-2f83-4d8e-8d1f-7e6c5b4a3a02', true);
select set_config('request.jwt.claim.role', 'anon', true);
select is(auth.uid(), '0b9d1a4c-2f83-4d8e-8d1f-7e6c5b4a3a02'::uuid, 'auth.uid() reads the legacy request.jwt.claim.sub');
select is(auth.role(), 'anon', 'auth.role() reads the legacy request.jwt.claim.role');

select set_config('request.jwt.claim', '{"sub": "legacy"}', true);
select is(auth.jwt() ->> 'sub', 'legacy', 'auth.jwt() reads the legacy request.jwt.claim');

-- An empty setting falls through to the JSON claims.
select set_config('request.jwt.claim.sub', '', true);
select is(auth.uid(), '6c7e2a9e-6a43-4b8e-9a57-1d5a1f0e1a01'::uuid, 'an empty legacy sub falls back to the claims');

select * from finish();
rollback;
