//! authql's own transfer format: one JSON object per line, a user with
//! their cars and stored password hash, as `authql export` writes it and
//! `authql import --format jsonl` reads it back with the same ids.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::sources::time;
use crate::domain::import::{Skip, SourceAccount, SourceCar};
use crate::domain::password_hash::StoredHash;
use crate::domain::CarForm;
use crate::storage::ExportedUser;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonlUser {
    pub id: Option<i64>,
    pub username: String,
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified_at: Option<String>,
    #[serde(default)]
    pub email_changed_at: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub second_name: Option<String>,
    /// The stored hash (sensitive: see README, "Moving in").
    pub password_hash: String,
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub disabled_at: Option<String>,
    #[serde(default)]
    pub cars: Vec<JsonlCar>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonlCar {
    pub id: Option<i64>,
    pub brand: String,
    pub model: String,
    #[serde(default)]
    pub year: Option<i32>,
    #[serde(default)]
    pub color: Option<String>,
    #[serde(default)]
    pub license_plate: Option<String>,
    #[serde(default)]
    pub vin: Option<String>,
}

/// Every digit the database keeps (microseconds on PostgreSQL), so that
/// an export imports back to the same instant.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl From<ExportedUser> for JsonlUser {
    fn from(e: ExportedUser) -> Self {
        let u = e.user;
        JsonlUser {
            id: Some(u.id),
            username: u.username,
            email: u.email,
            email_verified_at: u.email_verified_at.map(stamp),
            email_changed_at: u.email_changed_at.map(stamp),
            phone: u.phone,
            name: u.name,
            surname: u.surname,
            second_name: u.second_name,
            password_hash: e.password_hash,
            created_at: Some(stamp(u.created_at)),
            updated_at: Some(stamp(u.updated_at)),
            disabled_at: u.disabled_at.map(stamp),
            cars: e
                .cars
                .into_iter()
                .map(|c| JsonlCar {
                    id: Some(c.id),
                    brand: c.brand,
                    model: c.model,
                    year: c.year,
                    color: c.color,
                    license_plate: c.license_plate,
                    vin: c.vin,
                })
                .collect(),
        }
    }
}

impl JsonlUser {
    pub fn into_source(self) -> Result<SourceAccount, Skip> {
        let time = |field: &str, raw: Option<String>| time(raw.as_deref(), field);
        Ok(SourceAccount {
            id: self.id,
            username: self.username,
            email: self.email,
            email_verified_at: time("emailVerifiedAt", self.email_verified_at)?,
            email_changed_at: time("emailChangedAt", self.email_changed_at)?,
            phone: self.phone,
            name: self.name,
            surname: self.surname,
            second_name: self.second_name,
            password_hash: Some(StoredHash::parse(&self.password_hash)),
            created_at: time("createdAt", self.created_at)?,
            updated_at: time("updatedAt", self.updated_at)?,
            disabled_at: time("disabledAt", self.disabled_at)?,
            cars: self
                .cars
                .into_iter()
                .map(|c| SourceCar {
                    id: c.id,
                    car: CarForm {
                        brand: c.brand,
                        model: c.model,
                        year: c.year,
                        color: c.color,
                        license_plate: c.license_plate,
                        vin: c.vin,
                    },
                })
                .collect(),
        })
    }
}
