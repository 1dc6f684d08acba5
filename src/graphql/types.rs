//! GraphQL object and input types, and their conversion from and to the
//! service's types.

use super::request_data;
use async_graphql::{
    ComplexObject, Context, InputObject, InputValueError, InputValueResult, Result, Scalar,
    ScalarType, SimpleObject, Value, ID,
};
use chrono::{SecondsFormat, Utc};

use super::loaders::CarLoader;
use crate::domain::account;
use crate::domain::{CarForm, Password, SignUpForm};
use crate::service::SignedIn;

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
    #[graphql(skip)]
    pub key: i64,
    /// Cars read together with the user; otherwise the DataLoader fetches them.
    #[graphql(skip)]
    pub cars: Option<Vec<Car>>,
}

#[ComplexObject]
impl User {
    /// The user's cars, in the order they were registered.
    async fn cars(&self, ctx: &Context<'_>) -> Result<Vec<Car>> {
        if let Some(cars) = &self.cars {
            return Ok(cars.clone());
        }
        let loader = request_data::<async_graphql::dataloader::DataLoader<CarLoader>>(ctx)?;
        let cars = loader.load_one(self.key).await?.unwrap_or_default();
        Ok(cars.into_iter().map(Car::from).collect())
    }
}

impl User {
    /// The user, with their cars when they were read with it.
    pub fn new(u: account::User, cars: Option<Vec<account::Car>>) -> Self {
        User {
            id: ID(u.id.to_string()),
            username: u.username,
            email: u.email,
            phone: u.phone,
            name: u.name,
            surname: u.surname,
            second_name: u.second_name,
            created_at: DateTime(u.created_at),
            key: u.id,
            cars: cars.map(|cars| cars.into_iter().map(Car::from).collect()),
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
            user: User::new(s.user, s.cars),
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
