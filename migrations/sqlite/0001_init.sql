-- authql schema, SQLite flavour. Times are Unix milliseconds (UTC).
-- *_key columns hold the NFKC + Unicode case-folded match key computed by
-- authql (SQLite's lower() folds ASCII only); their unique indexes are what
-- makes concurrent sign-ups with one name safe.

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username       TEXT    NOT NULL,
    username_key   TEXT    NOT NULL,
    email          TEXT,
    email_key      TEXT,
    phone          TEXT,
    name           TEXT,
    surname        TEXT,
    second_name    TEXT,
    password_hash  TEXT    NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (username_key);
CREATE UNIQUE INDEX users_email_key ON users (email_key);

CREATE TABLE cars (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    brand          TEXT    NOT NULL,
    model          TEXT    NOT NULL,
    year           INTEGER,
    color          TEXT,
    license_plate  TEXT,
    vin            TEXT,
    UNIQUE (user_id, position)
);

-- A session is one refresh-token family: every rotation adds a token to it,
-- and revoking it ends every token of the family at once.
CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Only SHA-256 hashes of refresh tokens are stored, never the tokens.
CREATE TABLE refresh_tokens (
    token_hash   BLOB    PRIMARY KEY,
    session_id   TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at   INTEGER NOT NULL,
    consumed_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Instance-wide values, e.g. the generated signing key.
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
