//! GraphQL object and input types, and their conversion from and to the
//! service's types.

use super::request_data;
use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions as _, InputObject, InputValueError,
    InputValueResult, MaybeUndefined, Result, Scalar, ScalarType, SimpleObject, Value, ID,
};
use chrono::{SecondsFormat, Utc};
use std::sync::Arc;

use super::loaders::Loaders;
use crate::domain::account;
use crate::domain::profile::{Change, ProfileForm};
use crate::domain::{CarForm, Password, SignUpForm};
use crate::service::{AccountService, SignedIn};

/// An RFC 3339 timestamp in UTC, e.g. "2026-11-22T01:17:51Z".
pub struct DateTime(pub chrono::DateTime<Utc>);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| DateTime(t.with_timezone(&Utc)))
                .map_err(|_| InputValueError::custom("expected an RFC 3339 timestamp")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

/// A registered user.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct User {
    /// Stable, opaque identifier (also the `sub` claim of access tokens).
    pub id: ID,
    /// As registered; matched case-insensitively.
    pub username: String,
    /// Trimmed, domain lower-cased.
    pub email: Option<String>,
    /// E.164, e.g. "+79991234567".
    pub phone: Option<String>,
    /// Given name.
    pub name: Option<String>,
    /// Family name.
    pub surname: Option<String>,
    /// Patronymic or middle name.
    pub second_name: Option<String>,
    /// When the user signed up.
    pub created_at: DateTime,
    /// The last change of profile, cars, password or avatar.
    pub updated_at: DateTime,
    /// Whether the user proved the e-mail is theirs (followed the link of
    /// a verification or e-mail change mail). False without an e-mail.
    pub email_verified: bool,
    #[graphql(skip)]
    pub key: i64,
    /// Cars read together with the user; otherwise the DataLoader fetches them.
    #[graphql(skip)]
    pub cars: Option<Vec<Car>>,
    #[graphql(skip)]
    pub avatar_hash: Option<String>,
    /// The session this response is for (`Session.current`).
    #[graphql(skip)]
    pub session_id: Option<String>,
}

/// Which copy of an avatar.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::domain::avatar::AvatarSize")]
pub enum AvatarSize {
    /// 256x256, cropped to fill.
    Small,
    /// The whole picture, at most 1024 pixels a side.
    Original,
}

/// Where avatars are served (`AUTHQL_PUBLIC_URL`; empty: relative URLs).
pub struct AvatarBase(pub String);

/// A signed-in session: one device or browser, from sign-in to sign-out.
#[derive(SimpleObject)]
pub struct Session {
    pub id: ID,
    /// Sign-in (or sign-up).
    pub created_at: DateTime,
    /// Sign-in or the last refresh.
    pub last_used_at: DateTime,
    /// As the client sent it then, cut at 256 characters.
    pub user_agent: Option<String>,
    /// The client address as the rate limits saw it then.
    pub client_address: Option<String>,
    /// Whether this is the session of the token the request came with.
    pub current: bool,
}

#[ComplexObject]
impl User {
    /// The avatar's URL (relative, unless `AUTHQL_PUBLIC_URL` is set), or
    /// null without one. The URL names this version: it changes with every
    /// upload and may be cached for ever.
    async fn avatar_url(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "AvatarSize::Small")] size: AvatarSize,
    ) -> Result<Option<String>> {
        let Some(hash) = &self.avatar_hash else {
            return Ok(None);
        };
        let base = &request_data::<AvatarBase>(ctx)?.0;
        let query = match size {
            AvatarSize::Small => "",
            AvatarSize::Original => "?size=original",
        };
        Ok(Some(format!("{base}/avatars/{}-{hash}{query}", self.key)))
    }

    /// Where the user is signed in: every live session, most recently used first.
    async fn sessions(&self, ctx: &Context<'_>) -> Result<Vec<Session>> {
        let accounts = request_data::<Arc<AccountService>>(ctx)?;
        let sessions = accounts
            .sessions_of(self.key)
            .await
            .map_err(|e| e.extend())?;
        Ok(sessions
            .into_iter()
            .map(|s| Session {
                current: self.session_id.as_deref() == Some(s.id.as_str()),
                id: ID(s.id),
                created_at: DateTime(s.created_at),
                last_used_at: DateTime(s.last_used_at),
                user_agent: s.user_agent,
                client_address: s.client_addr,
            })
            .collect())
    }

    /// The user's cars, in the order they were registered.
    async fn cars(&self, ctx: &Context<'_>) -> Result<Vec<Car>> {
        if let Some(cars) = &self.cars {
            return Ok(cars.clone());
        }
        let loaders = request_data::<Loaders>(ctx)?;
        let cars = loaders.cars().load_one(self.key).await?.unwrap_or_default();
        Ok(cars.into_iter().map(Car::from).collect())
    }
}

impl User {
    /// The user, with their cars when they were read with it, as seen from
    /// `session_id` (the session of this response).
    pub fn new(
        u: account::User,
        cars: Option<Vec<account::Car>>,
        session_id: Option<String>,
    ) -> Self {
        let email_verified = u.email.is_some() && u.email_verified_at.is_some();
        User {
            id: ID(u.id.to_string()),
            username: u.username,
            email: u.email,
            phone: u.phone,
            name: u.name,
            surname: u.surname,
            second_name: u.second_name,
            created_at: DateTime(u.created_at),
            updated_at: DateTime(u.updated_at),
            email_verified,
            key: u.id,
            cars: cars.map(|cars| cars.into_iter().map(Car::from).collect()),
            avatar_hash: u.avatar_hash,
            session_id,
        }
    }
}

/// A car registered by a user.
#[derive(SimpleObject, Clone)]
pub struct Car {
    pub id: ID,
    pub brand: String,
    pub model: String,
    pub year: Option<i32>,
    pub color: Option<String>,
    pub license_plate: Option<String>,
    /// Upper-cased ISO 3779 vehicle identification number.
    pub vin: Option<String>,
}

impl From<account::Car> for Car {
    fn from(c: account::Car) -> Self {
        Car {
            id: ID(c.id.to_string()),
            brand: c.brand,
            model: c.model,
            year: c.year,
            color: c.color,
            license_plate: c.license_plate,
            vin: c.vin,
        }
    }
}

/// A signed-in session: a short-lived access token and a rotating refresh token.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// JWT to send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Opaque; exchange it with `refreshToken` for a new pair. Single use.
    pub refresh_token: String,
    /// Always "Bearer".
    pub token_type: String,
    /// Seconds until `accessToken` expires.
    pub expires_in: i32,
    pub user: User,
}

impl From<SignedIn> for AuthPayload {
    fn from(s: SignedIn) -> Self {
        AuthPayload {
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in: i32::try_from(s.expires_in.as_secs()).unwrap_or(i32::MAX),
            user: User::new(s.user, s.cars, Some(s.session_id)),
        }
    }
}

/// Everything needed to register. Every broken rule is reported at once in
/// `extensions.fields` of a VALIDATION error.
#[derive(InputObject)]
pub struct SignUpInput {
    /// 3-150 letters, digits and . @ + - _; unique case-insensitively.
    pub username: String,
    /// 8-256 characters, not a common password, not like the username, e-mail or name.
    pub password: String,
    pub email: Option<String>,
    /// E.164 (`+79991234567`), or national format in the server's phone region.
    pub phone: Option<String>,
    /// Given name ("Имя").
    pub name: Option<String>,
    /// Family name ("Фамилия").
    pub surname: Option<String>,
    /// Patronymic or middle name ("Отчество").
    pub second_name: Option<String>,
    /// At most 20.
    pub cars: Option<Vec<CarInput>>,
}

/// A car to register with the user.
#[derive(InputObject)]
pub struct CarInput {
    /// At most 64 characters.
    pub brand: String,
    /// At most 64 characters.
    pub model: String,
    /// From 1886 to next year.
    pub year: Option<i32>,
    pub color: Option<String>,
    /// At most 16 characters.
    pub license_plate: Option<String>,
    /// 17 characters without I, O, Q.
    pub vin: Option<String>,
}

/// Credentials for `createToken`.
#[derive(InputObject)]
pub struct CreateTokenInput {
    /// Username or e-mail, matched case-insensitively.
    pub login: String,
    pub password: String,
}

impl From<SignUpInput> for SignUpForm {
    fn from(i: SignUpInput) -> Self {
        SignUpForm {
            username: i.username,
            password: Password::new(i.password),
            email: i.email,
            phone: i.phone,
            name: i.name,
            surname: i.surname,
            second_name: i.second_name,
            cars: i
                .cars
                .map(|cars| cars.into_iter().map(Into::into).collect()),
        }
    }
}

impl From<CarInput> for CarForm {
    fn from(c: CarInput) -> Self {
        CarForm {
            brand: c.brand,
            model: c.model,
            year: c.year,
            color: c.color,
            license_plate: c.license_plate,
            vin: c.vin,
        }
    }
}

/// Changes to the profile: an absent field stays as it is, null clears it
/// (a blank string too). The sign-up rules apply to every value given.
#[derive(InputObject)]
pub struct UpdateProfileInput {
    /// Unique case-insensitively, with every username and e-mail.
    pub email: MaybeUndefined<String>,
    /// E.164 (`+79991234567`), or national format in the server's phone region.
    pub phone: MaybeUndefined<String>,
    pub name: MaybeUndefined<String>,
    pub surname: MaybeUndefined<String>,
    pub second_name: MaybeUndefined<String>,
}

fn change(value: MaybeUndefined<String>) -> Change<String> {
    match value {
        MaybeUndefined::Undefined => Change::Keep,
        MaybeUndefined::Null => Change::Clear,
        MaybeUndefined::Value(v) => Change::Set(v),
    }
}

impl From<UpdateProfileInput> for ProfileForm {
    fn from(i: UpdateProfileInput) -> Self {
        ProfileForm {
            email: change(i.email),
            phone: change(i.phone),
            name: change(i.name),
            surname: change(i.surname),
            second_name: change(i.second_name),
        }
    }
}
