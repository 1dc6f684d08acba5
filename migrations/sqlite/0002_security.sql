-- Security hardening: sign-out everywhere, session expiry for cleanup,
-- shared rate-limit counters, login throttling, an append-only audit trail,
-- rotated signing keys.

-- Access tokens issued before this time (ms) are refused.
ALTER TABLE users ADD COLUMN tokens_valid_after INTEGER;

-- Expiry of the family's newest refresh token; cleanup deletes past it.
ALTER TABLE sessions ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET expires_at = COALESCE(
    (SELECT MAX(t.expires_at) FROM refresh_tokens t WHERE t.session_id = sessions.id), created_at);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Fixed-window counters, one row per (action, client address).
CREATE TABLE rate_limits (
    key           TEXT    PRIMARY KEY,
    window_start  INTEGER NOT NULL,
    hits          INTEGER NOT NULL
) WITHOUT ROWID;

-- Consecutive sign-in failures per (login, client address).
CREATE TABLE login_failures (
    key            TEXT    PRIMARY KEY,
    failures       INTEGER NOT NULL,
    blocked_until  INTEGER,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

-- Append-only: no user id foreign key (events outlive users), and triggers
-- refuse updates and deletes.
CREATE TABLE security_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    user_id      INTEGER,
    client_addr  TEXT,
    detail       TEXT
);
CREATE INDEX security_events_user_id ON security_events (user_id);
CREATE TRIGGER security_events_no_update BEFORE UPDATE ON security_events
BEGIN SELECT RAISE(ABORT, 'security_events is append-only'); END;
CREATE TRIGGER security_events_no_delete BEFORE DELETE ON security_events
BEGIN SELECT RAISE(ABORT, 'security_events is append-only'); END;

-- Keys made by `authql keys rotate`; the newest of an algorithm signs.
CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    algorithm   TEXT    NOT NULL,
    material    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
