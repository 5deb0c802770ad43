-- anju schema, version 2b, plain PostgreSQL: readings partitioned by day and events by month
-- (native range partitioning on ts, UTC boundaries), a default partition for timestamps outside
-- the partitions made (a gateway's clock gone wrong must not stop ingest), partitions created
-- ahead and dropped by retention (backend/db/maintenance.py), and hourly
-- and daily rollups with the same columns as the TimescaleDB continuous aggregates.

-- ---- partition management --------------------------------------------------------------

CREATE FUNCTION anju_ensure_partitions(parent text, unit text, from_ts timestamptz,
                                       to_ts timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    lo_utc  timestamp := date_trunc(unit, from_ts AT TIME ZONE 'UTC');
    step    interval := ('1 ' || unit)::interval;
    lo      timestamptz;
    hi      timestamptz;
    part    text;
    made    integer := 0;
BEGIN
    WHILE (lo_utc AT TIME ZONE 'UTC') < to_ts LOOP
        lo := lo_utc AT TIME ZONE 'UTC';
        hi := (lo_utc + step) AT TIME ZONE 'UTC';
        part := parent || '_p'
            || to_char(lo_utc, CASE unit WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END);
        IF to_regclass(part) IS NULL THEN
            -- Rows that went to the default partition meanwhile move into the new one.
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
            EXECUTE format(
                'WITH moved AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *)'
                ' INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, part);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (ts >= %L AND ts < %L)',
                           part, part || '_range', lo, hi);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           parent, part, lo, hi);
            made := made + 1;
        END IF;
        lo_utc := lo_utc + step;
    END LOOP;
    RETURN made;
END $$;

-- Drop the partitions of parent that end at or before older_than; delete such rows from its
-- default partition. Returns how many partitions were dropped.
CREATE FUNCTION anju_drop_partitions(parent text, older_than timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    p       record;
    dropped integer := 0;
BEGIN
    FOR p IN
        SELECT c.relname,
               substring(pg_get_expr(c.relpartbound, c.oid)
                         FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass
          AND c.relname <> parent || '_default'
    LOOP
        IF p.upper_bound IS NOT NULL AND p.upper_bound <= older_than THEN
            EXECUTE format('DROP TABLE %I', p.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE ts < %L', parent || '_default', older_than);
    RETURN dropped;
END $$;

-- ---- readings ----------------------------------------------------------------------------

ALTER TABLE readings RENAME TO readings_v1;
ALTER INDEX readings_device_metric_ts RENAME TO readings_v1_device_metric_ts;

CREATE TABLE readings (
    ts          timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    metric      text             NOT NULL,
    num         double precision,
    txt         text,
    flag        boolean,
    gw_timed    boolean          NOT NULL DEFAULT false
) PARTITION BY RANGE (ts);
CREATE INDEX readings_device_metric_ts ON readings (device_id, metric, ts DESC);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

SELECT anju_ensure_partitions(
    'readings', 'day',
    least(min(ts), now()), greatest(max(ts), now()) + interval '7 days')
FROM readings_v1 WHERE ts >= now() - interval '365 days' AND ts < now() + interval '7 days';
INSERT INTO readings SELECT * FROM readings_v1;
DROP TABLE readings_v1;

-- ---- events ------------------------------------------------------------------------------

ALTER TABLE events RENAME TO events_v1;
ALTER INDEX events_device_ts RENAME TO events_v1_device_ts;
ALTER INDEX events_type_ts RENAME TO events_v1_type_ts;

CREATE TABLE events (
    ts          timestamptz NOT NULL,
    device_id   text        NOT NULL,
    type        text        NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',
    gateway_id  text        NOT NULL,
    boot_id     text        NOT NULL,
    seq         bigint      NOT NULL,
    gw_timed    boolean     NOT NULL DEFAULT false
) PARTITION BY RANGE (ts);
CREATE INDEX events_device_ts ON events (device_id, ts DESC);
CREATE INDEX events_device_type_ts ON events (device_id, type, ts DESC);
CREATE INDEX events_type_ts ON events (type, ts DESC);
CREATE TABLE events_default PARTITION OF events DEFAULT;

SELECT anju_ensure_partitions(
    'events', 'month',
    least(min(ts), now()), greatest(max(ts), now()) + interval '62 days')
FROM events_v1 WHERE ts >= now() - interval '1826 days' AND ts < now() + interval '62 days';
INSERT INTO events SELECT * FROM events_v1;
DROP TABLE events_v1;

-- ---- hourly and daily rollups ------------------------------------------------------------
-- Materialised buckets live in *_mat; the views readings_hourly and readings_daily add the
-- buckets not yet materialised, computed on the fly (like TimescaleDB's real-time aggregates),
-- so a query sees every committed reading. Buckets are UTC-aligned (date_bin from 2000-01-01Z,
-- the same boundaries as time_bucket for hours and days).

CREATE TABLE readings_hourly_mat (
    bucket      timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    metric      text             NOT NULL,
    n           bigint           NOT NULL,
    nnum        bigint           NOT NULL,
    total       double precision,
    vmin        double precision,
    vmax        double precision,
    ntrue       bigint           NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE TABLE readings_daily_mat (LIKE readings_hourly_mat INCLUDING ALL);

-- 'hourly': buckets before "until" are materialised; readings committed with ts before
-- "dirty_from" mark their (hour, device) dirty, to be recomputed (late data). dirty_from moves
-- first (its row is read FOR SHARE by every ingest transaction), then until follows.
-- 'daily': days before "until" are materialised from the hourly rollup.
CREATE TABLE rollup_watermark (
    name        text PRIMARY KEY,
    until       timestamptz NOT NULL,
    dirty_from  timestamptz NOT NULL
);
INSERT INTO rollup_watermark
SELECT 'hourly', w, w FROM (
    SELECT date_bin('1 hour', coalesce(min(ts), now()), '2000-01-01 00:00:00+00') AS w
    FROM readings WHERE ts >= now() - interval '365 days') s;
INSERT INTO rollup_watermark
SELECT 'daily', w, w FROM (
    SELECT date_bin('1 day', until, '2000-01-01 00:00:00+00') AS w
    FROM rollup_watermark WHERE name = 'hourly') s;

CREATE TABLE rollup_dirty (
    bucket      timestamptz NOT NULL,
    device_id   text        NOT NULL,
    PRIMARY KEY (bucket, device_id)
);

CREATE VIEW readings_hourly AS
SELECT bucket, device_id, metric, n, nnum, total, vmin, vmax, ntrue
FROM readings_hourly_mat
UNION ALL
SELECT date_bin('1 hour', ts, '2000-01-01 00:00:00+00') AS bucket, device_id, metric,
       count(*) AS n, count(num) AS nnum, sum(num) AS total, min(num) AS vmin,
       max(num) AS vmax, count(*) FILTER (WHERE flag) AS ntrue
FROM readings
WHERE ts >= (SELECT until FROM rollup_watermark WHERE name = 'hourly')
GROUP BY 1, 2, 3;

CREATE VIEW readings_daily AS
SELECT bucket, device_id, metric, n, nnum, total, vmin, vmax, ntrue
FROM readings_daily_mat
UNION ALL
SELECT date_bin('1 day', bucket, '2000-01-01 00:00:00+00') AS bucket, device_id, metric,
       sum(n)::bigint AS n, sum(nnum)::bigint AS nnum, sum(total) AS total, min(vmin) AS vmin,
       max(vmax) AS vmax, sum(ntrue)::bigint AS ntrue
FROM readings_hourly
WHERE bucket >= (SELECT until FROM rollup_watermark WHERE name = 'daily')
GROUP BY 1, 2, 3;
