//! Several authql processes on one PostgreSQL behave as one service.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::process::{authql, start, Server};

async fn gql(
    client: &reqwest::Client,
    server: &Server,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    post_graphql(
        client,
        &server.url("/graphql"),
        token,
        None,
        query,
        variables,
    )
    .await
}

fn s(v: &Value) -> String {
    v.as_str().expect("string").to_owned()
}

#[tokio::test]
async fn two_processes_on_one_postgres_behave_as_one_service() {
    if Backend::Postgres.available() {
        two_processes_behave_as_one_service(Backend::Postgres).await
    }
}

/// Through PgBouncer in transaction mode, whose pool for the database (4,
/// scripts/pgbouncer) is smaller than either instance's (10).
#[tokio::test]
async fn two_processes_through_a_transaction_pooler_behave_as_one_service() {
    if Backend::Pooled.available() {
        two_processes_behave_as_one_service(Backend::Pooled).await
    }
}

async fn two_processes_behave_as_one_service(backend: Backend) {
    let admin = std::env::var("AUTHQL_TEST_POSTGRES_URL").expect("url");
    let url = create_postgres_database(&admin).await;
    let dir = tempfile::tempdir().expect("dir");

    // Both start at the same moment on an empty database.
    let (a, b) = std::thread::scope(|scope| {
        let start_one = || {
            let mut cmd = authql(dir.path());
            if backend == Backend::Pooled {
                cmd.env("DATABASE_URL", pooled(&url))
                    .env("AUTHQL_DB_POOLER", "transaction")
                    .env("AUTHQL_DIRECT_DATABASE_URL", &url);
            } else {
                cmd.env("DATABASE_URL", &url);
            }
            start(&mut cmd)
        };
        let a = scope.spawn(start_one);
        let b = scope.spawn(start_one);
        (a.join().expect("a starts"), b.join().expect("b starts"))
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let signed_up = gql(&client, &a, None, SIGN_UP, json!({ "input": {
        "username": "wanderer", "password": PASSWORD, "cars": [{ "brand": "Lada", "model": "Niva" }]
    }}))
    .await;
    assert!(signed_up["errors"].is_null(), "{signed_up}");
    let from_a = &signed_up["data"]["signUp"];

    let signed_in = gql(
        &client,
        &b,
        None,
        CREATE_TOKEN,
        json!({ "input": { "login": "wanderer", "password": PASSWORD } }),
    )
    .await;
    let from_b = &signed_in["data"]["createToken"];
    assert_eq!(from_b["user"]["id"], from_a["user"]["id"]);

    // B's token on A, A's token on B.
    let me = gql(&client, &a, Some(&s(&from_b["accessToken"])), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["cars"][0]["brand"], "Lada");
    let me = gql(&client, &b, Some(&s(&from_a["accessToken"])), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["username"], "wanderer");

    // A pair issued by A refreshed on B, then the consumed token replayed on A.
    let rt1 = s(&from_a["refreshToken"]);
    let rotated = gql(&client, &b, None, REFRESH, json!({ "token": rt1 })).await;
    let rt2 = s(&rotated["data"]["refreshToken"]["refreshToken"]);
    let rt3 = s(
        &gql(&client, &a, None, REFRESH, json!({ "token": rt2 })).await["data"]["refreshToken"]
            ["refreshToken"],
    );
    let reuse = gql(&client, &a, None, REFRESH, json!({ "token": rt1 })).await;
    assert_eq!(error_code(&reuse), "INVALID_REFRESH_TOKEN");
    let after = gql(&client, &b, None, REFRESH, json!({ "token": rt3 })).await;
    assert_eq!(
        error_code(&after),
        "INVALID_REFRESH_TOKEN",
        "the family is revoked everywhere"
    );

    // Both at once, more requests than either pool has connections: every
    // one answered, and behind the pooler PostgreSQL serves them all on the
    // pooler's four server connections.
    let token = s(&from_b["accessToken"]);
    let burst = (0..40).map(|i| {
        let (client, server, token) = (&client, if i % 2 == 0 { &a } else { &b }, &token);
        async move { gql(client, server, Some(token), ME, json!({})).await }
    });
    for me in futures::future::join_all(burst).await {
        assert_eq!(me["data"]["me"]["username"], "wanderer", "{me}");
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    if backend == Backend::Pooled {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // The migrations' direct connections close when their pool is dropped.
            let servers: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&pool)
            .await
            .expect("connections");
            if servers <= 4 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{servers} server connections for a pooler pool of 4"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    // One signing key, migrations applied once.
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settings WHERE key = 'jwt_hs256_key'")
        .fetch_one(&pool)
        .await
        .expect("keys");
    assert_eq!(keys, 1);
    let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("migrations");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations dir")
        .count() as i64;
    assert_eq!(migrations, files);
    pool.close().await;

    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

/// Through a transaction pooler, what needs a whole session (migrations,
/// the CLI) takes the direct URL, and without one says so instead of
/// failing on the pooler; `serve` with migrations off needs none.
#[tokio::test]
async fn behind_a_transaction_pooler_migrations_take_the_direct_url() {
    if !Backend::Pooled.available() {
        return;
    }
    let admin = std::env::var("AUTHQL_TEST_POSTGRES_URL").expect("url");
    let url = create_postgres_database(&admin).await;
    let dir = tempfile::tempdir().expect("dir");
    let pooled_cmd = |args: &[&str]| {
        let mut cmd = authql(dir.path());
        cmd.args(args)
            .env("DATABASE_URL", pooled(&url))
            .env("AUTHQL_DB_POOLER", "transaction");
        cmd
    };
    for args in [&["serve"][..], &["migrate"], &["keys", "rotate"]] {
        let output = pooled_cmd(args).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} refused");
        assert!(
            stderr.contains("AUTHQL_DIRECT_DATABASE_URL"),
            "{args:?}: {stderr}"
        );
    }
    let migrated = pooled_cmd(&["migrate"])
        .env("AUTHQL_DIRECT_DATABASE_URL", &url)
        .output()
        .expect("runs");
    assert!(migrated.status.success(), "{migrated:?}");
    let rotated = pooled_cmd(&["keys", "rotate"])
        .env("AUTHQL_DIRECT_DATABASE_URL", &url)
        .env("AUTHQL_JWT_ALGORITHM", "EdDSA")
        .output()
        .expect("runs");
    assert!(rotated.status.success(), "{rotated:?}");

    let mut serve = pooled_cmd(&["serve"]);
    serve.env("AUTHQL_NO_MIGRATE", "1");
    let server = start(&mut serve);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let signed_up = gql(
        &client,
        &server,
        None,
        SIGN_UP,
        json!({ "input": {
            "username": "pooled", "password": PASSWORD
        }}),
    )
    .await;
    assert!(signed_up["errors"].is_null(), "{signed_up}");
    assert_eq!(server.terminate(), Some(0));

    let sqlite = authql(dir.path())
        .arg("migrate")
        .env("AUTHQL_DB_POOLER", "transaction")
        .output()
        .expect("runs");
    assert!(!sqlite.status.success());
    assert!(
        String::from_utf8_lossy(&sqlite.stderr).contains("needs a postgres:// DATABASE_URL"),
        "{sqlite:?}"
    );
}
