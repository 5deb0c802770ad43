-- Alerting core (issue 5): rule state that survives a restart, webhook dead letters,
-- look-ups of alerts by audience.

CREATE TABLE alert_rule_state (
    key        text        PRIMARY KEY,   -- a device id, or building:{community}/{building}
    doc        jsonb       NOT NULL,      -- DeviceState.to_json() / BuildingState.to_json()
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_rule_state IS
    'Per-device rule state (values, timers, windows): a restart carries on where it stopped';

CREATE TABLE webhook_dead_letters (
    id          bigserial   PRIMARY KEY,
    webhook     text        NOT NULL,
    audit_n     bigint      NOT NULL,
    payload     jsonb       NOT NULL,
    attempts    integer     NOT NULL,
    error       text        NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX webhook_dead_letters_pending ON webhook_dead_letters (id) WHERE replayed_at IS NULL;

CREATE INDEX alerts_audiences ON alerts USING gin ((payload -> 'audiences') jsonb_path_ops);
