//! The database goes away under a running server and comes back.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// A PostgreSQL cluster of this test's own (stopping the shared one would
/// break every other test running beside it).
struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
}

/// Runs `scripts/NAME ARGS...` and requires it to succeed.
fn script(name: &str, args: &[&str]) {
    let path = format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(path)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert!(status.success(), "{name} {args:?}");
}

fn pg_cluster(args: &[&str]) {
    script("pg-cluster", args);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

impl OwnCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        let path = dir.path().to_str().expect("utf-8 path").to_owned();
        pg_cluster(&["init", &path]);
        let cluster = Self { dir, port };
        cluster.up();
        cluster
    }
    /// A streaming replica of `primary` (`pg_basebackup -R`), started.
    fn replica_of(primary: &OwnCluster) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().to_str().expect("utf-8 path").to_owned();
        pg_cluster(&["replica", &path, &primary.port.to_string()]);
        let cluster = Self {
            dir,
            port: free_port(),
        };
        cluster.up();
        cluster
    }
    fn path(&self) -> String {
        self.dir.path().to_str().expect("utf-8 path").to_owned()
    }
    fn up(&self) {
        pg_cluster(&["start", &self.path(), &self.port.to_string()]);
    }
    fn down(&self) {
        pg_cluster(&["stop", &self.path()]);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test]
async fn the_server_fails_fast_while_postgres_is_down_and_recovers_without_restart() {
    if !Backend::Postgres.available() {
        return;
    }
    let cluster = OwnCluster::start();
    let url = create_postgres_database(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        cluster.port
    ))
    .await;
    let acquire_timeout = Duration::from_secs(1);
    let app = spawn_on(TestDatabase::at(url), |c| {
        c.database.acquire_timeout = acquire_timeout
    })
    .await;
    let first = app.sign_up("survivor").await;
    let access = first["accessToken"].as_str().expect("token").to_owned();

    cluster.down();

    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), 503);
    // Every call fails fast with INTERNAL and no internals, never hangs.
    // (The bound is generous: it catches a hang, not slowness.)
    let started = Instant::now();
    let refused = app
        .gql(
            SIGN_UP,
            json!({ "input": { "username": "lost", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(error_code(&refused), "INTERNAL", "{refused}");
    assert_eq!(refused["errors"][0]["message"], "internal error");
    assert_eq!(
        error_code(&app.create_token("survivor", PASSWORD).await),
        "INTERNAL"
    );
    assert_eq!(error_code(&app.me(&access).await), "INTERNAL");
    assert!(
        started.elapsed() < acquire_timeout * 10,
        "took {:?}",
        started.elapsed()
    );
    // Requests that need no database still work.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );

    cluster.up();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("sent")
            .status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.me(&access).await["data"]["me"]["username"], "survivor");
    app.sign_up("newcomer").await;
    assert!(app.create_token("survivor", PASSWORD).await["errors"].is_null());
    assert_eq!(
        app.count("users").await,
        2,
        "the refused sign-up left nothing behind"
    );
}

/// A statement stuck behind a lock ends at the 10 s statement timeout with
/// a coded error, directly and through the transaction pooler (where the
/// timeout is set per transaction: a pooler refuses the startup option).
async fn a_statement_stuck_on_a_lock_ends_at_the_statement_timeout(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_up("patient").await;
    let token = signed["accessToken"].as_str().expect("token").to_owned();
    // The test holds every session row: `me`'s read waits for it.
    let pool = app.db_pool().await;
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let started = Instant::now();
    let me = tokio::time::timeout(Duration::from_secs(30), app.me(&token)).await;
    let waited = started.elapsed();
    lock.rollback().await.expect("rollback");
    let me = me.expect("answered within 30 s: the statement timeout reached the server");
    assert_eq!(error_code(&me), "INTERNAL", "{me}");
    assert!(
        waited >= Duration::from_secs(9),
        "answered after {waited:?}"
    );
    // The lock gone, the same request works.
    assert_eq!(app.me(&token).await["data"]["me"]["username"], "patient");
}

#[tokio::test]
async fn a_statement_stuck_on_a_lock_ends_at_the_statement_timeout_on_postgres() {
    if Backend::Postgres.available() {
        a_statement_stuck_on_a_lock_ends_at_the_statement_timeout(Backend::Postgres).await
    }
}

#[tokio::test]
async fn a_statement_stuck_on_a_lock_ends_at_the_statement_timeout_through_the_pooler() {
    if Backend::Pooled.available() {
        a_statement_stuck_on_a_lock_ends_at_the_statement_timeout(Backend::Pooled).await
    }
}

fn pgbouncer(args: &[&str]) {
    script("pgbouncer", args);
}

/// Failover behind PgBouncer: the primary stops, its replica is promoted
/// and the pooler pointed at it; the running server recovers without a
/// restart and has everything it acknowledged before the primary stopped
/// (a fast shutdown streams the last WAL to the replica; with asynchronous
/// replication a crash could lose the last commits: README).
#[tokio::test]
async fn after_failover_to_the_promoted_replica_the_server_recovers_without_restart() {
    if !Backend::Pooled.available() {
        return;
    }
    let primary = OwnCluster::start();
    let replica = OwnCluster::replica_of(&primary);
    let bouncer = tempfile::tempdir().expect("dir");
    let bouncer_dir = bouncer.path().join("pgbouncer");
    let bouncer_dir = bouncer_dir.to_str().expect("utf-8").to_owned();
    let bouncer_port = free_port();
    pgbouncer(&[
        "start",
        &bouncer_dir,
        &bouncer_port.to_string(),
        &primary.port.to_string(),
    ]);
    struct StopBouncer(String);
    impl Drop for StopBouncer {
        fn drop(&mut self) {
            pgbouncer(&["stop", &self.0]);
        }
    }
    let _stop = StopBouncer(bouncer_dir.clone());

    let url = create_postgres_database(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        primary.port
    ))
    .await;
    let pooled_url = same_database_on(
        &format!("postgres://postgres@127.0.0.1:{bouncer_port}/postgres"),
        &url,
    );
    let db = TestDatabase::pooled_at(url.clone(), pooled_url);
    let app = spawn_on(db, |c| {
        c.database.acquire_timeout = Duration::from_secs(1);
    })
    .await;
    let first = app.sign_up("before-failover").await;
    let access = first["accessToken"].as_str().expect("token").to_owned();
    let refresh = first["refreshToken"].as_str().expect("token").to_owned();
    let rotated = app.gql(REFRESH, json!({ "token": refresh })).await;
    assert!(rotated["errors"].is_null(), "{rotated}");
    let refresh = rotated["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .expect("token")
        .to_owned();

    // The primary goes away; the server refuses quickly, coded.
    primary.down();
    assert_eq!(error_code(&app.me(&access).await), "INTERNAL");
    pg_cluster(&["promote", &replica.path()]);
    pgbouncer(&["retarget", &bouncer_dir, &replica.port.to_string()]);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let me = app.me(&access).await;
        if me["errors"].is_null() {
            assert_eq!(me["data"]["me"]["username"], "before-failover");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the failover: {me}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rotation acknowledged before the failover holds on the new
    // primary: its successor rotates there.
    let again = app.gql(REFRESH, json!({ "token": refresh })).await;
    assert!(again["errors"].is_null(), "{again}");
    assert!(app.create_token("before-failover", PASSWORD).await["errors"].is_null());
    app.sign_up("after-failover").await;
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), 200);
}
