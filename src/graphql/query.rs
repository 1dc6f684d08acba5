use std::sync::Arc;

use super::request_data;
use async_graphql::{Context, ErrorExtensions as _, Object, Result};

use super::types::User;
use crate::service::AccountService;

pub struct Query;

#[Object]
impl Query {
    /// The signed-in user. Needs `Authorization: Bearer <accessToken>`;
    /// without a valid access token: error code UNAUTHENTICATED.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let accounts = request_data::<Arc<AccountService>>(ctx)?;
        let viewer = super::viewer(ctx);
        // Asked for cars too: one query for both instead of two round trips.
        let with_cars = ctx.look_ahead().field("cars").exists();
        let (user, cars) = accounts
            .me(viewer, with_cars)
            .await
            .map_err(|e| e.extend())?;
        Ok(User::new(
            user,
            cars,
            viewer.session_id().map(str::to_owned),
        ))
    }
}
