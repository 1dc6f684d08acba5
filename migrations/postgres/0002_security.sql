-- Security hardening: sign-out everywhere, session expiry for cleanup,
-- shared rate-limit counters, login throttling, an append-only audit trail,
-- rotated signing keys.

-- Access tokens issued before this time are refused.
ALTER TABLE users ADD COLUMN tokens_valid_after TIMESTAMPTZ;

-- Expiry of the family's newest refresh token; cleanup deletes past it.
ALTER TABLE sessions ADD COLUMN expires_at TIMESTAMPTZ;
UPDATE sessions s SET expires_at = COALESCE(
    (SELECT MAX(t.expires_at) FROM refresh_tokens t WHERE t.session_id = s.id), s.created_at);
ALTER TABLE sessions ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Fixed-window counters, one row per (action, client address).
CREATE TABLE rate_limits (
    key           TEXT        PRIMARY KEY,
    window_start  TIMESTAMPTZ NOT NULL,
    hits          INTEGER     NOT NULL
);

-- Consecutive sign-in failures per (login, client address).
CREATE TABLE login_failures (
    key            TEXT        PRIMARY KEY,
    failures       INTEGER     NOT NULL,
    blocked_until  TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- Append-only: no user id foreign key (events outlive users), and a trigger
-- refuses updates and deletes.
CREATE TABLE security_events (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    kind         TEXT        NOT NULL,
    user_id      BIGINT,
    client_addr  TEXT,
    detail       TEXT
);
CREATE INDEX security_events_user_id ON security_events (user_id);
CREATE FUNCTION security_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'security_events is append-only';
END
$$;
CREATE TRIGGER security_events_append_only BEFORE UPDATE OR DELETE ON security_events
    FOR EACH ROW EXECUTE FUNCTION security_events_append_only();

-- Keys made by `authql keys rotate`; the newest of an algorithm signs.
CREATE TABLE signing_keys (
    kid         TEXT        PRIMARY KEY,
    algorithm   TEXT        NOT NULL,
    material    TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
