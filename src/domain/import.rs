//! The rules of `authql import`, as pure code: what an account read from
//! another system must satisfy to be taken (authql's sign-up rules, but the
//! password's: an imported account brings a hash), and which accounts of a
//! batch conflict with what the database holds or with each other.
//!
//! Nothing is ever changed to make it fit: a record is taken as authql's
//! rules normalise it (as a sign-up would be) or skipped with its reason.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::password_hash::{HashError, StoredHash};
use super::{CarForm, FieldError, NewUser, Password, SignUpForm, SignUpRules};

/// The largest id an import takes (2^53: exact in a JavaScript number).
pub const MAX_IMPORTED_ID: i64 = 1 << 53;

/// One account as a source system describes it.
#[derive(Debug, Clone, Default)]
pub struct SourceAccount {
    /// Kept only from authql's own format (so that an export imports back
    /// with the same ids); other systems' keys are not authql ids.
    pub id: Option<i64>,
    pub username: String,
    pub email: Option<String>,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub email_changed_at: Option<DateTime<Utc>>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub second_name: Option<String>,
    /// The hash in authql's stored form, or why it cannot be taken.
    pub password_hash: Option<Result<StoredHash, HashError>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Inactive in the source system.
    pub disabled_at: Option<DateTime<Utc>>,
    pub cars: Vec<SourceCar>,
}

#[derive(Debug, Clone, Default)]
pub struct SourceCar {
    pub id: Option<i64>,
    pub car: CarForm,
}

/// Why a record was not taken, as the report's `reason` column names it
/// (README, "Moving in").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    InvalidUsername,
    InvalidEmail,
    InvalidPhone,
    InvalidName,
    InvalidCar,
    UnsupportedHash,
    MalformedHash,
    HashOutOfBounds,
    UsernameTaken,
    EmailTaken,
    IdTaken,
    /// The same record is there already (a resumed run): counted, not
    /// listed in the report.
    AlreadyImported,
    /// A Django record of another model than the user model.
    OtherModel,
    /// Not a readable record.
    Malformed,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidUsername => "invalid_username",
            SkipReason::InvalidEmail => "invalid_email",
            SkipReason::InvalidPhone => "invalid_phone",
            SkipReason::InvalidName => "invalid_name",
            SkipReason::InvalidCar => "invalid_car",
            SkipReason::UnsupportedHash => "unsupported_hash",
            SkipReason::MalformedHash => "malformed_hash",
            SkipReason::HashOutOfBounds => "hash_out_of_bounds",
            SkipReason::UsernameTaken => "username_taken",
            SkipReason::EmailTaken => "email_taken",
            SkipReason::IdTaken => "id_taken",
            SkipReason::AlreadyImported => "already_imported",
            SkipReason::OtherModel => "other_model",
            SkipReason::Malformed => "malformed",
        }
    }

    /// Another account holds the record's username, e-mail or id (what
    /// `--on-conflict fail` stops at).
    pub fn is_conflict(self) -> bool {
        matches!(
            self,
            SkipReason::UsernameTaken | SkipReason::EmailTaken | SkipReason::IdTaken
        )
    }
}

/// Why a record was not taken and a detail for people; the detail never
/// holds hash material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub reason: SkipReason,
    pub detail: String,
}

impl Skip {
    pub fn new(reason: SkipReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    fn from_fields(errors: &[FieldError]) -> Self {
        // The e-mail first: where a username is made from it (Supabase),
        // the address is what is wrong.
        let broken = |fields: &[&str]| errors.iter().any(|e| fields.contains(&e.field.as_str()));
        let reason = if broken(&["email"]) {
            SkipReason::InvalidEmail
        } else if broken(&["username"]) {
            SkipReason::InvalidUsername
        } else if broken(&["phone"]) {
            SkipReason::InvalidPhone
        } else if broken(&["name", "surname", "secondName"]) {
            SkipReason::InvalidName
        } else {
            SkipReason::InvalidCar
        };
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(reason, detail)
    }
}

/// An account that passed every rule that needs no database.
#[derive(Debug, Clone)]
pub struct ImportedUser {
    pub id: Option<i64>,
    pub user: NewUser,
    pub car_ids: Vec<Option<i64>>,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub email_changed_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl SourceAccount {
    /// authql's rules, as sign-up applies them, but the password's. `now`
    /// stands in for a creation time the source does not give.
    pub fn validate(self, rules: &SignUpRules, now: DateTime<Utc>) -> Result<ImportedUser, Skip> {
        // Ids a database and a JavaScript client both hold exactly, and
        // that leave the id sequences room to go on.
        let ids = self
            .id
            .into_iter()
            .chain(self.cars.iter().filter_map(|c| c.id));
        if let Some(id) = ids
            .into_iter()
            .find(|id| !(1..=MAX_IMPORTED_ID).contains(id))
        {
            return Err(Skip::new(
                SkipReason::Malformed,
                format!("id {id} is not from 1 to 2^53"),
            ));
        }
        let password_hash = match self.password_hash {
            None => StoredHash::Unusable,
            Some(Ok(hash)) => hash,
            Some(Err(e)) => return Err(Skip::new(e.reason(), e.to_string())),
        };
        let car_ids = self.cars.iter().map(|c| c.id).collect();
        let form = SignUpForm {
            username: self.username,
            password: Password::new(""),
            email: self.email,
            phone: self.phone,
            name: self.name,
            surname: self.surname,
            second_name: self.second_name,
            cars: Some(self.cars.into_iter().map(|c| c.car).collect()),
        };
        let user = form
            .validate_without_password(rules)
            .map_err(|errors| Skip::from_fields(&errors))?;
        let created_at = self.created_at.unwrap_or(now);
        let has_email = user.email.is_some();
        Ok(ImportedUser {
            id: self.id,
            user,
            car_ids,
            password_hash: password_hash.encode(),
            created_at,
            updated_at: self.updated_at.unwrap_or(created_at),
            email_verified_at: self.email_verified_at.filter(|_| has_email),
            email_changed_at: self.email_changed_at.filter(|_| has_email),
            disabled_at: self.disabled_at,
        })
    }
}

/// The account a login key belongs to, as far as telling a record
/// imported before (a resumed import) from another account goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub username_key: String,
    pub email_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Owner {
    /// Same login keys and creation time (to the millisecond SQLite keeps).
    fn is(&self, u: &ImportedUser) -> bool {
        self.username_key == u.user.username_key
            && self.email_key == u.user.email_key
            && self.created_at.timestamp_millis() == u.created_at.timestamp_millis()
    }
}

/// What the database already holds of a batch's keys and ids.
#[derive(Debug, Default)]
pub struct Existing {
    pub login_keys: HashMap<String, Owner>,
    pub user_ids: HashSet<i64>,
    pub car_ids: HashSet<i64>,
}

/// Keys and ids taken by records decided earlier in this run that the
/// database does not show yet (a dry run writes nothing).
#[derive(Debug, Default)]
pub struct Seen {
    /// Each key with the identity of the record that took it.
    login_keys: HashMap<String, Owner>,
    user_ids: HashSet<i64>,
    car_ids: HashSet<i64>,
}

/// Decides each record of a batch in order: taken, or skipped because a
/// login key (usernames and e-mails share one namespace) or an id is taken
/// by the database, an earlier record of this run, or this record itself.
/// A record whose username belongs to an account with its login keys and
/// creation time was imported before ([`SkipReason::AlreadyImported`]).
pub fn plan_batch(
    users: &[ImportedUser],
    existing: &Existing,
    seen: &mut Seen,
) -> Vec<Result<(), Skip>> {
    users
        .iter()
        .map(|u| {
            let key_taken = |key: &str| {
                existing.login_keys.contains_key(key) || seen.login_keys.contains_key(key)
            };
            // The same record again, in the database (a resumed run) or
            // earlier in this run (a file that repeats it): a dry run and a
            // real one decide alike.
            let owner = existing
                .login_keys
                .get(&u.user.username_key)
                .or_else(|| seen.login_keys.get(&u.user.username_key));
            if owner.is_some_and(|owner| owner.is(u)) {
                return Err(Skip::new(SkipReason::AlreadyImported, "imported before"));
            }
            if key_taken(&u.user.username_key) {
                return Err(Skip::new(
                    SkipReason::UsernameTaken,
                    "the username belongs to another account",
                ));
            }
            if u.user
                .email_key
                .as_deref()
                .is_some_and(|k| k != u.user.username_key && key_taken(k))
            {
                return Err(Skip::new(
                    SkipReason::EmailTaken,
                    "the e-mail belongs to another account",
                ));
            }
            if let Some(id) = u.id {
                if existing.user_ids.contains(&id) || seen.user_ids.contains(&id) {
                    return Err(Skip::new(
                        SkipReason::IdTaken,
                        format!("user id {id} is taken"),
                    ));
                }
            }
            let mut own = HashSet::new();
            for id in u.car_ids.iter().flatten() {
                if existing.car_ids.contains(id) || seen.car_ids.contains(id) || !own.insert(*id) {
                    return Err(Skip::new(
                        SkipReason::IdTaken,
                        format!("car id {id} is taken"),
                    ));
                }
            }
            let owner = Owner {
                username_key: u.user.username_key.clone(),
                email_key: u.user.email_key.clone(),
                created_at: u.created_at,
            };
            seen.login_keys.extend(
                u.user
                    .login_keys()
                    .into_iter()
                    .map(|k| (k.to_owned(), owner.clone())),
            );
            seen.user_ids.extend(u.id);
            seen.car_ids.extend(own);
            Ok(())
        })
        .collect()
}

/// The keys a batch is checked on, for one look-up each.
pub fn lookup_keys(users: &[ImportedUser]) -> (Vec<String>, Vec<i64>, Vec<i64>) {
    let keys = users
        .iter()
        .flat_map(|u| u.user.login_keys().into_iter().map(str::to_owned))
        .collect();
    let ids = users.iter().filter_map(|u| u.id).collect();
    let cars = users
        .iter()
        .flat_map(|u| u.car_ids.iter().flatten().copied())
        .collect();
    (keys, ids, cars)
}

/// The key a report shows for a record: its login as the source spells it.
pub fn report_key(username: &str, email: Option<&str>) -> String {
    if username.trim().is_empty() {
        email.unwrap_or_default().to_owned()
    } else {
        username.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(username: &str, email: Option<&str>) -> SourceAccount {
        SourceAccount {
            username: username.to_owned(),
            email: email.map(str::to_owned),
            ..SourceAccount::default()
        }
    }

    fn valid(a: SourceAccount) -> ImportedUser {
        a.validate(&SignUpRules::new(None), Utc::now())
            .expect("valid")
    }

    #[test]
    fn records_are_checked_by_sign_up_rules_but_the_password() {
        let rules = SignUpRules::new(None);
        let now = Utc::now();
        let taken = valid(account("alice", Some("Alice@Example.COM")));
        assert_eq!(taken.user.email.as_deref(), Some("Alice@example.com"));
        assert_eq!(taken.password_hash, "!", "no hash: an unusable password");
        assert_eq!(taken.created_at, taken.updated_at);
        let skip = |a: SourceAccount| {
            a.validate(&rules, now)
                .expect_err("skipped")
                .reason
                .as_str()
        };
        assert_eq!(skip(account("a b", None)), "invalid_username");
        assert_eq!(skip(account("bob", Some("bob@localhost"))), "invalid_email");
        let mut phone = account("carol", None);
        phone.phone = Some("12345".to_owned());
        assert_eq!(skip(phone), "invalid_phone");
        let mut cars = account("dave", None);
        cars.cars = vec![SourceCar::default()];
        assert_eq!(skip(cars), "invalid_car");
        let mut hash = account("erin", None);
        hash.password_hash = Some(StoredHash::from_django("md5$x$y"));
        assert_eq!(skip(hash), "unsupported_hash");
    }

    #[test]
    fn conflicts_with_the_database_earlier_records_and_ids_are_skipped() {
        let batch = vec![
            valid(account("alice", Some("alice@example.com"))),
            valid(account("ALICE", None)),
            valid(account("bob", Some("Alice@example.com"))),
            valid(account("alice@example.com", None)),
            valid(account("carol", Some("taken@example.com"))),
            valid(account("dave", Some("dave@example.com"))),
            valid(SourceAccount {
                id: Some(7),
                ..account("erin", None)
            }),
        ];
        let resumed = valid(account("frank", None));
        let batch = [batch, vec![resumed.clone()]].concat();
        let owner = |key: &str, created_at| Owner {
            username_key: key.to_owned(),
            email_key: None,
            created_at,
        };
        let existing = Existing {
            login_keys: [
                (
                    "taken@example.com".to_owned(),
                    owner("zed", resumed.created_at),
                ),
                ("frank".to_owned(), owner("frank", resumed.created_at)),
            ]
            .into(),
            user_ids: [7].into(),
            car_ids: HashSet::new(),
        };
        let reasons: Vec<_> = plan_batch(&batch, &existing, &mut Seen::default())
            .into_iter()
            .map(|d| d.err().map(|s| s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                None,
                Some("username_taken"),
                Some("email_taken"),
                Some("username_taken"),
                Some("email_taken"),
                None,
                Some("id_taken"),
                Some("already_imported"),
            ]
        );
    }
}
