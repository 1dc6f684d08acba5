//! The one public error type and the one table of `extensions.code`.
//!
//! Services return [`AuthError`]; resolvers turn it into a GraphQL error with
//! [`async_graphql::ErrorExtensions::extend`]. Nothing else reaches clients:
//! an [`AuthError::Internal`] is logged in full here and shown as
//! "internal error" only.

use async_graphql::ErrorExtensions;

pub use crate::domain::field::{FieldCode, FieldError};

// Every `extensions.code` authql answers with (API.md's table, plus the
// HTTP-level ones). Nowhere else spells them.

/// Input breaks a rule; `extensions.fields` lists every broken rule.
pub const VALIDATION: &str = "VALIDATION";
/// A signed-in call without a valid access token of a live session.
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// Unknown login or wrong password (one answer for both).
pub const INVALID_CREDENTIALS: &str = "INVALID_CREDENTIALS";
/// A refresh token that is malformed, expired, revoked, reused or unknown.
pub const INVALID_REFRESH_TOKEN: &str = "INVALID_REFRESH_TOKEN";
/// Too many attempts; `extensions.retryAfter` says after how many seconds.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// A document that does not parse.
pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// A document that is invalid or over a limit.
pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// An HTTP request that is not a GraphQL request at all (HTTP 400/405/408,
/// 413/414/431).
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// An unknown path (HTTP 404), or none of the caller's cars or sessions
/// has the id given (the `NotFound` result).
pub const NOT_FOUND: &str = "NOT_FOUND";
/// A token or code from a mail that is malformed, expired, used, replaced
/// by a newer one, or unknown (the `InvalidToken` result).
pub const INVALID_TOKEN: &str = "INVALID_TOKEN";
/// `createToken` by e-mail while `AUTHQL_REQUIRE_VERIFIED_EMAIL` is on and
/// the address is not verified (told only after the password checked out).
pub const EMAIL_NOT_VERIFIED: &str = "EMAIL_NOT_VERIFIED";
/// A feature this server has switched off (sign-in codes without
/// `AUTHQL_SIGN_IN_CODES`).
pub const NOT_ENABLED: &str = "NOT_ENABLED";
/// A request authenticated by the refresh cookie without the CSRF proofs:
/// no `X-Requested-With` header, or an `Origin` that is neither authql's
/// own nor in `AUTHQL_CORS_ORIGINS`. Nothing was changed.
pub const CSRF_REFUSED: &str = "CSRF_REFUSED";
/// A request that names a trusted document by id (`documentId`, or
/// Apollo's `persistedQuery` hash) that the manifest does not hold.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
/// A document outside the manifest, on a server with
/// `AUTHQL_TRUSTED_DOCUMENTS_ONLY`.
pub const TRUSTED_DOCUMENT_REQUIRED: &str = "TRUSTED_DOCUMENT_REQUIRED";
/// Anything unexpected; the message says only "internal error".
pub const INTERNAL: &str = "INTERNAL";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `VALIDATION`, with every broken rule in `extensions.fields`.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    /// `UNAUTHENTICATED`.
    #[error("not signed in: a valid access token is required")]
    Unauthenticated,
    /// `INVALID_CREDENTIALS`: unknown login and wrong password alike; the
    /// detail stays in the log.
    #[error("invalid login or password")]
    InvalidCredentials,
    /// `INVALID_REFRESH_TOKEN`.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// `NOT_FOUND`: the signed-in user has no such thing (another user's
    /// is not theirs either, and is never told apart).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// `INVALID_TOKEN`.
    #[error("invalid or expired token")]
    InvalidToken,
    /// `EMAIL_NOT_VERIFIED`.
    #[error("the e-mail address is not verified yet: follow the link mailed to it")]
    EmailNotVerified,
    /// `NOT_ENABLED`: the named feature is switched off here.
    #[error("{0} is not enabled on this server")]
    NotEnabled(&'static str),
    /// `CSRF_REFUSED`.
    #[error("{0}")]
    CsrfRefused(&'static str),
    /// `RATE_LIMITED`, with `extensions.retryAfter`.
    #[error("too many attempts; retry after {retry_after_secs} seconds")]
    RateLimited { retry_after_secs: u64 },
    /// `INTERNAL`: logged in full, shown as "internal error" only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => VALIDATION,
            Self::Unauthenticated => UNAUTHENTICATED,
            Self::InvalidCredentials => INVALID_CREDENTIALS,
            Self::InvalidRefreshToken => INVALID_REFRESH_TOKEN,
            Self::RateLimited { .. } => RATE_LIMITED,
            Self::NotFound(_) => NOT_FOUND,
            Self::InvalidToken => INVALID_TOKEN,
            Self::EmailNotVerified => EMAIL_NOT_VERIFIED,
            Self::NotEnabled(_) => NOT_ENABLED,
            Self::CsrfRefused(_) => CSRF_REFUSED,
            Self::Internal(_) => INTERNAL,
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

impl ErrorExtensions for AuthError {
    fn extend(&self) -> async_graphql::Error {
        if let Self::Internal(err) = self {
            tracing::error!(error = ?err, "internal error");
        }
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                Self::Validation(fields) => {
                    let fields = async_graphql::Value::from_json(
                        serde_json::to_value(fields).unwrap_or_default(),
                    )
                    .unwrap_or_default();
                    ext.set("fields", fields);
                }
                Self::RateLimited { retry_after_secs } => ext.set("retryAfter", *retry_after_secs),
                _ => {}
            }
        })
    }
}

/// Sets `extensions.code` on an error the engine raised.
pub fn with_code(mut err: async_graphql::ServerError, code: &str) -> async_graphql::ServerError {
    let mut ext = err.extensions.take().unwrap_or_default();
    ext.set("code", code);
    err.extensions = Some(ext);
    err
}
