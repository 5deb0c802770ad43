-- Webhooks carry on after a restart (issue 5): how far each webhook has got through the
-- audit log. Its worker handles entries in audit order; an entry is done when delivered or
-- dead-lettered. At start, entries published over MQTT and beyond ``done_upto`` are queued
-- again (the one in hand at a crash, and those queued behind it).

CREATE TABLE webhook_progress (
    name       text        PRIMARY KEY,   -- the webhook's name in alerting.yaml
    done_upto  bigint      NOT NULL,      -- alert_audit.n
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE webhook_progress IS
    'Per webhook: audit entries up to done_upto delivered or dead-lettered';
