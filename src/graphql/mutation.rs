use std::sync::Arc;

use super::request_data;
use async_graphql::{Context, ErrorExtensions as _, MergedObject, Object, Result};

use super::account::AccountMutation;
use super::mail::MailMutation;
use super::session::{payload, SessionMutation};

use super::types::{AuthPayload, CreateTokenInput, SignUpInput};
use crate::domain::{Client, Password, SignInForm};
use crate::service::AccountService;

/// The five mutations of the first release (plain results, errors in
/// `errors[]`), then every later one (typed results).
#[derive(MergedObject, Default)]
pub struct Mutation(AuthMutation, AccountMutation, MailMutation, SessionMutation);

/// Sign-up, sign-in and tokens.
#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Register a new user (with optional cars) and sign them in.
    /// Broken rules: VALIDATION with every problem in `extensions.fields`.
    async fn sign_up(&self, ctx: &Context<'_>, input: SignUpInput) -> Result<AuthPayload> {
        let (accounts, client) = services(ctx)?;
        accounts
            .sign_up(input.into(), &client)
            .await
            .map_err(|e| e.extend())
            .and_then(|signed_in| payload(ctx, signed_in))
    }

    /// Sign in with username or e-mail and password.
    /// Unknown login or wrong password: INVALID_CREDENTIALS.
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        input: CreateTokenInput,
    ) -> Result<AuthPayload> {
        let (accounts, client) = services(ctx)?;
        accounts
            .sign_in(
                SignInForm {
                    login: input.login,
                    password: Password::new(input.password),
                },
                &client,
            )
            .await
            .map_err(|e| e.extend())
            .and_then(|signed_in| payload(ctx, signed_in))
    }

    /// Exchange a refresh token for a new pair. The old refresh token is
    /// consumed (rotation); presenting a consumed one again revokes the whole
    /// session family (reuse detection). Failure: INVALID_REFRESH_TOKEN.
    async fn refresh_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<AuthPayload> {
        let (accounts, client) = services(ctx)?;
        accounts
            .refresh(&refresh_token, &client)
            .await
            .map_err(|e| e.extend())
            .and_then(|signed_in| payload(ctx, signed_in))
    }

    /// Sign out: revoke the session that this refresh token belongs to.
    /// Returns true also when it was already revoked (idempotent).
    async fn revoke_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<bool> {
        let (accounts, client) = services(ctx)?;
        accounts
            .revoke(&refresh_token, &client)
            .await
            .map(|()| true)
            .map_err(|e| e.extend())
    }

    /// Sign out on every device: revoke all sessions of the signed-in user
    /// and end all their access tokens. Needs `Authorization: Bearer`.
    /// Returns true.
    async fn sign_out_everywhere(&self, ctx: &Context<'_>) -> Result<bool> {
        let (accounts, client) = services(ctx)?;
        let viewer = super::viewer(ctx);
        accounts
            .sign_out_everywhere(viewer, &client)
            .await
            .map(|_| true)
            .map_err(|e| e.extend())
    }
}

/// The account service and the caller, from the request data.
pub(super) fn services<'a>(ctx: &Context<'a>) -> Result<(&'a Arc<AccountService>, Client)> {
    let accounts = request_data::<Arc<AccountService>>(ctx)?;
    let client = request_data::<Client>(ctx)?.clone();
    Ok((accounts, client))
}
