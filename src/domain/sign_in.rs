//! The sign-in form (`createToken`): the same caps as sign-up, so a guess
//! can neither cost unbounded hashing nor carry text no account can have.

use super::password::MAX_CHARS as PASSWORD_MAX;
use super::sign_up::{EMAIL_MAX, USERNAME_MAX};
use super::{has_control_chars, match_key, Checked, Password};
use super::{FieldCode, FieldError};

/// Longest login: a username or an e-mail address, whichever may be longer.
pub const LOGIN_MAX: usize = if EMAIL_MAX > USERNAME_MAX {
    EMAIL_MAX
} else {
    USERNAME_MAX
};

/// Raw `createToken` input.
#[derive(Debug, Clone)]
pub struct SignInForm {
    pub login: String,
    pub password: Password,
}

/// A sign-in attempt worth a password check.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// The key to look the login up by; `None` when no account can have
    /// this login (control characters): it is then an unknown login, with
    /// the same answer and work as any other.
    pub login_key: Option<String>,
    pub password: Password,
    _checked: Checked,
}

impl SignInForm {
    /// Blank fields are `FIELD_MISSING`, over-long ones `TOO_LONG`, each
    /// reported (like the token endpoint authql replaces, which marks every
    /// missing field).
    pub fn validate(self) -> Result<SignIn, Vec<FieldError>> {
        let mut problems = Vec::new();
        if self.login.trim().is_empty() {
            problems.push(FieldError::new(
                "login",
                FieldCode::FieldMissing,
                "login is required",
            ));
        } else if self.login.chars().count() > LOGIN_MAX {
            problems.push(FieldError::new(
                "login",
                FieldCode::TooLong,
                format!("login must be at most {LOGIN_MAX} characters"),
            ));
        }
        let password = self.password.expose();
        if password.trim().is_empty() {
            problems.push(FieldError::new(
                "password",
                FieldCode::FieldMissing,
                "password is required",
            ));
        } else if password.chars().count() > PASSWORD_MAX {
            problems.push(FieldError::new(
                "password",
                FieldCode::TooLong,
                format!("password must be at most {PASSWORD_MAX} characters"),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SignIn {
            login_key: (!has_control_chars(&self.login)).then(|| match_key(&self.login)),
            password: self.password,
            _checked: Checked(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(login: &str, password: &str) -> Vec<(String, FieldCode)> {
        SignInForm {
            login: login.into(),
            password: Password::new(password),
        }
        .validate()
        .expect_err("refused")
        .into_iter()
        .map(|e| (e.field, e.code))
        .collect()
    }

    #[test]
    fn blank_and_long_fields_are_reported_each() {
        assert_eq!(
            codes("  ", ""),
            [
                ("login".into(), FieldCode::FieldMissing),
                ("password".into(), FieldCode::FieldMissing)
            ]
        );
        assert_eq!(
            codes(&"a".repeat(LOGIN_MAX + 1), &"p".repeat(PASSWORD_MAX + 1)),
            [
                ("login".into(), FieldCode::TooLong),
                ("password".into(), FieldCode::TooLong)
            ]
        );
    }

    #[test]
    fn a_login_with_control_characters_matches_no_account() {
        let attempt = SignInForm {
            login: "ivan\0".into(),
            password: Password::new("whatever it is"),
        }
        .validate()
        .expect("a well-formed attempt");
        assert_eq!(attempt.login_key, None);
        let attempt = SignInForm {
            login: " IVAN ".into(),
            password: Password::new("whatever it is"),
        }
        .validate()
        .expect("valid");
        assert_eq!(attempt.login_key.as_deref(), Some("ivan"));
    }
}
