//! Read models of an account: what storage returns and the GraphQL layer
//! shows. They carry no secrets (the password hash travels separately, for
//! sign-in only).

use chrono::{DateTime, Utc};

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub second_name: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The last change of the profile, cars, password or avatar.
    pub updated_at: DateTime<Utc>,
    /// Names the current avatar version (in its URL); `None` without one.
    pub avatar_hash: Option<String>,
    /// When the current e-mail was proven to be the user's (a link from a
    /// mail to it was followed); `None`: not verified, or no e-mail.
    pub email_verified_at: Option<DateTime<Utc>>,
}

/// A car of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Car {
    pub id: i64,
    pub user_id: i64,
    pub brand: String,
    pub model: String,
    pub year: Option<i32>,
    pub color: Option<String>,
    pub license_plate: Option<String>,
    pub vin: Option<String>,
}

/// A live session (one refresh-token family) as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Sign-in or the last refresh.
    pub last_used_at: DateTime<Utc>,
    /// As the client sent it at that moment, truncated.
    pub user_agent: Option<String>,
    /// The client address as the limits saw it at that moment.
    pub client_addr: Option<String>,
}
