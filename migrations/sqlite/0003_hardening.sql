-- Hardening round 2: one namespace of login keys, aggregated refusals and
-- a retention period in the audit trail, indexes for what cleanup scans.

-- Usernames and e-mails are both logins, so their match keys share one
-- namespace: a username can no longer equal someone else's e-mail. Existing
-- keys are carried over, usernames first (they won at sign-in before).
CREATE TABLE login_keys (
    key      TEXT    PRIMARY KEY,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX login_keys_user_id ON login_keys (user_id);
INSERT OR IGNORE INTO login_keys (key, user_id) SELECT username_key, id FROM users;
INSERT OR IGNORE INTO login_keys (key, user_id)
    SELECT email_key, id FROM users WHERE email_key IS NOT NULL;

-- Repeated refusals are one row per kind, client bucket and minute, with a
-- count; only that count may ever change.
ALTER TABLE security_events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE security_events ADD COLUMN aggregate_key TEXT;
CREATE UNIQUE INDEX security_events_aggregate_key ON security_events (aggregate_key);
CREATE INDEX security_events_at ON security_events (at);

DROP TRIGGER security_events_no_update;
CREATE TRIGGER security_events_no_update BEFORE UPDATE ON security_events
WHEN NOT (OLD.aggregate_key IS NOT NULL
          AND NEW.aggregate_key IS OLD.aggregate_key AND NEW.id IS OLD.id
          AND NEW.at IS OLD.at AND NEW.kind IS OLD.kind
          AND NEW.user_id IS OLD.user_id AND NEW.client_addr IS OLD.client_addr
          AND NEW.detail IS OLD.detail AND NEW.count > OLD.count)
BEGIN SELECT RAISE(ABORT, 'security_events is append-only'); END;

-- Rows may be deleted only once they are older than the retention period
-- the instances write to settings (audit_retention_ms), and never younger
-- than a day whatever that setting says; without it, never.
DROP TRIGGER security_events_no_delete;
CREATE TRIGGER security_events_no_delete BEFORE DELETE ON security_events
WHEN NOT COALESCE(OLD.at < CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
                   - MAX(86400000, (SELECT CAST(value AS INTEGER) FROM settings
                                    WHERE key = 'audit_retention_ms')), 0)
BEGIN SELECT RAISE(ABORT, 'security_events is append-only within its retention period'); END;

CREATE INDEX sessions_revoked_at ON sessions (revoked_at);
CREATE INDEX rate_limits_window_start ON rate_limits (window_start);
CREATE INDEX login_failures_updated_at ON login_failures (updated_at);
