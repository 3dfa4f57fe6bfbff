-- Dev and test only, applied after the migrations: lets the service's login
-- roles log in over the machine's trust authentication.  In production an
-- operator runs `alter role … login password '…'` instead (see README).
alter role quarry_authenticator login;
alter role quarry_gateway login;
alter role quarry_worker login;
alter role quarry_webhook login;
