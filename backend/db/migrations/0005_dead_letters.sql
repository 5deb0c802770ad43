-- Poison input ends (issue 10): what the backend could not take is kept here for a person to
-- look at, and records committed but never evaluated by the rules are evaluated after a
-- restart, exactly once.

-- Every uplink batch or record the backend rejected: undecodable, beyond a bound, a device
-- that is not the sending gateway's, or refused by the database. A record whose (gateway,
-- boot, seq) could be read is confirmed to its gateway (so that it is not sent again) once it
-- is here; a whole batch that cannot be attributed is kept without confirming anything.
-- Repeats (a gateway sending the same batch again) are counted on the first row.
CREATE TABLE dead_letters (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest      bytea       NOT NULL UNIQUE,      -- sha256 of (topic, seq, boot, raw)
    first_at    timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now(),
    count       integer     NOT NULL DEFAULT 1,
    reason      text        NOT NULL,             -- the metric label
    detail      text        NOT NULL,
    topic       text        NOT NULL,
    gateway_id  text,                             -- null when the topic named none
    boot_id     text,
    seq         bigint,                           -- set when the record was confirmed
    device_id   text,
    raw         text        NOT NULL              -- what was rejected (shortened, canonical)
);
CREATE INDEX dead_letters_last_at ON dead_letters (last_at DESC);
COMMENT ON TABLE dead_letters IS
    'Uplink input rejected by the backend, with the reason; listed by anju backend dead-letters';

-- Which telemetry (gateway, boot, seq) the rules have evaluated, as ranges; written in the
-- same transaction as the rule state of that evaluation. A record in ingest_seen and not here
-- was committed by a backend that stopped before its rules ran: when the gateway sends it
-- again it goes to the rules although it is a duplicate.
CREATE TABLE ingest_evaluated (
    gateway_id  text            NOT NULL,
    boot_id     text            NOT NULL,
    lane        "char"          NOT NULL CHECK (lane IN ('t', 'e')),
    evaluated   int8multirange  NOT NULL DEFAULT '{}',
    updated_at  timestamptz     NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, boot_id, lane)
);
COMMENT ON TABLE ingest_evaluated IS
    'Sequence numbers evaluated by the rules per (gateway, boot, lane)';

-- What was committed before this version was evaluated (or is lost to the rules already).
INSERT INTO ingest_evaluated (gateway_id, boot_id, lane, evaluated)
SELECT gateway_id, boot_id, lane, seen FROM ingest_seen;
