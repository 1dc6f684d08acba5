//! The kinds of security event the audit trail records.

/// One kind of security event; [`EventKind::name`] is what the
/// `security_events.kind` column and the metrics label hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    SignUp,
    SignIn,
    SignInFailed,
    Refresh,
    RefreshReplayed,
    ReuseDetected,
    Revoke,
    SignOutEverywhere,
    /// Profile fields or cars changed (the detail names the fields, never values).
    ProfileUpdated,
    PasswordChanged,
    /// One session ended by its owner, or all but the current one.
    SessionRevoked,
    /// The user was deleted; the event keeps only the id.
    AccountDeleted,
    /// An avatar uploaded or removed.
    AvatarChanged,
    /// A mail with a token or code was asked for (the detail: which).
    MailRequested,
    /// The user followed a verification link.
    EmailVerified,
    /// A password set through a reset link; every session ended.
    PasswordReset,
    /// An e-mail change confirmed from the new address.
    EmailChanged,
    /// A request refused by a limit; aggregated per client bucket and minute.
    RateLimited,
    /// Users taken over by `authql import` (one event per batch; the detail
    /// gives the format and count).
    UsersImported,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::SignUp => "sign_up",
            EventKind::SignIn => "sign_in",
            EventKind::SignInFailed => "sign_in_failed",
            EventKind::Refresh => "refresh",
            EventKind::RefreshReplayed => "refresh_replayed",
            EventKind::ReuseDetected => "refresh_reuse_detected",
            EventKind::Revoke => "revoke",
            EventKind::SignOutEverywhere => "sign_out_everywhere",
            EventKind::ProfileUpdated => "profile_updated",
            EventKind::PasswordChanged => "password_changed",
            EventKind::SessionRevoked => "session_revoked",
            EventKind::AccountDeleted => "account_deleted",
            EventKind::AvatarChanged => "avatar_changed",
            EventKind::MailRequested => "mail_requested",
            EventKind::EmailVerified => "email_verified",
            EventKind::PasswordReset => "password_reset",
            EventKind::EmailChanged => "email_changed",
            EventKind::RateLimited => "rate_limited",
            EventKind::UsersImported => "users_imported",
        }
    }
}
