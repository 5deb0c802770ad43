-- anju schema, version 2a (every storage mode): duplicate dropping by sequence ranges, the
-- registry's device -> community map, the catalogue of (device, metric) pairs, retention
-- settings.

-- Which (gateway, boot, seq) have been committed, as ranges: one row per (gateway, boot, lane),
-- read and extended once per flush instead of one index entry per record. The lanes
-- ('t' telemetry, 'e' events and statuses) are separate rows so that the event writer never
-- waits for the telemetry writer's lock: a sequence number belongs to one record, and a
-- record's kind, hence its lane, never changes.
CREATE TABLE ingest_seen (
    gateway_id  text            NOT NULL,
    boot_id     text            NOT NULL,
    lane        "char"          NOT NULL CHECK (lane IN ('t', 'e')),
    seen        int8multirange  NOT NULL DEFAULT '{}',
    updated_at  timestamptz     NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, boot_id, lane)
);
COMMENT ON TABLE ingest_seen IS
    'Sequence numbers committed per (gateway, boot, lane): how redelivered duplicates are dropped';

-- Version 1 kept one row per record; the lane of an old record is unknown, so its sequence
-- numbers go to both lanes (a sequence number is never reused, so this drops nothing new).
INSERT INTO ingest_seen (gateway_id, boot_id, lane, seen)
SELECT gateway_id, boot_id, lane, range_agg(int8range(seq, seq, '[]'))
FROM ingest_records CROSS JOIN (VALUES ('t'::"char"), ('e'::"char")) AS l(lane)
GROUP BY gateway_id, boot_id, lane;
DROP TABLE ingest_records;

-- The old table's shape, for people and tools that look for it.
CREATE VIEW ingest_records AS
SELECT DISTINCT s.gateway_id, s.boot_id, q.seq
FROM ingest_seen s
CROSS JOIN LATERAL unnest(s.seen) AS r(rng)
CROSS JOIN LATERAL generate_series(lower(r.rng), upper(r.rng) - 1) AS q(seq);

-- The registry's devices (filled by the backend from its registry file at start).
CREATE TABLE device_registry (
    device_id     text PRIMARY KEY,
    community_id  text NOT NULL,
    kind          text NOT NULL
);
CREATE INDEX device_registry_community ON device_registry (community_id, device_id);

-- Every (device, metric) pair ever stored: the latest-state query walks it.
CREATE TABLE device_metrics (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    PRIMARY KEY (device_id, metric)
);
INSERT INTO device_metrics SELECT DISTINCT device_id, metric FROM readings;

-- How long data is kept (read by the plain-PostgreSQL maintenance; the TimescaleDB policies are
-- created with the same figures). NULL keeps forever.
CREATE TABLE storage_policy (
    relation        text PRIMARY KEY,
    partition_unit  text CHECK (partition_unit IN ('day', 'month')),
    create_ahead    interval,
    keep            interval
);
INSERT INTO storage_policy VALUES
    ('readings', 'day', '7 days', '365 days'),
    ('events', 'month', '62 days', '1826 days'),
    ('readings_hourly', NULL, NULL, '1096 days'),
    ('readings_daily', NULL, NULL, NULL),
    ('ingest_seen', NULL, NULL, '400 days');
