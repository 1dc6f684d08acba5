//! authql: a GraphQL user-and-auth server.
//!
//! Data flows one way: HTTP -> GraphQL resolver -> service -> storage ->
//! database. A resolver never touches SQL or argon2; storage never knows
//! GraphQL. The modules, in that order of reading:

/// `App::build` (bind, migrate, keys) and `App::run_until` (graceful shutdown).
pub mod app;
/// Passwords (argon2id off the executor) and tokens (JWT access, rotating refresh).
pub mod auth;
/// The injected wall clock (tests move time instead of sleeping).
pub mod clock;
/// One `Config` from flags and `AUTHQL_*` variables; secrets redacted in `Debug`.
pub mod config;
/// Validated input, read models and the pure decisions (rotation, back-off).
pub mod domain;
/// The one public error type and the table of every `extensions.code`.
pub mod error;
/// The GraphQL schema: thin resolvers, DataLoader, request policy.
pub mod graphql;
/// Router, GraphiQL assets, health, metrics, limits, CORS.
pub mod http;
/// Mail: templates, SMTP or file transport, the outbox sender.
pub mod mail;
/// Prometheus metrics owned by the app.
pub mod metrics;
/// The account rules: sign up, sign in, refresh, revoke, me.
pub mod service;
/// The only SQL: the `Store` trait, its SQLite and PostgreSQL implementations.
pub mod storage;
/// Log setup.
pub mod telemetry;
/// `authql import` and `authql export`: users in and out, in batches.
pub mod transfer;

pub use app::App;
