//! The GraphQL schema: thin resolvers over [`crate::service`].
//!
//! The schema can be built without a database ([`sdl`]), which is what
//! `authql print-schema` prints and `schema.graphql` must equal.

mod loaders;
mod mutation;
mod policy;
mod query;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema, SchemaBuilder};

pub use loaders::CarLoader;
pub use mutation::Mutation;
pub use policy::RequestPolicy;
pub use query::Query;

use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::service::AccountService;

pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// Root fields that each make one credential attempt: at most one of them per
/// document, so aliases cannot multiply guesses.
pub const CREDENTIAL_MUTATIONS: [&str; 3] = ["signUp", "createToken", "refreshToken"];

fn builder() -> SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query, Mutation, EmptySubscription)
}

/// The schema with its data, limits and request policy.
pub fn build_schema(
    accounts: Arc<AccountService>,
    limits: &LimitsConfig,
    introspection: bool,
    metrics: Arc<Metrics>,
) -> AppSchema {
    let mut schema = builder()
        .data(accounts)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .extension(RequestPolicy::new(
            limits.max_root_fields,
            introspection,
            metrics,
        ));
    if !introspection {
        schema = schema.disable_introspection();
    }
    schema.finish()
}

/// The SDL of the public schema (no database needed).
pub fn sdl() -> String {
    builder().finish().sdl()
}
