//! `spawn_app()`: the real server on 127.0.0.1:0 with a fresh database, and a
//! client that speaks HTTP to it.

use std::net::SocketAddr;
use std::sync::Arc;

pub use authql::clock::ManualClock;
use authql::clock::{SharedClock, SystemClock};
use authql::config::{RateLimit, ServeConfig};
use authql::App;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery staple";

/// Which database a test runs against. Every end-to-end test runs on each
/// (see [`on_both_backends!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through PgBouncer in transaction pooling mode: the server
    /// gets the pooler's URL with `AUTHQL_DB_POOLER=transaction` and the
    /// cluster's own as `AUTHQL_DIRECT_DATABASE_URL`; the test itself reads
    /// and writes the database directly.
    Pooled,
}

impl Backend {
    /// Whether this backend can run here. PostgreSQL needs
    /// `AUTHQL_TEST_POSTGRES_URL` (scripts/test starts a cluster and sets
    /// it), the pooled one `AUTHQL_TEST_PGBOUNCER_URL` as well; without them
    /// the test says so loudly and passes, unless
    /// `AUTHQL_TEST_REQUIRE_POSTGRES=1` (`..._PGBOUNCER=1`), which makes it
    /// fail.
    pub fn available(self) -> bool {
        let needs: &[&str] = match self {
            Backend::Sqlite => &[],
            Backend::Postgres => &["AUTHQL_TEST_POSTGRES_URL"],
            Backend::Pooled => &["AUTHQL_TEST_POSTGRES_URL", "AUTHQL_TEST_PGBOUNCER_URL"],
        };
        let Some(missing) = needs.iter().find(|name| std::env::var(name).is_err()) else {
            return true;
        };
        let required = match self {
            Backend::Pooled => "AUTHQL_TEST_REQUIRE_PGBOUNCER",
            _ => "AUTHQL_TEST_REQUIRE_POSTGRES",
        };
        assert!(
            std::env::var(required).as_deref() != Ok("1"),
            "{required}=1 but {missing} is not set"
        );
        eprintln!("SKIPPED ({self:?}): {missing} is not set; run scripts/test");
        false
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` tests for each
/// `async fn NAME(backend: Backend)` of the calling module.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::helpers::Backend::Postgres.available() {
                        super::$name($crate::helpers::Backend::Postgres).await
                    }
                }
            )*
        }
        mod pgbouncer {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::helpers::Backend::Pooled.available() {
                        super::$name($crate::helpers::Backend::Pooled).await
                    }
                }
            )*
        }
    };
}

/// A throwaway database for one test: a SQLite file in a temporary folder,
/// or a new database in the test PostgreSQL cluster.
pub struct TestDatabase {
    /// The database itself (the test's own reads and writes).
    pub url: String,
    /// The same database through the transaction pooler, for the server.
    pub pooled_url: Option<String>,
    /// Where mails go without an SMTP server (AUTHQL_MAIL_DIR).
    pub mail_dir: tempfile::TempDir,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Arc<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/authql.db", dir.path().display());
                Arc::new(Self {
                    url,
                    pooled_url: None,
                    mail_dir: tempfile::tempdir().expect("temp dir"),
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url =
                    std::env::var("AUTHQL_TEST_POSTGRES_URL").expect("AUTHQL_TEST_POSTGRES_URL");
                let url = create_postgres_database(&admin_url).await;
                Self::at(url)
            }
            Backend::Pooled => {
                let admin_url =
                    std::env::var("AUTHQL_TEST_POSTGRES_URL").expect("AUTHQL_TEST_POSTGRES_URL");
                let url = create_postgres_database(&admin_url).await;
                let pooled_url = pooled(&url);
                Self::pooled_at(url, pooled_url)
            }
        }
    }
}

impl TestDatabase {
    /// An existing database that servers reach through a transaction
    /// pooler at `pooled_url`.
    pub fn pooled_at(url: String, pooled_url: String) -> Arc<Self> {
        Arc::new(Self {
            pooled_url: Some(pooled_url),
            ..Arc::into_inner(Self::at(url)).expect("new")
        })
    }

    /// An existing database (for tests that bring their own server).
    pub fn at(url: String) -> Arc<Self> {
        Arc::new(Self {
            url,
            pooled_url: None,
            mail_dir: tempfile::tempdir().expect("temp dir"),
            _dir: None,
        })
    }
}

/// `url`'s database through the test pooler (`AUTHQL_TEST_PGBOUNCER_URL`,
/// which names the pooler's `postgres` database).
pub fn pooled(url: &str) -> String {
    let pooler = std::env::var("AUTHQL_TEST_PGBOUNCER_URL").expect("AUTHQL_TEST_PGBOUNCER_URL");
    same_database_on(&pooler, url)
}

/// `database_url`'s database on the server `server_url` names (a pooler, a
/// replica).
pub fn same_database_on(server_url: &str, database_url: &str) -> String {
    let (base, _) = server_url
        .rsplit_once('/')
        .expect("URL with a database name");
    let (_, name) = database_url
        .rsplit_once('/')
        .expect("URL with a database name");
    format!("{base}/{name}")
}

/// Creates an empty database next to the one `admin_url` names; returns its URL.
pub async fn create_postgres_database(admin_url: &str) -> String {
    use sqlx::Connection as _;
    let name = format!("authql_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    admin.close().await.expect("close");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("URL with a database name");
    format!("{base}/{name}")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Arc<TestDatabase>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

pub fn base_config(db: &TestDatabase) -> ServeConfig {
    let mut config = ServeConfig::defaults();
    config.bind = "127.0.0.1:0".parse().expect("addr");
    config.database.url = db.url.clone();
    if let Some(pooled) = &db.pooled_url {
        config.database.url = pooled.clone();
        config.database.pooler = authql::config::Pooler::Transaction;
        config.database.direct_url = Some(db.url.clone());
    }
    // Every test client shares 127.0.0.1: per-address limits are switched on
    // only by the tests about them.
    config.security.rate_sign_in = RateLimit::OFF;
    config.security.rate_sign_up = RateLimit::OFF;
    config.security.rate_refresh = RateLimit::OFF;
    config.security.rate_revoke = RateLimit::OFF;
    config.security.rate_account = RateLimit::OFF;
    config.mail.rate_mail = RateLimit::OFF;
    config.mail.rate_mail_recipient = RateLimit::OFF;
    // No SMTP server unless a test brings one: mails become files here.
    config.mail.mail_dir = db.mail_dir.path().to_path_buf();
    config.mail.mail_poll = std::time::Duration::from_millis(50);
    // Likewise for the per-client share of the hashing queue.
    config.passwords.hash_queue_per_client = config.passwords.hash_queue;
    config
}

/// `TEST_LOG=1` shows the servers' logs (filter: `AUTHQL_LOG`, else
/// `info`); without it tests run quiet.
fn init_test_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = std::env::var("AUTHQL_LOG").unwrap_or_else(|_| "info".into());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, customize: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_on(TestDatabase::new(backend).await, customize).await
}

pub async fn spawn_on(db: Arc<TestDatabase>, customize: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_on_clock(db, Arc::new(SystemClock), customize).await
}

/// A server whose services read time from `clock`: tests move a
/// [`ManualClock`] instead of sleeping through expiries and waits.
pub async fn spawn_with_clock(
    backend: Backend,
    clock: Arc<ManualClock>,
    customize: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    spawn_on_clock(TestDatabase::new(backend).await, clock, customize).await
}

pub async fn spawn_on_clock(
    db: Arc<TestDatabase>,
    clock: SharedClock,
    customize: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    init_test_log();
    let mut config = base_config(&db);
    customize(&mut config);
    let app = App::build_with(config, clock).await.expect("app builds");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        addr,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        db,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server (waiting for it) and starts a new one on the same database.
    pub async fn restart(mut self, customize: impl FnOnce(&mut ServeConfig)) -> TestApp {
        self.stop().await;
        spawn_on(self.db.clone(), customize).await
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task");
        }
    }

    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(None, query, variables).await
    }

    /// POSTs a GraphQL request, optionally with a bearer token; expects HTTP 200.
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        post_graphql(
            &self.client,
            &self.url("/graphql"),
            token,
            None,
            query,
            variables,
        )
        .await
    }

    /// GETs a path and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON body")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// [`Self::gql_as`] with extra headers.
    pub async fn gql_with(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> Value {
        post_graphql_with(
            &self.client,
            &self.url("/graphql"),
            token,
            headers,
            query,
            variables,
        )
        .await
    }

    pub async fn sign_up(&self, username: &str) -> Value {
        self.sign_up_with(json!({ "username": username, "password": PASSWORD }))
            .await
    }

    /// signUp with the given input; panics unless it succeeds. Returns the AuthPayload.
    pub async fn sign_up_with(&self, input: Value) -> Value {
        let body = self.gql(SIGN_UP, json!({ "input": input })).await;
        assert!(body["errors"].is_null(), "signUp failed: {body}");
        body["data"]["signUp"].clone()
    }

    pub async fn create_token(&self, login: &str, password: &str) -> Value {
        self.gql(
            CREATE_TOKEN,
            json!({ "input": { "login": login, "password": password } }),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Value {
        self.gql(REFRESH, json!({ "token": refresh_token })).await
    }

    pub async fn revoke(&self, refresh_token: &str) -> Value {
        self.gql(
            "mutation($token: String!) { revokeToken(refreshToken: $token) }",
            json!({ "token": refresh_token }),
        )
        .await
    }

    pub async fn me(&self, access_token: &str) -> Value {
        self.gql_as(Some(access_token), ME, json!({})).await
    }

    /// A connection to the test's database, to assert what was stored.
    pub async fn db_pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.db.url)
            .await
            .expect("test database connects")
    }

    pub async fn count(&self, table: &str) -> i64 {
        let pool = self.db_pool().await;
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        pool.close().await;
        n
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// POSTs a GraphQL request to any authql endpoint, optionally with a bearer
/// token and an `X-Forwarded-For`; expects HTTP 200 and no leaked secrets.
pub async fn post_graphql(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    forwarded_for: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|addr| vec![("x-forwarded-for", addr)])
        .unwrap_or_default();
    post_graphql_with(client, url, token, &headers, query, variables).await
}

/// [`post_graphql`] with any extra headers (`User-Agent`, ...).
pub async fn post_graphql_with(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> Value {
    let mut request = client
        .post(url)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200, "GraphQL requests answer 200");
    let body: Value = response.json().await.expect("JSON body");
    assert_no_secrets(&body);
    body
}

pub const SIGN_UP: &str = "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken refreshToken tokenType expiresIn user { id username email phone name surname secondName createdAt cars { id brand model year color licensePlate vin } } } }";
pub const CREATE_TOKEN: &str = "mutation($input: CreateTokenInput!) { createToken(input: $input) { accessToken refreshToken tokenType expiresIn user { id username email } } }";
pub const REFRESH: &str = "mutation($token: String!) { refreshToken(refreshToken: $token) { accessToken refreshToken tokenType expiresIn user { id username } } }";
pub const ME: &str = "{ me { id username email phone name surname secondName createdAt cars { id brand model year color licensePlate vin } } }";

/// The `extensions.code` of the first error, or "" when there is none.
pub fn error_code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// `(field, code)` pairs of a VALIDATION error.
pub fn field_codes(body: &Value) -> Vec<(String, String)> {
    assert_eq!(
        error_code(body),
        "VALIDATION",
        "expected VALIDATION: {body}"
    );
    body["errors"][0]["extensions"]["fields"]
        .as_array()
        .expect("fields list")
        .iter()
        .map(|f| {
            (
                f["field"].as_str().expect("field").to_owned(),
                f["code"].as_str().expect("code").to_owned(),
            )
        })
        .collect()
}

/// No response may carry a password hash or internals.
pub fn assert_no_secrets(body: &Value) {
    // Tokens are random base64 and may spell anything ("sqlx" included).
    fn without_tokens(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| match k.as_str() {
                        "accessToken" | "refreshToken" => (k.clone(), Value::Null),
                        _ => (k.clone(), without_tokens(v)),
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(without_tokens).collect()),
            other => other.clone(),
        }
    }
    let text = without_tokens(body).to_string();
    for needle in [
        "$argon2",
        "password_hash",
        "sqlx",
        "SQLITE",
        "SELECT ",
        "INSERT ",
        "/src/",
        "panicked",
    ] {
        assert!(!text.contains(needle), "response leaks {needle:?}: {text}");
    }
}

/// A raw HTTP/1.1 exchange over TCP, for requests reqwest will not send
/// (URLs over 64 KiB, half-sent requests). The request should say
/// `Connection: close`; returns the status and the body.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers and closes");
    parse_http_response(&answer)
}

/// Status and body of a raw HTTP/1.1 response (Content-Length bodies).
pub fn parse_http_response(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {:?}", &text[..text.len().min(200)]));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A GET of `/graphql?query=...` sent as raw bytes (any URL length).
pub async fn raw_get_graphql(addr: SocketAddr, query: &str) -> (u16, String) {
    let encoded: String = serde_urlencoded::to_string([("query", query)]).expect("encode");
    let request =
        format!("GET /graphql?{encoded} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw_http(addr, request.as_bytes()).await
}
