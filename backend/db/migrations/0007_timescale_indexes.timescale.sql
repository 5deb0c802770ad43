-- anju schema, version 7, TimescaleDB (issue 17).
--
-- 1. create_hypertable (0002_b) added its default index on (ts DESC) to readings and events,
--    which the plain schema does not have. No query uses it (docs/storage.md has the plans:
--    the API's queries go through (device_id, metric, ts DESC), (device_id, ts DESC) and
--    (device_id, type, ts DESC); the aggregates' refreshes read whole time ranges, where chunk
--    exclusion does the narrowing, as partition pruning does on plain PostgreSQL), and it cost
--    about 22 % of COPY throughput. Dropped.
-- 2. The outside part repeats 0002_b's initial refresh over all of history, safe to repeat:
--    it materialises only what is invalidated (nothing, where 0002_b's refresh succeeded),
--    and repairs a database whose 0002_b refresh failed after the version was recorded (the
--    migrator before issue 17 recorded a version before its outside part).

DROP INDEX IF EXISTS readings_ts_idx;
DROP INDEX IF EXISTS events_ts_idx;

-- anju: outside transaction
CALL refresh_continuous_aggregate('readings_hourly', NULL, now() - INTERVAL '1 hour');
CALL refresh_continuous_aggregate('readings_daily', NULL, now() - INTERVAL '1 day');
