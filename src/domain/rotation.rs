//! Refresh-token rotation, decided in pure code: each backend reads a
//! token's state under its lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL the
//! session row `FOR UPDATE`), asks [`plan_rotation`], and carries the plan
//! out in the same transaction.
//!
//! - A current, unexpired token of a live session rotates: it is consumed
//!   and its successor stored, expiring a refresh lifetime from now but
//!   never after the session's absolute end.
//! - A consumed token presented again within the grace window, while its
//!   successor is still unused, is a racing client: it gets that same
//!   successor (derived from the token, so nothing is stored for it).
//! - Any other second use is reuse: the whole family (session) is revoked.
//! - Unknown tokens, expired ones and those of revoked sessions are invalid.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::audit::EventKind;

/// What the backend read of the presented token, under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub user_id: i64,
    pub session_id: String,
    pub session_created_at: DateTime<Utc>,
    pub session_revoked: bool,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
    /// The successor derived from this token exists and is not consumed.
    pub successor_unused: bool,
}

/// The rotation settings (`AUTHQL_REFRESH_TTL`, `AUTHQL_SESSION_MAX_LIFETIME`,
/// `AUTHQL_REFRESH_GRACE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub refresh_ttl: Duration,
    pub max_lifetime: Duration,
    pub grace: Duration,
}

impl RotationPolicy {
    /// When a refresh token issued now for a session created at
    /// `session_created_at` expires: a refresh lifetime from now, never after
    /// the session's absolute end. `None` once that end has passed.
    pub fn successor_expiry(
        &self,
        session_created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let absolute_end = session_created_at
            .checked_add_signed(to_chrono(self.max_lifetime))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let expires_at = now
            .checked_add_signed(to_chrono(self.refresh_ttl))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .min(absolute_end);
        (expires_at > now).then_some(expires_at)
    }
}

/// What the backend does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationPlan {
    /// Nothing is written.
    Invalid,
    /// Consume the token, store the successor with this expiry (also the
    /// session's new expiry).
    Rotate { successor_expires_at: DateTime<Utc> },
    /// Nothing is written; answer with the same successor again.
    Replay,
    /// Revoke the session.
    RevokeFamily,
}

/// What a rotation came to, for the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The presented token was current: it is consumed, the successor stored.
    Rotated { user_id: i64, session_id: String },
    /// The presented token was consumed moments ago (inside the grace window)
    /// and its successor is still unused: answer with that same successor.
    Replayed { user_id: i64, session_id: String },
    /// A consumed token came back: the whole family is now revoked.
    ReuseDetected { user_id: i64, session_id: String },
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

pub fn plan_rotation(
    state: Option<&TokenState>,
    now: DateTime<Utc>,
    policy: &RotationPolicy,
) -> RotationPlan {
    let Some(state) = state.filter(|s| !s.session_revoked) else {
        return RotationPlan::Invalid;
    };
    match state.consumed_at {
        None => match policy.successor_expiry(state.session_created_at, now) {
            Some(successor_expires_at) if state.expires_at > now => RotationPlan::Rotate {
                successor_expires_at,
            },
            _ => RotationPlan::Invalid,
        },
        Some(consumed_at) => {
            // Another instance's clock may run ahead: a negative age is "just now".
            let age = (now - consumed_at).to_std().unwrap_or_default();
            if age < policy.grace && state.successor_unused {
                RotationPlan::Replay
            } else {
                RotationPlan::RevokeFamily
            }
        }
    }
}

impl RotationPlan {
    pub fn outcome(&self, state: Option<&TokenState>) -> RotationOutcome {
        let Some(state) = state else {
            return RotationOutcome::Invalid;
        };
        let (user_id, session_id) = (state.user_id, state.session_id.clone());
        match self {
            RotationPlan::Invalid => RotationOutcome::Invalid,
            RotationPlan::Rotate { .. } => RotationOutcome::Rotated {
                user_id,
                session_id,
            },
            RotationPlan::Replay => RotationOutcome::Replayed {
                user_id,
                session_id,
            },
            RotationPlan::RevokeFamily => RotationOutcome::ReuseDetected {
                user_id,
                session_id,
            },
        }
    }
}

impl RotationOutcome {
    /// The security event an outcome is recorded as (none for an invalid token).
    pub fn event(&self) -> Option<(EventKind, i64, Option<&str>)> {
        match self {
            Self::Rotated { user_id, .. } => Some((EventKind::Refresh, *user_id, None)),
            Self::Replayed { user_id, .. } => Some((EventKind::RefreshReplayed, *user_id, None)),
            Self::ReuseDetected {
                user_id,
                session_id,
            } => Some((EventKind::ReuseDetected, *user_id, Some(session_id))),
            Self::Invalid => None,
        }
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: u64 = 24 * 3600;
    const POLICY: RotationPolicy = RotationPolicy {
        refresh_ttl: Duration::from_secs(30 * DAY),
        max_lifetime: Duration::from_secs(90 * DAY),
        grace: Duration::from_secs(5),
    };

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn current() -> TokenState {
        TokenState {
            user_id: 7,
            session_id: "s".into(),
            session_created_at: at(0),
            session_revoked: false,
            expires_at: at(30 * DAY as i64),
            consumed_at: None,
            successor_unused: false,
        }
    }

    #[test]
    fn a_current_token_rotates_within_the_absolute_lifetime() {
        assert_eq!(
            plan_rotation(Some(&current()), at(10), &POLICY),
            RotationPlan::Rotate {
                successor_expires_at: at(10 + 30 * DAY as i64)
            }
        );
        // Near the absolute end the successor expires with the session.
        let late = TokenState {
            expires_at: at(89 * DAY as i64 + 10),
            ..current()
        };
        assert_eq!(
            plan_rotation(Some(&late), at(89 * DAY as i64), &POLICY),
            RotationPlan::Rotate {
                successor_expires_at: at(90 * DAY as i64)
            }
        );
        // Past it, nothing rotates.
        let over = TokenState {
            expires_at: at(91 * DAY as i64),
            ..current()
        };
        assert_eq!(
            plan_rotation(Some(&over), at(90 * DAY as i64), &POLICY),
            RotationPlan::Invalid
        );
    }

    #[test]
    fn expired_unknown_and_revoked_are_invalid() {
        assert_eq!(plan_rotation(None, at(0), &POLICY), RotationPlan::Invalid);
        let expired = TokenState {
            expires_at: at(5),
            ..current()
        };
        assert_eq!(
            plan_rotation(Some(&expired), at(5), &POLICY),
            RotationPlan::Invalid
        );
        let revoked = TokenState {
            session_revoked: true,
            consumed_at: Some(at(0)),
            ..current()
        };
        assert_eq!(
            plan_rotation(Some(&revoked), at(1), &POLICY),
            RotationPlan::Invalid
        );
    }

    #[test]
    fn a_second_use_is_a_replay_only_inside_the_grace_with_an_unused_successor() {
        let consumed = |successor_unused| TokenState {
            consumed_at: Some(at(100)),
            successor_unused,
            ..current()
        };
        assert_eq!(
            plan_rotation(Some(&consumed(true)), at(104), &POLICY),
            RotationPlan::Replay
        );
        assert_eq!(
            plan_rotation(Some(&consumed(true)), at(105), &POLICY),
            RotationPlan::RevokeFamily
        );
        assert_eq!(
            plan_rotation(Some(&consumed(false)), at(101), &POLICY),
            RotationPlan::RevokeFamily
        );
        // A clock running behind the one that consumed it: still "just now".
        assert_eq!(
            plan_rotation(Some(&consumed(true)), at(98), &POLICY),
            RotationPlan::Replay
        );
        let no_grace = RotationPolicy {
            grace: Duration::ZERO,
            ..POLICY
        };
        assert_eq!(
            plan_rotation(Some(&consumed(true)), at(100), &no_grace),
            RotationPlan::RevokeFamily
        );
    }

    fn state() -> impl Strategy<Value = Option<TokenState>> {
        proptest::option::of(
            (
                0i64..200 * DAY as i64,
                any::<bool>(),
                0i64..200 * DAY as i64,
                proptest::option::of(0i64..200 * DAY as i64),
                any::<bool>(),
            )
                .prop_map(|(created, revoked, expires, consumed, unused)| TokenState {
                    user_id: 1,
                    session_id: "s".into(),
                    session_created_at: at(created),
                    session_revoked: revoked,
                    expires_at: at(expires),
                    consumed_at: consumed.map(at),
                    successor_unused: unused,
                }),
        )
    }

    proptest! {
        /// Whatever the state: a rotation never outlives the session's
        /// absolute end or lies in the past; only a consumed token can
        /// revoke or replay; a revoked session never rotates.
        #[test]
        fn plans_keep_the_rules(state in state(), now in 0i64..200 * DAY as i64) {
            let now = at(now);
            let plan = plan_rotation(state.as_ref(), now, &POLICY);
            match (&plan, &state) {
                (RotationPlan::Rotate { successor_expires_at }, Some(s)) => {
                    prop_assert!(!s.session_revoked && s.consumed_at.is_none());
                    prop_assert!(*successor_expires_at > now && s.expires_at > now);
                    prop_assert!(*successor_expires_at <= s.session_created_at + to_chrono(POLICY.max_lifetime));
                }
                (RotationPlan::Replay | RotationPlan::RevokeFamily, Some(s)) => {
                    prop_assert!(!s.session_revoked && s.consumed_at.is_some());
                }
                (RotationPlan::Invalid, _) => {}
                (_, None) => prop_assert!(false, "no state, yet {plan:?}"),
            }
            let outcome = plan.outcome(state.as_ref());
            prop_assert_eq!(outcome.event().is_some(), plan != RotationPlan::Invalid);
        }
    }
}
