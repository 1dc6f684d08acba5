//! All configuration in one place: command-line flags, each backed by an
//! `AUTHQL_*` (or `DATABASE_URL`) environment variable.
//!
//! Secrets never reach a log line: [`Secret`] and the database URL print
//! redacted in `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use crate::domain::Secret;

/// The command line of the `authql` binary.
#[derive(Debug, Parser)]
#[command(name = "authql", version, about = "GraphQL user-and-auth server")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// `authql` with no subcommand is `authql serve`.
    #[command(flatten)]
    pub serve: ServeConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(Box<ServeConfig>),
    /// Apply database migrations and exit.
    Migrate(MigrateConfig),
    /// Print the GraphQL schema (SDL) that `schema.graphql` must equal.
    PrintSchema,
    /// Manage access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Take users over from Django, Supabase, Keycloak or an authql export,
    /// with their password hashes (README, "Moving in").
    Import(ImportConfig),
    /// Write every user with their cars and password hash as JSON lines.
    Export(ExportConfig),
}

/// What `authql import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// `manage.py dumpdata` JSON (an array, or JSON lines) of a user model.
    Django,
    /// A CSV export of Supabase's `auth.users`.
    Supabase,
    /// A Keycloak realm (or realm users) export.
    Keycloak,
    /// What `authql export` writes.
    Jsonl,
}

impl ImportFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImportFormat::Django => "django",
            ImportFormat::Supabase => "supabase",
            ImportFormat::Keycloak => "keycloak",
            ImportFormat::Jsonl => "jsonl",
        }
    }
}

/// What `authql import` does with a record whose username, e-mail or id
/// is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnConflict {
    /// List it in the report and go on (so a rerun resumes).
    Skip,
    /// Stop before writing it, with what came before written.
    Fail,
}

#[derive(Debug, Clone, Args)]
pub struct ImportConfig {
    /// Format of FILE.
    #[arg(long = "format", id = "import_format", ignore_case = true)]
    pub format: ImportFormat,
    /// The file to read; `-` reads standard input.
    pub file: std::path::PathBuf,
    /// Where the records not taken are listed (CSV: line,key,reason,detail).
    #[arg(long, default_value = "import-report.csv")]
    pub report: std::path::PathBuf,
    /// Check every record against the rules and the database, write the
    /// report, write no user.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, default_value = "skip", ignore_case = true)]
    pub on_conflict: OnConflict,
    /// Users written per transaction (at most 2000: a batch is one
    /// statement of 15 parameters a user).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub batch_size: u32,
    /// Django only: the user model's label in the dump (others are skipped).
    #[arg(long, default_value = "auth.user")]
    pub django_model: String,
    /// Region (ISO 3166 code) for phone numbers written without `+`.
    #[arg(long, env = "AUTHQL_PHONE_REGION")]
    pub phone_region: Option<String>,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Args)]
pub struct ExportConfig {
    /// The file to write (created readable by its owner only); standard
    /// output without it.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key of AUTHQL_JWT_ALGORITHM. Running instances sign
    /// with it within a minute; older keys verify until their tokens expire.
    Rotate(KeysConfig),
    /// List the stored signing keys.
    List(KeysConfig),
}

#[derive(Debug, Clone, Args)]
pub struct KeysConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub log: LogConfig,
    /// Algorithm of the new key.
    #[arg(
        long,
        env = "AUTHQL_JWT_ALGORITHM",
        default_value = "HS256",
        ignore_case = true
    )]
    pub jwt_algorithm: JwtAlgorithm,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log filter in tracing's syntax, e.g. `info` or `authql=debug,sqlx=warn`.
    #[arg(long = "log", env = "AUTHQL_LOG", default_value = "info")]
    pub filter: String,
    /// Log line format: `text` or `json`.
    #[arg(long = "log-format", env = "AUTHQL_LOG_FORMAT", default_value = "text")]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `authql serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "AUTHQL_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub log: LogConfig,

    #[command(flatten)]
    pub tokens: TokenConfig,

    #[command(flatten)]
    pub passwords: PasswordConfig,

    #[command(flatten)]
    pub limits: LimitsConfig,

    #[command(flatten)]
    pub security: SecurityConfig,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub mail: MailConfig,

    #[command(flatten)]
    pub cookie: CookieConfig,

    /// Region (ISO 3166 code such as `RU`) for phone numbers written without `+`.
    /// Without it such numbers are refused.
    #[arg(long, env = "AUTHQL_PHONE_REGION")]
    pub phone_region: Option<String>,

    /// Origins allowed to call authql from a browser (comma-separated).
    /// Empty: no cross-origin access.
    #[arg(long, env = "AUTHQL_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Serve GraphQL introspection (GraphiQL and code generators need it).
    /// Default: on, but off with AUTHQL_TRUSTED_DOCUMENTS_ONLY (then this
    /// switches introspection and the GraphiQL page on explicitly).
    #[arg(long, env = "AUTHQL_INTROSPECTION", action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub introspection: Option<bool>,

    /// A trusted-documents manifest, `{ "<sha256 hex>": "<document>" }` as
    /// GraphQL Code Generator's client preset writes it; requests may then
    /// name a document by `documentId`. Reloaded on SIGHUP.
    #[arg(long, env = "AUTHQL_TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<std::path::PathBuf>,

    /// Run only the documents of AUTHQL_TRUSTED_DOCUMENTS: any other is
    /// refused with TRUSTED_DOCUMENT_REQUIRED.
    #[arg(long, env = "AUTHQL_TRUSTED_DOCUMENTS_ONLY", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub trusted_documents_only: bool,

    /// Where clients reach authql, e.g. `https://auth.example.com`: avatar
    /// URLs are absolute with it, relative (`/avatars/...`) without.
    #[arg(long, env = "AUTHQL_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Skip applying migrations at start (run `authql migrate` instead).
    #[arg(long, env = "AUTHQL_NO_MIGRATE", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub no_migrate: bool,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "AUTHQL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Where the data lives and how many connections to keep.
#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (the default is `sqlite://data/authql.db`)
    /// or `postgres://user:password@host/db`.
    #[arg(long = "database-url", env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub url: String,
    /// Most database connections this instance opens.
    #[arg(
        long = "db-max-connections",
        env = "AUTHQL_DB_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
    /// How long a request waits for a free database connection before failing.
    #[arg(long = "db-acquire-timeout", env = "AUTHQL_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub acquire_timeout: Duration,
    /// What DATABASE_URL reaches: PostgreSQL itself (or a session pooler),
    /// or a transaction pooler (PgBouncer `pool_mode = transaction`,
    /// Supavisor's transaction port).
    #[arg(long = "db-pooler", env = "AUTHQL_DB_POOLER", value_enum, default_value_t = Pooler::None)]
    pub pooler: Pooler,
    /// PostgreSQL without the pooler, for what needs a whole session:
    /// migrations (also at `serve`'s start) and the `migrate`, `keys`,
    /// `import` and `export` commands.
    #[arg(long = "direct-database-url", env = "AUTHQL_DIRECT_DATABASE_URL")]
    pub direct_url: Option<String>,
    /// A streaming replica of the PostgreSQL database for pure reads (`me`
    /// with its session check, key reloads, session lists), used while its
    /// replay lag is at most AUTHQL_READ_MAX_LAG.
    #[arg(long = "read-database-url", env = "AUTHQL_READ_DATABASE_URL")]
    pub read_url: Option<String>,
    /// The most a read may lag behind the primary on the replica.
    #[arg(long = "read-max-lag", env = "AUTHQL_READ_MAX_LAG", default_value = "1s", value_parser = parse_duration)]
    pub read_max_lag: Duration,
}

/// What stands between authql and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooler {
    /// Nothing, or a pooler that keeps a server connection per client
    /// connection (PgBouncer's session mode).
    None,
    /// A pooler that lends a server connection per transaction.
    Transaction,
}

impl DatabaseConfig {
    /// The database for work that needs a whole session: the direct URL
    /// when one is set, otherwise DATABASE_URL as configured; never the
    /// read replica (the commands write).
    pub fn direct(&self) -> DatabaseConfig {
        match &self.direct_url {
            Some(url) => DatabaseConfig {
                url: url.clone(),
                pooler: Pooler::None,
                direct_url: None,
                read_url: None,
                ..self.clone()
            },
            None => DatabaseConfig {
                read_url: None,
                ..self.clone()
            },
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let postgres = |url: &str| {
            let url = url.trim();
            url.starts_with("postgres:") || url.starts_with("postgresql:")
        };
        if self.pooler == Pooler::Transaction && !postgres(&self.url) {
            return Err("AUTHQL_DB_POOLER=transaction needs a postgres:// DATABASE_URL".into());
        }
        if self.read_url.is_some()
            && !(postgres(&self.url) && self.read_url.as_deref().is_some_and(postgres))
        {
            return Err(
                "AUTHQL_READ_DATABASE_URL is a replica of a postgres:// DATABASE_URL; \
                 both must be postgres:// URLs"
                    .into(),
            );
        }
        if let Some(direct) = &self.direct_url {
            // A leftover direct URL beside a SQLite DATABASE_URL would
            // migrate (and `import` into) another database than the one served.
            if !postgres(&self.url) || !postgres(direct) {
                return Err(
                    "AUTHQL_DIRECT_DATABASE_URL is PostgreSQL's own address beside a postgres:// \
                     DATABASE_URL (a pooler's); both must be postgres:// URLs"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/authql.db";

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("pooler", &self.pooler)
            .field(
                "direct_url",
                &self.direct_url.as_deref().map(redact_url_password),
            )
            .field(
                "read_url",
                &self.read_url.as_deref().map(redact_url_password),
            )
            .field("read_max_lag", &self.read_max_lag)
            .finish()
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone, Args)]
pub struct TokenConfig {
    /// HMAC key for access tokens (at least 32 bytes). Without it a random key is
    /// generated on first start and kept in the database.
    #[arg(long, env = "AUTHQL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Access-token signing algorithm: `HS256` (shared secret) or `EdDSA`
    /// (Ed25519; public keys at /.well-known/jwks.json).
    #[arg(
        long,
        env = "AUTHQL_JWT_ALGORITHM",
        default_value = "HS256",
        ignore_case = true
    )]
    pub jwt_algorithm: JwtAlgorithm,
    /// Access-token lifetime.
    #[arg(long, env = "AUTHQL_ACCESS_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_ttl: Duration,
    /// Refresh-token lifetime (renewed by each rotation).
    #[arg(long, env = "AUTHQL_REFRESH_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_ttl: Duration,
    /// `iss` claim written and required.
    #[arg(long, env = "AUTHQL_JWT_ISSUER", default_value = "authql")]
    pub jwt_issuer: String,
    /// `aud` claim written and required.
    #[arg(long, env = "AUTHQL_JWT_AUDIENCE", default_value = "authql")]
    pub jwt_audience: String,
    /// Clock-skew allowance for `exp`/`nbf` (at most 60s).
    #[arg(long, env = "AUTHQL_JWT_LEEWAY", default_value = "0s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
    /// Absolute session lifetime: however often it is refreshed, a session
    /// ends this long after sign-in and the user must sign in again.
    #[arg(long, env = "AUTHQL_SESSION_MAX_LIFETIME", default_value = "90d", value_parser = parse_duration)]
    pub session_max_lifetime: Duration,
    /// Window in which a racing client presenting a just-rotated refresh token
    /// again gets the same successor instead of tripping reuse detection (at most 5s).
    #[arg(long, env = "AUTHQL_REFRESH_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub refresh_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl JwtAlgorithm {
    /// Its name in JOSE headers, JWKS and the `signing_keys` table.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::EdDsa => "EdDSA",
        }
    }

    pub fn jose(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
            JwtAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [JwtAlgorithm::Hs256, JwtAlgorithm::EdDsa]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// Abuse resistance: rate limits, sign-in throttling, proxies, cleanup.
#[derive(Debug, Clone, Args)]
pub struct SecurityConfig {
    /// createToken calls per client address per window (`N/duration`, `off`).
    #[arg(long, env = "AUTHQL_RATE_SIGN_IN", default_value = "100/5m")]
    pub rate_sign_in: RateLimit,
    /// signUp calls per client address per window.
    #[arg(long, env = "AUTHQL_RATE_SIGN_UP", default_value = "20/10m")]
    pub rate_sign_up: RateLimit,
    /// refreshToken calls per client address per window.
    #[arg(long, env = "AUTHQL_RATE_REFRESH", default_value = "300/5m")]
    pub rate_refresh: RateLimit,
    /// revokeToken calls per client address per window.
    #[arg(long, env = "AUTHQL_RATE_REVOKE", default_value = "300/5m")]
    pub rate_revoke: RateLimit,
    /// Account changes (updateProfile, cars, changePassword, sessions,
    /// avatar, deleteAccount) per client address per window, together.
    #[arg(long, env = "AUTHQL_RATE_ACCOUNT", default_value = "100/5m")]
    pub rate_account: RateLimit,
    /// Consecutive failed sign-ins for one login from one address before each
    /// further attempt must wait (1s, doubling per failure).
    #[arg(long, env = "AUTHQL_LOGIN_FREE_FAILURES", default_value_t = 5)]
    pub login_free_failures: u32,
    /// Longest wait imposed on one login from one address.
    #[arg(long, env = "AUTHQL_LOGIN_MAX_DELAY", default_value = "1h", value_parser = parse_duration)]
    pub login_max_delay: Duration,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    /// Empty (the default): the socket's peer address is the client.
    #[arg(long, env = "AUTHQL_TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::domain::client::parse_trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// IPv6 clients are limited per network of this prefix length (one host
    /// or home connection usually has a whole /64).
    #[arg(long, env = "AUTHQL_IPV6_PREFIX", default_value_t = crate::domain::client::DEFAULT_IPV6_PREFIX, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix: u8,
    /// How long security events are kept; cleanup deletes older ones, and the
    /// database refuses to delete younger ones.
    #[arg(long, env = "AUTHQL_AUDIT_RETENTION", default_value = "365d", value_parser = parse_duration)]
    pub audit_retention: Duration,
    /// Delete expired and revoked sessions and stale counters in a small batch
    /// after every N-th session-creating call (0: never).
    #[arg(long, env = "AUTHQL_CLEANUP_EVERY", default_value_t = 64)]
    pub cleanup_every: u64,
}

/// `N/duration`, e.g. `100/5m`; `off` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub window: Duration,
}

impl RateLimit {
    pub const OFF: RateLimit = RateLimit {
        max: 0,
        window: Duration::ZERO,
    };
    pub fn is_off(&self) -> bool {
        self.max == 0
    }
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(Self::OFF);
        }
        let (max, window) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected N/duration, e.g. 100/5m, or off"))?;
        let max = max
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("{s:?}: bad count: {e}"))?;
        let window = parse_duration(window)?;
        if max == 0 || window < Duration::from_secs(1) {
            return Err(format!(
                "{s:?}: count and window must be positive (or use off)"
            ));
        }
        Ok(Self { max, window })
    }
}

#[derive(Debug, Clone, Args)]
pub struct PasswordConfig {
    /// argon2id memory cost in KiB.
    #[arg(long, env = "AUTHQL_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    #[arg(long, env = "AUTHQL_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "AUTHQL_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Words passwords must not resemble besides the user's own data
    /// (comma-separated; e.g. your product and company names).
    #[arg(
        long,
        env = "AUTHQL_PASSWORD_CONTEXT_WORDS",
        value_delimiter = ',',
        default_value = "authql"
    )]
    pub password_context_words: Vec<String>,
    /// Hashing threads, i.e. most password hashes computed at once (default: the number of cores).
    #[arg(long, env = "AUTHQL_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Most password hashes waiting for a hashing thread; past that, sign-ins
    /// and sign-ups are refused at once with RATE_LIMITED.
    #[arg(long, env = "AUTHQL_HASH_QUEUE", default_value_t = 128)]
    pub hash_queue: usize,
    /// Most places in that queue one client address (IPv6: one prefix) may hold.
    #[arg(long, env = "AUTHQL_HASH_QUEUE_PER_CLIENT", default_value_t = 16)]
    pub hash_queue_per_client: usize,
}

/// Connection-level limits: what a client must send, and how fast.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Most client connections open at once; further ones wait to be accepted.
    #[arg(
        id = "max_client_connections",
        long = "max-connections",
        env = "AUTHQL_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_connections: usize,
    /// Time for a request's headers to arrive, from its first byte (and for
    /// the first byte of a new connection); over it: 408 and closed.
    #[arg(long = "http-header-timeout", env = "AUTHQL_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Time for a whole request body to arrive once the headers have; over it: 408.
    #[arg(long = "http-body-timeout", env = "AUTHQL_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    #[arg(long = "http-idle-timeout", env = "AUTHQL_HTTP_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LimitsConfig {
    /// Largest accepted request body in bytes (larger: HTTP 413).
    #[arg(long, env = "AUTHQL_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deepest accepted GraphQL document.
    #[arg(long, env = "AUTHQL_MAX_DEPTH", default_value_t = 20)]
    pub max_depth: usize,
    /// Longest accepted GraphQL document (the query text), in bytes.
    #[arg(long, env = "AUTHQL_MAX_DOCUMENT_BYTES", default_value_t = 64 * 1024)]
    pub max_document_bytes: usize,
    /// Highest accepted GraphQL complexity (one point per field).
    #[arg(long, env = "AUTHQL_MAX_COMPLEXITY", default_value_t = 500)]
    pub max_complexity: usize,
    /// Most root fields (aliases included) in one operation.
    #[arg(long, env = "AUTHQL_MAX_ROOT_FIELDS", default_value_t = 20)]
    pub max_root_fields: usize,
    /// Largest accepted multipart (file upload) request body in bytes
    /// (larger: HTTP 413). Above the 5 MiB an avatar may have, so that a
    /// file too large is told so by the `file` field's rules.
    #[arg(long, env = "AUTHQL_MAX_UPLOAD_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Most upload bodies held in memory at once (further ones: HTTP 429).
    #[arg(long, env = "AUTHQL_MAX_UPLOADS", default_value_t = 8)]
    pub max_uploads: usize,
}

/// Browser clients: the refresh token in an HttpOnly cookie.
#[derive(Debug, Clone, Args)]
pub struct CookieConfig {
    /// signUp, createToken and the refresh mutations also set the refresh
    /// token as an HttpOnly cookie; refreshSession and signOut use it.
    #[arg(long, env = "AUTHQL_REFRESH_COOKIE", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub refresh_cookie: bool,
    /// Leave the refresh token out of JSON answers (`refreshToken` is "").
    #[arg(long, env = "AUTHQL_REFRESH_COOKIE_ONLY", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub refresh_cookie_only: bool,
    /// SameSite of the cookie: strict, lax or none (none needs Secure and
    /// AUTHQL_CORS_ORIGINS: a frontend on another site).
    #[arg(
        long,
        env = "AUTHQL_REFRESH_COOKIE_SAMESITE",
        default_value = "strict",
        ignore_case = true
    )]
    pub refresh_cookie_samesite: crate::domain::cookie::SameSite,
    /// Mark the cookie Secure (sent over HTTPS only; browsers treat
    /// http://localhost as secure). Off only for plain-HTTP testing.
    #[arg(long, env = "AUTHQL_REFRESH_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub refresh_cookie_secure: bool,
}

/// Mail: where it goes, what its links point at, how long its tokens live.
#[derive(Debug, Clone, Args)]
pub struct MailConfig {
    /// `smtp://host:port` (STARTTLS required; `?tls=opportunistic` or
    /// `?tls=none` to relax it) or `smtps://host:port`, with
    /// `user:password@` when the server wants them. Unset: mails are
    /// written as .eml files to AUTHQL_MAIL_DIR and their links logged.
    #[arg(long, env = "AUTHQL_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret>,
    /// The From of every mail, e.g. `Example <noreply@example.com>`.
    #[arg(
        long,
        env = "AUTHQL_MAIL_FROM",
        default_value = "authql <noreply@localhost>"
    )]
    pub mail_from: String,
    /// Where mails are written without an SMTP server.
    #[arg(long, env = "AUTHQL_MAIL_DIR", default_value = "data/mail")]
    pub mail_dir: std::path::PathBuf,
    /// A folder whose `<kind>.subject|txt|html` files replace the built-in templates.
    #[arg(long, env = "AUTHQL_MAIL_TEMPLATES")]
    pub mail_templates: Option<std::path::PathBuf>,
    /// Base of the links in mails (the frontend), e.g.
    /// `https://app.example.com`: `{base}/reset-password?token=...`.
    /// Default: AUTHQL_PUBLIC_URL, else `http://` and AUTHQL_BIND.
    #[arg(long, env = "AUTHQL_MAIL_LINK_BASE")]
    pub mail_link_base: Option<String>,
    /// Refuse createToken by e-mail for accounts whose e-mail is not verified.
    #[arg(long, env = "AUTHQL_REQUIRE_VERIFIED_EMAIL", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub require_verified_email: bool,
    /// Offer requestSignInCode and signInWithCode (passwordless sign-in by mail).
    #[arg(long, env = "AUTHQL_SIGN_IN_CODES", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = boolish(), num_args = 0..=1, default_missing_value = "true")]
    pub sign_in_codes: bool,
    /// Lifetime of an e-mail verification link.
    #[arg(long, env = "AUTHQL_VERIFY_EMAIL_TTL", default_value = "24h", value_parser = parse_duration)]
    pub verify_email_ttl: Duration,
    /// Lifetime of a password reset link.
    #[arg(long, env = "AUTHQL_PASSWORD_RESET_TTL", default_value = "1h", value_parser = parse_duration)]
    pub password_reset_ttl: Duration,
    /// Lifetime of an e-mail change confirmation link.
    #[arg(long, env = "AUTHQL_EMAIL_CHANGE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub email_change_ttl: Duration,
    /// Lifetime of a sign-in code.
    #[arg(long, env = "AUTHQL_SIGN_IN_CODE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub sign_in_code_ttl: Duration,
    /// Mail requests (verification, reset, e-mail change, sign-in code)
    /// per client address per window.
    #[arg(long, env = "AUTHQL_RATE_MAIL", default_value = "20/1h")]
    pub rate_mail: RateLimit,
    /// Mails asked for to one address per window, from anywhere.
    #[arg(long, env = "AUTHQL_RATE_MAIL_RECIPIENT", default_value = "5/1h")]
    pub rate_mail_recipient: RateLimit,
    /// Wait after a failed delivery; doubles per failure up to 10 minutes.
    #[arg(long, env = "AUTHQL_MAIL_RETRY_DELAY", default_value = "30s", value_parser = parse_duration)]
    pub mail_retry_delay: Duration,
    /// A mail not delivered this long after it was queued is given up.
    #[arg(long, env = "AUTHQL_MAIL_GIVE_UP", default_value = "24h", value_parser = parse_duration)]
    pub mail_give_up: Duration,
    /// How often the sender looks for mail queued elsewhere or due again.
    #[arg(long, env = "AUTHQL_MAIL_POLL", default_value = "5s", value_parser = parse_duration)]
    pub mail_poll: Duration,
}

impl ServeConfig {
    /// How the refresh cookie is written (it lives as long as a refresh token).
    pub fn cookie_policy(&self) -> crate::domain::cookie::CookiePolicy {
        crate::domain::cookie::CookiePolicy {
            enabled: self.cookie.refresh_cookie,
            only: self.cookie.refresh_cookie_only,
            same_site: self.cookie.refresh_cookie_samesite,
            secure: self.cookie.refresh_cookie_secure,
            max_age: self.tokens.refresh_ttl,
        }
    }

    /// `AUTHQL_PUBLIC_URL`'s scheme and host (`https://auth.example.com`).
    pub fn public_origin(&self) -> Option<String> {
        let base = self.public_base();
        let (scheme, rest) = base.split_once("://")?;
        let host = rest.split('/').next().filter(|h| !h.is_empty())?;
        Some(format!("{scheme}://{host}"))
    }

    /// The base of links in mails.
    pub fn mail_link_base(&self) -> String {
        match (&self.mail.mail_link_base, self.public_base()) {
            (Some(base), _) => base.trim().trim_end_matches('/').to_owned(),
            (None, public) if !public.is_empty() => public,
            (None, _) => format!("http://{}", self.bind),
        }
    }

    /// What avatar URLs start with: `AUTHQL_PUBLIC_URL` without a trailing
    /// slash, or nothing (relative URLs).
    pub fn public_base(&self) -> String {
        self.public_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// Every setting at its default, whatever the environment holds: what
    /// tests, benchmarks and tools start from before setting what they need.
    pub fn defaults() -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let command = Cli::command().mut_args(|arg| arg.env(clap::builder::Resettable::Reset));
        command
            .try_get_matches_from(["authql"])
            .map_err(|e| e.to_string())
            .and_then(|matches| Cli::from_arg_matches(&matches).map_err(|e| e.to_string()))
            .map(|cli| cli.serve)
            .unwrap_or_else(|e| unreachable!("the defaults parse: {e}"))
    }

    /// Checks the rules clap cannot express; the message is shown at start.
    /// Whether introspection (and the GraphiQL page) is served: on unless
    /// switched off, or unless only trusted documents run and it was not
    /// switched on explicitly.
    pub fn introspection_enabled(&self) -> bool {
        self.introspection.unwrap_or(!self.trusted_documents_only)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.database.validate()?;
        if self.trusted_documents_only && self.trusted_documents.is_none() {
            return Err(
                "AUTHQL_TRUSTED_DOCUMENTS_ONLY needs AUTHQL_TRUSTED_DOCUMENTS (a manifest)".into(),
            );
        }
        if let Some(secret) = &self.tokens.jwt_secret {
            if secret.expose().len() < 32 {
                return Err(format!(
                    "AUTHQL_JWT_SECRET is {} bytes long; it must be at least 32 bytes \
                     (e.g. `openssl rand -base64 32`), or unset it to let authql generate one",
                    secret.expose().len()
                ));
            }
        }
        let cookie = &self.cookie;
        if cookie.refresh_cookie_only && !cookie.refresh_cookie {
            return Err("AUTHQL_REFRESH_COOKIE_ONLY needs AUTHQL_REFRESH_COOKIE=on".into());
        }
        if cookie.refresh_cookie_samesite == crate::domain::cookie::SameSite::None
            && (!cookie.refresh_cookie_secure
                || self.cors_origins.iter().all(|o| o.trim().is_empty()))
        {
            return Err(
                "AUTHQL_REFRESH_COOKIE_SAMESITE=none needs AUTHQL_REFRESH_COOKIE_SECURE=on and \
                 the frontend's origin in AUTHQL_CORS_ORIGINS"
                    .into(),
            );
        }
        if let Some(url) = &self.mail.smtp_url {
            crate::mail::transport::lettre_url(url.expose())
                .map_err(|e| format!("AUTHQL_SMTP_URL: {e}"))?;
        }
        self.mail
            .mail_from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| format!("AUTHQL_MAIL_FROM: {e}"))?;
        if let Some(base) = &self.mail.mail_link_base {
            check_http_url(base).map_err(|e| format!("AUTHQL_MAIL_LINK_BASE: {e}"))?;
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&self.mail.mail_retry_delay)
        {
            return Err("AUTHQL_MAIL_RETRY_DELAY must be between 1s and 1h".into());
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400))
            .contains(&self.mail.mail_give_up)
        {
            return Err("AUTHQL_MAIL_GIVE_UP must be between 1m and 30d".into());
        }
        if self.mail.mail_poll < Duration::from_millis(10) {
            return Err("AUTHQL_MAIL_POLL must be at least 10ms".into());
        }
        for (name, ttl) in [
            ("AUTHQL_VERIFY_EMAIL_TTL", self.mail.verify_email_ttl),
            ("AUTHQL_PASSWORD_RESET_TTL", self.mail.password_reset_ttl),
            ("AUTHQL_EMAIL_CHANGE_TTL", self.mail.email_change_ttl),
            ("AUTHQL_SIGN_IN_CODE_TTL", self.mail.sign_in_code_ttl),
        ] {
            if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(30 * 86_400) {
                return Err(format!("{name} must be between 1m and 30d"));
            }
        }
        if self.tokens.jwt_leeway > Duration::from_secs(60) {
            return Err("AUTHQL_JWT_LEEWAY must be at most 60s".into());
        }
        if self.tokens.refresh_grace > Duration::from_secs(5) {
            return Err("AUTHQL_REFRESH_GRACE must be at most 5s".into());
        }
        if self.tokens.access_ttl < Duration::from_secs(1)
            || self.tokens.refresh_ttl < Duration::from_secs(1)
        {
            return Err("AUTHQL_ACCESS_TTL and AUTHQL_REFRESH_TTL must be at least 1s".into());
        }
        if let Some(region) = &self.phone_region {
            if phonenumber::country::Id::from_str(&region.to_ascii_uppercase()).is_err() {
                return Err(format!(
                    "AUTHQL_PHONE_REGION={region:?} is not an ISO 3166 region code such as RU"
                ));
            }
        }
        for origin in self
            .cors_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
        {
            check_origin(origin)?;
        }
        if self.http.max_connections == 0 {
            return Err("AUTHQL_MAX_CONNECTIONS must be positive".into());
        }
        if self.limits.max_uploads == 0 {
            return Err("AUTHQL_MAX_UPLOADS must be positive".into());
        }
        if let Some(url) = &self.public_url {
            check_http_url(url).map_err(|e| format!("AUTHQL_PUBLIC_URL: {e}"))?;
        }
        for (name, value) in [
            ("AUTHQL_HTTP_HEADER_TIMEOUT", self.http.header_timeout),
            ("AUTHQL_HTTP_BODY_TIMEOUT", self.http.body_timeout),
            ("AUTHQL_HTTP_IDLE_TIMEOUT", self.http.idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(format!("{name} must be at least 100ms"));
            }
        }
        if self.limits.max_depth > crate::graphql::MAX_SELECTION_NESTING {
            return Err(format!(
                "AUTHQL_MAX_DEPTH must be at most {} (the deepest nesting a document may have)",
                crate::graphql::MAX_SELECTION_NESTING
            ));
        }
        if self.security.audit_retention < Duration::from_secs(24 * 3600) {
            return Err("AUTHQL_AUDIT_RETENTION must be at least 1d".into());
        }
        if self.security.login_max_delay < Duration::from_secs(1) {
            return Err("AUTHQL_LOGIN_MAX_DELAY must be at least 1s".into());
        }
        if self.passwords.hash_concurrency == Some(0)
            || self.passwords.hash_queue == 0
            || self.passwords.hash_queue_per_client == 0
            || self.database.max_connections == 0
        {
            return Err("AUTHQL_HASH_CONCURRENCY, AUTHQL_HASH_QUEUE, AUTHQL_HASH_QUEUE_PER_CLIENT and AUTHQL_DB_MAX_CONNECTIONS must be positive".into());
        }
        self.passwords.argon2_params()?;
        Ok(())
    }
}

impl PasswordConfig {
    /// The argon2id parameters, or why they are invalid (the one place they
    /// are built: start-up validation and the hasher both ask here).
    pub fn argon2_params(&self) -> Result<argon2_rust::Params, String> {
        argon2_rust::Params::builder()
            .memory(argon2_rust::params::Memory::kib(u64::from(
                self.argon2_memory_kib,
            )))
            .passes(self.argon2_iterations)
            .lanes(self.argon2_parallelism)
            .threads(self.argon2_parallelism)
            .build()
            .map_err(|e| format!("invalid argon2 parameters: {e:?}"))
    }
}

/// One `AUTHQL_CORS_ORIGINS` entry: `scheme://host[:port]`, exactly what
/// browsers send in `Origin`. A wildcard would let every site read the
/// answers of its visitors' requests, so it is refused.
/// Every boolean setting reads `1/0`, `true/false`, `yes/no`, `on/off` (any
/// case); a flag given without a value (`--no-migrate`) means true.
fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// An http(s) base URL without query or fragment.
fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.trim_end_matches('/').is_empty() || r.contains(['?', '#'])) {
        return Err(format!(
            "{url:?} must be an http(s) URL such as https://app.example.com"
        ));
    }
    Ok(())
}

fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Err(
            "AUTHQL_CORS_ORIGINS=* is not allowed: list the origins that may call authql \
             from a browser, e.g. https://app.example.com"
                .into(),
        );
    }
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .map(|rest| rest.trim_end_matches('/'));
    match host {
        Some(host)
            if !host.is_empty()
                && !host.contains(['/', '?', '#', '*', ' ', '@'])
                && axum::http::HeaderValue::from_str(origin).is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "AUTHQL_CORS_ORIGINS: {origin:?} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
        )),
    }
}

/// `15m`, `30d`, `0s`, `500ms`: humantime's syntax.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (use e.g. 15m, 30d, 0s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own checks of every subcommand (unique names, valid defaults),
    /// which otherwise panic only when that subcommand is run.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn cookie_settings_that_cannot_work_are_refused() {
        let mut config = ServeConfig::defaults();
        config.cookie.refresh_cookie_only = true;
        assert!(config
            .validate()
            .expect_err("refused")
            .contains("AUTHQL_REFRESH_COOKIE_ONLY"));
        config.cookie.refresh_cookie = true;
        assert!(config.validate().is_ok());
        config.cookie.refresh_cookie_samesite = crate::domain::cookie::SameSite::None;
        assert!(config
            .validate()
            .expect_err("refused")
            .contains("SAMESITE=none"));
        config.cors_origins = vec!["https://app.example.com".into()];
        assert!(config.validate().is_ok());
        config.cookie.refresh_cookie_secure = false;
        assert!(config
            .validate()
            .expect_err("refused")
            .contains("SAMESITE=none"));
        config.public_url = Some("https://auth.example.com/base/".into());
        assert_eq!(
            config.public_origin().as_deref(),
            Some("https://auth.example.com")
        );
    }

    #[test]
    fn every_boolean_setting_reads_the_usual_spellings() {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let parse = |args: &[&str]| -> Result<ServeConfig, String> {
            let command = Cli::command().mut_args(|arg| arg.env(clap::builder::Resettable::Reset));
            let matches = command
                .try_get_matches_from(std::iter::once("authql").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
            Cli::from_arg_matches(&matches)
                .map(|cli| cli.serve)
                .map_err(|e| e.to_string())
        };
        type Read = fn(&ServeConfig) -> bool;
        let settings: [(&str, Read); 5] = [
            ("--introspection", |c| c.introspection_enabled()),
            ("--trusted-documents-only", |c| c.trusted_documents_only),
            ("--no-migrate", |c| c.no_migrate),
            ("--require-verified-email", |c| {
                c.mail.require_verified_email
            }),
            ("--sign-in-codes", |c| c.mail.sign_in_codes),
        ];
        for (flag, read) in settings {
            for yes in ["1", "true", "TRUE", "yes", "Yes", "on", "ON"] {
                let config = parse(&[&format!("{flag}={yes}")]).expect(flag);
                assert!(read(&config), "{flag}={yes}");
            }
            for no in ["0", "false", "False", "no", "NO", "off", "Off"] {
                let config = parse(&[&format!("{flag}={no}")]).expect(flag);
                assert!(!read(&config), "{flag}={no}");
            }
            assert!(read(&parse(&[flag]).expect(flag)), "{flag} alone");
            let refused = parse(&[&format!("{flag}=maybe")]).expect_err(flag);
            assert!(refused.contains("maybe"), "{refused}");
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = ServeConfig::defaults();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(15 * 60));
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.tokens.jwt_leeway, Duration::ZERO);
        assert_eq!(c.tokens.jwt_issuer, "authql");
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        assert!(c.cors_origins.is_empty());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn short_secret_is_refused_with_a_clear_message() {
        let cli =
            Cli::try_parse_from(["authql", "serve", "--jwt-secret", "short"]).expect("parses");
        let Some(Command::Serve(c)) = cli.command else {
            panic!("serve subcommand expected")
        };
        let err = c.validate().expect_err("refused");
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(
            !format!("{c:?}").contains("short"),
            "secret leaked into Debug"
        );
    }

    #[test]
    fn pooler_settings_need_postgres_urls() {
        let database = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["authql", "serve"], args].concat()).expect("parses");
            let Some(Command::Serve(c)) = cli.command else {
                panic!("serve subcommand expected")
            };
            c.database.validate()
        };
        let pg = "postgres://u:secret@pooler:6432/db";
        let direct = "postgres://u:secret@db:5432/db";
        assert!(database(&["--database-url", pg, "--db-pooler", "transaction"]).is_ok());
        assert!(database(&["--db-pooler", "transaction"]).is_err(), "SQLite");
        let both = ["--database-url", pg, "--direct-database-url", direct];
        assert!(database(&both).is_ok());
        // A leftover direct URL must not send migrations elsewhere than the served file.
        assert!(database(&["--direct-database-url", direct]).is_err());
        assert!(database(&[
            "--database-url",
            pg,
            "--direct-database-url",
            "sqlite://x.db"
        ])
        .is_err());
        let cli = Cli::try_parse_from([&["authql", "serve"][..], &both].concat()).expect("parses");
        let Some(Command::Serve(c)) = cli.command else {
            panic!("serve")
        };
        assert_eq!(c.database.direct().url, direct);
        assert_eq!(c.database.direct().pooler, Pooler::None);
        assert!(
            !format!("{:?}", c.database).contains("secret"),
            "URLs redacted"
        );
    }

    #[test]
    fn rate_limits_parse() {
        assert_eq!(
            "100/5m".parse::<RateLimit>(),
            Ok(RateLimit {
                max: 100,
                window: Duration::from_secs(300)
            })
        );
        assert!("off".parse::<RateLimit>().expect("off").is_off());
        assert!("0/5m".parse::<RateLimit>().is_err());
        assert!("100".parse::<RateLimit>().is_err());
        assert!("x/5m".parse::<RateLimit>().is_err());
    }

    #[test]
    fn trusted_proxies_take_bare_addresses_and_spaces() {
        let cli =
            Cli::try_parse_from(["authql", "--trusted-proxies", "10.0.0.5, 10.1.0.0/16 ,::1"])
                .expect("parses");
        let proxies: Vec<String> = cli
            .serve
            .security
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.5/32", "10.1.0.0/16", "::1/128"]);
        assert!(Cli::try_parse_from(["authql", "--trusted-proxies", "proxy.local"]).is_err());
    }

    #[test]
    fn origins_must_be_origins() {
        let check = |origins: &str| {
            let mut c = ServeConfig::defaults();
            c.cors_origins = origins.split(',').map(str::to_owned).collect();
            c.validate()
        };
        assert!(check("https://app.example.com, http://localhost:5173").is_ok());
        assert!(check("*").expect_err("refused").contains("is not allowed"));
        assert!(check("app.example.com").is_err());
        assert!(check("https://app.example.com/login").is_err());
    }

    #[test]
    fn database_password_is_redacted() {
        assert_eq!(
            redact_url_password("postgres://app:hunter2@db:5432/authql"),
            "postgres://app:***@db:5432/authql"
        );
        assert_eq!(
            redact_url_password("sqlite://data/a.db"),
            "sqlite://data/a.db"
        );
    }
}
