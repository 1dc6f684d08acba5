-- Hardening round 2: one namespace of login keys, aggregated refusals and
-- a retention period in the audit trail, indexes for what cleanup scans.

-- Usernames and e-mails are both logins, so their match keys share one
-- namespace: a username can no longer equal someone else's e-mail. Existing
-- keys are carried over, usernames first (they won at sign-in before).
CREATE TABLE login_keys (
    key      TEXT   PRIMARY KEY,
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX login_keys_user_id ON login_keys (user_id);
INSERT INTO login_keys (key, user_id) SELECT username_key, id FROM users
    ON CONFLICT DO NOTHING;
INSERT INTO login_keys (key, user_id)
    SELECT email_key, id FROM users WHERE email_key IS NOT NULL
    ON CONFLICT DO NOTHING;

-- Repeated refusals are one row per kind, client bucket and minute, with a
-- count; only that count may ever change.
ALTER TABLE security_events ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE security_events ADD COLUMN aggregate_key TEXT;
CREATE UNIQUE INDEX security_events_aggregate_key ON security_events (aggregate_key);
CREATE INDEX security_events_at ON security_events (at);

-- Updates: only the count of an aggregated row, and only upwards. Deletes:
-- only rows older than the retention period the instances write to settings
-- (audit_retention_ms), and never younger than a day whatever that says;
-- without it, never. TRUNCATE, which skips row triggers, is refused too.
CREATE OR REPLACE FUNCTION security_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.aggregate_key IS NOT NULL
           AND NEW.aggregate_key IS NOT DISTINCT FROM OLD.aggregate_key
           AND NEW.id = OLD.id AND NEW.at = OLD.at AND NEW.kind = OLD.kind
           AND NEW.user_id IS NOT DISTINCT FROM OLD.user_id
           AND NEW.client_addr IS NOT DISTINCT FROM OLD.client_addr
           AND NEW.detail IS NOT DISTINCT FROM OLD.detail
           AND NEW.count > OLD.count THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'security_events is append-only';
    END IF;
    IF COALESCE(OLD.at < now() - GREATEST(86400000,
                   (SELECT value::bigint FROM settings WHERE key = 'audit_retention_ms'))
                   * interval '1 millisecond', false) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'security_events is append-only within its retention period';
END
$$;

CREATE FUNCTION security_events_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'security_events is append-only';
END
$$;
CREATE TRIGGER security_events_no_truncate BEFORE TRUNCATE ON security_events
    FOR EACH STATEMENT EXECUTE FUNCTION security_events_no_truncate();

CREATE INDEX sessions_revoked_at ON sessions (revoked_at);
CREATE INDEX rate_limits_window_start ON rate_limits (window_start);
CREATE INDEX login_failures_updated_at ON login_failures (updated_at);
