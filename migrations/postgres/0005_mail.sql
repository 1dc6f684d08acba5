-- E-mail: verified addresses, one-time tokens and codes sent by mail, and
-- the outbox the mails wait in until an instance's sender delivers them.

ALTER TABLE users ADD COLUMN email_verified_at TIMESTAMPTZ;
-- Set when the address is changed after sign-up: an address changed with
-- nothing but a session receives no reset links or sign-in codes until it
-- is verified.
ALTER TABLE users ADD COLUMN email_changed_at TIMESTAMPTZ;

-- At most one live token per user and purpose (verify_email,
-- reset_password, change_email, sign_in_code): issuing a new one replaces
-- the older. Only SHA-256 of a token or code is kept; `email` is the
-- address it was sent to (for change_email: the new address).
CREATE TABLE mail_tokens (
    user_id          BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose          TEXT        NOT NULL,
    token_hash       BYTEA       NOT NULL,
    email            TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    failed_attempts  INTEGER     NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, purpose)
);
CREATE INDEX mail_tokens_hash ON mail_tokens (token_hash);

-- Mails to send, written in the transaction of the token they carry. A
-- sender claims a row until `claimed_until` (a crash frees it then: the
-- mail is sent again, never lost); bodies and link are cleared once the
-- mail is sent or given up, so tokens do not linger here.
CREATE TABLE mail_outbox (
    id               BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             TEXT        NOT NULL,
    recipient        TEXT        NOT NULL,
    subject          TEXT        NOT NULL,
    body_text        TEXT,
    body_html        TEXT,
    link             TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    claimed_by       TEXT,
    claimed_until    TIMESTAMPTZ,
    sent_at          TIMESTAMPTZ,
    failed_at        TIMESTAMPTZ,
    last_error       TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
