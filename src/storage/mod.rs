//! The only SQL in the crate. One [`Store`] trait, one implementation per
//! backend (SQLite, PostgreSQL), chosen from the `DATABASE_URL` scheme in
//! [`connect`]. Services hold an `Arc<dyn Store>` and never know which.
//!
//! Queries are runtime-checked (`sqlx::query_as`): compile-time checking
//! covers one database at a time, so the integration suite, run against every
//! backend, is what checks the SQL. Every multi-row write is one transaction
//! inside one method here.

pub mod accounts;
pub mod mail;
mod postgres;
pub mod replica;
mod rows;
mod sqlite;
pub mod transfer;
mod types;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{DatabaseConfig, JwtAlgorithm};
use crate::domain::account::{Car, User};
use crate::domain::audit::EventKind;
pub use crate::domain::rotation::RotationOutcome;
use crate::domain::rotation::RotationPolicy;
use crate::domain::throttle::{LoginDecision, LoginPolicy};
use crate::domain::NewUser;

pub use accounts::{AccountStore, Actor, CarAdded, PasswordChange};
pub use mail::{MailBacklog, MailStore, MailToken, NewMailToken, QueuedMail};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use transfer::{ExportedUser, TransferStore};
pub(crate) use types::{SessionId, Timestamp};

/// The connection a statement that writes runs on outside an explicit
/// transaction. Directly on the database, a pooled connection; behind a
/// transaction pooler (`AUTHQL_DB_POOLER=transaction`), a transaction that
/// [`Writing::done`] commits, because such a pooler lends its server
/// connection per transaction and a write must be committed before it is
/// acknowledged.
pub(crate) struct Writing<'s, DB: sqlx::Database> {
    held: Held<DB>,
    /// This instance's commit count, for a read replica ([`replica`]).
    commits: Option<&'s AtomicU64>,
}

enum Held<DB: sqlx::Database> {
    Connection(sqlx::pool::PoolConnection<DB>),
    Transaction(sqlx::Transaction<'static, DB>),
}

impl<'s, DB: sqlx::Database> Writing<'s, DB> {
    pub(crate) fn connection(
        c: sqlx::pool::PoolConnection<DB>,
        commits: Option<&'s AtomicU64>,
    ) -> Self {
        Self {
            held: Held::Connection(c),
            commits,
        }
    }

    pub(crate) fn transaction(
        t: sqlx::Transaction<'static, DB>,
        commits: Option<&'s AtomicU64>,
    ) -> Self {
        Self {
            held: Held::Transaction(t),
            commits,
        }
    }

    /// The writes are done: committed, when they ran in a transaction.
    pub(crate) async fn done(self) -> Result<(), StoreError> {
        if let Held::Transaction(t) = self.held {
            t.commit().await?;
        }
        if let Some(commits) = self.commits {
            commits.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Writing<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        match &self.held {
            Held::Connection(c) => c,
            Held::Transaction(t) => t,
        }
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Writing<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match &mut self.held {
            Held::Connection(c) => c,
            Held::Transaction(t) => t,
        }
    }
}

/// An explicit transaction that counts its commit ([`Writing::commits`]).
pub(crate) struct Tx<'s, DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    commits: Option<&'s AtomicU64>,
}

impl<'s, DB: sqlx::Database> Tx<'s, DB> {
    pub(crate) fn new(tx: sqlx::Transaction<'static, DB>, commits: Option<&'s AtomicU64>) -> Self {
        Self { tx, commits }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        if let Some(commits) = self.commits {
            commits.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Tx<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Tx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// What storage reports. Services turn `Conflict` into the field errors it
/// means (`TAKEN`); every other variant becomes `INTERNAL`, its detail only
/// in the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write (username or e-mail already taken).
    #[error("unique constraint violated")]
    Conflict,
    /// The pool timed out or the connection broke (the database is down).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error(transparent)]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value authql cannot read back.
    #[error("{0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(err)
            }
            _ => Self::Database(err),
        }
    }
}

/// The inserted cars as records, in the order given, from the `(position,
/// id)` pairs an `INSERT ... RETURNING` answered (in no promised order).
pub(crate) fn cars_in_order(user_id: i64, user: &NewUser, mut ids: Vec<(i64, i64)>) -> Vec<Car> {
    ids.sort_unstable();
    ids.into_iter()
        .zip(&user.cars)
        .map(|((_, id), car)| Car {
            id,
            user_id,
            brand: car.brand.clone(),
            model: car.model.clone(),
            year: car.year,
            color: car.color.clone(),
            license_plate: car.license_plate.clone(),
            vin: car.vin.clone(),
        })
        .collect()
}

/// The columns [`rows::CarColumns`] reads, for a `LEFT JOIN cars c`, and the same
/// columns as NULLs when no cars are asked for. Macros so that queries built
/// with `concat!` stay static SQL.
macro_rules! car_join_columns {
    () => {
        "c.id AS car_id, c.brand, c.model, c.year, c.color, c.license_plate, c.vin"
    };
}
pub(crate) use car_join_columns;
macro_rules! no_car_columns {
    () => {
        "NULL AS car_id, NULL AS brand, NULL AS model, NULL AS year, NULL AS color,
         NULL AS license_plate, NULL AS vin"
    };
}
pub(crate) use no_car_columns;

/// The user columns of `users u`, in the order the backends' rows read them.
macro_rules! user_columns {
    () => {
        "u.id, u.username, u.email, u.phone, u.name, u.surname, u.second_name, u.created_at,
         u.updated_at, u.avatar_hash, u.email_verified_at, u.email_changed_at, u.disabled_at"
    };
}
pub(crate) use accounts::account_store;
pub(crate) use mail::mail_store;
pub(crate) use transfer::transfer_store;
pub(crate) use user_columns;

/// A user with the stored PHC string, for sign-in only.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// Which unique keys already belong to someone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    pub username: bool,
    pub email: bool,
}

/// A new session (refresh-token family) with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub user_id: i64,
    /// SHA-256 of the refresh token; the token itself is never stored.
    pub token_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Who opened it, for the session list and the audit trail.
    pub client_addr: String,
    pub user_agent: Option<String>,
}

/// Everything a sign-up writes (see [`Store::insert_user`]).
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub user: &'a NewUser,
    pub password_hash: &'a str,
    pub now: DateTime<Utc>,
    /// The first session; its `user_id` is the new user's, set by the store.
    pub session: &'a NewSession,
}

/// One use of a refresh token.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub presented_hash: Vec<u8>,
    /// Hash of the successor token; the successor is derived from the
    /// presented token, so a replay inside the grace window maps to it again.
    pub successor_hash: Vec<u8>,
    pub now: DateTime<Utc>,
    pub policy: RotationPolicy,
    /// Recorded with the outcome's security event, in the same transaction,
    /// and with a rotation in the session list.
    pub client_addr: String,
    pub user_agent: Option<String>,
}

/// One entry of the append-only audit trail. Never a password or token.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub user_id: Option<i64>,
    pub client_addr: Option<String>,
    /// Internal reason (e.g. "wrong password"); never shown to clients.
    pub detail: Option<String>,
}

impl SecurityEvent {
    /// The event a state change of `user_id` records, at `at` from `client_addr`.
    pub fn of(
        kind: EventKind,
        at: DateTime<Utc>,
        user_id: i64,
        client_addr: &str,
        detail: Option<&str>,
    ) -> Self {
        Self {
            at,
            kind,
            user_id: Some(user_id),
            client_addr: Some(client_addr.to_owned()),
            detail: detail.map(str::to_owned),
        }
    }
}

/// A refused request, counted in the one row of its kind, client bucket,
/// detail and window (so a flood of refusals writes one row, not thousands).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: EventKind,
    pub client_bucket: String,
    pub detail: &'static str,
    pub window_start: DateTime<Utc>,
}

impl Refusal {
    /// The unique key of the row this refusal is counted in.
    pub fn aggregate_key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.kind.name(),
            self.client_bucket,
            self.detail,
            self.window_start.timestamp_millis()
        )
    }
}

/// A key made by `authql keys rotate`.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: JwtAlgorithm,
    /// base64: the HMAC key, or the Ed25519 PKCS#8 document.
    pub material: String,
    pub created_at: DateTime<Utc>,
}

/// Rows removed by one cleanup batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub counters: u64,
    pub events: u64,
}

/// What one cleanup batch may delete.
#[derive(Debug, Clone, Copy)]
pub struct CleanupCutoffs {
    pub now: DateTime<Utc>,
    /// Sessions revoked before this.
    pub revoked_before: DateTime<Utc>,
    /// Counters and streaks untouched since before this.
    pub stale_before: DateTime<Utc>,
    /// Rows of each kind deleted at most.
    pub batch: i64,
}

#[async_trait]
pub trait Store: AccountStore + MailStore + TransferStore + Send + Sync + 'static {
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Returns the stored value for `key`, storing `value` first if there is
    /// none. Race-safe: concurrent callers all get the one value that won.
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Stores `value` for `key`, replacing what was there.
    async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Which of these login keys (a username's, an e-mail's: one namespace)
    /// already belong to someone. `None` is not looked up.
    async fn taken(
        &self,
        username_key: Option<&str>,
        email_key: Option<&str>,
    ) -> Result<Taken, StoreError>;
    /// Writes a sign-up in one transaction: the user, their cars, the first
    /// session with its refresh token, and the `sign_up` security event.
    /// Returns the user and the cars in their order.
    /// [`StoreError::Conflict`] when the username or e-mail is taken.
    async fn insert_user(&self, account: &NewAccount<'_>) -> Result<(User, Vec<Car>), StoreError>;
    /// The user whose username or e-mail has this login key (one namespace,
    /// so at most one user).
    async fn credentials(&self, login_key: &str) -> Result<Option<Credentials>, StoreError>;
    async fn set_password_hash(&self, user_id: i64, password_hash: &str) -> Result<(), StoreError>;
    /// The user, if the session is theirs and not revoked, and the token was
    /// issued no earlier than the user's "tokens valid after" time; with
    /// their cars (in their order) when asked, in the same round trip.
    async fn session_user(
        &self,
        user_id: i64,
        session_id: &str,
        issued_at: DateTime<Utc>,
        with_cars: bool,
    ) -> Result<Option<(User, Option<Vec<Car>>)>, StoreError>;
    /// Revokes every live session of the user and refuses their access tokens
    /// issued before `now`, with the `sign_out_everywhere` event. Returns how
    /// many sessions were live.
    async fn revoke_user_sessions(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
        client_addr: &str,
    ) -> Result<u64, StoreError>;
    /// Cars of these users, in each user's original order.
    async fn cars_of_users(&self, user_ids: &[i64]) -> Result<Vec<Car>, StoreError>;

    /// Opens a signed-in session and records the `sign_in` event, in one
    /// transaction.
    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError>;
    /// Reads the token's state under the backend's lock, decides with
    /// [`crate::domain::rotation::plan_rotation`] and carries the plan out,
    /// with the outcome's security event, in one transaction.
    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<RotationOutcome, StoreError>;
    /// Revokes the family the token belongs to (current or consumed), with
    /// the `revoke` event. `None` when no family has such a token.
    async fn revoke_family(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
        client_addr: &str,
    ) -> Result<Option<i64>, StoreError>;

    /// Counts one hit against a fixed-window counter and returns the hits in
    /// the current window (a new window starts the count again at 1).
    async fn count_hit(&self, key: &str, window_start: DateTime<Utc>) -> Result<i64, StoreError>;
    /// Reads the streak under the backend's lock, decides with
    /// [`crate::domain::throttle::plan_login_attempt`] and stores the
    /// admitted attempt, in one transaction.
    async fn reserve_login_attempt(
        &self,
        key: &str,
        now: DateTime<Utc>,
        policy: &LoginPolicy,
    ) -> Result<LoginDecision, StoreError>;
    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError>;

    async fn record_event(&self, event: &SecurityEvent) -> Result<(), StoreError>;
    /// Counts a refusal in its aggregated row (created at the first one).
    async fn record_refusal(&self, refusal: &Refusal) -> Result<(), StoreError>;
    /// Deletes at most `batch` rows of each kind: expired sessions, revoked
    /// ones past a day, expired refresh tokens, stale counters, audit rows
    /// past the retention stored in settings (by the database's clock, as
    /// its delete trigger judges them).
    async fn cleanup(&self, cutoffs: &CleanupCutoffs) -> Result<Cleanup, StoreError>;

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// The read replica's figures, when there is one.
    fn replica_stats(&self) -> Option<replica::ReplicaStats> {
        None
    }
}

/// Opens the database named by the URL: `sqlite:` (the embedded default) or
/// `postgres:`/`postgresql:`.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.url.trim();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(config).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::connect(config).await?))
    } else {
        anyhow::bail!(
            "DATABASE_URL must start with sqlite: or postgres: (got {})",
            crate::config::redact_url_password(url)
        )
    }
}
