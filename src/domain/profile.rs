//! `updateProfile`: which fields change, checked by exactly the sign-up
//! rules. An absent field stays as it is; null (or blank text) clears it.

use chrono::{DateTime, Utc};

use super::account::User;
use super::sign_up::{check_email, check_phone, optional_text, person_name, Problems};
use super::{match_key, Checked, FieldError, SignUpRules};

/// What a request asks of one optional field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Change<T> {
    /// Absent: leave it.
    #[default]
    Keep,
    /// Null or blank: remove it.
    Clear,
    Set(T),
}

impl<T> Change<T> {
    /// The stored value after the change, given the current one.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Clear => None,
            Change::Set(value) => Some(value),
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> Option<U>) -> Option<Change<U>> {
        match self {
            Change::Keep => Some(Change::Keep),
            Change::Clear => Some(Change::Clear),
            Change::Set(value) => f(value).map(Change::Set),
        }
    }
}

/// Raw `updateProfile` input.
#[derive(Debug, Clone, Default)]
pub struct ProfileForm {
    pub email: Change<String>,
    pub phone: Change<String>,
    pub name: Change<String>,
    pub surname: Change<String>,
    pub second_name: Change<String>,
}

/// An e-mail as stored: the address and its login key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEmail {
    pub address: String,
    pub key: String,
}

/// A checked profile change.
#[derive(Debug, Clone)]
pub struct ProfileUpdate {
    pub email: Change<NewEmail>,
    pub phone: Change<String>,
    pub name: Change<String>,
    pub surname: Change<String>,
    pub second_name: Change<String>,
    /// The new e-mail arrives proven (confirmed from its mailbox), so it
    /// is verified at once; otherwise a changed address is unverified.
    pub email_proven: bool,
    _checked: Checked,
}

impl ProfileForm {
    pub fn validate(self, rules: &SignUpRules) -> Result<ProfileUpdate, Vec<FieldError>> {
        let mut problems = Problems::default();
        // Blank text is no value, as at sign-up: it clears the field.
        let blank_clears = |change: Change<String>| match change {
            Change::Set(text) if optional_text(Some(&text)).is_none() => Change::Clear,
            other => other,
        };
        let email = blank_clears(self.email).map(|raw| {
            check_email(raw.trim(), &mut problems).map(|address| NewEmail {
                key: match_key(&address),
                address,
            })
        });
        let phone = blank_clears(self.phone)
            .map(|raw| check_phone(raw.trim(), rules.phone_region, &mut problems));
        let mut name_field = |field: &str, change: Change<String>| {
            blank_clears(change).map(|raw| person_name(field, Some(&raw), &mut problems))
        };
        let name = name_field("name", self.name);
        let surname = name_field("surname", self.surname);
        let second_name = name_field("secondName", self.second_name);
        match (email, phone, name, surname, second_name) {
            (Some(email), Some(phone), Some(name), Some(surname), Some(second_name))
                if problems.0.is_empty() =>
            {
                Ok(ProfileUpdate {
                    email,
                    phone,
                    name,
                    surname,
                    second_name,
                    email_proven: false,
                    _checked: Checked(()),
                })
            }
            _ => Err(problems.0),
        }
    }
}

impl ProfileUpdate {
    /// The same change, its new e-mail proven to be the user's.
    pub fn with_email_proven(mut self) -> Self {
        self.email_proven = true;
        self
    }

    /// Whether it sets an e-mail (that may differ from the current one).
    pub fn new_email(&self) -> Option<&str> {
        match &self.email {
            Change::Set(email) => Some(&email.address),
            Change::Keep | Change::Clear => None,
        }
    }

    /// What storage writes, given the profile as read under the user's lock.
    pub fn plan(&self, current: &StoredProfile, now: DateTime<Utc>) -> ProfilePlan {
        let user = &current.user;
        let mut changed = Vec::new();
        let mut field = |name: &'static str, change: &Change<String>, value: &Option<String>| {
            let after = change.clone().apply(value.clone());
            if after != *value {
                changed.push(name);
            }
            after
        };
        let phone = field("phone", &self.phone, &user.phone);
        let name = field("name", &self.name, &user.name);
        let surname = field("surname", &self.surname, &user.surname);
        let second_name = field("secondName", &self.second_name, &user.second_name);
        let (email, email_key) = match &self.email {
            Change::Keep => (user.email.clone(), current.email_key.clone()),
            Change::Clear => (None, None),
            Change::Set(email) => (Some(email.address.clone()), Some(email.key.clone())),
        };
        let (email_verified_at, email_changed_at) = if email == user.email {
            // Confirmed from its mailbox while already the account's (set
            // unverified meanwhile): it is verified now.
            if self.email_proven && user.email_verified_at.is_none() && email.is_some() {
                changed.push("emailVerified");
                (Some(now), user.email_changed_at)
            } else {
                (user.email_verified_at, user.email_changed_at)
            }
        } else {
            changed.insert(0, "email");
            (
                (self.email_proven && email.is_some()).then_some(now),
                Some(now),
            )
        };
        // The username's key is the user's own login either way: never
        // released, never claimed twice.
        let own = |key: &Option<String>| key.clone().filter(|k| *k != current.username_key);
        let (release_key, claim_key) = if email_key == current.email_key {
            (None, None)
        } else {
            (own(&current.email_key), own(&email_key))
        };
        ProfilePlan {
            user: User {
                email,
                phone,
                name,
                surname,
                second_name,
                email_verified_at,
                email_changed_at,
                updated_at: if changed.is_empty() {
                    user.updated_at
                } else {
                    now
                },
                ..user.clone()
            },
            email_key,
            release_key,
            claim_key,
            changed,
        }
    }
}

/// A user's profile as stored, with the keys their logins are matched on.
#[derive(Debug, Clone)]
pub struct StoredProfile {
    pub user: User,
    pub username_key: String,
    pub email_key: Option<String>,
}

/// What storage writes for a profile change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfilePlan {
    /// The user after the change.
    pub user: User,
    pub email_key: Option<String>,
    /// The login key given up (the old e-mail's) and the one taken (the
    /// new e-mail's): the unique index on it decides a race for an address.
    pub release_key: Option<String>,
    pub claim_key: Option<String>,
    /// Names of the changed fields, for the audit trail (never values).
    /// Empty: nothing is written.
    pub changed: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldCode;

    fn rules() -> SignUpRules {
        SignUpRules::new(None)
    }

    #[test]
    fn absent_keeps_null_and_blank_clear_values_are_checked() {
        let update = ProfileForm {
            email: Change::Set(" Ivan@EXAMPLE.com ".into()),
            phone: Change::Clear,
            name: Change::Set("   ".into()),
            surname: Change::Set(" Petrov ".into()),
            ..Default::default()
        }
        .validate(&rules())
        .expect("valid");
        assert_eq!(
            update.email,
            Change::Set(NewEmail {
                address: "Ivan@example.com".into(),
                key: "ivan@example.com".into()
            })
        );
        assert_eq!(update.phone, Change::Clear);
        assert_eq!(update.name, Change::Clear);
        assert_eq!(update.surname, Change::Set("Petrov".into()));
        assert_eq!(update.second_name, Change::Keep);
        assert_eq!(Change::Keep.apply(Some(1)), Some(1));
        assert_eq!(Change::<i32>::Clear.apply(Some(1)), None);
    }

    fn stored(email: Option<&str>) -> StoredProfile {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        StoredProfile {
            user: User {
                id: 1,
                username: "ivan".into(),
                email: email.map(str::to_owned),
                phone: None,
                name: Some("Ivan".into()),
                surname: None,
                second_name: None,
                created_at: at,
                updated_at: at,
                avatar_hash: None,
                email_verified_at: None,
                email_changed_at: None,
                disabled_at: None,
            },
            username_key: "ivan".into(),
            email_key: email.map(match_key),
        }
    }

    #[test]
    fn plans_release_and_claim_only_the_email_keys_that_change() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let set_email = |address: &str| {
            ProfileForm {
                email: Change::Set(address.into()),
                ..Default::default()
            }
            .validate(&rules())
            .expect("valid")
        };
        let plan = set_email("new@example.com").plan(&stored(Some("old@example.com")), now);
        assert_eq!(plan.release_key.as_deref(), Some("old@example.com"));
        assert_eq!(plan.claim_key.as_deref(), Some("new@example.com"));
        assert_eq!(plan.changed, ["email"]);
        assert_eq!(plan.user.updated_at, now);

        // Same address, other case: the stored text changes, the key does not.
        let plan = set_email("OLD@example.com").plan(&stored(Some("old@example.com")), now);
        assert_eq!((plan.release_key, plan.claim_key), (None, None));
        assert_eq!(plan.changed, ["email"]);

        // Nothing changes: nothing is written, not even updated_at.
        let plan = ProfileForm {
            name: Change::Set("Ivan".into()),
            surname: Change::Clear,
            ..Default::default()
        }
        .validate(&rules())
        .expect("valid")
        .plan(&stored(None), now);
        assert!(plan.changed.is_empty());
        assert_eq!(plan.user, stored(None).user);

        let clear = ProfileForm {
            email: Change::Clear,
            ..Default::default()
        }
        .validate(&rules())
        .expect("valid");
        let plan = clear.plan(&stored(Some("old@example.com")), now);
        assert_eq!(plan.release_key.as_deref(), Some("old@example.com"));
        assert_eq!(
            (plan.user.email, plan.email_key, plan.claim_key),
            (None, None, None)
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let problems = ProfileForm {
            email: Change::Set("not an address".into()),
            phone: Change::Set("12".into()),
            name: Change::Set("n".repeat(151)),
            second_name: Change::Set("a\u{0}b".into()),
            ..Default::default()
        }
        .validate(&rules())
        .expect_err("refused");
        let codes: Vec<(String, FieldCode)> =
            problems.into_iter().map(|e| (e.field, e.code)).collect();
        assert_eq!(
            codes,
            [
                ("email".into(), FieldCode::Invalid),
                ("phone".into(), FieldCode::Invalid),
                ("name".into(), FieldCode::TooLong),
                ("secondName".into(), FieldCode::Invalid),
            ]
        );
    }
}
