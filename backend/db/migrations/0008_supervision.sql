-- Supervision for the construction bureau (issue 15): a rollup of the alerts and their audit
-- entries, one row per alert (sv_alert) and one per (alert, local day) for the alerts whose
-- open time matters (sv_alert_day: outages, pressure and electrical-fire time out of range),
-- refreshed incrementally from the audit log (backend/supervision/rollup.py); a snapshot of
-- the registry (communities, gateways, maintenance companies' elevators) with the property
-- company's tenure of each community; the credit rule sets and every published result.
-- Plain SQL on purpose: the same on plain PostgreSQL and on TimescaleDB (the rollup joins
-- alerts to their audit entries and takes percentiles, which a continuous aggregate cannot).
-- Days and months are local days in Asia/Shanghai.

CREATE TABLE sv_community (
    community_id  text PRIMARY KEY,
    name          text NOT NULL,
    district      text NOT NULL,
    devices       integer NOT NULL,
    gateways      integer NOT NULL,
    elevators     integer NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Which property company held a community from which local day on (a change of company
-- during a month splits the month between them).
CREATE TABLE sv_tenure (
    community_id  text NOT NULL,
    since         date NOT NULL,
    property_org  text NOT NULL,
    PRIMARY KEY (community_id, since)
);

CREATE TABLE sv_gateway (
    gateway_id    text PRIMARY KEY,
    community_id  text NOT NULL,
    devices       integer NOT NULL
);

CREATE TABLE sv_maintenance (
    community_id     text NOT NULL,
    maintenance_org  text NOT NULL,
    elevators        integer NOT NULL,
    PRIMARY KEY (community_id, maintenance_org)
);

CREATE TABLE sv_org (
    org_id  text PRIMARY KEY,
    kind    text NOT NULL,
    name    text NOT NULL
);

-- One row per alert: what the figures are computed from.
CREATE TABLE sv_alert (
    alert_id           uuid PRIMARY KEY,
    community_id       text NOT NULL,
    district           text NOT NULL,
    property_org       text,
    maintenance_org    text,
    device_id          text NOT NULL,
    device_kind        text NOT NULL,
    building           text,
    type               text NOT NULL,
    severity           text NOT NULL,
    day                date NOT NULL,            -- local day of occurred_at
    occurred_at        timestamptz NOT NULL,
    raised_at          timestamptz NOT NULL,
    resolved_at        timestamptz,
    ack_property_s     double precision,         -- first property ack - raised_at
    ack_maintenance_s  double precision,
    resolve_s          double precision,
    deadline_s         double precision,         -- critical: the property ack deadline
    escalated          boolean NOT NULL,
    overdue            boolean NOT NULL,
    confirmed          boolean NOT NULL,
    false_alarm        boolean NOT NULL,
    resolved_by        text
);
CREATE INDEX sv_alert_by_day ON sv_alert (day);
CREATE INDEX sv_alert_property_day ON sv_alert (property_org, day);
CREATE INDEX sv_alert_community_day ON sv_alert (community_id, day);
CREATE INDEX sv_alert_maintenance_day ON sv_alert (maintenance_org, day)
    WHERE maintenance_org IS NOT NULL;
CREATE INDEX sv_alert_open ON sv_alert (alert_id) WHERE resolved_at IS NULL;

-- Open time of outage and out-of-range alerts, split by local day.
CREATE TABLE sv_alert_day (
    alert_id         uuid NOT NULL,
    day              date NOT NULL,
    community_id     text NOT NULL,
    district         text NOT NULL,
    property_org     text,
    maintenance_org  text,
    device_id        text NOT NULL,
    type             text NOT NULL,
    open_s           double precision NOT NULL,
    PRIMARY KEY (alert_id, day)
);
CREATE INDEX sv_alert_day_day ON sv_alert_day (day, community_id);

-- Monthly figures materialised: one row per (level, scope, month) holding every key's row
-- of that month, written when first read and deleted by the refresh when an alert of that
-- month changes (late data included). scope: '*' (every district) or the district codes.
CREATE TABLE sv_month_cache (
    level        text NOT NULL,
    scope        text NOT NULL,
    month        date NOT NULL,
    rows         jsonb NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, level, scope)
);

-- How far the rollup has read the audit log (alert_audit.n).
CREATE TABLE sv_watermark (
    name        text PRIMARY KEY,
    upto        bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sv_watermark (name, upto) VALUES ('alerts', 0);

-- Every credit rule set a result was published with, by the SHA-256 of its text.
CREATE TABLE sv_ruleset (
    sha256      text PRIMARY KEY,
    version     text NOT NULL,
    body        text NOT NULL,
    first_used  timestamptz NOT NULL DEFAULT now()
);

-- Published credit results: kept with the rule set that produced them.
CREATE TABLE sv_credit (
    month            date NOT NULL,
    org_id           text NOT NULL,
    ruleset_sha256   text NOT NULL REFERENCES sv_ruleset (sha256),
    ruleset_version  text NOT NULL,
    score            double precision NOT NULL,
    grade            text NOT NULL,
    list             text,                     -- 'red', 'black' or NULL
    result           jsonb NOT NULL,           -- figures, lines with evidence
    published_at     timestamptz NOT NULL DEFAULT now(),
    published_by     text NOT NULL,
    PRIMARY KEY (month, org_id, ruleset_sha256)
);
CREATE INDEX sv_credit_month ON sv_credit (month, published_at DESC);
