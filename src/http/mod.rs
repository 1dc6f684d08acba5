//! HTTP: the router and its layers (CORS, body limit, panic guard, tracing
//! without query strings or headers, which may carry secrets).

mod avatars;
mod graphiql;
mod graphql;
mod health;
mod server;

pub use server::{serve, ServerLimits};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::auth::KeyRing;
use crate::error::{BAD_REQUEST, INTERNAL, NOT_FOUND};
use crate::graphql::{AppSchema, DocumentGuard};
use crate::metrics::Metrics;
use crate::service::AccountService;
use crate::storage::Store;

pub struct AppState {
    pub schema: AppSchema,
    pub documents: Arc<DocumentGuard>,
    /// The trusted-documents manifest (empty without one).
    pub trusted: Arc<crate::graphql::trusted::TrustedDocuments>,
    /// Whether the GraphiQL page is served (with introspection).
    pub graphiql: bool,
    pub accounts: Arc<AccountService>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<KeyRing>,
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// IPv6 clients are limited per network of this prefix.
    pub ipv6_prefix: u8,
    pub max_document_bytes: usize,
    pub max_body_bytes: usize,
    /// Largest multipart (upload) body.
    pub max_upload_bytes: usize,
    /// Upload bodies held at once.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// How long a POST body may take to arrive.
    pub body_timeout: Duration,
    /// The refresh cookie (browser clients).
    pub cookie: crate::domain::cookie::CookiePolicy,
    /// `AUTHQL_CORS_ORIGINS`, for the cookie's CSRF check.
    pub cors_origins: Arc<Vec<String>>,
    /// `AUTHQL_PUBLIC_URL`'s origin, authql's own for that check.
    pub own_origin: Option<String>,
}

pub struct RouterConfig {
    pub max_body_bytes: usize,
    pub cors_origins: Vec<HeaderValue>,
    /// Credentialed CORS (the refresh cookie is on).
    pub credentials: bool,
}

pub fn router(state: AppState, config: &RouterConfig) -> Router {
    let mut router = Router::new()
        .route("/", get(graphiql::index))
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/avatars/{file}", get(avatars::get))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/.well-known/jwks.json", get(health::jwks))
        .fallback(not_found)
        .with_state(Arc::new(state))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response));
    if !config.cors_origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                // Echoes the one allowed origin asking, never `*`.
                .allow_origin(AllowOrigin::list(config.cors_origins.clone()))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static(crate::domain::cookie::CSRF_HEADER),
                ])
                .allow_credentials(config.credentials)
                .max_age(Duration::from_secs(3600)),
        );
    }
    router.layer(
        TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }),
    )
}

pub async fn not_found() -> Response {
    http_error(StatusCode::NOT_FOUND, NOT_FOUND, "not found")
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    http_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        INTERNAL,
        "internal error",
    )
}

/// A service failure outside the GraphQL engine: logged, and answered
/// with 503 (the database is what fails here) and no detail.
pub fn service_error(error: crate::error::AuthError) -> Response {
    tracing::error!(error = ?error, "request failed");
    http_error(StatusCode::SERVICE_UNAVAILABLE, INTERNAL, "internal error")
}

/// The JSON body of every error answered outside the GraphQL engine.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    })
    .to_string()
}

/// An HTTP-level error: `status` with an [`error_body`].
pub fn http_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_body(code, message),
    )
        .into_response()
}
