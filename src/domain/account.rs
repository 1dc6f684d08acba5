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
