-- anju schema, version 1: the walking skeleton.
-- Plain PostgreSQL tables; later migrations add time partitioning (native or TimescaleDB).

CREATE TABLE ingest_records (
    gateway_id  text        NOT NULL,
    boot_id     text        NOT NULL,
    seq         bigint      NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, boot_id, seq)
);
COMMENT ON TABLE ingest_records IS
    'Every record committed, by (gateway, boot, seq): how redelivered duplicates are dropped';

CREATE TABLE readings (
    ts          timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    metric      text             NOT NULL,
    num         double precision,
    txt         text,
    flag        boolean,
    gw_timed    boolean          NOT NULL DEFAULT false
);
CREATE INDEX readings_device_metric_ts ON readings (device_id, metric, ts DESC);

CREATE TABLE events (
    ts          timestamptz NOT NULL,
    device_id   text        NOT NULL,
    type        text        NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',
    gateway_id  text        NOT NULL,
    boot_id     text        NOT NULL,
    seq         bigint      NOT NULL,
    gw_timed    boolean     NOT NULL DEFAULT false
);
CREATE INDEX events_device_ts ON events (device_id, ts DESC);
CREATE INDEX events_type_ts ON events (type, ts DESC);

CREATE TABLE device_status (
    device_id   text        PRIMARY KEY,
    online      boolean     NOT NULL,
    fw          text,
    battery_pct real,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE gateway_status (
    gateway_id  text        PRIMARY KEY,
    online      boolean     NOT NULL,
    boot_id     text,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE alerts (
    id           uuid        PRIMARY KEY,
    type         text        NOT NULL,
    device_id    text        NOT NULL,
    community_id text        NOT NULL,
    district     text        NOT NULL,
    severity     text        NOT NULL,
    state        text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    raised_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    resolved_at  timestamptz,
    payload      jsonb       NOT NULL
);
-- One open alert per (device, type).
CREATE UNIQUE INDEX alerts_one_open ON alerts (device_id, type) WHERE state <> 'resolved';
CREATE INDEX alerts_community_raised ON alerts (community_id, raised_at DESC);

CREATE TABLE alert_audit (
    n          bigserial   PRIMARY KEY,
    alert_id   uuid        NOT NULL,
    at         timestamptz NOT NULL,
    action     text        NOT NULL,
    actor      text        NOT NULL,
    entry      jsonb       NOT NULL,
    prev_hash  text        NOT NULL,
    hash       text        NOT NULL,
    -- Delivery bookkeeping, outside the hash: false until every audience's broker PUBACK.
    published  boolean     NOT NULL DEFAULT false
);
CREATE INDEX alert_audit_alert ON alert_audit (alert_id, n);
CREATE INDEX alert_audit_unpublished ON alert_audit (n) WHERE NOT published;
