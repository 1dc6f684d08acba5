//! SQLite, the embedded default: one file, WAL journal, foreign keys on.
//!
//! Writers are serialised: in this process by the one writer connection
//! (reads use their own pool), across processes by SQLite's lock.
//! Transactions that read before they write start with `BEGIN IMMEDIATE`,
//! so they take the write lock up front (SQLite's equivalent of locking the
//! session row) and wait on `busy_timeout` for another process instead of
//! failing with SQLITE_BUSY on upgrade.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection as _, QueryBuilder, Sqlite, SqliteConnection};

use super::rows::{
    token_state_query, CarRow, CredentialsRow, KeyRow, StreakRow, TokenStateRow, UserWithCarRow,
};
use super::{
    car_join_columns, cars_in_order, no_car_columns, user_columns, Cleanup, CleanupCutoffs,
    Credentials, NewAccount, NewSession, Refusal, Rotation, RotationOutcome, SecurityEvent, Store,
    StoreError, StoredKey, Taken, Timestamp,
};
use crate::config::DatabaseConfig;
use crate::domain::account::{Car, User};
use crate::domain::audit::EventKind;
use crate::domain::rotation::{plan_rotation, RotationPlan, TokenState};
use crate::domain::throttle::{plan_login_attempt, LoginDecision, LoginPolicy, LoginStreak};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections that write. SQLite admits one writer at a time and makes
/// the others poll with growing sleeps (its busy handler, up to 100 ms
/// between tries): ten connections contending for the lock put a 450 ms
/// p99.9 on `refreshToken`. Writers wait their turn in this pool's fair
/// queue instead, and the busy handler is left for other processes on the
/// same file (BENCHMARKS.md, "refreshToken's tail").
const WRITER_CONNECTIONS: u32 = 1;

pub struct SqliteStore {
    /// Reads (WAL readers never wait for the writer).
    pool: SqlitePool,
    /// Every statement that writes, and every transaction.
    writer: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(config.url.trim())?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL: a power loss (not a crash) may lose the last commits
            // since the WAL was synced. Revocations and keys must not be
            // lost, so they are followed by a durability barrier
            // ([`make_durable`]); an fsync per commit everywhere would cost
            // a third of the refresh throughput (BENCHMARKS.md).
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let file = options.get_filename().to_path_buf();
        create_private(&file)?;
        let pool = SqlitePoolOptions::new()
            // A local file cannot go stale like a network connection; the
            // ping before each use cost a round trip to the connection's
            // worker thread on every query.
            .test_before_acquire(false)
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout);
        // Switching a new file to WAL takes an exclusive lock, and SQLite
        // answers a second process doing the same at that moment with
        // SQLITE_BUSY without waiting: retry briefly instead of failing.
        let mut attempt = 0;
        let pool = loop {
            match pool.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("5") && attempt < 50 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => {
                    anyhow::bail!("cannot open SQLite database {}: {e}", display(&file))
                }
            }
        };
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(WRITER_CONNECTIONS)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool, writer })
    }
}

/// Millisecond precision, as stored, so a value returned equals what a read returns.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Creates a missing database file (and folder) readable by its owner
/// only: it holds password hashes and the signing keys. SQLite gives its
/// `-wal` and `-shm` files the same permissions.
fn create_private(file: &Path) -> anyhow::Result<()> {
    if file.as_os_str().is_empty() || file == Path::new(":memory:") || file.exists() {
        return Ok(());
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(|e| {
                anyhow::anyhow!("cannot create database folder {}: {e}", dir.display())
            })?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        // Another process created it a moment ago: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => anyhow::bail!("cannot create database file {}: {e}", display(file)),
    }
}

super::account_store!(SqliteStore, SqliteConnection);
// SQLite: BEGIN IMMEDIATE lets one claim in at a time; no row locks.
super::mail_store!(SqliteStore, SqliteConnection, "");
// SQLite assigns an INTEGER PRIMARY KEY given NULL, and an AUTOINCREMENT
// table never reuses an id below one inserted explicitly.
super::transfer_store!(SqliteStore, Sqlite, "", "NULL", "NULL");

impl SqliteStore {
    /// A transaction that holds SQLite's write lock from its first
    /// statement (so reads inside it decide what it writes).
    /// No replica to tell housekeeping from other writes for.
    async fn housekeeping_writing(&self) -> Result<super::Writing<'_, Sqlite>, StoreError> {
        self.writing().await
    }

    async fn housekeeping_tx(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.write_tx().await
    }

    /// Reads that may lag on PostgreSQL's replica: here, the read pool.
    async fn lagging_read<T, F, Fut>(
        &self,
        read: F,
        _usable: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError>
    where
        F: Fn(SqlitePool) -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        Ok(read(self.pool.clone()).await?)
    }

    async fn writing(&self) -> Result<super::Writing<'_, Sqlite>, StoreError> {
        Ok(super::Writing::connection(
            self.writer.acquire().await?,
            None,
        ))
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Nothing to do: see the `transfer_store!` line above.
    async fn advance_ids(
        _tx: &mut SqliteConnection,
        _max_user_id: Option<i64>,
        _max_car_id: Option<i64>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// The barrier after revocations ([`make_durable`]).
    async fn durable(&self) -> Result<(), StoreError> {
        make_durable(&mut *self.writer.acquire().await?).await
    }
}

/// Whether the user exists. Inside [`SqliteStore::write_tx`] the whole
/// database is locked already.
async fn lock_user(tx: &mut SqliteConnection, user_id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(found.is_some())
}

/// Inserts a session and its first refresh token inside `tx`.
async fn insert_session(
    tx: &mut SqliteConnection,
    session: &NewSession,
    user_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, expires_at, last_used_at, user_agent, client_addr)
         VALUES ($1, $2, $3, $4, $3, $5, $6)",
    )
    .bind(&session.id)
    .bind(user_id)
    .bind(Timestamp(session.created_at))
    .bind(Timestamp(session.expires_at))
    .bind(&session.user_agent)
    .bind(&session.client_addr)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(&session.token_hash)
    .bind(&session.id)
    .bind(Timestamp(session.expires_at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Makes everything committed so far durable: one write committed with
/// `synchronous=FULL` fsyncs the WAL, which holds every earlier commit.
/// After revocations and key writes, so a power loss cannot bring back a
/// revoked session or take away a key that signed tokens.
async fn make_durable(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&mut *conn)
        .await?;
    let written = sqlx::query(
        "INSERT INTO settings (key, value) VALUES ('durable_at', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(Utc::now().timestamp_millis().to_string())
    .execute(&mut *conn)
    .await;
    // Left at FULL, the connection would only be slower.
    let reset = sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(&mut *conn)
        .await;
    written?;
    reset?;
    Ok(())
}

/// Runs the migrations inside one `BEGIN IMMEDIATE` transaction (see
/// [`Store::migrate`]). Every migration must be transactional for that: a
/// test keeps `-- no-transaction` ones out (PRAGMA foreign_keys, VACUUM and
/// the like would be ignored or fail inside it).
async fn migrate_locked(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    MIGRATOR.run_direct(None, &mut *tx, false).await?;
    tx.commit().await?;
    Ok(())
}

/// Appends one security event inside `tx`.
async fn insert_event(tx: &mut SqliteConnection, event: &SecurityEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO security_events (at, kind, user_id, client_addr, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Timestamp(event.at))
    .bind(event.kind.name())
    .bind(event.user_id)
    .bind(&event.client_addr)
    .bind(&event.detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes no lock on SQLite, so processes starting together on a
        // new file raced through the migrations (and a retry did not always
        // save the loser). All of them run inside one BEGIN IMMEDIATE
        // transaction instead: the write lock is SQLite's migration lock,
        // the others wait on busy_timeout and then find them applied.
        migrate_locked(&self.writer).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let inserted = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted > 0 {
            // Generated keys sign tokens at once: they must outlive a power loss.
            make_durable(&mut conn).await?;
        }
        let (stored,): (String,) = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(stored)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn taken(
        &self,
        username_key: Option<&str>,
        email_key: Option<&str>,
    ) -> Result<Taken, StoreError> {
        let (username, email): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM login_keys WHERE key = $1),
                    EXISTS (SELECT 1 FROM login_keys WHERE key = $2)",
        )
        .bind(username_key)
        .bind(email_key)
        .fetch_one(&self.pool)
        .await?;
        Ok(Taken { username, email })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn insert_user(&self, account: &NewAccount<'_>) -> Result<(User, Vec<Car>), StoreError> {
        let (user, now) = (account.user, account.now);
        let mut tx = self.writer.begin().await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO users (username, username_key, email, email_key, phone, name, surname,
                                second_name, password_hash, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.username_key)
        .bind(&user.email)
        .bind(&user.email_key)
        .bind(&user.phone)
        .bind(&user.name)
        .bind(&user.surname)
        .bind(&user.second_name)
        .bind(account.password_hash)
        .bind(Timestamp(now))
        .fetch_one(&mut *tx)
        .await?;
        let mut car_ids: Vec<(i64, i64)> = Vec::new();
        if !user.cars.is_empty() {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO cars (user_id, position, brand, model, year, color, license_plate, vin) ",
            );
            insert.push_values(user.cars.iter().enumerate(), |mut row, (position, car)| {
                row.push_bind(id)
                    .push_bind(position as i64)
                    .push_bind(&car.brand)
                    .push_bind(&car.model)
                    .push_bind(car.year)
                    .push_bind(&car.color)
                    .push_bind(&car.license_plate)
                    .push_bind(&car.vin);
            });
            insert.push(" RETURNING position, id");
            car_ids = insert.build_query_as().fetch_all(&mut *tx).await?;
        }
        for key in user.login_keys() {
            sqlx::query("INSERT INTO login_keys (key, user_id) VALUES ($1, $2)")
                .bind(key)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        insert_session(&mut tx, account.session, id).await?;
        insert_event(
            &mut tx,
            &SecurityEvent::of(
                EventKind::SignUp,
                now,
                id,
                &account.session.client_addr,
                None,
            ),
        )
        .await?;
        tx.commit().await?;
        let record = User {
            id,
            username: user.username.clone(),
            email: user.email.clone(),
            phone: user.phone.clone(),
            name: user.name.clone(),
            surname: user.surname.clone(),
            second_name: user.second_name.clone(),
            created_at: millis(now),
            updated_at: millis(now),
            avatar_hash: None,
            email_verified_at: None,
            email_changed_at: None,
            disabled_at: None,
        };
        Ok((record, cars_in_order(id, user, car_ids)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn credentials(&self, login_key: &str) -> Result<Option<Credentials>, StoreError> {
        let row: Option<CredentialsRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            ", u.password_hash FROM login_keys k JOIN users u ON u.id = k.user_id
             WHERE k.key = $1"
        ))
        .bind(login_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Credentials {
            user: r.user.into(),
            password_hash: r.password_hash,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_password_hash(&self, user_id: i64, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn session_user(
        &self,
        user_id: i64,
        session_id: &str,
        issued_at: DateTime<Utc>,
        with_cars: bool,
    ) -> Result<Option<(User, Option<Vec<Car>>)>, StoreError> {
        let sql = if with_cars {
            concat!(
                "SELECT ",
                user_columns!(),
                ", ",
                car_join_columns!(),
                " FROM users u JOIN sessions s ON s.user_id = u.id
             LEFT JOIN cars c ON c.user_id = u.id
             WHERE u.id = $1 AND s.id = $2 AND s.revoked_at IS NULL
               AND (u.tokens_valid_after IS NULL OR u.tokens_valid_after <= $3)
             ORDER BY c.position"
            )
        } else {
            concat!(
                "SELECT ",
                user_columns!(),
                ", ",
                no_car_columns!(),
                " FROM users u JOIN sessions s ON s.user_id = u.id
             WHERE u.id = $1 AND s.id = $2 AND s.revoked_at IS NULL
               AND (u.tokens_valid_after IS NULL OR u.tokens_valid_after <= $3)"
            )
        };
        let rows: Vec<UserWithCarRow> = sqlx::query_as(sql)
            .bind(user_id)
            .bind(session_id)
            .bind(Timestamp(issued_at))
            .fetch_all(&self.pool)
            .await?;
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else {
            return Ok(None);
        };
        let user: User = first.user.into();
        let cars = with_cars.then(|| {
            std::iter::once(first.car)
                .chain(rows.map(|r| r.car))
                .filter_map(|c| c.into_car(user.id))
                .collect()
        });
        Ok(Some((user, cars)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_user_sessions(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
        client_addr: &str,
    ) -> Result<u64, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE users SET tokens_valid_after = $1 WHERE id = $2")
            .bind(Timestamp(now))
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
        insert_event(
            &mut tx,
            &SecurityEvent::of(
                EventKind::SignOutEverywhere,
                now,
                user_id,
                client_addr,
                None,
            ),
        )
        .await?;
        tx.commit().await?;
        make_durable(&mut conn).await?;
        Ok(revoked)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn cars_of_users(&self, user_ids: &[i64]) -> Result<Vec<Car>, StoreError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT id, user_id, brand, model, year, color, license_plate, vin FROM cars WHERE user_id IN (",
        );
        let mut ids = query.separated(", ");
        for id in user_ids {
            ids.push_bind(*id);
        }
        query.push(") ORDER BY user_id, position");
        let rows: Vec<CarRow> = query.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Car::from).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        insert_session(&mut tx, session, session.user_id).await?;
        insert_event(
            &mut tx,
            &SecurityEvent::of(
                EventKind::SignIn,
                session.created_at,
                session.user_id,
                &session.client_addr,
                None,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rotate_refresh_token(&self, r: &Rotation) -> Result<RotationOutcome, StoreError> {
        let mut conn = self.writer.acquire().await?;
        // BEGIN IMMEDIATE takes the write lock before the read.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<TokenStateRow> = sqlx::query_as(token_state_query!())
            .bind(&r.presented_hash)
            .bind(&r.successor_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let state = row.map(TokenState::from);
        let plan = plan_rotation(state.as_ref(), r.now, &r.policy);
        let outcome = plan.outcome(state.as_ref());
        let Some(state) = state else {
            return Ok(outcome);
        };
        match plan {
            RotationPlan::Invalid | RotationPlan::Replay => {}
            RotationPlan::Rotate {
                successor_expires_at,
            } => {
                sqlx::query("UPDATE refresh_tokens SET consumed_at = $1 WHERE token_hash = $2")
                    .bind(Timestamp(r.now))
                    .bind(&r.presented_hash)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
                )
                .bind(&r.successor_hash)
                .bind(&state.session_id)
                .bind(Timestamp(successor_expires_at))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET expires_at = $1, last_used_at = $2, user_agent = $3,
                         client_addr = $4 WHERE id = $5",
                )
                .bind(Timestamp(successor_expires_at))
                .bind(Timestamp(r.now))
                .bind(&r.user_agent)
                .bind(&r.client_addr)
                .bind(&state.session_id)
                .execute(&mut *tx)
                .await?;
            }
            RotationPlan::RevokeFamily => {
                sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2")
                    .bind(Timestamp(r.now))
                    .bind(&state.session_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some((kind, user_id, detail)) = outcome.event() {
            insert_event(
                &mut tx,
                &SecurityEvent::of(kind, r.now, user_id, &r.client_addr, detail),
            )
            .await?;
        }
        tx.commit().await?;
        if plan == RotationPlan::RevokeFamily {
            make_durable(&mut conn).await?;
        }
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_family(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
        client_addr: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let user: Option<(i64,)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1)
             WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $2)
             RETURNING user_id",
        )
        .bind(Timestamp(now))
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((user_id,)) = user {
            insert_event(
                &mut tx,
                &SecurityEvent::of(EventKind::Revoke, now, user_id, client_addr, None),
            )
            .await?;
        }
        tx.commit().await?;
        make_durable(&mut conn).await?;
        Ok(user.map(|(id,)| id))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_hit(&self, key: &str, window_start: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO rate_limits (key, window_start, hits) VALUES ($1, $2, 1)
             ON CONFLICT (key) DO UPDATE SET
                 hits = CASE WHEN rate_limits.window_start = excluded.window_start
                             THEN rate_limits.hits + 1 ELSE 1 END,
                 window_start = excluded.window_start
             RETURNING hits",
        )
        .bind(key)
        .bind(Timestamp(window_start))
        .fetch_one(&self.writer)
        .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn reserve_login_attempt(
        &self,
        key: &str,
        now: DateTime<Utc>,
        policy: &LoginPolicy,
    ) -> Result<LoginDecision, StoreError> {
        // BEGIN IMMEDIATE takes the write lock first: no other attempt can
        // read the streak between this read and this write.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<StreakRow> = sqlx::query_as(
            "SELECT failures, blocked_until, updated_at FROM login_failures WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let stored = row.map(LoginStreak::from);
        let decision = plan_login_attempt(stored.as_ref(), now, policy);
        if let LoginDecision::Admit(streak) = decision {
            sqlx::query(
                "INSERT INTO login_failures (key, failures, blocked_until, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
                     blocked_until = excluded.blocked_until, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(streak.failures)
            .bind(streak.blocked_until.map(Timestamp))
            .bind(Timestamp(streak.updated_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_event(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        insert_event(&mut *self.writer.acquire().await?, event).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_refusal(&self, refusal: &Refusal) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO security_events (at, kind, client_addr, detail, aggregate_key)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (aggregate_key) DO UPDATE SET count = security_events.count + 1",
        )
        .bind(Timestamp(refusal.window_start))
        .bind(refusal.kind.name())
        .bind(&refusal.client_bucket)
        .bind(refusal.detail)
        .bind(refusal.aggregate_key())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn cleanup(&self, cutoffs: &CleanupCutoffs) -> Result<Cleanup, StoreError> {
        let CleanupCutoffs {
            now,
            revoked_before,
            stale_before,
            batch,
        } = *cutoffs;
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions
             WHERE expires_at < $1 OR revoked_at < $2 LIMIT $3)",
        )
        .bind(Timestamp(now))
        .bind(Timestamp(revoked_before))
        .bind(batch)
        .execute(&self.writer)
        .await?
        .rows_affected();
        let refresh_tokens = sqlx::query(
            "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash FROM refresh_tokens
             WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(Timestamp(now))
        .bind(batch)
        .execute(&self.writer)
        .await?
        .rows_affected();
        let counters = sqlx::query(
            "DELETE FROM rate_limits WHERE key IN (SELECT key FROM rate_limits WHERE window_start < $1 LIMIT $2)",
        )
        .bind(Timestamp(stale_before))
        .bind(batch)
        .execute(&self.writer)
        .await?
        .rows_affected()
            + sqlx::query(
                "DELETE FROM login_failures WHERE key IN (SELECT key FROM login_failures
                 WHERE updated_at < $1 AND (blocked_until IS NULL OR blocked_until < $2) LIMIT $3)",
            )
            .bind(Timestamp(stale_before))
            .bind(Timestamp(now))
            .bind(batch)
            .execute(&self.writer)
            .await?
            .rows_affected();
        // The cutoff is the trigger's own (database clock, stored
        // retention), a second younger, so no row of a batch is refused.
        let events = sqlx::query(
            "DELETE FROM security_events WHERE id IN (SELECT id FROM security_events
             WHERE at < CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - 1000
                 - MAX(86400000, (SELECT CAST(value AS INTEGER) FROM settings
                                  WHERE key = 'audit_retention_ms'))
             ORDER BY at LIMIT $1)",
        )
        .bind(batch)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(Cleanup {
            sessions,
            refresh_tokens,
            counters,
            events,
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, algorithm, material, created_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredKey::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, material, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(key.algorithm.name())
        .bind(&key.material)
        .bind(Timestamp(key.created_at))
        .execute(&mut *conn)
        .await?;
        make_durable(&mut conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_runs_inside_the_migration_lock() {
        assert!(super::MIGRATOR.iter().all(|m| !m.no_tx));
    }
}
