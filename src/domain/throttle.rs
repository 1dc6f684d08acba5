//! Sign-in back-off, decided in pure code: the backends read a streak under
//! their lock, ask [`plan_login_attempt`], and write what it says, in one
//! transaction, so concurrent guesses cannot all be admitted.
//!
//! An attempt is counted as a failure when it is admitted, before the
//! password is checked (a success then clears the streak). After
//! `free_failures` counted attempts each further one must wait, 1 s
//! doubling per failure up to `max_delay`, and while it waits every
//! attempt, right password included, is refused uncounted.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The back-off settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    pub free_failures: u32,
    pub max_delay: Duration,
    /// A streak whose last attempt is older than this starts again.
    pub streak_reset: Duration,
}

/// One stored streak: attempts counted and the wait they impose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStreak {
    pub failures: i64,
    pub blocked_until: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginDecision {
    /// Waiting out failures: refused, nothing written.
    Refuse { until: DateTime<Utc> },
    /// Checked; store this streak (which counts the attempt).
    Admit(LoginStreak),
}

pub fn plan_login_attempt(
    stored: Option<&LoginStreak>,
    now: DateTime<Utc>,
    policy: &LoginPolicy,
) -> LoginDecision {
    let reset_before = now - to_chrono(policy.streak_reset);
    let current = stored.filter(|s| s.updated_at >= reset_before);
    if let Some(until) = current.and_then(|s| s.blocked_until).filter(|u| *u > now) {
        return LoginDecision::Refuse { until };
    }
    let failures = current.map_or(0, |s| s.failures.max(0)) + 1;
    let over = failures - i64::from(policy.free_failures);
    let blocked_until = (over >= 0).then(|| now + to_chrono(backoff(over, policy.max_delay)));
    LoginDecision::Admit(LoginStreak {
        failures,
        blocked_until,
        updated_at: now,
    })
}

/// 1 s after the first failure over the free ones, doubling, capped.
pub fn backoff(over: i64, max: Duration) -> Duration {
    let exponent = u32::try_from(over.clamp(0, 62)).unwrap_or(62);
    Duration::from_secs(1u64 << exponent).min(max)
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: LoginPolicy = LoginPolicy {
        free_failures: 5,
        max_delay: Duration::from_secs(3600),
        streak_reset: Duration::from_secs(24 * 3600),
    };

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn admit(stored: Option<&LoginStreak>, now: DateTime<Utc>) -> LoginStreak {
        match plan_login_attempt(stored, now, &POLICY) {
            LoginDecision::Admit(streak) => streak,
            refused => panic!("expected admission, got {refused:?}"),
        }
    }

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
    fn five_free_attempts_then_a_doubling_wait() {
        let mut streak = None;
        for i in 1..=4 {
            let s = admit(streak.as_ref(), at(0));
            assert_eq!((s.failures, s.blocked_until), (i, None));
            streak = Some(s);
        }
        // The fifth is admitted and already sets the wait for the sixth.
        let fifth = admit(streak.as_ref(), at(0));
        assert_eq!(fifth.blocked_until, Some(at(1)));
        assert_eq!(
            plan_login_attempt(Some(&fifth), at(0), &POLICY),
            LoginDecision::Refuse { until: at(1) }
        );
        let sixth = admit(Some(&fifth), at(1));
        assert_eq!(sixth.blocked_until, Some(at(3)));
    }

    #[test]
    fn an_old_streak_starts_again() {
        let old = LoginStreak {
            failures: 40,
            blocked_until: Some(at(10)),
            updated_at: at(0),
        };
        let fresh = admit(Some(&old), at(24 * 3600 + 1));
        assert_eq!((fresh.failures, fresh.blocked_until), (1, None));
    }

    proptest! {
        /// However attempts interleave in time, no more than `free_failures`
        /// are admitted before the first refusal at one instant.
        #[test]
        fn a_burst_admits_at_most_the_free_failures(burst in 1usize..200) {
            let mut streak = None;
            let mut admitted = 0;
            for _ in 0..burst {
                match plan_login_attempt(streak.as_ref(), at(0), &POLICY) {
                    LoginDecision::Admit(s) => { admitted += 1; streak = Some(s); }
                    LoginDecision::Refuse { .. } => {}
                }
            }
            prop_assert!(admitted <= POLICY.free_failures as usize);
        }

        /// A wait never exceeds the cap and never lies in the past.
        #[test]
        fn waits_are_bounded(failures in 0i64..1_000_000, secs in 0i64..100_000) {
            let stored = LoginStreak { failures, blocked_until: None, updated_at: at(secs) };
            if let LoginDecision::Admit(s) = plan_login_attempt(Some(&stored), at(secs), &POLICY) {
                if let Some(until) = s.blocked_until {
                    prop_assert!(until > at(secs));
                    prop_assert!(until <= at(secs) + chrono::Duration::hours(1));
                }
            }
        }
    }
}
