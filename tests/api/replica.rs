//! A streaming replica for reads (`AUTHQL_READ_DATABASE_URL`): `me` is
//! served from it, and a revocation still holds at once when it lags.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// The replica `scripts/test` starts (`AUTHQL_TEST_REPLICA_URL`), or None
/// (loudly; a failure with `AUTHQL_TEST_REQUIRE_POSTGRES=1`).
fn replica_admin_url() -> Option<String> {
    if !Backend::Postgres.available() {
        return None;
    }
    match std::env::var("AUTHQL_TEST_REPLICA_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("AUTHQL_TEST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "AUTHQL_TEST_REQUIRE_POSTGRES=1 but AUTHQL_TEST_REPLICA_URL is not set"
            );
            eprintln!("SKIPPED (replica): AUTHQL_TEST_REPLICA_URL is not set; run scripts/test");
            None
        }
    }
}

/// Connects to the replica's copy of the database once replication has
/// created it.
async fn replica_pool(url: &str) -> sqlx::PgPool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sqlx::PgPool::connect(url).await {
            Ok(pool) => return pool,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "replica never had the database: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Scans of `sessions` on the replica (its own statistics).
async fn session_scans(replica: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        // No row until the replica has replayed the migrations.
        "SELECT COALESCE((SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0)
                          FROM pg_stat_user_tables WHERE relname = 'sessions'), 0)",
    )
    .fetch_one(replica)
    .await
    .expect("stats")
}

/// Pauses the replica's replay; resumes it when dropped, whatever happens.
struct ReplayPaused(String);

impl ReplayPaused {
    async fn pause(url: &str) -> Self {
        let pool = sqlx::PgPool::connect(url).await.expect("replica");
        sqlx::query("SELECT pg_wal_replay_pause()")
            .execute(&pool)
            .await
            .expect("pause");
        Self(url.to_owned())
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        let url = self.0.clone();
        // Drop is synchronous; the resume must happen even on a panic.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&url).await.expect("replica");
                sqlx::query("SELECT pg_wal_replay_resume()")
                    .execute(&pool)
                    .await
                    .expect("resume");
            });
        })
        .join()
        .expect("resumed");
    }
}

#[tokio::test]
async fn me_reads_the_replica_and_a_revocation_holds_while_it_lags() {
    let Some(replica_admin) = replica_admin_url() else {
        return;
    };
    let db = TestDatabase::new(Backend::Postgres).await;
    let replica_url = same_database_on(&replica_admin, &db.url);
    let replica = replica_pool(&replica_url).await;
    let with_replica = |c: &mut authql::config::ServeConfig| {
        c.database.read_url = Some(replica_url.clone());
        c.database.read_max_lag = Duration::from_secs(1);
    };
    let a = spawn_on(db.clone(), with_replica).await;
    let b = spawn_on(db.clone(), with_replica).await;
    let signed = a.sign_up("replicated").await;
    let token = signed["accessToken"].as_str().expect("token").to_owned();

    // Once the replica has replayed the sign-up, B reads `me` from it.
    let scans_before = session_scans(&replica).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for _ in 0..10 {
            assert_eq!(b.me(&token).await["data"]["me"]["username"], "replicated");
        }
        let text = b.metrics().await;
        if text.contains(r#"authql_read_replica_reads_total{server="replica",reason=""}"#)
            && session_scans(&replica).await > scans_before
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "me never read the replica:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Replay stops; A ends every session of the user on the primary.
    let paused = ReplayPaused::pause(&replica_url).await;
    let out = a
        .gql_as(Some(&token), "mutation { signOutEverywhere }", json!({}))
        .await;
    assert!(out["errors"].is_null(), "{out}");
    let revoked_at = Instant::now();
    // A wrote it: A reads the primary at once.
    assert_eq!(error_code(&a.me(&token).await), "UNAUTHENTICATED");
    // B learns it only from the lag bound: refused within it
    // (AUTHQL_READ_MAX_LAG, 1 s; the rest is slack for a loaded machine).
    loop {
        if error_code(&b.me(&token).await) == "UNAUTHENTICATED" {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "B still accepts a revoked session {:?} after the revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = b.metrics().await;
    assert!(
        text.contains(r#"reason="lagging""#),
        "B fell back for lag:\n{text}"
    );
    // The gauge is set by the next sample (every 100 ms).
    let lag_over_a_second = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("authql_read_replica_lag_seconds ")
                && l.split(' ')
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 1.0)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = b.metrics().await;
        if lag_over_a_second(&text) {
            break;
        }
        assert!(Instant::now() < deadline, "the lag is reported:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(paused);
}

#[tokio::test]
async fn an_unreachable_replica_sends_reads_to_the_primary() {
    if replica_admin_url().is_none() {
        return;
    }
    let app = spawn_with(Backend::Postgres, |c| {
        // Nothing listens on port 9.
        c.database.read_url = Some("postgres://postgres@127.0.0.1:9/nothing".into());
    })
    .await;
    let signed = app.sign_up("unreplicated").await;
    let token = signed["accessToken"].as_str().expect("token");
    for _ in 0..5 {
        assert_eq!(
            app.me(token).await["data"]["me"]["username"],
            "unreplicated"
        );
    }
    let text = app.metrics().await;
    assert!(
        text.contains(r#"server="primary",reason="unknown""#),
        "{text}"
    );
    assert!(!text.contains(r#"server="replica""#), "{text}");
}
