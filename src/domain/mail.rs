//! Mail as pure decisions: which tokens exist and how long they live, what
//! a mail's link looks like, and what a delivery failure leads to. Nothing
//! here sends, stores or renders.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::{Rng as _, RngCore as _};
use sha2::{Digest, Sha256};

/// What a one-time token sent by mail proves. A user has at most one live
/// token per purpose: issuing one replaces the older.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
    /// Carries the new address; proves the user reads it.
    ChangeEmail,
    SignInCode,
}

impl TokenPurpose {
    /// As stored in `mail_tokens.purpose`.
    pub fn name(self) -> &'static str {
        match self {
            TokenPurpose::VerifyEmail => "verify_email",
            TokenPurpose::ResetPassword => "reset_password",
            TokenPurpose::ChangeEmail => "change_email",
            TokenPurpose::SignInCode => "sign_in_code",
        }
    }
}

/// Which mail: names its templates (`<name>.subject`, `.txt`, `.html`) and
/// the outbox row's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKind {
    VerifyEmail,
    ResetPassword,
    ConfirmEmailChange,
    /// To the old address: someone asked to move the account elsewhere.
    EmailChangeNotice,
    SignInCode,
}

impl MailKind {
    pub const ALL: [MailKind; 5] = [
        MailKind::VerifyEmail,
        MailKind::ResetPassword,
        MailKind::ConfirmEmailChange,
        MailKind::EmailChangeNotice,
        MailKind::SignInCode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::ResetPassword => "reset_password",
            MailKind::ConfirmEmailChange => "confirm_email_change",
            MailKind::EmailChangeNotice => "email_change_notice",
            MailKind::SignInCode => "sign_in_code",
        }
    }
}

/// A rendered mail, ready for the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub kind: MailKind,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The link it carries (logged in file mode only, for laptops).
    pub link: Option<String>,
}

/// Bodies and links carry tokens: never in a log line.
impl std::fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// A one-time secret as the user gets it, and the hash that is stored.
pub struct IssuedSecret {
    /// What the mail carries (a token, or a code); never stored.
    pub secret: String,
    pub hash: Vec<u8>,
}

/// 256 random bits, base64url: for links.
pub fn new_link_token() -> IssuedSecret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    IssuedSecret {
        hash: secret_hash(&secret),
        secret,
    }
}

/// Digits of a sign-in code.
pub const SIGN_IN_CODE_DIGITS: usize = 8;

/// An 8-digit code: typed by people, so short; guessing is held off by the
/// tries a code allows ([`MAX_CODE_ATTEMPTS`]) and its short life.
pub fn new_sign_in_code() -> IssuedSecret {
    let n: u32 = rand::rngs::OsRng.gen_range(0..100_000_000);
    let secret = format!("{n:0width$}", width = SIGN_IN_CODE_DIGITS);
    IssuedSecret {
        hash: secret_hash(&secret),
        secret,
    }
}

/// Wrong codes after which a code is dead.
pub const MAX_CODE_ATTEMPTS: i32 = 5;

/// What is stored of a token or code: SHA-256.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.trim().as_bytes()).to_vec()
}

/// Whether text could be a token of [`new_link_token`] (43 base64url
/// characters), so that junk is refused without a database read.
pub fn is_well_formed_link_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether text could be a code of [`new_sign_in_code`].
pub fn is_well_formed_code(code: &str) -> bool {
    let code = code.trim();
    code.len() == SIGN_IN_CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// Where the links in mails point: `{base}/verify-email?token=...`,
/// `{base}/reset-password?token=...`, `{base}/confirm-email?token=...`,
/// `{base}/sign-in?email=...&code=...` (the frontend's pages; a GET of
/// them must not consume anything, and authql serves none of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLinks {
    base: String,
}

impl MailLinks {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn for_token(&self, kind: MailKind, token: &str) -> String {
        let page = match kind {
            MailKind::VerifyEmail => "verify-email",
            MailKind::ResetPassword => "reset-password",
            MailKind::ConfirmEmailChange => "confirm-email",
            // Notices and codes carry no token link; see `sign_in`.
            MailKind::EmailChangeNotice | MailKind::SignInCode => "",
        };
        format!("{}/{page}?token={token}", self.base)
    }

    pub fn sign_in(&self, email: &str, code: &str) -> String {
        let query = serde_urlencoded::to_string([("email", email), ("code", code)])
            .unwrap_or_else(|_| format!("code={code}"));
        format!("{}/sign-in?{query}", self.base)
    }
}

/// How long each token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetimes {
    pub verify_email: Duration,
    pub reset_password: Duration,
    pub change_email: Duration,
    pub sign_in_code: Duration,
}

impl TokenLifetimes {
    pub fn of(&self, purpose: TokenPurpose) -> Duration {
        match purpose {
            TokenPurpose::VerifyEmail => self.verify_email,
            TokenPurpose::ResetPassword => self.reset_password,
            TokenPurpose::ChangeEmail => self.change_email,
            TokenPurpose::SignInCode => self.sign_in_code,
        }
    }

    pub fn expiry(&self, purpose: TokenPurpose, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.of(purpose))
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// How a delivery attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// Worth trying again: a 4xx answer, the server unreachable, a timeout.
    Transient,
    /// A 5xx answer: the same mail will never be taken.
    Permanent,
}

/// Retries of a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure; doubles with each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A mail not delivered this long after it was queued is given up.
    pub give_up_after: Duration,
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// The decision after the `attempts`-th failed attempt (1 for the first)
/// of a mail queued at `queued_at`.
pub fn after_failure(
    failure: DeliveryFailure,
    attempts: u32,
    queued_at: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: &RetryPolicy,
) -> AfterFailure {
    if failure == DeliveryFailure::Permanent {
        return AfterFailure::GiveUp;
    }
    let doublings = attempts.saturating_sub(1).min(30);
    let delay = policy
        .first_delay
        .saturating_mul(1 << doublings)
        .min(policy.max_delay);
    let later = |from: DateTime<Utc>, by: Duration| {
        chrono::Duration::from_std(by)
            .ok()
            .and_then(|by| from.checked_add_signed(by))
    };
    match (later(now, delay), later(queued_at, policy.give_up_after)) {
        (Some(at), Some(deadline)) if at > deadline => AfterFailure::GiveUp,
        (Some(at), _) => AfterFailure::RetryAt(at),
        (None, _) => AfterFailure::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
            give_up_after: Duration::from_secs(3600),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn transient_failures_back_off_doubling_to_a_cap_then_give_up() {
        let p = policy();
        assert_eq!(
            after_failure(DeliveryFailure::Transient, 1, at(0), at(0), &p),
            AfterFailure::RetryAt(at(10))
        );
        assert_eq!(
            after_failure(DeliveryFailure::Transient, 3, at(0), at(100), &p),
            AfterFailure::RetryAt(at(140))
        );
        assert_eq!(
            after_failure(DeliveryFailure::Transient, 20, at(0), at(1000), &p),
            AfterFailure::RetryAt(at(1600))
        );
        assert_eq!(
            after_failure(DeliveryFailure::Transient, 20, at(0), at(3500), &p),
            AfterFailure::GiveUp
        );
        assert_eq!(
            after_failure(DeliveryFailure::Permanent, 1, at(0), at(0), &p),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn secrets_are_well_formed_and_only_their_hash_is_kept() {
        let token = new_link_token();
        assert!(is_well_formed_link_token(&token.secret));
        assert_eq!(token.hash, secret_hash(&token.secret));
        assert!(!is_well_formed_link_token("short"));
        assert!(!is_well_formed_link_token(&format!(
            "{}=",
            &token.secret[..42]
        )));
        let code = new_sign_in_code();
        assert!(is_well_formed_code(&code.secret), "{}", code.secret);
        assert!(is_well_formed_code(" 01234567 "));
        assert!(!is_well_formed_code("1234567"));
        assert!(!is_well_formed_code("1234567a"));
    }

    #[test]
    fn links_name_the_page_and_escape_the_address() {
        let links = MailLinks::new("https://app.example.com/");
        assert_eq!(
            links.for_token(MailKind::ResetPassword, "abc"),
            "https://app.example.com/reset-password?token=abc"
        );
        assert_eq!(
            links.sign_in("a+b@example.com", "01234567"),
            "https://app.example.com/sign-in?email=a%2Bb%40example.com&code=01234567"
        );
    }

    proptest! {
        /// A retry is never scheduled past the give-up deadline, never
        /// before now, and never more than the cap after now.
        #[test]
        fn retries_stay_within_the_policy(attempts in 1u32..100, queued in 0i64..10_000, waited in 0i64..10_000) {
            let p = policy();
            let (queued, now) = (at(queued), at(queued + waited));
            match after_failure(DeliveryFailure::Transient, attempts, queued, now, &p) {
                AfterFailure::RetryAt(when) => {
                    prop_assert!(when > now);
                    prop_assert!(when <= now + chrono::Duration::seconds(600));
                    prop_assert!(when <= queued + chrono::Duration::seconds(3600));
                }
                AfterFailure::GiveUp => {
                    prop_assert!(now + chrono::Duration::seconds(10) > queued + chrono::Duration::seconds(3600) || attempts > 1);
                }
            }
        }
    }
}
