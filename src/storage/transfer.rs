//! Storage for `authql import` and `authql export`: look-ups of what a batch
//! would conflict with, one transaction per batch, and pages of users in id
//! order. The SQL is written once ([`transfer_store!`]) and expanded per
//! backend with the few fragments that differ.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::account::{Car, User};
use crate::domain::import::{Existing, ImportedUser};

/// A user as `authql export` writes them: the stored hash and every car.
#[derive(Debug, Clone)]
pub struct ExportedUser {
    pub user: User,
    pub password_hash: String,
    pub cars: Vec<Car>,
}

#[async_trait]
pub trait TransferStore {
    /// Which of these login keys, user ids and car ids are taken.
    async fn existing(
        &self,
        login_keys: &[String],
        user_ids: &[i64],
        car_ids: &[i64],
    ) -> Result<Existing, StoreError>;
    /// Writes the users, their login keys and cars in one transaction, made
    /// durable before it returns; nothing of it when any insert fails.
    /// [`StoreError::Conflict`] when a unique key was taken meanwhile (a
    /// sign-up on a serving instance). Returns the users' ids in order.
    async fn import_users(&self, users: &[&ImportedUser]) -> Result<Vec<i64>, StoreError>;
    /// Up to `limit` users with ids above `after`, in id order.
    async fn export_users(&self, after: i64, limit: i64) -> Result<Vec<ExportedUser>, StoreError>;
    /// Users in all, for the progress display.
    async fn count_users(&self) -> Result<i64, StoreError>;
}

/// The row `export_users` reads.
#[derive(sqlx::FromRow)]
pub(crate) struct ExportRow {
    #[sqlx(flatten)]
    pub user: super::rows::UserRow,
    pub password_hash: String,
}

/// Implements [`TransferStore`] for `$store` (database `$db`). `$overriding` lets an insert name its own id (PostgreSQL's
/// identity columns refuse one otherwise); `$next_user_id` and
/// `$next_car_id` give the id when the record has none.
macro_rules! transfer_store {
    ($store:ty, $db:ty, $overriding:literal, $next_user_id:literal, $next_car_id:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::transfer::TransferStore for $store {
            #[tracing::instrument(level = "debug", skip_all)]
            async fn existing(
                &self,
                login_keys: &[String],
                user_ids: &[i64],
                car_ids: &[i64],
            ) -> Result<$crate::domain::import::Existing, $crate::storage::StoreError> {
                let mut existing = $crate::domain::import::Existing::default();
                if !login_keys.is_empty() {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "SELECT k.key, u.username_key, u.email_key, u.created_at
                         FROM login_keys k JOIN users u ON u.id = k.user_id WHERE k.key IN (",
                    );
                    let mut list = query.separated(", ");
                    for key in login_keys {
                        list.push_bind(key);
                    }
                    query.push(")");
                    let owners: Vec<(String, String, Option<String>, $crate::storage::Timestamp)> =
                        query.build_query_as().fetch_all(&self.pool).await?;
                    existing.login_keys.extend(owners.into_iter().map(
                        |(key, username_key, email_key, created_at)| {
                            let owner = $crate::domain::import::Owner {
                                username_key,
                                email_key,
                                created_at: created_at.0,
                            };
                            (key, owner)
                        },
                    ));
                }
                for (table, ids, into) in [
                    ("users", user_ids, &mut existing.user_ids),
                    ("cars", car_ids, &mut existing.car_ids),
                ] {
                    if ids.is_empty() {
                        continue;
                    }
                    let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id FROM ");
                    query.push(table).push(" WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in ids {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    let found: Vec<i64> = query.build_query_scalar().fetch_all(&self.pool).await?;
                    into.extend(found);
                }
                Ok(existing)
            }

            #[tracing::instrument(level = "debug", skip_all, fields(users = users.len()))]
            async fn import_users(
                &self,
                users: &[&$crate::domain::import::ImportedUser],
            ) -> Result<Vec<i64>, $crate::storage::StoreError> {
                use $crate::storage::Timestamp;
                let mut tx = self.write_tx().await?;
                let max = |ids: &mut dyn Iterator<Item = i64>| ids.max();
                Self::advance_ids(
                    &mut *tx,
                    max(&mut users.iter().filter_map(|u| u.id)),
                    max(&mut users.iter().flat_map(|u| u.car_ids.iter().flatten().copied())),
                )
                .await?;
                let mut ids = Vec::with_capacity(users.len());
                for imported in users {
                    let user = &imported.user;
                    let id: i64 = sqlx::query_scalar(concat!(
                        "INSERT INTO users (id, username, username_key, email, email_key, phone,
                             name, surname, second_name, password_hash, created_at, updated_at,
                             email_verified_at, email_changed_at, disabled_at)",
                        $overriding,
                        " VALUES (COALESCE($1, ",
                        $next_user_id,
                        "), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                         RETURNING id"
                    ))
                    .bind(imported.id)
                    .bind(&user.username)
                    .bind(&user.username_key)
                    .bind(&user.email)
                    .bind(&user.email_key)
                    .bind(&user.phone)
                    .bind(&user.name)
                    .bind(&user.surname)
                    .bind(&user.second_name)
                    .bind(&imported.password_hash)
                    .bind(Timestamp(imported.created_at))
                    .bind(Timestamp(imported.updated_at))
                    .bind(imported.email_verified_at.map(Timestamp))
                    .bind(imported.email_changed_at.map(Timestamp))
                    .bind(imported.disabled_at.map(Timestamp))
                    .fetch_one(&mut *tx)
                    .await?;
                    for key in user.login_keys() {
                        sqlx::query("INSERT INTO login_keys (key, user_id) VALUES ($1, $2)")
                            .bind(key)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for (position, (car, car_id)) in
                        user.cars.iter().zip(&imported.car_ids).enumerate()
                    {
                        sqlx::query(concat!(
                            "INSERT INTO cars (id, user_id, position, brand, model, year, color,
                                 license_plate, vin)",
                            $overriding,
                            " VALUES (COALESCE($1, ",
                            $next_car_id,
                            "), $2, $3, $4, $5, $6, $7, $8, $9)"
                        ))
                        .bind(*car_id)
                        .bind(id)
                        .bind(i32::try_from(position).unwrap_or(i32::MAX))
                        .bind(&car.brand)
                        .bind(&car.model)
                        .bind(car.year)
                        .bind(&car.color)
                        .bind(&car.license_plate)
                        .bind(&car.vin)
                        .execute(&mut *tx)
                        .await?;
                    }
                    ids.push(id);
                }
                tx.commit().await?;
                self.durable().await?;
                Ok(ids)
            }

            #[tracing::instrument(level = "debug", skip_all)]
            async fn export_users(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::storage::transfer::ExportedUser>, $crate::storage::StoreError>
            {
                let rows: Vec<$crate::storage::transfer::ExportRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::user_columns!(),
                    ", u.password_hash FROM users u WHERE u.id > $1 ORDER BY u.id LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let ids: Vec<i64> = rows.iter().map(|r| r.user.id()).collect();
                let mut cars = $crate::storage::Store::cars_of_users(self, &ids)
                    .await?
                    .into_iter()
                    .peekable();
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let user: $crate::domain::account::User = row.user.into();
                        let mut own = Vec::new();
                        while let Some(car) = cars.next_if(|c| c.user_id == user.id) {
                            own.push(car);
                        }
                        $crate::storage::transfer::ExportedUser {
                            user,
                            password_hash: row.password_hash,
                            cars: own,
                        }
                    })
                    .collect())
            }

            async fn count_users(&self) -> Result<i64, $crate::storage::StoreError> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await?)
            }
        }
    };
}
pub(crate) use transfer_store;
