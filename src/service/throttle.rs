//! Rate limits and sign-in throttling, with every counter in the database so
//! all instances share them.
//!
//! - Per client bucket and action: a fixed-window counter (createToken
//!   100/5 min, signUp 20/10 min, refreshToken and revokeToken 300/5 min,
//!   the account changes together 100/5 min by default).
//! - Per account (or, for logins that match none, per login text) and
//!   client bucket: the back-off of [`crate::domain::throttle`], reserved
//!   atomically before the password is checked, so a burst of concurrent
//!   guesses is admitted no further than a sequence would be. Keyed by the
//!   bucket as well, so an attacker elsewhere cannot lock the real user out,
//!   and by the account, so its username and e-mail share one streak.
//! - Logins are stored only as a hash (with the bucket), never as typed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::config::{MailConfig, RateLimit, SecurityConfig};
use crate::domain::throttle::{LoginDecision, LoginPolicy};
use crate::domain::Client;
use crate::error::AuthError;
use crate::storage::Store;

/// A failure streak older than this starts again from one.
const STREAK_RESET: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SignIn,
    SignUp,
    Refresh,
    Revoke,
    /// Any change a signed-in user makes to their own account.
    Account,
    /// Asking for a mail with a token or code.
    Mail,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::SignIn => "createToken",
            Action::SignUp => "signUp",
            Action::Refresh => "refreshToken",
            Action::Revoke => "revokeToken",
            Action::Account => "account",
            Action::Mail => "mail",
        }
    }
}

/// Whose failure streak a sign-in attempt counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginSubject {
    /// The login names an account: its username and e-mail share a streak.
    Account(i64),
    /// The login names no account (its match key).
    Unknown(String),
}

pub struct Throttle {
    store: Arc<dyn Store>,
    clock: SharedClock,
    sign_in: RateLimit,
    sign_up: RateLimit,
    refresh: RateLimit,
    revoke: RateLimit,
    account: RateLimit,
    mail: RateLimit,
    mail_recipient: RateLimit,
    policy: LoginPolicy,
}

impl Throttle {
    pub fn new(
        store: Arc<dyn Store>,
        config: &SecurityConfig,
        mail: &MailConfig,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            clock,
            sign_in: config.rate_sign_in,
            sign_up: config.rate_sign_up,
            refresh: config.rate_refresh,
            revoke: config.rate_revoke,
            account: config.rate_account,
            mail: mail.rate_mail,
            mail_recipient: mail.rate_mail_recipient,
            policy: LoginPolicy {
                free_failures: config.login_free_failures,
                max_delay: config.login_max_delay,
                streak_reset: STREAK_RESET,
            },
        }
    }

    /// Counts one attempt of `action` from `client`; refuses it past the limit.
    pub async fn attempt(&self, action: Action, client: &Client) -> Result<(), AuthError> {
        let limit = match action {
            Action::SignIn => self.sign_in,
            Action::SignUp => self.sign_up,
            Action::Refresh => self.refresh,
            Action::Revoke => self.revoke,
            Action::Account => self.account,
            Action::Mail => self.mail,
        };
        self.count(limit, &format!("{}:{}", action.name(), client.bucket))
            .await
    }

    /// Counts one mail asked for to the address with this match key, from
    /// anywhere (whether an account has it or not, so the answer tells
    /// nothing); refuses it past the limit. The key is stored hashed.
    pub async fn mail_to(&self, email_key: &str) -> Result<(), AuthError> {
        let digest = Sha256::digest(email_key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.count(self.mail_recipient, &format!("mail-to:{hex}"))
            .await
    }

    async fn count(&self, limit: RateLimit, key: &str) -> Result<(), AuthError> {
        if limit.is_off() {
            return Ok(());
        }
        let now = self.clock.now().timestamp_millis();
        let window = i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
        let start = now - now.rem_euclid(window);
        let hits = self.store.count_hit(key, millis(start)).await?;
        if hits > i64::from(limit.max) {
            return Err(AuthError::RateLimited {
                retry_after_secs: ceil_secs(start + window - now),
            });
        }
        Ok(())
    }

    /// Counts a sign-in attempt against its subject's streak from this
    /// client, or refuses it while the streak waits out failures.
    pub async fn reserve_login(
        &self,
        subject: &LoginSubject,
        client: &Client,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        match self
            .store
            .reserve_login_attempt(&streak_key(subject, client), now, &self.policy)
            .await?
        {
            LoginDecision::Admit(_) => Ok(()),
            LoginDecision::Refuse { until } => Err(AuthError::RateLimited {
                retry_after_secs: ceil_secs((until - now).num_milliseconds()),
            }),
        }
    }

    /// A right password ends the streak.
    pub async fn login_succeeded(
        &self,
        subject: &LoginSubject,
        client: &Client,
    ) -> Result<(), AuthError> {
        Ok(self
            .store
            .clear_login_failures(&streak_key(subject, client))
            .await?)
    }
}

fn streak_key(subject: &LoginSubject, client: &Client) -> String {
    let subject = match subject {
        LoginSubject::Account(id) => format!("account\0{id}"),
        LoginSubject::Unknown(login_key) => format!("login\0{login_key}"),
    };
    let digest = Sha256::new()
        .chain_update(subject.as_bytes())
        .chain_update([0])
        .chain_update(client.bucket.to_string().as_bytes())
        .finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("login:{hex}")
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Whole seconds to wait, at least 1.
fn ceil_secs(ms: i64) -> u64 {
    u64::try_from((ms + 999) / 1000).unwrap_or(0).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> Client {
        Client::new(ip.parse().expect("ip"), 64)
    }

    #[test]
    fn streak_keys_hide_the_login_and_differ_per_bucket() {
        let (a, b) = (client("10.0.0.1"), client("10.0.0.2"));
        let ivan = LoginSubject::Unknown("ivan".into());
        assert_ne!(streak_key(&ivan, &a), streak_key(&ivan, &b));
        assert!(!streak_key(&ivan, &a).contains("ivan"));
        assert_ne!(
            streak_key(&LoginSubject::Account(7), &a),
            streak_key(&LoginSubject::Unknown("7".into()), &a)
        );
        // One /64: one streak.
        assert_eq!(
            streak_key(&ivan, &client("2001:db8::1")),
            streak_key(&ivan, &client("2001:db8::ffff:2"))
        );
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1001), 2);
        assert_eq!(ceil_secs(-5), 1);
    }
}
