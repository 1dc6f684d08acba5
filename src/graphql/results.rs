//! Typed results: every mutation added after the first five returns a
//! union `<Name>Result` of its success type and the error types it can
//! answer with, each implementing `UserError`. A client selects
//! `... on UserError { code message }` always, so an arm added later never
//! breaks it. Failures of the request itself (not signed in, a bad
//! document, INTERNAL) stay top-level errors, as for the first five.

use async_graphql::{ErrorExtensions as _, Interface, SimpleObject};

use crate::error::{self, AuthError};

/// One broken rule: the same `field`, `code` and `message` as an entry of
/// `extensions.fields`.
#[derive(SimpleObject, Clone)]
#[graphql(name = "FieldError")]
pub struct FieldProblem {
    /// The input field's GraphQL name, e.g. `email`, `newPassword`, `file`.
    pub field: String,
    /// FIELD_MISSING, INVALID, TOO_SHORT, TOO_LONG, OUT_OF_RANGE, TAKEN,
    /// TOO_COMMON or TOO_SIMILAR.
    pub code: String,
    pub message: String,
}

/// Input breaks a rule; `fields` lists every broken rule at once.
#[derive(SimpleObject)]
pub struct ValidationFailed {
    /// `VALIDATION`.
    pub code: String,
    pub message: String,
    pub fields: Vec<FieldProblem>,
}

/// The password given is not the account's (or no account has this login).
#[derive(SimpleObject)]
pub struct InvalidCredentials {
    /// `INVALID_CREDENTIALS`.
    pub code: String,
    pub message: String,
}

/// Too many attempts.
#[derive(SimpleObject)]
pub struct RateLimited {
    /// `RATE_LIMITED`.
    pub code: String,
    pub message: String,
    /// Seconds to wait before trying again.
    pub retry_after: i32,
}

/// None of the signed-in user's cars or sessions has this id (whether
/// someone else's has is never told).
#[derive(SimpleObject)]
pub struct NotFound {
    /// `NOT_FOUND`.
    pub code: String,
    pub message: String,
}

/// The link's or code's token is malformed, expired, used, replaced by a
/// newer one, or unknown: ask for a new mail.
#[derive(SimpleObject)]
pub struct InvalidToken {
    /// `INVALID_TOKEN`.
    pub code: String,
    pub message: String,
}

/// The refresh token (or cookie) is malformed, expired, revoked, reused
/// or missing: sign in again.
#[derive(SimpleObject)]
pub struct InvalidRefreshToken {
    /// `INVALID_REFRESH_TOKEN`.
    pub code: String,
    pub message: String,
}

/// An expected failure of a mutation: `code` is one of the strings of
/// `extensions.code` (VALIDATION, INVALID_CREDENTIALS, RATE_LIMITED,
/// NOT_FOUND, INVALID_TOKEN, ...).
#[derive(Interface)]
// The two `field(...)` entries each have their own `ty`: not duplicates.
#[allow(clippy::duplicated_attributes)]
#[graphql(
    field(
        name = "code",
        ty = "&String",
        desc = "As `extensions.code` would say it."
    ),
    field(name = "message", ty = "&String", desc = "For people; may change.")
)]
pub enum UserError {
    ValidationFailed(ValidationFailed),
    InvalidCredentials(InvalidCredentials),
    RateLimited(RateLimited),
    NotFound(NotFound),
    InvalidToken(InvalidToken),
    InvalidRefreshToken(InvalidRefreshToken),
}

/// An error arm of a result union: which service errors it stands for.
pub trait ErrorArm: Sized {
    fn from_error(error: &AuthError) -> Option<Self>;
}

impl ErrorArm for ValidationFailed {
    fn from_error(error: &AuthError) -> Option<Self> {
        match error {
            AuthError::Validation(fields) => Some(ValidationFailed {
                code: error::VALIDATION.to_owned(),
                message: error.to_string(),
                fields: fields
                    .iter()
                    .map(|f| FieldProblem {
                        field: f.field.clone(),
                        code: f.code.name().to_owned(),
                        message: f.message.clone(),
                    })
                    .collect(),
            }),
            _ => None,
        }
    }
}

impl ErrorArm for InvalidCredentials {
    fn from_error(error: &AuthError) -> Option<Self> {
        matches!(error, AuthError::InvalidCredentials).then(|| InvalidCredentials {
            code: error::INVALID_CREDENTIALS.to_owned(),
            message: error.to_string(),
        })
    }
}

impl ErrorArm for RateLimited {
    fn from_error(error: &AuthError) -> Option<Self> {
        match error {
            AuthError::RateLimited { retry_after_secs } => Some(RateLimited {
                code: error::RATE_LIMITED.to_owned(),
                message: error.to_string(),
                retry_after: i32::try_from(*retry_after_secs).unwrap_or(i32::MAX),
            }),
            _ => None,
        }
    }
}

impl ErrorArm for NotFound {
    fn from_error(error: &AuthError) -> Option<Self> {
        matches!(error, AuthError::NotFound(_)).then(|| NotFound {
            code: error::NOT_FOUND.to_owned(),
            message: error.to_string(),
        })
    }
}

impl ErrorArm for InvalidRefreshToken {
    fn from_error(error: &AuthError) -> Option<Self> {
        matches!(error, AuthError::InvalidRefreshToken).then(|| InvalidRefreshToken {
            code: error::INVALID_REFRESH_TOKEN.to_owned(),
            message: error.to_string(),
        })
    }
}

impl ErrorArm for InvalidToken {
    fn from_error(error: &AuthError) -> Option<Self> {
        matches!(error, AuthError::InvalidToken).then(|| InvalidToken {
            code: error::INVALID_TOKEN.to_owned(),
            message: error.to_string(),
        })
    }
}

/// Declares `<Name>Result`: the success type and the error arms, in that
/// order, and its conversion from a service result. A service error with
/// no arm here is a failure of the request: a top-level error.
macro_rules! result_union {
    ($(#[$doc:meta])* $name:ident = $success:ident $(| $arm:ident)*) => {
        $(#[$doc])*
        #[derive(async_graphql::Union)]
        // One per response, moved once: boxing the success buys nothing.
        #[allow(clippy::large_enum_variant)]
        pub enum $name {
            $success($success),
            $($arm($crate::graphql::results::$arm),)*
        }

        impl $name {
            pub fn from_result(
                result: Result<$success, $crate::error::AuthError>,
            ) -> async_graphql::Result<Self> {
                use $crate::graphql::results::ErrorArm as _;
                match result {
                    Ok(success) => Ok(Self::$success(success)),
                    Err(error) => {
                        $(
                            if let Some(arm) = $crate::graphql::results::$arm::from_error(&error) {
                                return Ok(Self::$arm(arm));
                            }
                        )*
                        Err($crate::graphql::results::top_level(error))
                    }
                }
            }
        }
    };
}
pub(crate) use result_union;

/// A service error as a top-level GraphQL error.
pub fn top_level(error: AuthError) -> async_graphql::Error {
    error.extend()
}
