-- anju schema, version 2b, TimescaleDB (2.13 or newer: by_range, hierarchical real-time
-- continuous aggregates): readings and events become hypertables (existing rows migrated),
-- compressed after 7 days segmented by device and metric and ordered by time, dropped by
-- retention policies, and summarised by hourly and daily continuous aggregates with the same
-- columns as the plain-PostgreSQL rollup views (readings_hourly, readings_daily).
-- Retention figures match storage_policy (0002_a). NOT run by the tests on this machine (no
-- TimescaleDB here): see docs/storage.md.

CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), migrate_data => true);
SELECT create_hypertable('events', by_range('ts', INTERVAL '30 days'), migrate_data => true);
CREATE INDEX events_device_type_ts ON events (device_id, type, ts DESC);

ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days');
ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('events', compress_after => INTERVAL '90 days');

SELECT add_retention_policy('readings', drop_after => INTERVAL '365 days');
SELECT add_retention_policy('events', drop_after => INTERVAL '1826 days');

-- Real-time aggregates (materialized_only = false): buckets not yet materialised are computed
-- from the raw rows at query time, as the plain-PostgreSQL views do.
CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, device_id, metric,
       count(*) AS n, count(num) AS nnum, sum(num) AS total, min(num) AS vmin,
       max(num) AS vmax, sum(CASE WHEN flag THEN 1 ELSE 0 END) AS ntrue
FROM readings
GROUP BY time_bucket(INTERVAL '1 hour', ts), device_id, metric
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, device_id, metric,
       sum(n)::bigint AS n, sum(nnum)::bigint AS nnum, sum(total) AS total, min(vmin) AS vmin,
       max(vmax) AS vmax, sum(ntrue)::bigint AS ntrue
FROM readings_hourly
GROUP BY time_bucket(INTERVAL '1 day', bucket), device_id, metric
WITH NO DATA;

-- Late data (a gateway's outbox after an outage of up to a day) is re-aggregated for 3 days.
SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('readings_daily',
    start_offset => INTERVAL '5 days', end_offset => INTERVAL '1 day',
    schedule_interval => INTERVAL '1 hour');
SELECT add_retention_policy('readings_hourly', drop_after => INTERVAL '1096 days');

-- anju: outside transaction
-- Materialise what version 1 already holds (CALL refresh_continuous_aggregate cannot run in a
-- transaction block; the migrator runs these statements one by one in autocommit).
CALL refresh_continuous_aggregate('readings_hourly', NULL, now() - INTERVAL '1 hour');
CALL refresh_continuous_aggregate('readings_daily', NULL, now() - INTERVAL '1 day');
