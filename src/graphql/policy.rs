//! Per-request policy as an async-graphql extension:
//! - codes the engine's errors by the phase they came from: parsing
//!   (`GRAPHQL_PARSE_FAILED`), validation, operation selection and input
//!   coercion during execution (`GRAPHQL_VALIDATION_FAILED`; resolvers'
//!   own errors, `INTERNAL` included, always carry their code);
//! - records request count and latency per root operation;
//! - keeps introspection to the types the schema uses
//!   ([`IntrospectionFilter`]): async-graphql lists every built-in scalar,
//!   `schema.graphql` (like graphql-js) only the ones referenced, and the
//!   two must agree type for type.
//!
//! The document itself was checked before the engine saw it
//! ([`super::DocumentGuard`]); its summary rides along in the request data.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextResolve, NextValidation, ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Value, Variables};

use super::PreparedDocument;
use crate::error::{with_code, GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED};
use crate::metrics::Metrics;

/// Built-in scalars the schema does not reference (a unit test keeps this
/// list true).
pub const UNUSED_BUILT_IN_SCALARS: [&str; 1] = ["Float"];

pub struct RequestPolicy {
    metrics: Arc<Metrics>,
}

impl RequestPolicy {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl ExtensionFactory for RequestPolicy {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PolicyExtension {
            metrics: self.metrics.clone(),
            operation: Mutex::new(None),
        })
    }
}

struct PolicyExtension {
    metrics: Arc<Metrics>,
    /// Label of the operation actually executed.
    operation: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for PolicyExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let mut response = next.run(ctx).await;
        // What is still uncoded is the engine's verdict on the request: an
        // unknown operation name, or an argument that fails coercion during
        // execution (e.g. `cars: "x"`).
        for error in &mut response.errors {
            if !has_code(error) {
                *error = with_code(error.clone(), GRAPHQL_VALIDATION_FAILED);
            }
        }
        let label = lock(&self.operation)
            .clone()
            .unwrap_or_else(|| "invalid".to_owned());
        self.metrics
            .observe_request(&label, response.errors.is_empty(), started.elapsed());
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, GRAPHQL_PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, GRAPHQL_VALIDATION_FAILED))
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let label = ctx
            .data_opt::<Arc<PreparedDocument>>()
            .and_then(|doc| doc.operation(operation_name))
            .map(|op| op.label.clone());
        *lock(&self.operation) = label;
        next.run(ctx, operation_name).await
    }
}

/// Keeps introspection to the types the schema uses. Installed only when
/// introspection is on: a field hook runs for every field of every request,
/// and without introspection there is nothing for it to filter.
pub struct IntrospectionFilter;

impl ExtensionFactory for IntrospectionFilter {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(IntrospectionFilter)
    }
}

#[async_trait::async_trait]
impl Extension for IntrospectionFilter {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let lists_types = (info.parent_type == "__Schema" && info.name == "types")
            || (info.parent_type == "Query" && info.name == "__type");
        let value = next.run(ctx, info).await?;
        Ok(if lists_types {
            value.map(hide_unused_scalars)
        } else {
            value
        })
    }
}

/// Drops unused built-in scalars from `__schema { types }` and answers
/// `__type(name:)` for them with null, as if they did not exist (which, for
/// this schema, they do not).
fn hide_unused_scalars(value: Value) -> Value {
    let is_unused = |v: &Value| {
        match v {
        Value::Object(fields) => fields.get("name").is_some_and(|name| {
            matches!(name, Value::String(n) if UNUSED_BUILT_IN_SCALARS.contains(&n.as_str()))
        }),
        _ => false,
    }
    };
    match value {
        Value::List(types) => Value::List(types.into_iter().filter(|t| !is_unused(t)).collect()),
        one if is_unused(&one) => Value::Null,
        other => other,
    }
}

fn has_code(error: &ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .is_some_and(|ext| ext.get("code").is_some())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
