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
                if users.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.write_tx().await?;
                let max = |ids: &mut dyn Iterator<Item = i64>| ids.max();
                Self::advance_ids(
                    &mut *tx,
                    max(&mut users.iter().filter_map(|u| u.id)),
                    max(&mut users.iter().flat_map(|u| u.car_ids.iter().flatten().copied())),
                )
                .await?;
                // Multi-row inserts: three round trips a batch, not three a
                // user. The ids come back by username key (RETURNING
                // promises no order).
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO users (id, username, username_key, email, email_key, phone,
                         name, surname, second_name, password_hash, created_at, updated_at,
                         email_verified_at, email_changed_at, disabled_at)",
                );
                insert.push($overriding).push(" ");
                insert.push_values(users, |mut row, imported| {
                    let user = &imported.user;
                    row.push("COALESCE(")
                        .push_bind_unseparated(imported.id)
                        .push_unseparated(concat!(", ", $next_user_id, ")"))
                        .push_bind(&user.username)
                        .push_bind(&user.username_key)
                        .push_bind(&user.email)
                        .push_bind(&user.email_key)
                        .push_bind(&user.phone)
                        .push_bind(&user.name)
                        .push_bind(&user.surname)
                        .push_bind(&user.second_name)
                        .push_bind(&imported.password_hash)
                        .push_bind(Timestamp(imported.created_at))
                        .push_bind(Timestamp(imported.updated_at))
                        .push_bind(imported.email_verified_at.map(Timestamp))
                        .push_bind(imported.email_changed_at.map(Timestamp))
                        .push_bind(imported.disabled_at.map(Timestamp));
                });
                insert.push(" RETURNING username_key, id");
                let returned: std::collections::HashMap<String, i64> = insert
                    .build_query_as::<(String, i64)>()
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
                let ids = users
                    .iter()
                    .map(|u| {
                        returned.get(&u.user.username_key).copied().ok_or_else(|| {
                            $crate::storage::StoreError::Corrupt("an imported user has no id".into())
                        })
                    })
                    .collect::<Result<Vec<i64>, _>>()?;
                let keys: Vec<(&str, i64)> = users
                    .iter()
                    .zip(&ids)
                    .flat_map(|(u, id)| u.user.login_keys().into_iter().map(move |k| (k, *id)))
                    .collect();
                let mut insert =
                    sqlx::QueryBuilder::<$db>::new("INSERT INTO login_keys (key, user_id) ");
                insert.push_values(&keys, |mut row, (key, id)| {
                    row.push_bind(*key).push_bind(*id);
                });
                insert.build().execute(&mut *tx).await?;
                let cars: Vec<_> = users
                    .iter()
                    .zip(&ids)
                    .flat_map(|(u, id)| {
                        u.user.cars.iter().zip(&u.car_ids).enumerate().map(move |(position, (car, car_id))| {
                            (*id, i32::try_from(position).unwrap_or(i32::MAX), car, *car_id)
                        })
                    })
                    .collect();
                // Nine parameters a car: well inside both backends' limits.
                for chunk in cars.chunks(1000) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO cars (id, user_id, position, brand, model, year, color,
                             license_plate, vin)",
                    );
                    insert.push($overriding).push(" ");
                    insert.push_values(chunk, |mut row, (user_id, position, car, car_id)| {
                        row.push("COALESCE(")
                            .push_bind_unseparated(*car_id)
                            .push_unseparated(concat!(", ", $next_car_id, ")"))
                            .push_bind(*user_id)
                            .push_bind(*position)
                            .push_bind(&car.brand)
                            .push_bind(&car.model)
                            .push_bind(car.year)
                            .push_bind(&car.color)
                            .push_bind(&car.license_plate)
                            .push_bind(&car.vin);
                    });
                    insert.build().execute(&mut *tx).await?;
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

            #[tracing::instrument(level = "debug", skip_all)]
            async fn count_users(&self) -> Result<i64, $crate::storage::StoreError> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await?)
            }
        }
    };
}
pub(crate) use transfer_store;
