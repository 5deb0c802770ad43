-- The audit chain's hash, version 2 (issue 10, item 8). What changes:
--
-- * Every entry written from now on has hash_v = 2: its hash is
--     sha256(prev_hash || jsonb_build_array(n, alert_id::text,
--            to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
--            action, actor, entry)::text)
--   computed by PostgreSQL from the values it stores, when it writes the row and again when
--   it verifies it. It covers the entry's number, alert id, time, action and actor (which v1
--   left out), and it no longer depends on how Python printed the entry's numbers (v1 hashed
--   Python's JSON text, which the stored jsonb does not keep: -0.0 is stored as 0.0, 1e16 as
--   10000000000000000).
-- * Entries already in the table keep hash_v = 1 and their hash: nothing is rehashed. They are
--   verified by the v1 rule (sha256(prev_hash || Python's JSON of entry)); the verifier tries
--   the spellings Python may have used for numbers jsonb normalised (-0.0, 1e+16), so the
--   entries that the old verifier reported as broken for that reason alone now verify.
--   For them, the columns alert_id, at, action and actor stay outside the hash.
-- * alert_audit_hash_rules records from which entry each rule applies: v1 from the start, v2
--   from the first entry written after this migration. An entry whose hash_v is not the rule in force
--   for its n is reported (no downgrade of new entries to the weaker rule).
-- * The chain's first link is unchanged: the first v2 entry's prev_hash is the last v1 hash.
--
-- The alerts table is unchanged; verification now also checks each alert's row (payload,
-- type, device, community, district, severity, state) against its last audit entry.

ALTER TABLE alert_audit ADD COLUMN hash_v smallint NOT NULL DEFAULT 1;
ALTER TABLE alert_audit ALTER COLUMN hash_v SET DEFAULT 2;
ALTER TABLE alert_audit ADD CONSTRAINT alert_audit_hash_v CHECK (hash_v IN (1, 2));
COMMENT ON COLUMN alert_audit.hash_v IS
    'Which rule the hash follows: 1 (before migration 0006), 2 (see alert_audit_hash_rules)';

CREATE TABLE alert_audit_hash_rules (
    hash_v    smallint    PRIMARY KEY,
    from_n    bigint      NOT NULL UNIQUE,   -- the first alert_audit.n the rule applies to
    since     timestamptz NOT NULL DEFAULT now(),
    rule      text        NOT NULL
);
COMMENT ON TABLE alert_audit_hash_rules IS
    'The audit hash rules and the entry each applies from (docs/alerts.md, Audit)';

INSERT INTO alert_audit_hash_rules (hash_v, from_n, rule) VALUES
    (1, 0, 'sha256(prev_hash || Python json.dumps(entry, sort_keys=True,'
           ' separators=(",", ":"), ensure_ascii=False))'),
    (2, greatest((SELECT coalesce(max(n), 0) FROM alert_audit),
                 (SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                  FROM alert_audit_n_seq)) + 1,
     'sha256(prev_hash || jsonb_build_array(n, alert_id::text, to_char(at AT TIME ZONE ''UTC'','
     ' ''YYYY-MM-DD"T"HH24:MI:SS.US"Z"''), action, actor, entry)::text)');
