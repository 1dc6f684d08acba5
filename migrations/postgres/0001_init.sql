-- authql schema, PostgreSQL flavour: native identity ids, timestamptz, uuid,
-- bytea. *_key columns hold the NFKC + full Unicode case-folded match key
-- computed by authql; a unique index on that column is stricter than one on
-- lower(username) (lower() does not fold ß, ς, ﬁ ...) and behaves the same as
-- on SQLite, so both backends refuse exactly the same duplicates.

CREATE TABLE users (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       TEXT        NOT NULL,
    username_key   TEXT        NOT NULL,
    email          TEXT,
    email_key      TEXT,
    phone          TEXT,
    name           TEXT,
    surname        TEXT,
    second_name    TEXT,
    password_hash  TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (username_key);
CREATE UNIQUE INDEX users_email_key ON users (email_key);

CREATE TABLE cars (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    brand          TEXT    NOT NULL,
    model          TEXT    NOT NULL,
    year           INTEGER,
    color          TEXT,
    license_plate  TEXT,
    vin            TEXT,
    UNIQUE (user_id, position)
);

-- A session is one refresh-token family; rotations lock its row.
CREATE TABLE sessions (
    id          UUID        PRIMARY KEY,
    user_id     BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Only SHA-256 hashes of refresh tokens are stored, never the tokens.
CREATE TABLE refresh_tokens (
    token_hash   BYTEA       PRIMARY KEY,
    session_id   UUID        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at   TIMESTAMPTZ NOT NULL,
    consumed_at  TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Instance-wide values shared by every instance, e.g. the generated signing key.
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
