//! Rate limits and sign-in throttling, with every counter in the database so
//! all instances share them.
//!
//! - Per client address and action: a fixed-window counter (createToken
//!   100/5 min, signUp 20/10 min, refreshToken 300/5 min by default).
//! - Per login and client address: after 5 consecutive failures each further
//!   attempt must wait 1 s, doubling per failure up to 1 hour; the right
//!   password is refused too while the wait lasts. Keyed by address as well,
//!   so an attacker elsewhere cannot lock the real user out.
//! - The login is stored only as a hash (with the address), never as typed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::{RateLimit, SecurityConfig};
use crate::error::AuthError;
use crate::storage::Store;

/// A failure streak older than this starts again from one.
const STREAK_RESET: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SignIn,
    SignUp,
    Refresh,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::SignIn => "createToken",
            Action::SignUp => "signUp",
            Action::Refresh => "refreshToken",
        }
    }
}

pub struct Throttle {
    store: Arc<dyn Store>,
    sign_in: RateLimit,
    sign_up: RateLimit,
    refresh: RateLimit,
    free_failures: u32,
    max_delay: Duration,
}

impl Throttle {
    pub fn new(store: Arc<dyn Store>, config: &SecurityConfig) -> Self {
        Self {
            store,
            sign_in: config.rate_sign_in,
            sign_up: config.rate_sign_up,
            refresh: config.rate_refresh,
            free_failures: config.login_free_failures,
            max_delay: config.login_max_delay,
        }
    }

    /// Counts one attempt of `action` from `client`; refuses it past the limit.
    pub async fn attempt(&self, action: Action, client: IpAddr) -> Result<(), AuthError> {
        let limit = match action {
            Action::SignIn => self.sign_in,
            Action::SignUp => self.sign_up,
            Action::Refresh => self.refresh,
        };
        if limit.is_off() {
            return Ok(());
        }
        let now = Utc::now().timestamp_millis();
        let window = i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
        let start = now - now.rem_euclid(window);
        let hits = self
            .store
            .count_hit(&format!("{}:{client}", action.name()), millis(start))
            .await?;
        if hits > i64::from(limit.max) {
            return Err(AuthError::RateLimited {
                retry_after_secs: ceil_secs(start + window - now),
            });
        }
        Ok(())
    }

    /// Refuses a sign-in while this login is waiting out failures from this address.
    pub async fn check_login(&self, login_key: &str, client: IpAddr) -> Result<(), AuthError> {
        let now = Utc::now();
        let blocked_until = self
            .store
            .login_failures(&streak_key(login_key, client))
            .await?
            .and_then(|f| f.blocked_until)
            .filter(|until| *until > now);
        match blocked_until {
            Some(until) => Err(AuthError::RateLimited {
                retry_after_secs: ceil_secs((until - now).num_milliseconds()),
            }),
            None => Ok(()),
        }
    }

    pub async fn login_failed(&self, login_key: &str, client: IpAddr) -> Result<(), AuthError> {
        let now = Utc::now();
        let key = streak_key(login_key, client);
        let reset_before = now - chrono::Duration::from_std(STREAK_RESET).unwrap_or_default();
        let failures = self
            .store
            .add_login_failure(&key, now, reset_before)
            .await?;
        let over = failures - i64::from(self.free_failures);
        if over >= 0 {
            let delay = backoff(over, self.max_delay);
            self.store
                .block_login(
                    &key,
                    now + chrono::Duration::from_std(delay).unwrap_or_default(),
                )
                .await?;
        }
        Ok(())
    }

    pub async fn login_succeeded(&self, login_key: &str, client: IpAddr) -> Result<(), AuthError> {
        Ok(self
            .store
            .clear_login_failures(&streak_key(login_key, client))
            .await?)
    }
}

/// 1 s after the first failure over the free ones, doubling, capped.
fn backoff(over: i64, max: Duration) -> Duration {
    let exponent = u32::try_from(over.clamp(0, 62)).unwrap_or(62);
    Duration::from_secs(1u64 << exponent).min(max)
}

fn streak_key(login_key: &str, client: IpAddr) -> String {
    let digest = Sha256::new()
        .chain_update(login_key.as_bytes())
        .chain_update([0])
        .chain_update(client.to_string().as_bytes())
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

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(0, hour), Duration::from_secs(1));
        assert_eq!(backoff(1, hour), Duration::from_secs(2));
        assert_eq!(backoff(5, hour), Duration::from_secs(32));
        assert_eq!(backoff(12, hour), hour);
        assert_eq!(backoff(1000, hour), hour);
    }

    #[test]
    fn streak_keys_hide_the_login_and_differ_per_address() {
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_ne!(streak_key("ivan", a), streak_key("ivan", b));
        assert!(!streak_key("ivan", a).contains("ivan"));
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1001), 2);
        assert_eq!(ceil_secs(-5), 1);
    }
}
