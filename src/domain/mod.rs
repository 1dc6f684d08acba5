//! Validated input: parse, don't validate. Each newtype here can only be
//! built through its rules, so the services and storage never see raw input.
//!
//! Validation collects every broken rule of a form (API.md: "every problem is
//! reported in one response") instead of stopping at the first.

pub mod account;
pub mod audit;
pub mod avatar;
pub mod client;
pub mod cookie;
pub mod field;
pub mod import;
pub mod mail;
pub mod password;
pub mod password_hash;
pub mod profile;
pub mod rotation;
pub mod secret;
pub mod sign_in;
pub mod sign_up;
pub mod throttle;

pub use client::Client;
pub use field::{FieldCode, FieldError};
pub use password::{Password, PasswordPolicy};
pub use secret::Secret;
pub use sign_in::{SignIn, SignInForm};
pub use sign_up::{CarForm, NewCar, NewUser, SignUpForm, SignUpRules};

use unicode_normalization::UnicodeNormalization;

/// The key a username, e-mail or login is matched on: NFKC, then full Unicode
/// case folding (`Иван` and `иван`, `STRASSE` and `straße` meet). SQLite's
/// `lower()` folds ASCII only, so the key is computed here and stored in its
/// own uniquely indexed column on every backend.
pub fn match_key(value: &str) -> String {
    let normalized: String = value.trim().nfkc().collect();
    caseless::default_case_fold_str(&normalized)
}

/// A field only this module's rules can set: a struct that holds one can
/// be read anywhere but built only by the validation that checked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checked(());

/// Control characters (`\0`, `\n`, escape, ...) belong in no text authql
/// stores or matches; NUL cannot even be stored by PostgreSQL.
pub fn has_control_chars(value: &str) -> bool {
    value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::match_key;

    #[test]
    fn folds_beyond_ascii() {
        assert_eq!(match_key("Иван"), match_key("иван"));
        assert_eq!(match_key("ÉMILE"), match_key("émile"));
        assert_eq!(match_key("Straße"), match_key("STRASSE"));
        assert_ne!(match_key("ivan"), match_key("иван"));
    }
}
