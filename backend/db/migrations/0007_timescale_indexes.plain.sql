-- anju schema, version 7, plain PostgreSQL: nothing to do (the TimescaleDB variant drops the
-- hypertables' default (ts DESC) indexes, which the plain schema never had).
SELECT 1;
