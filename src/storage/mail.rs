//! Mail in the database: one-time tokens and codes (only their SHA-256),
//! verified addresses, and the outbox.
//!
//! Written once for both backends, as [`super::accounts`]: [`mail_store!`]
//! expands the same statements for each; a backend supplies `write_tx`,
//! `durable`, `lock_user`, `insert_session`, `insert_event`, and the row
//! lock its outbox claim takes (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! instances claim different rows without waiting; nothing on SQLite,
//! whose `BEGIN IMMEDIATE` already lets one writer in at a time).
//!
//! A mail is written in the transaction of the token it carries. A sender
//! claims due rows until a lease ends; a crash frees them when it does (the
//! mail goes again: at least once, never lost), and a row is marked sent
//! only by the sender holding it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{NewSession, StoreError};
use crate::domain::mail::{OutgoingMail, TokenPurpose};

/// A token or code to store, replacing the user's older one of its purpose.
#[derive(Debug, Clone)]
pub struct NewMailToken {
    pub user_id: i64,
    pub purpose: TokenPurpose,
    pub hash: Vec<u8>,
    /// Where it was sent (for an e-mail change: the new address).
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live token, found by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailToken {
    pub user_id: i64,
    pub email: String,
}

/// A mail claimed for sending.
#[derive(Clone)]
pub struct QueuedMail {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub link: Option<String>,
    pub queued_at: DateTime<Utc>,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// What waits to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailBacklog {
    pub waiting: i64,
    pub oldest: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait MailStore: Send + Sync {
    /// Stores the token (if any) and queues the mails, in one transaction.
    /// `false` (nothing written) when the token's user is gone.
    async fn issue_mail(
        &self,
        token: Option<&NewMailToken>,
        mails: &[OutgoingMail],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The live token of this purpose with this hash.
    async fn mail_token(
        &self,
        purpose: TokenPurpose,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<MailToken>, StoreError>;
    /// Consumes a verification token and marks the address verified, if
    /// it is still the user's, with the `email_verified` event.
    async fn verify_email(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
        client_addr: &str,
    ) -> Result<Option<MailToken>, StoreError>;
    /// Consumes a reset token and sets the password; every session ends
    /// and every access token issued before `now` is refused, with the
    /// `password_reset` event. The user and how many sessions ended.
    async fn reset_password(
        &self,
        hash: &[u8],
        password_hash: &str,
        now: DateTime<Utc>,
        client_addr: &str,
    ) -> Result<Option<(i64, u64)>, StoreError>;
    /// Counts one try against the user's live sign-in code and returns its
    /// hash to compare; `None` when there is none, or its tries are used.
    /// One statement, so concurrent tries cannot pass the limit together.
    async fn reserve_code_attempt(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
        max_attempts: i32,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Consumes the code (if it is still this one) and opens the session,
    /// with the `sign_in` event; the address counts as verified.
    async fn redeem_code(&self, code_hash: &[u8], session: &NewSession)
        -> Result<bool, StoreError>;

    /// Claims up to `limit` due mails for `worker` until `lease_until`.
    async fn claim_mail(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<QueuedMail>, StoreError>;
    /// Marks a claimed mail sent and forgets its content.
    async fn mail_sent(&self, id: i64, worker: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Gives a claimed mail back, due again at `at`.
    async fn mail_retry(
        &self,
        id: i64,
        worker: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), StoreError>;
    /// Gives a claimed mail up for good, with why, and forgets its content.
    async fn mail_failed(
        &self,
        id: i64,
        worker: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), StoreError>;
    async fn mail_backlog(&self) -> Result<MailBacklog, StoreError>;
    /// Deletes up to `batch` outbox rows sent or given up before `before`,
    /// and expired tokens; how many rows went.
    async fn prune_mail(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError>;
}

/// Implements [`MailStore`] for a backend store type (and two helpers on
/// its connection type `$conn`); `$claim_lock` is the row lock of the
/// outbox claim's inner select.
macro_rules! mail_store {
    ($store:ty, $conn:ty, $claim_lock:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::mail::MailStore for $store {
            #[tracing::instrument(level = "debug", skip_all)]
            async fn issue_mail(
                &self,
                token: Option<&$crate::storage::mail::NewMailToken>,
                mails: &[$crate::domain::mail::OutgoingMail],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let mut tx = self.write_tx().await?;
                if let Some(token) = token {
                    if !lock_user(&mut tx, token.user_id).await? {
                        return Ok(false);
                    }
                    sqlx::query(
                        "INSERT INTO mail_tokens (user_id, purpose, token_hash, email, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (user_id, purpose) DO UPDATE SET token_hash = excluded.token_hash,
                             email = excluded.email, created_at = excluded.created_at,
                             expires_at = excluded.expires_at, failed_attempts = 0",
                    )
                    .bind(token.user_id)
                    .bind(token.purpose.name())
                    .bind(&token.hash)
                    .bind(&token.email)
                    .bind(Timestamp(token.created_at))
                    .bind(Timestamp(token.expires_at))
                    .execute(&mut *tx)
                    .await?;
                }
                for mail in mails {
                    sqlx::query(
                        "INSERT INTO mail_outbox (kind, recipient, subject, body_text, body_html, link,
                                                  created_at, next_attempt_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    )
                    .bind(mail.kind.name())
                    .bind(&mail.to)
                    .bind(&mail.subject)
                    .bind(&mail.text)
                    .bind(&mail.html)
                    .bind(&mail.link)
                    .bind(Timestamp(now))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                // Answered as queued: it must outlive a power loss too.
                self.durable().await?;
                Ok(true)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn mail_token(
                &self,
                purpose: $crate::domain::mail::TokenPurpose,
                hash: &[u8],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::mail::MailToken>, $crate::storage::StoreError> {
                let row: Option<(i64, String)> = sqlx::query_as(
                    "SELECT user_id, email FROM mail_tokens
                     WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3",
                )
                .bind(hash)
                .bind(purpose.name())
                .bind($crate::storage::Timestamp(now))
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(user_id, email)| $crate::storage::mail::MailToken { user_id, email }))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn verify_email(
                &self,
                hash: &[u8],
                now: chrono::DateTime<chrono::Utc>,
                client_addr: &str,
            ) -> Result<Option<$crate::storage::mail::MailToken>, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let purpose = $crate::domain::mail::TokenPurpose::VerifyEmail;
                let mut tx = self.write_tx().await?;
                // The user first, then the token: the order every other
                // writer of both takes (no deadlock on PostgreSQL).
                let Some(user_id) = token_owner(&mut tx, purpose, hash, now).await? else {
                    return Ok(None);
                };
                if !lock_user(&mut tx, user_id).await? {
                    return Ok(None);
                }
                let Some(email) = consume_token(&mut tx, user_id, purpose, hash, now).await? else {
                    return Ok(None);
                };
                // The address changed since the mail went out: the link
                // proves nothing about the current one.
                let marked = sqlx::query(
                    "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email = $3",
                )
                .bind(Timestamp(now))
                .bind(user_id)
                .bind(&email)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if marked == 0 {
                    tx.commit().await?;
                    return Ok(None);
                }
                insert_event(
                    &mut tx,
                    &$crate::storage::SecurityEvent::of(
                        $crate::domain::audit::EventKind::EmailVerified,
                        now,
                        user_id,
                        client_addr,
                        None,
                    ),
                )
                .await?;
                tx.commit().await?;
                Ok(Some($crate::storage::mail::MailToken { user_id, email }))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn reset_password(
                &self,
                hash: &[u8],
                password_hash: &str,
                now: chrono::DateTime<chrono::Utc>,
                client_addr: &str,
            ) -> Result<Option<(i64, u64)>, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let purpose = $crate::domain::mail::TokenPurpose::ResetPassword;
                let mut tx = self.write_tx().await?;
                let Some(user_id) = token_owner(&mut tx, purpose, hash, now).await? else {
                    return Ok(None);
                };
                if !lock_user(&mut tx, user_id).await? {
                    return Ok(None);
                }
                let Some(email) = consume_token(&mut tx, user_id, purpose, hash, now).await? else {
                    return Ok(None);
                };
                // The link came through the mailbox: if it is still the
                // account's address, it is proven too.
                sqlx::query(
                    "UPDATE users SET password_hash = $1, tokens_valid_after = $2, updated_at = $2,
                         email_verified_at = CASE WHEN email = $3
                             THEN COALESCE(email_verified_at, $2) ELSE email_verified_at END
                     WHERE id = $4",
                )
                .bind(password_hash)
                .bind(Timestamp(now))
                .bind(&email)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                let revoked = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
                )
                .bind(Timestamp(now))
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // A code mailed before the reset signs in no more, and an
                // e-mail change started before it (perhaps by whoever
                // knew the old password) is void.
                sqlx::query("DELETE FROM mail_tokens WHERE user_id = $1 AND purpose IN ($2, $3)")
                    .bind(user_id)
                    .bind($crate::domain::mail::TokenPurpose::SignInCode.name())
                    .bind($crate::domain::mail::TokenPurpose::ChangeEmail.name())
                    .execute(&mut *tx)
                    .await?;
                insert_event(
                    &mut tx,
                    &$crate::storage::SecurityEvent::of(
                        $crate::domain::audit::EventKind::PasswordReset,
                        now,
                        user_id,
                        client_addr,
                        Some(&format!("sessions revoked: {revoked}")),
                    ),
                )
                .await?;
                tx.commit().await?;
                self.durable().await?;
                Ok(Some((user_id, revoked)))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn reserve_code_attempt(
                &self,
                user_id: i64,
                now: chrono::DateTime<chrono::Utc>,
                max_attempts: i32,
            ) -> Result<Option<Vec<u8>>, $crate::storage::StoreError> {
                let mut conn = self.writing().await?;
                let value = sqlx::query_scalar(
                    "UPDATE mail_tokens SET failed_attempts = failed_attempts + 1
                     WHERE user_id = $1 AND purpose = $2 AND expires_at > $3 AND failed_attempts < $4
                     RETURNING token_hash",
                )
                .bind(user_id)
                .bind($crate::domain::mail::TokenPurpose::SignInCode.name())
                .bind($crate::storage::Timestamp(now))
                .bind(max_attempts)
                .fetch_optional(&mut *conn)
                .await?;
                conn.done().await?;
                Ok(value)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn redeem_code(
                &self,
                code_hash: &[u8],
                session: &$crate::storage::NewSession,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let mut tx = self.write_tx().await?;
                if !lock_user(&mut tx, session.user_id).await? {
                    return Ok(false);
                }
                let email: Option<String> = sqlx::query_scalar(
                    "DELETE FROM mail_tokens WHERE user_id = $1 AND purpose = $2 AND token_hash = $3
                     RETURNING email",
                )
                .bind(session.user_id)
                .bind($crate::domain::mail::TokenPurpose::SignInCode.name())
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(email) = email else {
                    return Ok(false);
                };
                sqlx::query(
                    "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1)
                     WHERE id = $2 AND email = $3",
                )
                .bind(Timestamp(session.created_at))
                .bind(session.user_id)
                .bind(&email)
                .execute(&mut *tx)
                .await?;
                insert_session(&mut tx, session, session.user_id).await?;
                insert_event(
                    &mut tx,
                    &$crate::storage::SecurityEvent::of(
                        $crate::domain::audit::EventKind::SignIn,
                        session.created_at,
                        session.user_id,
                        &session.client_addr,
                        Some("sign-in code"),
                    ),
                )
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn claim_mail(
                &self,
                worker: &str,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<Vec<$crate::storage::mail::QueuedMail>, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let mut tx = self.housekeeping_tx().await?;
                let rows: Vec<(i64, String, String, String, Option<String>, Option<String>, Option<String>, Timestamp, i32)> =
                    sqlx::query_as(concat!(
                        "UPDATE mail_outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1
                         WHERE id IN (
                             SELECT id FROM mail_outbox
                             WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $3
                               AND (claimed_until IS NULL OR claimed_until <= $3)
                             ORDER BY id LIMIT $4 ",
                        $claim_lock,
                        ")
                         RETURNING id, kind, recipient, subject, body_text, body_html, link, created_at, attempts"
                    ))
                    .bind(worker)
                    .bind(Timestamp(lease_until))
                    .bind(Timestamp(now))
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut mails: Vec<_> = rows
                    .into_iter()
                    .map(
                        |(id, kind, recipient, subject, text, html, link, queued_at, attempts)| {
                            $crate::storage::mail::QueuedMail {
                                id,
                                kind,
                                recipient,
                                subject,
                                body_text: text.unwrap_or_default(),
                                body_html: html.unwrap_or_default(),
                                link,
                                queued_at: queued_at.0,
                                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                            }
                        },
                    )
                    .collect();
                mails.sort_by_key(|mail| mail.id);
                Ok(mails)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn mail_sent(
                &self,
                id: i64,
                worker: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::storage::StoreError> {
                let mut conn = self.housekeeping_writing().await?;
                sqlx::query(
                    "UPDATE mail_outbox SET sent_at = $1, claimed_until = NULL, last_error = NULL,
                         body_text = NULL, body_html = NULL, link = NULL
                     WHERE id = $2 AND claimed_by = $3",
                )
                .bind($crate::storage::Timestamp(now))
                .bind(id)
                .bind(worker)
                .execute(&mut *conn)
                .await?;
                conn.done().await?;
                Ok(())
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn mail_retry(
                &self,
                id: i64,
                worker: &str,
                at: chrono::DateTime<chrono::Utc>,
                reason: &str,
            ) -> Result<(), $crate::storage::StoreError> {
                let mut conn = self.housekeeping_writing().await?;
                sqlx::query(
                    "UPDATE mail_outbox SET next_attempt_at = $1, claimed_until = NULL, last_error = $2
                     WHERE id = $3 AND claimed_by = $4 AND sent_at IS NULL",
                )
                .bind($crate::storage::Timestamp(at))
                .bind(reason)
                .bind(id)
                .bind(worker)
                .execute(&mut *conn)
                .await?;
                conn.done().await?;
                Ok(())
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn mail_failed(
                &self,
                id: i64,
                worker: &str,
                now: chrono::DateTime<chrono::Utc>,
                reason: &str,
            ) -> Result<(), $crate::storage::StoreError> {
                let mut conn = self.housekeeping_writing().await?;
                sqlx::query(
                    "UPDATE mail_outbox SET failed_at = $1, claimed_until = NULL, last_error = $2,
                         body_text = NULL, body_html = NULL, link = NULL
                     WHERE id = $3 AND claimed_by = $4 AND sent_at IS NULL",
                )
                .bind($crate::storage::Timestamp(now))
                .bind(reason)
                .bind(id)
                .bind(worker)
                .execute(&mut *conn)
                .await?;
                conn.done().await?;
                Ok(())
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn mail_backlog(
                &self,
            ) -> Result<$crate::storage::mail::MailBacklog, $crate::storage::StoreError> {
                let (waiting, oldest): (i64, Option<$crate::storage::Timestamp>) = sqlx::query_as(
                    "SELECT COUNT(*), MIN(created_at) FROM mail_outbox
                     WHERE sent_at IS NULL AND failed_at IS NULL",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok($crate::storage::mail::MailBacklog {
                    waiting,
                    oldest: oldest.map(|t| t.0),
                })
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn prune_mail(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
                batch: i64,
            ) -> Result<u64, $crate::storage::StoreError> {
                let mut conn = self.housekeeping_writing().await?;
                use $crate::storage::Timestamp;
                let mails = sqlx::query(
                    "DELETE FROM mail_outbox WHERE id IN (
                         SELECT id FROM mail_outbox WHERE sent_at < $1 OR failed_at < $1 LIMIT $2)",
                )
                .bind(Timestamp(before))
                .bind(batch)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                let tokens = sqlx::query(
                    "DELETE FROM mail_tokens WHERE (user_id, purpose) IN (
                         SELECT user_id, purpose FROM mail_tokens WHERE expires_at <= $1 LIMIT $2)",
                )
                .bind(Timestamp(now))
                .bind(batch)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                conn.done().await?;
                Ok(mails + tokens)
            }
        }

        /// The user a live token of `purpose` with this hash belongs to.
        async fn token_owner(
            tx: &mut $conn,
            purpose: $crate::domain::mail::TokenPurpose,
            hash: &[u8],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Option<i64>, $crate::storage::StoreError> {
            Ok(sqlx::query_scalar(
                "SELECT user_id FROM mail_tokens
                 WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3",
            )
            .bind(hash)
            .bind(purpose.name())
            .bind($crate::storage::Timestamp(now))
            .fetch_optional(&mut *tx)
            .await?)
        }

        /// Deletes the user's live token of `purpose` if it is still this
        /// one; the address it was sent to. Only one of concurrent callers
        /// gets it.
        async fn consume_token(
            tx: &mut $conn,
            user_id: i64,
            purpose: $crate::domain::mail::TokenPurpose,
            hash: &[u8],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Option<String>, $crate::storage::StoreError> {
            Ok(sqlx::query_scalar(
                "DELETE FROM mail_tokens
                 WHERE user_id = $1 AND purpose = $2 AND token_hash = $3 AND expires_at > $4
                 RETURNING email",
            )
            .bind(user_id)
            .bind(purpose.name())
            .bind(hash)
            .bind($crate::storage::Timestamp(now))
            .fetch_optional(&mut *tx)
            .await?)
        }
    };
}
pub(crate) use mail_store;
