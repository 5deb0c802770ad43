-- Several active workers (issue 11, docs/scaling.md, "Several active workers"): what a worker
-- received for a community whose partition another worker owns, waiting for that owner's
-- rules (deleted in the transaction that stores the rule state of their evaluation: evaluated
-- exactly once), and what people asked through the API of a worker that does not own the
-- alert's partition (answered by the owner). Both empty with one worker or a failover group.

CREATE TABLE rules_handoff (
    id         bigserial PRIMARY KEY,
    part       integer NOT NULL,
    records    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rules_handoff_part ON rules_handoff (part, id);

CREATE TABLE alert_requests (
    id         bigserial PRIMARY KEY,
    part       integer NOT NULL,
    alert_id   text NOT NULL,
    action     text NOT NULL CHECK (action IN ('acknowledge', 'resolve')),
    request    jsonb NOT NULL,
    answer     jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz
);
CREATE INDEX alert_requests_open ON alert_requests (part, id) WHERE answer IS NULL;
