//! What a signed-in user changes on their own account: profile, cars,
//! sessions, password, avatar, deletion.
//!
//! Written once for both backends: [`account_store!`] expands the same
//! statements for each, and a backend supplies only how it takes a write
//! transaction (`write_tx`: SQLite `BEGIN IMMEDIATE`, PostgreSQL `BEGIN`),
//! how it locks a user inside one (`lock_user`: PostgreSQL `FOR UPDATE`,
//! SQLite holds the write lock already) and its durability barrier after a
//! revocation (`durable`). Every decision is pure code in
//! [`crate::domain`]; these methods read under the lock, ask, and execute.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::account::{Car, Session, User};
use crate::domain::avatar::{AvatarFormat, AvatarSize, ProcessedAvatar};
use crate::domain::profile::{ProfilePlan, ProfileUpdate};
use crate::domain::rotation::RotationPolicy;
use crate::domain::{FieldError, NewCar};

/// Who changes their account, when, from where (for the audit trail).
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: i64,
    pub now: DateTime<Utc>,
    pub client_addr: String,
}

/// What `addCar` came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarAdded {
    Added(Car),
    /// The user has as many cars as allowed.
    NoRoom(FieldError),
    /// The user is gone (deleted meanwhile).
    NoUser,
}

/// A password change, kept by the session that asked for it.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    /// The session that stays; every other one is revoked.
    pub session_id: String,
    pub password_hash: String,
    /// SHA-256 of the session's new refresh token; its old ones are deleted.
    pub refresh_token_hash: Vec<u8>,
    /// Access tokens issued before this are refused.
    pub tokens_valid_after: DateTime<Utc>,
    pub policy: RotationPolicy,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// The user whose username or e-mail has this login key.
    async fn login_key_owner(&self, key: &str) -> Result<Option<i64>, StoreError>;
    async fn user(&self, user_id: i64) -> Result<Option<User>, StoreError>;
    /// Applies a checked profile change under the user's lock, with its
    /// `profile_updated` event. `None` when the user is gone;
    /// [`StoreError::Conflict`] when the new e-mail is someone's login.
    /// With `proof` (the hash of an e-mail change token) the change is the
    /// confirmation of that token: it is consumed in the same transaction,
    /// and `None` when it is no longer live.
    async fn update_profile(
        &self,
        actor: &Actor,
        update: &ProfileUpdate,
        proof: Option<&[u8]>,
    ) -> Result<Option<ProfilePlan>, StoreError>;
    /// Adds a car after the user's others, if there is room, under the
    /// user's lock (so concurrent calls cannot pass the cap together).
    async fn add_car(&self, actor: &Actor, car: &NewCar) -> Result<CarAdded, StoreError>;
    /// `None` when the user has no car with this id.
    async fn update_car(
        &self,
        actor: &Actor,
        car_id: i64,
        car: &NewCar,
    ) -> Result<Option<Car>, StoreError>;
    /// `false` when the user has no car with this id.
    async fn remove_car(&self, actor: &Actor, car_id: i64) -> Result<bool, StoreError>;

    /// The user's live sessions, most recently used first.
    async fn sessions_of(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, StoreError>;
    /// Revokes one live session of the user; `false` when they have none
    /// with this id.
    async fn revoke_session(&self, actor: &Actor, session_id: &str) -> Result<bool, StoreError>;
    /// Revokes every live session of the user but `keep`; how many.
    async fn revoke_other_sessions(&self, actor: &Actor, keep: &str) -> Result<u64, StoreError>;

    async fn password_hash(&self, user_id: i64) -> Result<Option<String>, StoreError>;
    /// Stores the new hash, refuses older access tokens, revokes every
    /// other session and gives the kept one a new refresh token, with the
    /// `password_changed` event, in one transaction. `None` when the kept
    /// session is no longer live (nothing is written); else how many other
    /// sessions were revoked.
    async fn change_password(
        &self,
        actor: &Actor,
        change: &PasswordChange,
    ) -> Result<Option<u64>, StoreError>;
    /// Deletes the user with cars, sessions, tokens, login keys and avatar,
    /// recording `account_deleted` (the id only), in one transaction.
    async fn delete_user(&self, actor: &Actor) -> Result<bool, StoreError>;

    /// Replaces the user's avatar; `false` when the user is gone.
    async fn set_avatar(&self, actor: &Actor, avatar: &ProcessedAvatar)
        -> Result<bool, StoreError>;
    /// `false` when there was none.
    async fn remove_avatar(&self, actor: &Actor) -> Result<bool, StoreError>;
    /// One stored copy of the avatar version `hash` of the user.
    async fn avatar(
        &self,
        user_id: i64,
        hash: &str,
        size: AvatarSize,
    ) -> Result<Option<(AvatarFormat, Vec<u8>)>, StoreError>;
}

/// Implements [`AccountStore`] for a backend store type that has
/// `write_tx()`, `durable()`, and a free `lock_user(conn, id)` and
/// `insert_event(conn, event)` in scope (and one helper on its
/// connection type `$conn`).
macro_rules! account_store {
    ($store:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::accounts::AccountStore for $store {
            #[tracing::instrument(level = "debug", skip_all)]
            async fn login_key_owner(
                &self,
                key: &str,
            ) -> Result<Option<i64>, $crate::storage::StoreError> {
                Ok(
                    sqlx::query_scalar("SELECT user_id FROM login_keys WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn user(
                &self,
                user_id: i64,
            ) -> Result<Option<$crate::domain::account::User>, $crate::storage::StoreError> {
                let row: Option<$crate::storage::rows::UserRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::user_columns!(),
                    " FROM users u WHERE u.id = $1"
                ))
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn update_profile(
                &self,
                actor: &$crate::storage::accounts::Actor,
                update: &$crate::domain::profile::ProfileUpdate,
                proof: Option<&[u8]>,
            ) -> Result<Option<$crate::domain::profile::ProfilePlan>, $crate::storage::StoreError>
            {
                use $crate::storage::Timestamp;
                let mut tx = self.write_tx().await?;
                if !lock_user(&mut tx, actor.user_id).await? {
                    return Ok(None);
                }
                if let Some(hash) = proof {
                    let consumed = sqlx::query(
                        "DELETE FROM mail_tokens
                         WHERE user_id = $1 AND purpose = $2 AND token_hash = $3 AND expires_at > $4",
                    )
                    .bind(actor.user_id)
                    .bind($crate::domain::mail::TokenPurpose::ChangeEmail.name())
                    .bind(hash)
                    .bind(Timestamp(actor.now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if consumed == 0 {
                        return Ok(None);
                    }
                }
                let row: $crate::storage::rows::ProfileRow = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::user_columns!(),
                    ", u.username_key, u.email_key FROM users u WHERE u.id = $1"
                ))
                .bind(actor.user_id)
                .fetch_one(&mut *tx)
                .await?;
                let plan = update.plan(&row.into(), actor.now);
                if plan.changed.is_empty() {
                    if proof.is_some() {
                        // The token is used up either way.
                        tx.commit().await?;
                    }
                    return Ok(Some(plan));
                }
                let user = &plan.user;
                sqlx::query(
                    "UPDATE users SET email = $1, email_key = $2, phone = $3, name = $4,
                         surname = $5, second_name = $6, updated_at = $7, email_verified_at = $9,
                         email_changed_at = $10
                     WHERE id = $8",
                )
                .bind(&user.email)
                .bind(&plan.email_key)
                .bind(&user.phone)
                .bind(&user.name)
                .bind(&user.surname)
                .bind(&user.second_name)
                .bind(Timestamp(actor.now))
                .bind(actor.user_id)
                .bind(user.email_verified_at.map(Timestamp))
                .bind(user.email_changed_at.map(Timestamp))
                .execute(&mut *tx)
                .await?;
                if plan.changed.contains(&"email") {
                    // Links and codes mailed to the old address (or to a
                    // pending new one) prove nothing about this one.
                    sqlx::query(
                        "DELETE FROM mail_tokens WHERE user_id = $1 AND purpose IN ($2, $3, $4)",
                    )
                    .bind(actor.user_id)
                    .bind($crate::domain::mail::TokenPurpose::VerifyEmail.name())
                    .bind($crate::domain::mail::TokenPurpose::ResetPassword.name())
                    .bind($crate::domain::mail::TokenPurpose::SignInCode.name())
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(key) = &plan.release_key {
                    sqlx::query("DELETE FROM login_keys WHERE key = $1 AND user_id = $2")
                        .bind(key)
                        .bind(actor.user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(key) = &plan.claim_key {
                    // A concurrent sign-up or change that took it first
                    // makes this a unique violation: Conflict.
                    sqlx::query("INSERT INTO login_keys (key, user_id) VALUES ($1, $2)")
                        .bind(key)
                        .bind(actor.user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let detail = plan.changed.join(",");
                let kind = match proof {
                    Some(_) => $crate::domain::audit::EventKind::EmailChanged,
                    None => $crate::domain::audit::EventKind::ProfileUpdated,
                };
                insert_event(&mut tx, &actor.event(kind, Some(&detail))).await?;
                tx.commit().await?;
                Ok(Some(plan))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn add_car(
                &self,
                actor: &$crate::storage::accounts::Actor,
                car: &$crate::domain::NewCar,
            ) -> Result<$crate::storage::accounts::CarAdded, $crate::storage::StoreError> {
                use $crate::storage::accounts::CarAdded;
                let mut tx = self.write_tx().await?;
                if !lock_user(&mut tx, actor.user_id).await? {
                    return Ok(CarAdded::NoUser);
                }
                let (count, last_position): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(COALESCE(MAX(position), -1) AS BIGINT)
                     FROM cars WHERE user_id = $1",
                )
                .bind(actor.user_id)
                .fetch_one(&mut *tx)
                .await?;
                if let Err(problem) = $crate::domain::sign_up::room_for_another_car(
                    usize::try_from(count).unwrap_or(usize::MAX),
                ) {
                    return Ok(CarAdded::NoRoom(problem));
                }
                let row: $crate::storage::rows::CarRow = sqlx::query_as(
                    "INSERT INTO cars (user_id, position, brand, model, year, color, license_plate, vin)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     RETURNING id, user_id, brand, model, year, color, license_plate, vin",
                )
                .bind(actor.user_id)
                .bind(i32::try_from(last_position + 1).unwrap_or(i32::MAX))
                .bind(&car.brand)
                .bind(&car.model)
                .bind(car.year)
                .bind(&car.color)
                .bind(&car.license_plate)
                .bind(&car.vin)
                .fetch_one(&mut *tx)
                .await?;
                cars_changed(&mut tx, actor, "car added").await?;
                tx.commit().await?;
                Ok(CarAdded::Added(row.into()))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn update_car(
                &self,
                actor: &$crate::storage::accounts::Actor,
                car_id: i64,
                car: &$crate::domain::NewCar,
            ) -> Result<Option<$crate::domain::account::Car>, $crate::storage::StoreError> {
                let mut tx = self.write_tx().await?;
                let row: Option<$crate::storage::rows::CarRow> = sqlx::query_as(
                    "UPDATE cars SET brand = $1, model = $2, year = $3, color = $4,
                         license_plate = $5, vin = $6
                     WHERE id = $7 AND user_id = $8
                     RETURNING id, user_id, brand, model, year, color, license_plate, vin",
                )
                .bind(&car.brand)
                .bind(&car.model)
                .bind(car.year)
                .bind(&car.color)
                .bind(&car.license_plate)
                .bind(&car.vin)
                .bind(car_id)
                .bind(actor.user_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                cars_changed(&mut tx, actor, "car updated").await?;
                tx.commit().await?;
                Ok(Some(row.into()))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn remove_car(
                &self,
                actor: &$crate::storage::accounts::Actor,
                car_id: i64,
            ) -> Result<bool, $crate::storage::StoreError> {
                let mut tx = self.write_tx().await?;
                let removed = sqlx::query("DELETE FROM cars WHERE id = $1 AND user_id = $2")
                    .bind(car_id)
                    .bind(actor.user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    return Ok(false);
                }
                cars_changed(&mut tx, actor, "car removed").await?;
                tx.commit().await?;
                Ok(true)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn sessions_of(
                &self,
                user_id: i64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::domain::account::Session>, $crate::storage::StoreError> {
                let rows: Vec<$crate::storage::rows::SessionRow> = self
                    .lagging_read(|pool| async move {
                        sqlx::query_as(
                            "SELECT id, created_at, last_used_at, user_agent, client_addr
                             FROM sessions
                             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
                             ORDER BY last_used_at DESC, created_at DESC, id",
                        )
                        .bind(user_id)
                        .bind($crate::storage::Timestamp(now))
                        .fetch_all(&pool)
                        .await
                    }, |_| true)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn revoke_session(
                &self,
                actor: &$crate::storage::accounts::Actor,
                session_id: &str,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::{SessionId, Timestamp};
                let mut tx = self.write_tx().await?;
                let revoked = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1
                     WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1",
                )
                .bind(Timestamp(actor.now))
                .bind(SessionId(session_id.to_owned()))
                .bind(actor.user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if revoked == 0 {
                    return Ok(false);
                }
                insert_event(
                    &mut tx,
                    &actor.event($crate::domain::audit::EventKind::SessionRevoked, Some("one session")),
                )
                .await?;
                tx.commit().await?;
                self.durable().await?;
                Ok(true)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn revoke_other_sessions(
                &self,
                actor: &$crate::storage::accounts::Actor,
                keep: &str,
            ) -> Result<u64, $crate::storage::StoreError> {
                use $crate::storage::{SessionId, Timestamp};
                let mut tx = self.write_tx().await?;
                let revoked = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1
                     WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
                )
                .bind(Timestamp(actor.now))
                .bind(actor.user_id)
                .bind(SessionId(keep.to_owned()))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                insert_event(
                    &mut tx,
                    &actor.event(
                        $crate::domain::audit::EventKind::SessionRevoked,
                        Some(&format!("other sessions: {revoked}")),
                    ),
                )
                .await?;
                tx.commit().await?;
                self.durable().await?;
                Ok(revoked)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn password_hash(
                &self,
                user_id: i64,
            ) -> Result<Option<String>, $crate::storage::StoreError> {
                Ok(
                    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                        .bind(user_id)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn change_password(
                &self,
                actor: &$crate::storage::accounts::Actor,
                change: &$crate::storage::accounts::PasswordChange,
            ) -> Result<Option<u64>, $crate::storage::StoreError> {
                use $crate::storage::{SessionId, Timestamp};
                let mut tx = self.write_tx().await?;
                if !lock_user(&mut tx, actor.user_id).await? {
                    return Ok(None);
                }
                let kept = SessionId(change.session_id.clone());
                let created_at: Option<Timestamp> = sqlx::query_scalar(
                    "SELECT created_at FROM sessions
                     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
                )
                .bind(kept.clone())
                .bind(actor.user_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(expires_at) = created_at
                    .and_then(|created| change.policy.successor_expiry(created.0, actor.now))
                else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE users SET password_hash = $1, tokens_valid_after = $2, updated_at = $3
                     WHERE id = $4",
                )
                .bind(&change.password_hash)
                .bind(Timestamp(change.tokens_valid_after))
                .bind(Timestamp(actor.now))
                .bind(actor.user_id)
                .execute(&mut *tx)
                .await?;
                let revoked = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1
                     WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
                )
                .bind(Timestamp(actor.now))
                .bind(actor.user_id)
                .bind(kept.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Reset links, sign-in codes and a pending e-mail change
                // (perhaps started by whoever knew the old password) die
                // with the old password.
                sqlx::query(
                    "DELETE FROM mail_tokens WHERE user_id = $1 AND purpose IN ($2, $3, $4)",
                )
                .bind(actor.user_id)
                .bind($crate::domain::mail::TokenPurpose::ResetPassword.name())
                .bind($crate::domain::mail::TokenPurpose::SignInCode.name())
                .bind($crate::domain::mail::TokenPurpose::ChangeEmail.name())
                .execute(&mut *tx)
                .await?;
                // The kept session's earlier refresh tokens die with the old
                // password (unknown from now on, not "reused").
                sqlx::query("DELETE FROM refresh_tokens WHERE session_id = $1")
                    .bind(kept.clone())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
                )
                .bind(&change.refresh_token_hash)
                .bind(kept.clone())
                .bind(Timestamp(expires_at))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET expires_at = $1, last_used_at = $2 WHERE id = $3",
                )
                .bind(Timestamp(expires_at))
                .bind(Timestamp(actor.now))
                .bind(kept)
                .execute(&mut *tx)
                .await?;
                insert_event(
                    &mut tx,
                    &actor.event(
                        $crate::domain::audit::EventKind::PasswordChanged,
                        Some(&format!("other sessions revoked: {revoked}")),
                    ),
                )
                .await?;
                tx.commit().await?;
                self.durable().await?;
                Ok(Some(revoked))
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn delete_user(
                &self,
                actor: &$crate::storage::accounts::Actor,
            ) -> Result<bool, $crate::storage::StoreError> {
                let mut tx = self.write_tx().await?;
                if !lock_user(&mut tx, actor.user_id).await? {
                    return Ok(false);
                }
                insert_event(
                    &mut tx,
                    &actor.event($crate::domain::audit::EventKind::AccountDeleted, None),
                )
                .await?;
                // Cars, sessions (and their refresh tokens), login keys and
                // the avatar go with it (ON DELETE CASCADE).
                sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(actor.user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.durable().await?;
                Ok(true)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn set_avatar(
                &self,
                actor: &$crate::storage::accounts::Actor,
                avatar: &$crate::domain::avatar::ProcessedAvatar,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let mut tx = self.write_tx().await?;
                let updated = sqlx::query(
                    "UPDATE users SET avatar_hash = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(&avatar.hash)
                .bind(Timestamp(actor.now))
                .bind(actor.user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO avatars (user_id, hash, format, small, large, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash,
                         format = excluded.format, small = excluded.small,
                         large = excluded.large, updated_at = excluded.updated_at",
                )
                .bind(actor.user_id)
                .bind(&avatar.hash)
                .bind(avatar.format.name())
                .bind(&avatar.small)
                .bind(&avatar.large)
                .bind(Timestamp(actor.now))
                .execute(&mut *tx)
                .await?;
                insert_event(
                    &mut tx,
                    &actor.event($crate::domain::audit::EventKind::AvatarChanged, Some("uploaded")),
                )
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn remove_avatar(
                &self,
                actor: &$crate::storage::accounts::Actor,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let mut tx = self.write_tx().await?;
                let updated = sqlx::query(
                    "UPDATE users SET avatar_hash = NULL, updated_at = $1
                     WHERE id = $2 AND avatar_hash IS NOT NULL",
                )
                .bind(Timestamp(actor.now))
                .bind(actor.user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM avatars WHERE user_id = $1")
                    .bind(actor.user_id)
                    .execute(&mut *tx)
                    .await?;
                insert_event(
                    &mut tx,
                    &actor.event($crate::domain::audit::EventKind::AvatarChanged, Some("removed")),
                )
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn avatar(
                &self,
                user_id: i64,
                hash: &str,
                size: $crate::domain::avatar::AvatarSize,
            ) -> Result<
                Option<($crate::domain::avatar::AvatarFormat, Vec<u8>)>,
                $crate::storage::StoreError,
            > {
                let sql = match size {
                    $crate::domain::avatar::AvatarSize::Small => {
                        "SELECT format, small FROM avatars WHERE user_id = $1 AND hash = $2"
                    }
                    $crate::domain::avatar::AvatarSize::Original => {
                        "SELECT format, large FROM avatars WHERE user_id = $1 AND hash = $2"
                    }
                };
                let row: Option<(String, Vec<u8>)> = sqlx::query_as(sql)
                    .bind(user_id)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|(format, bytes)| {
                    $crate::domain::avatar::AvatarFormat::from_name(&format)
                        .map(|format| (format, bytes))
                        .ok_or_else(|| {
                            $crate::storage::StoreError::Corrupt(format!(
                                "avatar of user {user_id} has an unknown format {format:?}"
                            ))
                        })
                })
                .transpose()
            }
        }

        /// A car added, changed or removed: the profile's `updated_at` and
        /// its `profile_updated` event, inside the change's transaction.
        async fn cars_changed(
            tx: &mut $conn,
            actor: &$crate::storage::accounts::Actor,
            detail: &str,
        ) -> Result<(), $crate::storage::StoreError> {
            sqlx::query("UPDATE users SET updated_at = $1 WHERE id = $2")
                .bind($crate::storage::Timestamp(actor.now))
                .bind(actor.user_id)
                .execute(&mut *tx)
                .await?;
            insert_event(
                tx,
                &actor.event($crate::domain::audit::EventKind::ProfileUpdated, Some(detail)),
            )
            .await
        }
    };
}
pub(crate) use account_store;

impl Actor {
    /// The security event this actor's change records.
    pub fn event(
        &self,
        kind: crate::domain::audit::EventKind,
        detail: Option<&str>,
    ) -> super::SecurityEvent {
        super::SecurityEvent::of(kind, self.now, self.user_id, &self.client_addr, detail)
    }
}
