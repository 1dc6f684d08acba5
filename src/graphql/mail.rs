//! Mutations that go through a mailbox: e-mail verification, password
//! reset, e-mail change, sign-in codes. Typed results (see
//! [`super::results`]); the links in the mails carry the tokens these take.

use async_graphql::{Context, Object, Result, SimpleObject};

use super::mutation::services;
use super::results::result_union;
use super::types::AuthPayload;
use super::viewer;
use crate::domain::Password;

#[derive(Default)]
pub struct MailMutation;

/// The mail is queued. For requests that name an address, this is the
/// answer whether or not an account has it (only then does a mail go).
#[derive(SimpleObject)]
pub struct MailQueued {
    /// Seconds the link or code in the mail works for.
    pub expires_in: i32,
}

/// The address the link was sent to is verified.
#[derive(SimpleObject)]
pub struct VerifyEmailSuccess {
    pub email: String,
}

/// The new password is set; every session and access token of the user
/// has ended (sign in again).
#[derive(SimpleObject)]
pub struct ResetPasswordSuccess {
    pub signed_out_sessions: i32,
}

/// The account's e-mail is the confirmed, verified address now.
#[derive(SimpleObject)]
pub struct ConfirmEmailChangeSuccess {
    pub email: String,
}

/// Signed in: a new session.
#[derive(SimpleObject)]
pub struct SignInWithCodeSuccess {
    pub auth: AuthPayload,
}

result_union!(
    /// What `requestEmailVerification` can answer.
    RequestEmailVerificationResult = MailQueued | ValidationFailed | RateLimited
);
result_union!(
    /// What `verifyEmail` can answer.
    VerifyEmailResult = VerifyEmailSuccess | InvalidToken | RateLimited
);
result_union!(
    /// What `requestPasswordReset` can answer.
    RequestPasswordResetResult = MailQueued | ValidationFailed | RateLimited
);
result_union!(
    /// What `resetPassword` can answer.
    ResetPasswordResult = ResetPasswordSuccess | ValidationFailed | InvalidToken | RateLimited
);
result_union!(
    /// What `requestEmailChange` can answer.
    RequestEmailChangeResult = MailQueued | ValidationFailed | InvalidCredentials | RateLimited
);
result_union!(
    /// What `confirmEmailChange` can answer.
    ConfirmEmailChangeResult =
        ConfirmEmailChangeSuccess | ValidationFailed | InvalidToken | RateLimited
);
result_union!(
    /// What `requestSignInCode` can answer.
    RequestSignInCodeResult = MailQueued | ValidationFailed | RateLimited
);
result_union!(
    /// What `signInWithCode` can answer.
    SignInWithCodeResult = SignInWithCodeSuccess | InvalidCredentials | RateLimited
);

fn seconds(d: std::time::Duration) -> MailQueued {
    MailQueued {
        expires_in: i32::try_from(d.as_secs()).unwrap_or(i32::MAX),
    }
}

#[Object]
impl MailMutation {
    /// Mail the signed-in user's address a new verification link (the
    /// one sent at sign-up may have expired). Needs `Authorization: Bearer`.
    async fn request_email_verification(
        &self,
        ctx: &Context<'_>,
    ) -> Result<RequestEmailVerificationResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .request_email_verification(viewer(ctx), &client)
            .await
            .map(seconds);
        RequestEmailVerificationResult::from_result(result)
    }

    /// Follow a verification link: `token` is its `token` parameter.
    async fn verify_email(&self, ctx: &Context<'_>, token: String) -> Result<VerifyEmailResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .verify_email(&token, &client)
            .await
            .map(|email| VerifyEmailSuccess { email });
        VerifyEmailResult::from_result(result)
    }

    /// Mail a password reset link to this address if an account has it.
    /// The answer is the same either way.
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        email: String,
    ) -> Result<RequestPasswordResetResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .request_password_reset(&email, &client)
            .await
            .map(seconds);
        RequestPasswordResetResult::from_result(result)
    }

    /// Set a new password with a reset link's token. The sign-up password
    /// rules apply; every session of the user ends.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password: String,
    ) -> Result<ResetPasswordResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .reset_password(&token, Password::new(new_password), &client)
            .await
            .map(|revoked| ResetPasswordSuccess {
                signed_out_sessions: i32::try_from(revoked).unwrap_or(i32::MAX),
            });
        ResetPasswordResult::from_result(result)
    }

    /// Ask to move the account to another address: the password is
    /// checked like a sign-in, a confirmation link goes to `newEmail` and a
    /// notice to the current address. Needs `Authorization: Bearer`.
    async fn request_email_change(
        &self,
        ctx: &Context<'_>,
        password: String,
        new_email: String,
    ) -> Result<RequestEmailChangeResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .request_email_change(viewer(ctx), Password::new(password), new_email, &client)
            .await
            .map(seconds);
        RequestEmailChangeResult::from_result(result)
    }

    /// Follow an e-mail change link: the new address becomes the
    /// account's (verified). TAKEN if it was registered meanwhile.
    async fn confirm_email_change(
        &self,
        ctx: &Context<'_>,
        token: String,
    ) -> Result<ConfirmEmailChangeResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .confirm_email_change(&token, &client)
            .await
            .map(|user| ConfirmEmailChangeSuccess {
                email: user.email.unwrap_or_default(),
            });
        ConfirmEmailChangeResult::from_result(result)
    }

    /// Mail a one-time sign-in code (and a link with it) to this address
    /// if an account has it; the same answer either way. Only with
    /// `AUTHQL_SIGN_IN_CODES=true` (else NOT_ENABLED).
    async fn request_sign_in_code(
        &self,
        ctx: &Context<'_>,
        email: String,
    ) -> Result<RequestSignInCodeResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts
            .request_sign_in_code(&email, &client)
            .await
            .map(seconds);
        RequestSignInCodeResult::from_result(result)
    }

    /// Sign in with a mailed code. A code works once, for five tries and
    /// `AUTHQL_SIGN_IN_CODE_TTL`; wrong code and unknown address are one
    /// answer, InvalidCredentials.
    async fn sign_in_with_code(
        &self,
        ctx: &Context<'_>,
        email: String,
        code: String,
    ) -> Result<SignInWithCodeResult> {
        let (accounts, client) = services(ctx)?;
        let result = accounts.sign_in_with_code(&email, &code, &client).await;
        let result = match result {
            Ok(signed_in) => Ok(SignInWithCodeSuccess {
                auth: super::session::payload(ctx, signed_in)?,
            }),
            Err(e) => Err(e),
        };
        SignInWithCodeResult::from_result(result)
    }
}
