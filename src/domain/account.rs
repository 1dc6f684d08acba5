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
    /// The last change of the e-mail after sign-up; `None`: as signed up.
    pub email_changed_at: Option<DateTime<Utc>>,
    /// Set for an account imported as inactive: it keeps its data but
    /// cannot sign in or use a session.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl User {
    /// False for an account imported as inactive.
    pub fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }

    /// Whether mail that resets the password or signs in (reset links,
    /// sign-in codes) may go to the user's address: a verified one, or the
    /// one given at sign-up, of an active account. An address set later by
    /// `updateProfile` (a session is enough for that) must be verified
    /// first, or a stolen session would turn into the account through a
    /// reset.
    pub fn may_recover_by_email(&self) -> bool {
        self.is_active()
            && self.email.is_some()
            && (self.email_verified_at.is_some() || self.email_changed_at.is_none())
    }
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

#[cfg(test)]
mod tests {
    use super::User;

    #[test]
    fn only_a_sign_up_or_verified_address_may_recover_the_account() {
        let now = chrono::Utc::now();
        let user = |changed: bool, verified: bool| User {
            id: 1,
            username: "u".into(),
            email: Some("u@example.com".into()),
            phone: None,
            name: None,
            surname: None,
            second_name: None,
            created_at: now,
            updated_at: now,
            avatar_hash: None,
            email_verified_at: verified.then_some(now),
            email_changed_at: changed.then_some(now),
            disabled_at: None,
        };
        assert!(user(false, false).may_recover_by_email());
        assert!(user(true, true).may_recover_by_email());
        assert!(!user(true, false).may_recover_by_email());
        let without = User {
            email: None,
            ..user(false, true)
        };
        assert!(!without.may_recover_by_email());
        // A sign-up address, but an account imported as inactive.
        let inactive = User {
            disabled_at: Some(now),
            ..user(false, false)
        };
        assert!(!inactive.is_active() && !inactive.may_recover_by_email());
    }
}
