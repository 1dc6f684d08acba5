-- Accounts after sign-up: profile changes (updated_at), the avatar's
-- version (avatar_hash), where each session is used (last_used_at, user
-- agent, client address), avatars.

ALTER TABLE users ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE users SET updated_at = created_at;
ALTER TABLE users ADD COLUMN avatar_hash TEXT;

ALTER TABLE sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET last_used_at = created_at;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN client_addr TEXT;

-- One avatar per user, re-encoded (`format`: png or jpeg): a 256x256 copy
-- and one capped at 1024 pixels a side. `hash` (of both) names the version
-- in its URL and equals users.avatar_hash.
CREATE TABLE avatars (
    user_id     INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hash        TEXT    NOT NULL,
    format      TEXT    NOT NULL,
    small       BLOB    NOT NULL,
    large       BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL
);
