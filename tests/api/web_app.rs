//! The example web app (`examples/web`, typed by GraphQL Code Generator
//! from schema.graphql) served from its own origin against a cookie-mode
//! authql, in Debian's chromium (`tests/browser/example.mjs`); then the
//! server's own tables say what happened.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::helpers::*;

/// Node, chromium, playwright-core and the built app, or why not.
fn browser_ready(root: &str) -> Result<String, String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    for (ok, what) in [
        (node, "node".to_owned()),
        (std::path::Path::new(&chromium).exists(), chromium.clone()),
        (
            std::path::Path::new(&format!(
                "{root}/tests/browser/node_modules/playwright-core"
            ))
            .is_dir(),
            "tests/browser/node_modules (npm ci)".into(),
        ),
        (
            std::path::Path::new(&format!("{root}/examples/web/dist/app.js")).is_file(),
            "examples/web/dist/app.js (npm ci && npm run build)".into(),
        ),
    ] {
        if !ok {
            return Err(what);
        }
    }
    Ok(chromium)
}

async fn the_example_app_keeps_the_refresh_token_away_from_javascript(backend: Backend) {
    let root = env!("CARGO_MANIFEST_DIR");
    let chromium = match browser_ready(root) {
        Ok(chromium) => chromium,
        Err(missing) => {
            assert!(
                std::env::var("AUTHQL_TEST_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "AUTHQL_TEST_REQUIRE_BROWSER=1 but {missing} is missing"
            );
            eprintln!("SKIPPED (browser): {missing} missing; run scripts/test");
            return;
        }
    };
    // The app's own origin: another port, as a real frontend is.
    let mut server = Command::new("node")
        .arg(format!("{root}/examples/web/serve.mjs"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("serve.mjs starts");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("serve.mjs says where");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .expect("port")
        .to_owned();
    let origin = format!("http://127.0.0.1:{port}");
    let cors = origin.clone();
    // The app sends document ids only, from the manifest GraphQL Code
    // Generator wrote beside its typed documents: the server runs those
    // and nothing else.
    let manifest =
        std::path::Path::new(&root).join("examples/web/src/gql/persisted-documents.json");
    let app = spawn_with(backend, move |c| {
        c.cookie.refresh_cookie = true;
        c.cookie.refresh_cookie_only = true;
        c.cors_origins = vec![cors];
        c.trusted_documents = Some(manifest);
        c.trusted_documents_only = true;
    })
    .await;
    let api = app.url("/graphql");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(format!("{root}/tests/browser/example.mjs"))
            .arg(&origin)
            .arg(&api)
            .env("CHROMIUM", &chromium)
            .output()
            .expect("node runs")
    })
    .await
    .expect("browser task");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // What the server saw: two silent refreshes (the two reloads while
    // signed in), none from the attacker, no reuse, and no session left.
    let pool = app.db_pool().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM security_events WHERE kind = 'refresh'").await,
        2
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM security_events WHERE kind = 'refresh_reuse_detected'").await,
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL").await,
        0
    );
    assert_eq!(count("SELECT COUNT(*) FROM users").await, 1);
}

crate::on_both_backends!(the_example_app_keeps_the_refresh_token_away_from_javascript,);
