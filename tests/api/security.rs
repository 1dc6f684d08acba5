//! Abuse resistance, sessions, audit trail and keys (the security issue).

use std::time::Duration;

use authql::config::{JwtAlgorithm, RateLimit};
use serde_json::{json, Value};

use crate::helpers::*;

/// kind, user id, client address, detail.
type EventRow = (String, Option<i64>, Option<String>, Option<String>);

fn limit(max: u32, secs: u64) -> RateLimit {
    RateLimit {
        max,
        window: Duration::from_secs(secs),
    }
}

fn retry_after(body: &Value) -> u64 {
    assert_eq!(error_code(body), "RATE_LIMITED", "{body}");
    body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .expect("integer retryAfter")
}

/// A GraphQL call that claims to come from `client` through a proxy.
async fn gql_from(app: &TestApp, client: &str, query: &str, variables: Value) -> Value {
    post_graphql(
        &app.client,
        &app.url("/graphql"),
        None,
        Some(client),
        query,
        variables,
    )
    .await
}

fn sign_in_vars(login: &str, password: &str) -> Value {
    json!({ "input": { "login": login, "password": password } })
}

async fn per_address_limits_refuse_with_retry_after(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.security.rate_sign_up = limit(3, 600);
        c.security.rate_sign_in = limit(4, 300);
        c.security.rate_refresh = limit(2, 300);
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let sign_up = |name: &str| json!({ "input": { "username": name, "password": PASSWORD } });
    for i in 0..3 {
        let body = gql_from(&app, "198.51.100.1", SIGN_UP, sign_up(&format!("user{i}"))).await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let refused = gql_from(&app, "198.51.100.1", SIGN_UP, sign_up("user3")).await;
    let wait = retry_after(&refused);
    assert!((1..=600).contains(&wait), "{wait}");
    // Another address is not affected, and nothing was stored for the refusal.
    let other = gql_from(&app, "198.51.100.2", SIGN_UP, sign_up("user3")).await;
    assert!(other["errors"].is_null(), "{other}");
    assert_eq!(app.count("users").await, 4);

    for _ in 0..4 {
        gql_from(
            &app,
            "198.51.100.3",
            CREATE_TOKEN,
            sign_in_vars("user0", PASSWORD),
        )
        .await;
    }
    let refused = gql_from(
        &app,
        "198.51.100.3",
        CREATE_TOKEN,
        sign_in_vars("user0", PASSWORD),
    )
    .await;
    assert!(retry_after(&refused) <= 300);

    let rt = app.sign_up("refresher").await["refreshToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    let first = gql_from(&app, "198.51.100.4", REFRESH, json!({ "token": rt })).await;
    let rt2 = first["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .expect("rt2")
        .to_owned();
    gql_from(&app, "198.51.100.4", REFRESH, json!({ "token": "garbage" })).await;
    let refused = gql_from(&app, "198.51.100.4", REFRESH, json!({ "token": rt2 })).await;
    retry_after(&refused);
    // The server keeps serving everyone else.
    assert!(app.gql("{ __typename }", json!({})).await["errors"].is_null());
}

async fn forwarded_for_is_ignored_without_trusted_proxies(backend: Backend) {
    let app = spawn_with(backend, |c| c.security.rate_sign_up = limit(2, 600)).await;
    for (i, spoofed) in ["1.1.1.1", "2.2.2.2"].iter().enumerate() {
        let body = gql_from(
            &app,
            spoofed,
            SIGN_UP,
            json!({ "input": { "username": format!("spoof{i}"), "password": PASSWORD } }),
        )
        .await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let body = gql_from(
        &app,
        "3.3.3.3",
        SIGN_UP,
        json!({ "input": { "username": "spoof3", "password": PASSWORD } }),
    )
    .await;
    retry_after(&body);
}

async fn failed_sign_ins_back_off_per_login_and_address(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(backend, clock.clone(), |c| {
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    app.sign_up("target").await;
    let attacker = "203.0.113.66";
    for _ in 0..5 {
        let body = gql_from(
            &app,
            attacker,
            CREATE_TOKEN,
            sign_in_vars("target", "wrong guess!!"),
        )
        .await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    }
    // Now even the right password waits.
    let blocked = gql_from(
        &app,
        attacker,
        CREATE_TOKEN,
        sign_in_vars("TARGET", PASSWORD),
    )
    .await;
    assert_eq!(retry_after(&blocked), 1);
    // The real user elsewhere is not locked out.
    let owner = gql_from(
        &app,
        "198.51.100.20",
        CREATE_TOKEN,
        sign_in_vars("target", PASSWORD),
    )
    .await;
    assert!(owner["errors"].is_null(), "{owner}");
    // After the wait, the next failure doubles it.
    clock.advance(Duration::from_millis(1100));
    let body = gql_from(
        &app,
        attacker,
        CREATE_TOKEN,
        sign_in_vars("target", "wrong guess!!"),
    )
    .await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    let blocked = gql_from(
        &app,
        attacker,
        CREATE_TOKEN,
        sign_in_vars("target", PASSWORD),
    )
    .await;
    assert_eq!(retry_after(&blocked), 2);
    clock.advance(Duration::from_millis(2100));
    // A success ends the streak.
    let ok = gql_from(
        &app,
        attacker,
        CREATE_TOKEN,
        sign_in_vars("target", PASSWORD),
    )
    .await;
    assert!(ok["errors"].is_null(), "{ok}");
    let body = gql_from(
        &app,
        attacker,
        CREATE_TOKEN,
        sign_in_vars("target", "wrong guess!!"),
    )
    .await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "streak restarted");
}

async fn instances_share_rate_limit_counters(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let configure = |c: &mut authql::config::ServeConfig| c.security.rate_sign_up = limit(2, 600);
    let a = spawn_on(db.clone(), configure).await;
    let b = spawn_on(db.clone(), configure).await;
    a.sign_up("one").await;
    b.sign_up("two").await;
    let third = a
        .gql(
            SIGN_UP,
            json!({ "input": { "username": "three", "password": PASSWORD } }),
        )
        .await;
    retry_after(&third);
    let fourth = b
        .gql(
            SIGN_UP,
            json!({ "input": { "username": "four", "password": PASSWORD } }),
        )
        .await;
    retry_after(&fourth);
}

async fn sign_out_everywhere_ends_every_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let phone = app.sign_up("everywhere").await;
    let laptop = app.create_token("everywhere", PASSWORD).await["data"]["createToken"].clone();
    let stranger = app.sign_up("stranger").await;

    let unauthenticated = app.gql("mutation { signOutEverywhere }", json!({})).await;
    assert_eq!(error_code(&unauthenticated), "UNAUTHENTICATED");

    let body = app
        .gql_as(
            phone["accessToken"].as_str(),
            "mutation { signOutEverywhere }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["signOutEverywhere"], true, "{body}");
    for session in [&phone, &laptop] {
        let at = session["accessToken"].as_str().expect("at");
        let rt = session["refreshToken"].as_str().expect("rt");
        assert_eq!(error_code(&app.me(at).await), "UNAUTHENTICATED");
        assert_eq!(error_code(&app.refresh(rt).await), "INVALID_REFRESH_TOKEN");
    }
    // Other users are untouched, and signing in again works at once.
    assert!(app.me(stranger["accessToken"].as_str().expect("at")).await["errors"].is_null());
    let again = app.create_token("everywhere", PASSWORD).await;
    let at = again["data"]["createToken"]["accessToken"]
        .as_str()
        .expect("at");
    assert_eq!(app.me(at).await["data"]["me"]["username"], "everywhere");
}

async fn expired_and_revoked_sessions_are_cleaned_up(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(backend, clock.clone(), |c| {
        c.security.cleanup_every = 1;
    })
    .await;
    for i in 0..5 {
        app.sign_up(&format!("temp{i}")).await;
    }
    // Past the 30-day refresh lifetime.
    clock.advance(Duration::from_secs(31 * 24 * 3600));
    // This sign-in's session is fresh; the cleanup it triggers removes the rest.
    app.create_token("temp0", PASSWORD).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.count("sessions").await > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "expired sessions were not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.count("refresh_tokens").await, 1);
}

async fn security_events_are_recorded_append_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let payload = app.sign_up("audited").await;
    let rt = payload["refreshToken"].as_str().expect("rt").to_owned();
    app.create_token("audited", "wrong password!").await;
    app.create_token("nobody-here", "wrong password!").await;
    app.create_token("audited", PASSWORD).await;
    let rt2 = app.refresh(&rt).await["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .expect("rt2")
        .to_owned();
    app.refresh(&rt2).await;
    app.refresh(&rt).await; // reuse
    app.revoke(&rt2).await;

    let pool = app.db_pool().await;
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT kind, user_id, client_addr, detail FROM security_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    let kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "sign_up",
            "sign_in_failed",
            "sign_in_failed",
            "sign_in",
            "refresh",
            "refresh",
            "refresh_reuse_detected",
            "revoke"
        ]
    );
    assert_eq!(rows[1].3.as_deref(), Some("wrong password"));
    assert_eq!(rows[2].3.as_deref(), Some("unknown login"));
    assert_eq!(rows[2].1, None);
    assert!(rows.iter().all(|r| r.2.as_deref() == Some("127.0.0.1")));
    let all_text = format!("{rows:?}");
    assert!(
        !all_text.contains(&rt)
            && !all_text.contains(PASSWORD)
            && !all_text.contains("nobody-here")
    );
    // The table refuses changes.
    assert!(sqlx::query("UPDATE security_events SET kind = 'x'")
        .execute(&pool)
        .await
        .is_err());
    assert!(sqlx::query("DELETE FROM security_events")
        .execute(&pool)
        .await
        .is_err());

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("authql_security_events_total{kind=\"sign_in_failed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("authql_security_events_total{kind=\"refresh_reuse_detected\"} 1"));
}

async fn eddsa_tokens_verify_with_the_published_jwks(backend: Backend) {
    let app = spawn_with(backend, |c| c.tokens.jwt_algorithm = JwtAlgorithm::EdDsa).await;
    let payload = app.sign_up("edwards").await;
    let jwt = payload["accessToken"].as_str().expect("jwt");
    let header = jsonwebtoken::decode_header(jwt).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the token's kid is published")
        .clone();
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert!(key.get("d").is_none(), "no private part");
    // An outside verifier with only the JWKS accepts the token.
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().expect("x")).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["authql"]);
    jsonwebtoken::decode::<Value>(jwt, &decoding, &validation).expect("verifies with the JWKS");
    assert_eq!(app.me(jwt).await["data"]["me"]["username"], "edwards");

    // HS256 publishes nothing.
    let hs = spawn_app(backend).await;
    let jwks: Value = hs.get_json("/.well-known/jwks.json").await;
    assert_eq!(jwks, json!({ "keys": [] }));
}

async fn rotated_keys_sign_new_tokens_and_old_ones_keep_verifying(backend: Backend) {
    for algorithm in ["EdDSA", "HS256"] {
        let alg = if algorithm == "EdDSA" {
            JwtAlgorithm::EdDsa
        } else {
            JwtAlgorithm::Hs256
        };
        let a = spawn_with(backend, |c| c.tokens.jwt_algorithm = alg).await;
        let before = a.sign_up("rotating").await;
        let old_jwt = before["accessToken"].as_str().expect("jwt").to_owned();
        let old_kid = jsonwebtoken::decode_header(&old_jwt).expect("header").kid;

        let dir = tempfile::tempdir().expect("dir");
        let output = crate::process::authql(dir.path())
            .args(["keys", "rotate"])
            .env("DATABASE_URL", &a.db.url)
            .env("AUTHQL_JWT_ALGORITHM", algorithm)
            .output()
            .expect("authql keys rotate runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let new_kid = String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        assert_ne!(Some(new_kid.clone()), old_kid);

        // An instance started now signs with the new key...
        let b = spawn_on(a.db.clone(), |c| c.tokens.jwt_algorithm = alg).await;
        let after = b.create_token("rotating", PASSWORD).await;
        let new_jwt = after["data"]["createToken"]["accessToken"]
            .as_str()
            .expect("jwt")
            .to_owned();
        assert_eq!(
            jsonwebtoken::decode_header(&new_jwt).expect("header").kid,
            Some(new_kid.clone())
        );
        // ...the running one learns it from the unknown kid...
        assert_eq!(
            a.me(&new_jwt).await["data"]["me"]["username"],
            "rotating",
            "{algorithm}"
        );
        // ...and tokens of the old key still verify everywhere.
        assert_eq!(b.me(&old_jwt).await["data"]["me"]["username"], "rotating");
        if algorithm == "EdDSA" {
            let jwks: Value = b.get_json("/.well-known/jwks.json").await;
            let kids: Vec<&str> = jwks["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .filter_map(|k| k["kid"].as_str())
                .collect();
            assert_eq!(kids.len(), 2, "{jwks}");
            assert_eq!(kids[0], new_kid, "newest first");
        }
    }
}

async fn introspection_can_be_switched_off(backend: Backend) {
    let app = spawn_with(backend, |c| c.introspection = Some(false)).await;
    for query in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"User\") { name } }",
    ] {
        let body = app.gql(query, json!({})).await;
        assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
        assert!(body["data"].is_null());
    }
    assert!(
        app.gql("{ __typename }", json!({})).await["errors"].is_null(),
        "still serving"
    );
}

async fn batches_and_huge_documents_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let batch = json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]);
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&batch)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400, "batching is not supported");
    let huge = format!("{{ __typename {} }}", " ".repeat(70_000));
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": huge }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    assert!(
        app.gql("{ __typename }", json!({})).await["errors"].is_null(),
        "still serving"
    );
}

crate::on_both_backends!(
    per_address_limits_refuse_with_retry_after,
    forwarded_for_is_ignored_without_trusted_proxies,
    failed_sign_ins_back_off_per_login_and_address,
    instances_share_rate_limit_counters,
    sign_out_everywhere_ends_every_session,
    expired_and_revoked_sessions_are_cleaned_up,
    security_events_are_recorded_append_only,
    eddsa_tokens_verify_with_the_published_jwks,
    rotated_keys_sign_new_tokens_and_old_ones_keep_verifying,
    introspection_can_be_switched_off,
    batches_and_huge_documents_are_refused,
);
