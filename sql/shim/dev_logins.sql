-- Dev and test only, applied after the migrations: lets the gateway's role log
-- in over the machine's trust authentication.  In production an operator runs
-- `alter role quarry_gateway login password '…'` instead (see README).
alter role quarry_gateway login;
alter role quarry_worker login;
