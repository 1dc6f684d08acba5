//! Browser sessions: the refresh token in an HttpOnly cookie
//! (`AUTHQL_REFRESH_COOKIE`). Every mutation that returns a token pair
//! sets the cookie through [`payload`]; `refreshSession` and `signOut`
//! read it, after the CSRF check the HTTP layer decided
//! ([`crate::domain::cookie::check_csrf`]).

use async_graphql::{Context, Object, Result, SimpleObject};

use super::mutation::services;
use super::request_data;
use super::results::result_union;
use super::types::AuthPayload;
use crate::domain::cookie::{CookiePolicy, CsrfRefusal};
use crate::error::AuthError;
use crate::service::SignedIn;

/// What the HTTP layer found in a request, with cookie mode on.
pub struct CookieRequest {
    pub token: Option<String>,
    pub csrf: Result<(), CsrfRefusal>,
}

/// A token pair as answered: with cookie mode on, the refresh token is also
/// set as the cookie, and with cookie-only mode left out of the JSON.
pub fn payload(ctx: &Context<'_>, signed_in: SignedIn) -> Result<AuthPayload> {
    let policy = request_data::<CookiePolicy>(ctx)?;
    if !policy.enabled {
        return Ok(signed_in.into());
    }
    ctx.append_http_header("set-cookie", policy.set(&signed_in.refresh_token));
    let mut payload = AuthPayload::from(signed_in);
    if policy.only {
        payload.refresh_token = String::new();
    }
    Ok(payload)
}

/// The cookie and the policy, for a request the cookie authenticates.
fn cookie<'a>(ctx: &Context<'a>) -> Result<(&'a CookiePolicy, Option<String>), AuthError> {
    let policy =
        ctx.data_opt::<CookiePolicy>()
            .filter(|p| p.enabled)
            .ok_or(AuthError::NotEnabled(
                "the refresh cookie (AUTHQL_REFRESH_COOKIE)",
            ))?;
    let request = ctx
        .data_opt::<CookieRequest>()
        .ok_or(AuthError::NotEnabled(
            "the refresh cookie (AUTHQL_REFRESH_COOKIE)",
        ))?;
    request
        .csrf
        .map_err(|refusal| AuthError::CsrfRefused(refusal.message()))?;
    Ok((policy, request.token.clone()))
}

#[derive(Default)]
pub struct SessionMutation;

/// A new pair; the new refresh token is in the cookie (and in
/// `auth.refreshToken` unless cookie-only mode is on).
#[derive(SimpleObject)]
pub struct RefreshSessionSuccess {
    pub auth: AuthPayload,
}

#[derive(SimpleObject)]
pub struct SignOutSuccess {
    /// Whether the request carried a session cookie (its session is ended).
    pub had_session: bool,
}

result_union!(
    /// What `refreshSession` can answer.
    RefreshSessionResult = RefreshSessionSuccess | InvalidRefreshToken | RateLimited
);
result_union!(
    /// What `signOut` can answer.
    SignOutResult = SignOutSuccess | RateLimited
);

#[Object]
impl SessionMutation {
    /// Rotate the refresh token in the cookie (browser clients; needs
    /// `AUTHQL_REFRESH_COOKIE=on` and the `X-Requested-With` header): the
    /// same rotation, reuse detection and grace window as `refreshToken`.
    /// A missing or refused cookie is InvalidRefreshToken, and the cookie
    /// is removed.
    async fn refresh_session(&self, ctx: &Context<'_>) -> Result<RefreshSessionResult> {
        let (policy, token) = cookie(ctx).map_err(super::results::top_level)?;
        let (accounts, client) = services(ctx)?;
        let result = match token {
            Some(token) => accounts.refresh(&token, &client).await,
            None => Err(AuthError::InvalidRefreshToken),
        };
        if matches!(result, Err(AuthError::InvalidRefreshToken)) {
            ctx.append_http_header("set-cookie", policy.expire());
        }
        let result = match result {
            Ok(signed_in) => Ok(RefreshSessionSuccess {
                auth: payload(ctx, signed_in)?,
            }),
            Err(e) => Err(e),
        };
        RefreshSessionResult::from_result(result)
    }

    /// Sign out the browser: end the cookie's session (if any) and remove
    /// the cookie. Same requirements as `refreshSession`.
    async fn sign_out(&self, ctx: &Context<'_>) -> Result<SignOutResult> {
        let (policy, token) = cookie(ctx).map_err(super::results::top_level)?;
        let (accounts, client) = services(ctx)?;
        let result = match token {
            Some(token) => match accounts.revoke(&token, &client).await {
                // A malformed or unknown cookie has no session to end.
                Ok(()) | Err(AuthError::InvalidRefreshToken) => {
                    Ok(SignOutSuccess { had_session: true })
                }
                Err(e) => Err(e),
            },
            None => Ok(SignOutSuccess { had_session: false }),
        };
        // The browser forgets the cookie whatever happened to the session
        // (a refused or failed revocation still signs this browser out).
        ctx.append_http_header("set-cookie", policy.expire());
        SignOutResult::from_result(result)
    }
}
