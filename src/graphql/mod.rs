//! The GraphQL schema: thin resolvers over [`crate::service`].
//!
//! The schema can be built without a database ([`sdl`]), which is what
//! `authql print-schema` prints and `schema.graphql` must equal.

mod account;
mod document;
mod loaders;
mod mail;
mod mutation;
mod policy;
mod query;
mod results;
mod session;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema, SchemaBuilder};

pub mod trusted;

pub use document::{
    DocumentGuard, DocumentLimits, PreparedDocument, Refusal, MAX_SELECTION_NESTING,
};
pub use loaders::{CarLoader, Loaders};
pub use mutation::Mutation;
pub use policy::RequestPolicy;
pub use query::Query;
pub use session::CookieRequest;

use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::service::AccountService;

pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// Data the HTTP layer or the schema put in every request. Missing, it is
/// our bug, and answered as one (`INTERNAL`, logged): every error a
/// resolver raises carries its code, so the uncoded ones the engine raises
/// during execution are the client's (input that fails coercion).
pub(crate) fn request_data<'a, T: std::any::Any + Send + Sync>(
    ctx: &async_graphql::Context<'a>,
) -> async_graphql::Result<&'a T> {
    use async_graphql::ErrorExtensions as _;
    ctx.data::<T>().map_err(|e| {
        crate::error::AuthError::internal(anyhow::anyhow!("request data: {}", e.message)).extend()
    })
}

/// Who is calling (set by the HTTP layer; anonymous when it is absent).
pub(crate) fn viewer<'a>(ctx: &async_graphql::Context<'a>) -> &'a crate::service::Viewer {
    ctx.data_opt::<crate::service::Viewer>()
        .unwrap_or(&crate::service::Viewer::Anonymous)
}

/// Root fields that each make one credential attempt: at most one of them per
/// document, so aliases cannot multiply guesses.
pub const CREDENTIAL_MUTATIONS: [&str; 9] = [
    "signUp",
    "createToken",
    "refreshToken",
    "changePassword",
    "deleteAccount",
    "requestEmailChange",
    "resetPassword",
    "signInWithCode",
    "refreshSession",
];

fn builder() -> SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query, Mutation::default(), EmptySubscription)
        // Implemented by every error arm of the typed results; no field
        // returns it, so it is registered by hand.
        .register_output_type::<results::UserError>()
}

/// The schema with its data, limits and request policy. The engine's
/// limits stay on as a second line behind [`DocumentGuard`], which refuses
/// documents before they reach it.
pub fn build_schema(
    accounts: Arc<AccountService>,
    limits: &LimitsConfig,
    introspection: bool,
    metrics: Arc<Metrics>,
    public_base: String,
    cookie: crate::domain::cookie::CookiePolicy,
) -> AppSchema {
    let mut schema = builder()
        .data(accounts)
        .data(cookie)
        .data(types::AvatarBase(public_base))
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(MAX_SELECTION_NESTING)
        .extension(RequestPolicy::new(metrics));
    schema = if introspection {
        schema.extension(policy::IntrospectionFilter)
    } else {
        schema.disable_introspection()
    };
    schema.finish()
}

/// The document checks that go with a schema built with these settings.
pub fn document_guard(limits: &LimitsConfig, introspection: bool) -> DocumentGuard {
    DocumentGuard::new(DocumentLimits {
        max_depth: limits.max_depth,
        max_complexity: limits.max_complexity,
        max_root_fields: limits.max_root_fields,
        introspection,
    })
}

/// The SDL of the public schema (no database needed).
pub fn sdl() -> String {
    builder().finish().sdl()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scalars_introspection_hides_are_unused() {
        let sdl = super::sdl();
        for scalar in super::policy::UNUSED_BUILT_IN_SCALARS {
            assert!(
                !sdl.contains(&format!(": {scalar}")) && !sdl.contains(&format!("[{scalar}")),
                "{scalar} is used now: remove it from UNUSED_BUILT_IN_SCALARS"
            );
        }
    }
}
