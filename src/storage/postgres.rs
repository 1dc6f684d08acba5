//! PostgreSQL, for many stateless instances sharing one database.
//!
//! Everything instances must agree on lives here: users, sessions and
//! refresh-token state, the generated keys. Migrations run under sqlx's
//! advisory lock, so instances starting together apply them once. A refresh
//! locks its session row (`FOR UPDATE`) before reading the token's state, so
//! two instances can never both rotate one token.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::rows::{
    token_state_query, CarRow, CredentialsRow, KeyRow, StreakRow, TokenStateRow, UserWithCarRow,
};
use super::{
    car_join_columns, cars_in_order, no_car_columns, user_columns, Cleanup, CleanupCutoffs,
    Credentials, NewAccount, NewSession, Refusal, Rotation, RotationOutcome, SecurityEvent,
    SessionId, Store, StoreError, StoredKey, Taken,
};
use crate::config::{DatabaseConfig, Pooler};
use crate::domain::account::{Car, User};
use crate::domain::audit::EventKind;
use crate::domain::rotation::{plan_rotation, RotationPlan, TokenState};
use crate::domain::throttle::{plan_login_attempt, LoginDecision, LoginPolicy, LoginStreak};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// No statement may hold a connection (and its locks) for longer than this.
macro_rules! statement_timeout {
    () => {
        "10s"
    };
}
const STATEMENT_TIMEOUT: &str = statement_timeout!();

/// How every transaction opens behind a transaction pooler. The statement
/// timeout is set for the transaction (a pooler refuses or drops the
/// startup option that sets it for a session), and the prepared statements
/// an earlier client left on the server connection the pooler lends are
/// dropped: sqlx names its statements per client connection (`sqlx_s_1`,
/// ...), so two of ours would otherwise meet on one server connection.
const POOLED_BEGIN: &str = concat!(
    "BEGIN; SET LOCAL statement_timeout = '",
    statement_timeout!(),
    "'; DEALLOCATE ALL"
);

pub struct PostgresStore {
    /// Reads. Behind a transaction pooler each use of a connection is one
    /// transaction ([`pin_to_server`]), so that a statement's two round
    /// trips (sqlx prepares, then binds and executes) reach one server
    /// connection.
    pool: PgPool,
    /// Explicit transactions and [`super::Writing`]: `pool` itself, or
    /// behind a transaction pooler a pool without `pool`'s hooks, whose
    /// transactions open with [`POOLED_BEGIN`].
    transactions: PgPool,
    pooler: Pooler,
    /// `AUTHQL_READ_DATABASE_URL`, for reads that may lag by the bound.
    replica: Option<super::replica::Replica>,
}

impl PostgresStore {
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let mut store = Self::connect_to(&config.url, config, false).await?;
        if let Some(url) = &config.read_url {
            // The replica's own pools (the same pooler mode), for reads
            // only, and connected on first use: an unreachable replica must
            // not keep the primary's reads from being served.
            let replica = Self::connect_to(url, config, true).await?;
            store.replica = Some(super::replica::Replica::start(
                replica.pool,
                store.pool.clone(),
                config.read_max_lag,
            ));
        }
        Ok(store)
    }

    async fn connect_to(url: &str, config: &DatabaseConfig, lazy: bool) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url.trim())?.application_name("authql");
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
        };
        let unreachable = |e| anyhow::anyhow!("cannot connect to PostgreSQL: {e}");
        match config.pooler {
            Pooler::None => {
                let options = options.options([("statement_timeout", STATEMENT_TIMEOUT)]);
                let pool = if lazy {
                    pool_options().connect_lazy_with(options)
                } else {
                    pool_options()
                        .connect_with(options)
                        .await
                        .map_err(unreachable)?
                };
                Ok(Self {
                    transactions: pool.clone(),
                    pool,
                    pooler: Pooler::None,
                    replica: None,
                })
            }
            Pooler::Transaction => {
                // Poolers refuse startup parameters they do not know, such
                // as sqlx's `extra_float_digits` (authql stores no floats);
                // the statement cache would keep names across transactions.
                let options = options.extra_float_digits(None).statement_cache_capacity(0);
                let pool = pool_options()
                    // The hook's BEGIN tests the connection: a dead one
                    // fails it and is replaced, without a ping's round trip.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| Box::pin(pin_to_server(conn)))
                    .before_acquire(|conn, _| {
                        Box::pin(async move { pin_to_server(conn).await.map(|()| true) })
                    })
                    .after_release(|conn, _| Box::pin(unpin(conn)))
                    .connect_lazy_with(options.clone());
                // The first connection, as sqlx's `connect_with` would make
                // it, but given back through `after_release`: `connect_with`
                // returns it without, leaving its transaction open.
                let transactions = if lazy {
                    pool_options().connect_lazy_with(options)
                } else {
                    drop(pool.acquire().await.map_err(unreachable)?);
                    pool_options()
                        .connect_with(options)
                        .await
                        .map_err(unreachable)?
                };
                Ok(Self {
                    pool,
                    transactions,
                    pooler: Pooler::Transaction,
                    replica: None,
                })
            }
        }
    }

    /// An explicit transaction.
    async fn begin(&self) -> Result<super::Tx<'_, Postgres>, StoreError> {
        Ok(super::Tx::new(self.open().await?, self.commits()))
    }

    async fn open(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        Ok(match self.pooler {
            Pooler::None => self.transactions.begin().await?,
            Pooler::Transaction => self.transactions.begin_with(POOLED_BEGIN).await?,
        })
    }

    async fn writing(&self) -> Result<super::Writing<'_, Postgres>, StoreError> {
        self.writing_counted(self.commits()).await
    }

    async fn writing_counted<'s>(
        &'s self,
        commits: Option<&'s std::sync::atomic::AtomicU64>,
    ) -> Result<super::Writing<'s, Postgres>, StoreError> {
        Ok(match self.pooler {
            Pooler::None => super::Writing::connection(self.pool.acquire().await?, commits),
            Pooler::Transaction => super::Writing::transaction(self.open().await?, commits),
        })
    }

    /// [`Self::begin`] and [`Self::writing`] for writes that change
    /// nothing a read that may lag returns (the mail outbox, expired rows,
    /// rate-limit counters, sign-in streaks, the audit trail): their commits
    /// do not keep this instance's reads on the primary
    /// ([`super::replica`]), which the mail worker's claims (every poll)
    /// and every request's counters would otherwise do for good.
    async fn housekeeping_tx(&self) -> Result<super::Tx<'_, Postgres>, StoreError> {
        Ok(super::Tx::new(self.open().await?, None))
    }

    async fn housekeeping_writing(&self) -> Result<super::Writing<'_, Postgres>, StoreError> {
        self.writing_counted(None).await
    }

    fn commits(&self) -> Option<&std::sync::atomic::AtomicU64> {
        self.replica.as_ref().map(|r| r.commits())
    }

    /// Runs a read that may lag (README, "Read replicas": `me`'s session
    /// check, session lists) on the replica while it is fresh, otherwise on
    /// the primary, which also takes the read when the replica fails it. A
    /// result `usable` refuses (a session the replica does not know yet) is
    /// read again on the primary.
    async fn lagging_read<T, F, Fut>(
        &self,
        read: F,
        usable: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError>
    where
        F: Fn(PgPool) -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        use super::replica::{Fallback, ReadFrom};
        if let Some(replica) = &self.replica {
            if replica.choose() == ReadFrom::Replica {
                match read(replica.pool.clone()).await {
                    Ok(value) if usable(&value) => {
                        replica.served();
                        return Ok(value);
                    }
                    Ok(_) => replica.count(Fallback::NotThere),
                    Err(e) => {
                        tracing::debug!(error = %e, "read replica failed a read; reading the primary");
                        replica.count(Fallback::ReadFailed);
                    }
                }
            }
        }
        Ok(read(self.pool.clone()).await?)
    }
}

/// Opens the transaction a use of a read connection runs in, behind a
/// transaction pooler: from here to [`unpin`] the pooler keeps this client
/// on one server connection.
async fn pin_to_server(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(POOLED_BEGIN).execute(conn).await.map(drop)
}

/// Ends [`pin_to_server`]'s transaction when the connection goes back to
/// the pool. Only reads ran in it (writes run in transactions of their
/// own, committed before they are acknowledged), so committing it and
/// rolling it back are the same; the statements it prepared are dropped
/// while the server connection is still this client's. After a failed
/// statement the transaction is aborted and refuses `DEALLOCATE`: it is
/// rolled back and its statements stay on the server connection until the
/// next [`POOLED_BEGIN`] there drops them. A connection that cannot end
/// its transaction is closed.
async fn unpin(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    if sqlx::raw_sql("DEALLOCATE ALL; COMMIT")
        .execute(&mut *conn)
        .await
        .is_ok()
    {
        return Ok(true);
    }
    Ok(sqlx::raw_sql("ROLLBACK").execute(conn).await.is_ok())
}

/// PostgreSQL keeps microseconds; what we return equals what a read returns.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

super::account_store!(PostgresStore, PgConnection);
// Instances claim different rows at once instead of waiting on each other.
super::mail_store!(PostgresStore, PgConnection, "FOR UPDATE SKIP LOCKED");
super::transfer_store!(
    PostgresStore,
    Postgres,
    " OVERRIDING SYSTEM VALUE",
    "nextval(pg_get_serial_sequence('users', 'id'))",
    "nextval(pg_get_serial_sequence('cars', 'id'))"
);

impl PostgresStore {
    async fn write_tx(&self) -> Result<super::Tx<'_, Postgres>, StoreError> {
        self.begin().await
    }

    /// Moves the identity sequences past ids a batch brings (an export's),
    /// before it inserts them, so a sign-up on a serving instance never
    /// draws one of them. The table lock (which inserts wait for, until the
    /// batch commits) makes the read and the move one step: no sign-up
    /// draws an id between them, so the sequence only moves forward.
    async fn advance_ids(
        tx: &mut PgConnection,
        max_user_id: Option<i64>,
        max_car_id: Option<i64>,
    ) -> Result<(), StoreError> {
        for (table, max) in [("users", max_user_id), ("cars", max_car_id)] {
            let Some(max) = max else { continue };
            let lock = match table {
                "users" => "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE",
                _ => "LOCK TABLE cars IN SHARE ROW EXCLUSIVE MODE",
            };
            sqlx::query(lock).execute(&mut *tx).await?;
            sqlx::query(
                "SELECT setval(s, $2) FROM (SELECT pg_get_serial_sequence($1, 'id')::regclass AS s) q
                 WHERE $2 > COALESCE(pg_sequence_last_value(s), 0)",
            )
            .bind(table)
            .bind(max)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Commits are durable on PostgreSQL already.
    async fn durable(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Locks the user's row until the transaction ends; whether it exists.
async fn lock_user(tx: &mut PgConnection, user_id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(found.is_some())
}

/// Inserts a session and its first refresh token inside `tx`.
async fn insert_session(
    tx: &mut PgConnection,
    session: &NewSession,
    user_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, expires_at, last_used_at, user_agent, client_addr)
         VALUES ($1, $2, $3, $4, $3, $5, $6)",
    )
    .bind(SessionId(session.id.clone()))
    .bind(user_id)
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(&session.user_agent)
    .bind(&session.client_addr)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(&session.token_hash)
    .bind(SessionId(session.id.clone()))
    .bind(session.expires_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Appends one security event inside `tx`.
async fn insert_event(tx: &mut PgConnection, event: &SecurityEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO security_events (at, kind, user_id, client_addr, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.at)
    .bind(event.kind.name())
    .bind(event.user_id)
    .bind(&event.client_addr)
    .bind(&event.detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let mut conn = self.writing().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await?;
        let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        conn.done().await?;
        Ok(stored)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut conn = self.writing().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await?;
        conn.done().await?;
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
        let (user, now) = (account.user, micros(account.now));
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
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
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut car_ids: Vec<(i64, i64)> = Vec::new();
        if !user.cars.is_empty() {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO cars (user_id, position, brand, model, year, color, license_plate, vin) ",
            );
            insert.push_values(user.cars.iter().enumerate(), |mut row, (position, car)| {
                row.push_bind(id)
                    .push_bind(i32::try_from(position).unwrap_or(i32::MAX))
                    .push_bind(&car.brand)
                    .push_bind(&car.model)
                    .push_bind(car.year)
                    .push_bind(&car.color)
                    .push_bind(&car.license_plate)
                    .push_bind(&car.vin);
            });
            insert.push(" RETURNING position::bigint, id");
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
            created_at: now,
            updated_at: now,
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
        let mut conn = self.writing().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        conn.done().await?;
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
        // Not a session id at all: no such session (as on SQLite).
        if uuid::Uuid::parse_str(session_id).is_err() {
            return Ok(None);
        }
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
        let rows: Vec<UserWithCarRow> = self
            .lagging_read(
                |pool| async move {
                    sqlx::query_as(sql)
                        .bind(user_id)
                        .bind(SessionId(session_id.to_owned()))
                        .bind(issued_at)
                        .fetch_all(&pool)
                        .await
                },
                |rows: &Vec<UserWithCarRow>| !rows.is_empty(),
            )
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
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET tokens_valid_after = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
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
        Ok(revoked)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn cars_of_users(&self, user_ids: &[i64]) -> Result<Vec<Car>, StoreError> {
        let rows: Vec<CarRow> = sqlx::query_as(
            "SELECT id, user_id, brand, model, year, color, license_plate, vin FROM cars
             WHERE user_id = ANY($1) ORDER BY user_id, position",
        )
        .bind(user_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Car::from).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        let session_id: Option<SessionId> =
            sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(&r.presented_hash)
                .fetch_optional(&mut *tx)
                .await?;
        // Lock the family first, then read the token's state afresh: a
        // concurrent rotation of the same token waits here and then sees it
        // consumed.
        let state: Option<TokenState> = match session_id {
            None => None,
            Some(session_id) => {
                sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                let row: TokenStateRow = sqlx::query_as(token_state_query!())
                    .bind(&r.presented_hash)
                    .bind(&r.successor_hash)
                    .fetch_one(&mut *tx)
                    .await?;
                Some(row.into())
            }
        };
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
                    .bind(r.now)
                    .bind(&r.presented_hash)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
                     VALUES ($1, $2, $3)",
                )
                .bind(&r.successor_hash)
                .bind(SessionId(state.session_id.clone()))
                .bind(successor_expires_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET expires_at = $1, last_used_at = $2, user_agent = $3,
                         client_addr = $4 WHERE id = $5",
                )
                .bind(successor_expires_at)
                .bind(r.now)
                .bind(&r.user_agent)
                .bind(&r.client_addr)
                .bind(SessionId(state.session_id.clone()))
                .execute(&mut *tx)
                .await?;
            }
            RotationPlan::RevokeFamily => {
                sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2")
                    .bind(r.now)
                    .bind(SessionId(state.session_id.clone()))
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
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_family(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
        client_addr: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin().await?;
        let user_id: Option<i64> = sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1)
             WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $2)
             RETURNING user_id",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(user_id) = user_id {
            insert_event(
                &mut tx,
                &SecurityEvent::of(EventKind::Revoke, now, user_id, client_addr, None),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(user_id)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_hit(&self, key: &str, window_start: DateTime<Utc>) -> Result<i64, StoreError> {
        let mut conn = self.housekeeping_writing().await?;
        let hits: i64 = sqlx::query_scalar(
            "INSERT INTO rate_limits (key, window_start, hits) VALUES ($1, $2, 1)
             ON CONFLICT (key) DO UPDATE SET
                 hits = CASE WHEN rate_limits.window_start = excluded.window_start
                             THEN rate_limits.hits + 1 ELSE 1 END,
                 window_start = excluded.window_start
             RETURNING hits::bigint",
        )
        .bind(key)
        .bind(window_start)
        .fetch_one(&mut *conn)
        .await?;
        conn.done().await?;
        Ok(hits)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn reserve_login_attempt(
        &self,
        key: &str,
        now: DateTime<Utc>,
        policy: &LoginPolicy,
    ) -> Result<LoginDecision, StoreError> {
        // One statement creates the row if needed and locks it: concurrent
        // attempts (first ones included) queue here, and nothing can delete
        // the row between finding and locking it.
        let mut tx = self.housekeeping_tx().await?;
        let stored: LoginStreak = sqlx::query_as::<_, StreakRow>(
            "INSERT INTO login_failures (key, failures, updated_at) VALUES ($1, 0, $2)
             ON CONFLICT (key) DO UPDATE SET key = excluded.key
             RETURNING failures::bigint AS failures, blocked_until, updated_at",
        )
        .bind(key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .into();
        let decision = plan_login_attempt(Some(&stored), now, policy);
        if let LoginDecision::Admit(streak) = decision {
            sqlx::query(
                "UPDATE login_failures SET failures = $2, blocked_until = $3, updated_at = $4
                 WHERE key = $1",
            )
            .bind(key)
            .bind(streak.failures)
            .bind(streak.blocked_until)
            .bind(streak.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.housekeeping_writing().await?;
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&mut *conn)
            .await?;
        conn.done().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_event(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        let mut conn = self.housekeeping_writing().await?;
        sqlx::query(
            "INSERT INTO security_events (at, kind, user_id, client_addr, detail)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.at)
        .bind(event.kind.name())
        .bind(event.user_id)
        .bind(&event.client_addr)
        .bind(&event.detail)
        .execute(&mut *conn)
        .await?;
        conn.done().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_refusal(&self, refusal: &Refusal) -> Result<(), StoreError> {
        let mut conn = self.housekeeping_writing().await?;
        sqlx::query(
            "INSERT INTO security_events (at, kind, client_addr, detail, aggregate_key)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (aggregate_key) DO UPDATE SET count = security_events.count + 1",
        )
        .bind(refusal.window_start)
        .bind(refusal.kind.name())
        .bind(&refusal.client_bucket)
        .bind(refusal.detail)
        .bind(refusal.aggregate_key())
        .execute(&mut *conn)
        .await?;
        conn.done().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn cleanup(&self, cutoffs: &CleanupCutoffs) -> Result<Cleanup, StoreError> {
        let mut conn = self.housekeeping_writing().await?;
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
        .bind(now)
        .bind(revoked_before)
        .bind(batch)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let refresh_tokens = sqlx::query(
            "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash FROM refresh_tokens
             WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(now)
        .bind(batch)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let counters = sqlx::query(
            "DELETE FROM rate_limits WHERE key IN (SELECT key FROM rate_limits WHERE window_start < $1 LIMIT $2)",
        )
        .bind(stale_before)
        .bind(batch)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            + sqlx::query(
                "DELETE FROM login_failures WHERE key IN (SELECT key FROM login_failures
                 WHERE updated_at < $1 AND (blocked_until IS NULL OR blocked_until < $2) LIMIT $3)",
            )
            .bind(stale_before)
            .bind(now)
            .bind(batch)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        // The cutoff is the trigger's own (database clock, stored
        // retention), a second younger, so no row of a batch is refused.
        let events = sqlx::query(
            "DELETE FROM security_events WHERE id IN (SELECT id FROM security_events
             WHERE at < now() - interval '1 second' - GREATEST(86400000,
                   (SELECT value::bigint FROM settings WHERE key = 'audit_retention_ms'))
                   * interval '1 millisecond'
             ORDER BY at LIMIT $1)",
        )
        .bind(batch)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        conn.done().await?;
        Ok(Cleanup {
            sessions,
            refresh_tokens,
            counters,
            events,
        })
    }

    fn replica_stats(&self) -> Option<super::replica::ReplicaStats> {
        self.replica.as_ref().map(|r| r.stats())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        // From the primary, not the replica: an instance that reloads after
        // meeting an unknown key id must find the key another instance has
        // just begun to sign with.
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, algorithm, material, created_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredKey::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut conn = self.writing().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, material, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(key.algorithm.name())
        .bind(&key.material)
        .bind(key.created_at)
        .execute(&mut *conn)
        .await?;
        conn.done().await?;
        Ok(())
    }
}
