//! Rows as both backends read them: one definition each, thanks to the
//! column types of [`super::types`] that decode on either database.

use sqlx::FromRow;

use super::types::{SessionId, Timestamp};
use super::{StoreError, StoredKey};
use crate::config::JwtAlgorithm;
use crate::domain::account::{Car, Session, User};
use crate::domain::profile::StoredProfile;
use crate::domain::rotation::TokenState;
use crate::domain::throttle::LoginStreak;

/// The user columns of `users u` (see [`super::user_columns`]).
#[derive(FromRow)]
pub(crate) struct UserRow {
    id: i64,
    username: String,
    email: Option<String>,
    phone: Option<String>,
    name: Option<String>,
    surname: Option<String>,
    second_name: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    avatar_hash: Option<String>,
    email_verified_at: Option<Timestamp>,
    email_changed_at: Option<Timestamp>,
    disabled_at: Option<Timestamp>,
}

impl UserRow {
    pub(crate) fn id(&self) -> i64 {
        self.id
    }
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            username: r.username,
            email: r.email,
            phone: r.phone,
            name: r.name,
            surname: r.surname,
            second_name: r.second_name,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            avatar_hash: r.avatar_hash,
            email_verified_at: r.email_verified_at.map(|t| t.0),
            email_changed_at: r.email_changed_at.map(|t| t.0),
            disabled_at: r.disabled_at.map(|t| t.0),
        }
    }
}

/// One row of a user joined with their cars (car columns NULL when none,
/// or when no cars were asked for).
#[derive(FromRow)]
pub(crate) struct UserWithCarRow {
    #[sqlx(flatten)]
    pub user: UserRow,
    #[sqlx(flatten)]
    pub car: CarColumns,
}

/// A user with the keys their logins are matched on.
#[derive(FromRow)]
pub(crate) struct ProfileRow {
    #[sqlx(flatten)]
    user: UserRow,
    username_key: String,
    email_key: Option<String>,
}

impl From<ProfileRow> for StoredProfile {
    fn from(r: ProfileRow) -> Self {
        StoredProfile {
            user: r.user.into(),
            username_key: r.username_key,
            email_key: r.email_key,
        }
    }
}

/// A row of `sessions` as its owner sees it.
#[derive(FromRow)]
pub(crate) struct SessionRow {
    id: SessionId,
    created_at: Timestamp,
    last_used_at: Timestamp,
    user_agent: Option<String>,
    client_addr: Option<String>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: r.id.0,
            created_at: r.created_at.0,
            last_used_at: r.last_used_at.0,
            user_agent: r.user_agent,
            client_addr: r.client_addr,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct CredentialsRow {
    #[sqlx(flatten)]
    pub user: UserRow,
    pub password_hash: String,
}

/// The car columns of a `LEFT JOIN cars c` (see [`super::car_join_columns`]).
#[derive(Debug, FromRow)]
pub(crate) struct CarColumns {
    car_id: Option<i64>,
    brand: Option<String>,
    model: Option<String>,
    year: Option<i32>,
    color: Option<String>,
    license_plate: Option<String>,
    vin: Option<String>,
}

impl CarColumns {
    pub(crate) fn into_car(self, user_id: i64) -> Option<Car> {
        Some(Car {
            id: self.car_id?,
            user_id,
            brand: self.brand?,
            model: self.model?,
            year: self.year,
            color: self.color,
            license_plate: self.license_plate,
            vin: self.vin,
        })
    }
}

/// A row of `cars`.
#[derive(Debug, FromRow)]
pub(crate) struct CarRow {
    id: i64,
    user_id: i64,
    brand: String,
    model: String,
    year: Option<i32>,
    color: Option<String>,
    license_plate: Option<String>,
    vin: Option<String>,
}

impl From<CarRow> for Car {
    fn from(r: CarRow) -> Self {
        Car {
            id: r.id,
            user_id: r.user_id,
            brand: r.brand,
            model: r.model,
            year: r.year,
            color: r.color,
            license_plate: r.license_plate,
            vin: r.vin,
        }
    }
}

/// What a rotation reads of the presented token and its session.
#[derive(FromRow)]
pub(crate) struct TokenStateRow {
    session_id: SessionId,
    user_id: i64,
    session_created_at: Timestamp,
    session_revoked: bool,
    expires_at: Timestamp,
    consumed_at: Option<Timestamp>,
    successor_unused: bool,
}

impl From<TokenStateRow> for TokenState {
    fn from(r: TokenStateRow) -> Self {
        TokenState {
            user_id: r.user_id,
            session_id: r.session_id.0,
            session_created_at: r.session_created_at.0,
            session_revoked: r.session_revoked,
            expires_at: r.expires_at.0,
            consumed_at: r.consumed_at.map(|t| t.0),
            successor_unused: r.successor_unused,
        }
    }
}

/// The columns both backends select for [`TokenStateRow`], with the
/// presented token's hash as `$1` and its successor's as `$2`.
macro_rules! token_state_query {
    () => {
        "SELECT t.session_id, s.user_id, s.created_at AS session_created_at,
                s.revoked_at IS NOT NULL AS session_revoked, t.expires_at, t.consumed_at,
                EXISTS (SELECT 1 FROM refresh_tokens n WHERE n.token_hash = $2
                        AND n.session_id = t.session_id AND n.consumed_at IS NULL)
                    AS successor_unused
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
         WHERE t.token_hash = $1"
    };
}
pub(crate) use token_state_query;

/// A row of `login_failures` (PostgreSQL keeps the count as INTEGER and
/// casts it, so instances of different versions can share a database).
#[derive(FromRow)]
pub(crate) struct StreakRow {
    failures: i64,
    blocked_until: Option<Timestamp>,
    updated_at: Timestamp,
}

impl From<StreakRow> for LoginStreak {
    fn from(r: StreakRow) -> Self {
        LoginStreak {
            failures: r.failures,
            blocked_until: r.blocked_until.map(|t| t.0),
            updated_at: r.updated_at.0,
        }
    }
}

/// A row of `signing_keys`.
#[derive(FromRow)]
pub(crate) struct KeyRow {
    kid: String,
    algorithm: String,
    material: String,
    created_at: Timestamp,
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = StoreError;
    fn try_from(r: KeyRow) -> Result<Self, StoreError> {
        Ok(StoredKey {
            algorithm: JwtAlgorithm::from_name(&r.algorithm).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "key {} has an unknown algorithm {:?}",
                    r.kid, r.algorithm
                ))
            })?,
            kid: r.kid,
            material: r.material,
            created_at: r.created_at.0,
        })
    }
}
