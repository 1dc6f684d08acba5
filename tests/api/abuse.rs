//! Limits under concurrent and adversarial load: the back-off under a burst,
//! IPv6 prefixes and proxy headers, one namespace of logins, the bounded
//! hashing queue, aggregated refusals and audit retention, control
//! characters.

use std::time::Duration;

use authql::config::{RateLimit, ServeConfig};
use serde_json::{json, Value};

use crate::helpers::*;

const WRONG: &str = "not the password at all";

fn behind_proxy(c: &mut ServeConfig) {
    c.security.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
}

async fn sign_in_from(app: &TestApp, client: &str, login: &str, password: &str) -> Value {
    post_graphql(
        &app.client,
        &app.url("/graphql"),
        None,
        Some(client),
        CREATE_TOKEN,
        json!({ "input": { "login": login, "password": password } }),
    )
    .await
}

/// Sign-ins from `client` all at once; their error codes ("" for success).
async fn burst(app: &TestApp, client: &str, attempts: Vec<(String, String)>) -> Vec<String> {
    let calls = attempts.into_iter().map(|(login, password)| {
        let (http, url, client) = (app.client.clone(), app.url("/graphql"), client.to_owned());
        tokio::spawn(async move {
            let body = post_graphql(
                &http,
                &url,
                None,
                Some(&client),
                CREATE_TOKEN,
                json!({ "input": { "login": login, "password": password } }),
            )
            .await;
            error_code(&body)
        })
    });
    let mut codes = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        codes.push(call.await.expect("task"));
    }
    codes
}

async fn evaluated_guesses(app: &TestApp) -> i64 {
    let pool = app.db_pool().await;
    let n =
        sqlx::query_scalar("SELECT COUNT(*) FROM security_events WHERE kind = 'sign_in_failed'")
            .fetch_one(&pool)
            .await
            .expect("count");
    pool.close().await;
    n
}

async fn a_burst_of_guesses_is_evaluated_no_further_than_a_sequence(backend: Backend) {
    let app = spawn_with(backend, behind_proxy).await;
    app.sign_up("burst").await;
    // 29 wrong guesses and the right password, all at once, from one address.
    let mut attempts: Vec<_> = (0..29)
        .map(|i| ("burst".to_owned(), format!("{WRONG} {i}")))
        .collect();
    attempts.push(("burst".to_owned(), PASSWORD.to_owned()));
    let codes = burst(&app, "198.51.100.30", attempts).await;
    let limited = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    let evaluated = codes.len() - limited;
    assert!(evaluated <= 6, "{evaluated} evaluated: {codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| ["", "INVALID_CREDENTIALS", "RATE_LIMITED"].contains(&c.as_str())),
        "{codes:?}"
    );
    // During the wait the right password is refused, also in a burst.
    let again: Vec<_> = (0..10)
        .map(|_| ("burst".to_owned(), PASSWORD.to_owned()))
        .collect();
    let codes = burst(&app, "198.51.100.30", again).await;
    if codes.iter().any(|c| c != "RATE_LIMITED") {
        // Only possible when the right password was among the first
        // evaluated above (a success ends the streak).
        assert!(evaluated_guesses(&app).await < 5, "{codes:?}");
    }
    // The owner elsewhere is unaffected.
    let owner = sign_in_from(&app, "203.0.113.30", "burst", PASSWORD).await;
    assert!(owner["errors"].is_null(), "{owner}");
}

async fn username_and_email_of_one_account_share_a_streak(backend: Backend) {
    let app = spawn_with(backend, behind_proxy).await;
    app.sign_up_with(
        json!({ "username": "twoways", "password": PASSWORD, "email": "two@example.com" }),
    )
    .await;
    let client = "198.51.100.31";
    for login in [
        "twoways",
        "TWO@example.com",
        "twoways",
        "two@example.com",
        "TwoWays",
    ] {
        let body = sign_in_from(&app, client, login, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    let blocked = sign_in_from(&app, client, "two@example.com", PASSWORD).await;
    assert_eq!(error_code(&blocked), "RATE_LIMITED", "{blocked}");
}

async fn ipv6_clients_are_limited_per_prefix(backend: Backend) {
    let app = spawn_with(backend, behind_proxy).await;
    app.sign_up("sixer").await;
    // 40 addresses of one /64, each with its own guess.
    let mut evaluated = 0;
    for i in 0..40 {
        let body = sign_in_from(&app, &format!("2001:db8:6:6::{i:x}"), "sixer", WRONG).await;
        if error_code(&body) == "INVALID_CREDENTIALS" {
            evaluated += 1;
        }
    }
    assert_eq!(
        evaluated, 5,
        "one /64 gets the free failures of one address"
    );
    let same_prefix = sign_in_from(&app, "[2001:db8:6:6::ffff]:443", "sixer", PASSWORD).await;
    assert_eq!(error_code(&same_prefix), "RATE_LIMITED", "{same_prefix}");
    let other_prefix = sign_in_from(&app, "2001:db8:6:7::1", "sixer", PASSWORD).await;
    assert!(other_prefix["errors"].is_null(), "{other_prefix}");
    // The audit trail keeps full addresses.
    let pool = app.db_pool().await;
    let addrs: Vec<String> = sqlx::query_scalar(
        "SELECT client_addr FROM security_events WHERE kind = 'sign_in_failed' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(addrs[0], "2001:db8:6:6::");
    assert_eq!(addrs[1], "2001:db8:6:6::1");
}

async fn forwarded_entries_with_ports_and_unknown_are_understood(backend: Backend) {
    let app = spawn_with(backend, |c| {
        behind_proxy(c);
        c.security.rate_sign_up = RateLimit {
            max: 1,
            window: Duration::from_secs(600),
        };
    })
    .await;
    let sign_up = |name: &str| json!({ "input": { "username": name, "password": PASSWORD } });
    let from = |xff: &'static str, name: &'static str| {
        let app = &app;
        async move {
            post_graphql(
                &app.client,
                &app.url("/graphql"),
                None,
                Some(xff),
                SIGN_UP,
                sign_up(name),
            )
            .await
        }
    };
    // Each of these is a different client, none is the proxy itself.
    assert!(from("198.51.100.40:1234", "port1").await["errors"].is_null());
    assert!(from("unknown, 198.51.100.41", "unknown1").await["errors"].is_null());
    assert!(from("[2001:db8::41]:443", "bracket1").await["errors"].is_null());
    // The same clients again: limited as themselves.
    for (xff, name) in [
        ("198.51.100.40:9", "port2"),
        ("198.51.100.41", "unknown2"),
        ("[2001:db8::41]", "bracket2"),
    ] {
        let again = from(xff, name).await;
        assert_eq!(error_code(&again), "RATE_LIMITED", "{xff}: {again}");
    }
    // The proxy's own address was never used up...
    assert!(app.sign_up("direct").await["accessToken"].is_string());
    // ...until the proxy itself did not know the client: whatever stands
    // left of its `unknown` may be the client's own claim, so the request
    // counts as the proxy's.
    let unknowable = from("203.0.113.99, unknown", "unknowable").await;
    assert_eq!(error_code(&unknowable), "RATE_LIMITED", "{unknowable}");
}

async fn a_dual_stack_listener_sees_ipv4_clients_as_ipv4(backend: Backend) {
    let app = spawn_with(backend, |c| {
        behind_proxy(c);
        c.bind = "[::]:0".parse().expect("addr");
    })
    .await;
    let url = format!("http://127.0.0.1:{}/graphql", app.addr.port());
    app.sign_up_with(json!({ "username": "dualstack", "password": PASSWORD }))
        .await;
    for i in 0..5 {
        let body = post_graphql(
            &app.client,
            &url,
            None,
            Some(&format!("198.51.100.{}", 50 + i)),
            CREATE_TOKEN,
            json!({ "input": { "login": "dualstack", "password": WRONG } }),
        )
        .await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    }
    // Each was its own client, so the owner at a sixth address is not blocked.
    let body = post_graphql(
        &app.client,
        &url,
        None,
        Some("198.51.100.59"),
        CREATE_TOKEN,
        json!({ "input": { "login": "dualstack", "password": PASSWORD } }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
}

async fn usernames_and_emails_share_one_namespace(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(
        json!({ "username": "alice", "password": PASSWORD, "email": "alice@example.com" }),
    )
    .await;
    let taken = app
        .gql(
            SIGN_UP,
            json!({ "input": { "username": "ALICE@example.com", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(field_codes(&taken), [("username".into(), "TAKEN".into())]);
    app.sign_up("bob@example.com").await;
    let taken = app
        .gql(
            SIGN_UP,
            json!({ "input": { "username": "robert", "password": PASSWORD, "email": "BOB@example.com" } }),
        )
        .await;
    assert_eq!(field_codes(&taken), [("email".into(), "TAKEN".into())]);
    // One's own username may be one's own e-mail.
    app.sign_up_with(json!({ "username": "carol@example.com", "password": PASSWORD, "email": "Carol@example.com" }))
        .await;
    let carol = app.create_token("carol@EXAMPLE.com", PASSWORD).await;
    assert_eq!(
        carol["data"]["createToken"]["user"]["username"],
        "carol@example.com"
    );
    // Racing claims of one key, as username and as e-mail: one wins.
    let racers = (0..10).map(|i| {
        let input = if i % 2 == 0 {
            json!({ "username": "Dave@example.com", "password": PASSWORD })
        } else {
            json!({ "username": format!("dave{i}"), "password": PASSWORD, "email": "dave@example.COM" })
        };
        let (client, url) = (app.client.clone(), app.url("/graphql"));
        tokio::spawn(async move {
            post_graphql(&client, &url, None, None, SIGN_UP, json!({ "input": input })).await
        })
    });
    let mut won = 0;
    for racer in racers.collect::<Vec<_>>() {
        let body = racer.await.expect("task");
        match error_code(&body).as_str() {
            "" => won += 1,
            "VALIDATION" => assert!(field_codes(&body).iter().all(|(_, c)| c == "TAKEN")),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won, 1);
    let pool = app.db_pool().await;
    let owners: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM login_keys WHERE key = 'dave@example.com'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(owners, 1);
}

async fn control_characters_are_refused_the_same_on_both_backends(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("nul-target").await;
    let cases = [
        json!({ "username": "nul\u{0}user", "password": PASSWORD }),
        json!({ "username": "nulmail", "password": PASSWORD, "email": "a\u{0}b@example.com" }),
        json!({ "username": "nulcar", "password": PASSWORD, "cars": [{ "brand": "La\u{0}da", "model": "Vesta" }] }),
        json!({ "username": "nulcolor", "password": PASSWORD, "cars": [{ "brand": "Lada", "model": "Vesta", "color": "red\u{1b}[0m" }] }),
        json!({ "username": "nulname", "password": PASSWORD, "name": "Ivan\u{0}" }),
        json!({ "username": "nulphone", "password": PASSWORD, "phone": "+7999123456\u{0}7" }),
    ];
    for input in cases {
        let body = app.gql(SIGN_UP, json!({ "input": input })).await;
        let codes = field_codes(&body);
        assert!(codes.iter().any(|(_, c)| c == "INVALID"), "{input}: {body}");
    }
    assert_eq!(app.count("users").await, 1, "nothing stored");
    for login in ["nul-target\u{0}", "\u{0}", "nul\u{7}target"] {
        let body = app.create_token(login, PASSWORD).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    // A password with control characters is taken as given (never stored).
    let body = app
        .gql(
            SIGN_UP,
            json!({ "input": { "username": "ctrlpass", "password": "tab\there and bell\u{7}" } }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(app
        .create_token("ctrlpass", "tab\there and bell\u{7}")
        .await["errors"]
        .is_null());
}

async fn create_token_reports_blank_and_over_long_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app.create_token(" ", "").await;
    assert_eq!(
        field_codes(&body),
        [
            ("login".into(), "FIELD_MISSING".into()),
            ("password".into(), "FIELD_MISSING".into())
        ]
    );
    let body = app.create_token(&"l".repeat(255), &"p".repeat(257)).await;
    assert_eq!(
        field_codes(&body),
        [
            ("login".into(), "TOO_LONG".into()),
            ("password".into(), "TOO_LONG".into())
        ]
    );
    let body = app.create_token("somebody", &"p".repeat(256)).await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
}

async fn a_full_hashing_queue_refuses_at_once_and_serves_others(backend: Backend) {
    let app = spawn_with(backend, |c| {
        behind_proxy(c);
        c.passwords.hash_concurrency = Some(1);
        c.passwords.hash_queue = 8;
        c.passwords.hash_queue_per_client = 3;
    })
    .await;
    app.sign_up("queued").await;
    let flood: Vec<_> = (0..20)
        .map(|i| ("queued".to_owned(), format!("{WRONG} {i}")))
        .collect();
    let flooding = {
        let app_client = app.client.clone();
        let url = app.url("/graphql");
        tokio::spawn(async move {
            let calls = flood.into_iter().map(|(login, password)| {
                let (http, url) = (app_client.clone(), url.clone());
                tokio::spawn(async move {
                    let body = post_graphql(
                        &http,
                        &url,
                        None,
                        Some("198.51.100.60"),
                        CREATE_TOKEN,
                        json!({ "input": { "login": login, "password": password } }),
                    )
                    .await;
                    (
                        error_code(&body),
                        body["errors"][0]["extensions"]["retryAfter"].clone(),
                    )
                })
            });
            let mut out = Vec::new();
            for call in calls.collect::<Vec<_>>() {
                out.push(call.await.expect("task"));
            }
            out
        })
    };
    // Another address is served while the flood is refused.
    let other = sign_in_from(&app, "203.0.113.60", "queued", PASSWORD).await;
    assert!(other["errors"].is_null(), "{other}");
    let answers = flooding.await.expect("flood");
    let shed: Vec<_> = answers
        .iter()
        .filter(|(c, _)| c == "RATE_LIMITED")
        .collect();
    assert!(!shed.is_empty(), "{answers:?}");
    assert!(shed.iter().all(|(_, retry)| retry.as_u64() == Some(1)));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("authql_password_hash_shed_total{reason=\"client_share\"}"),
        "{metrics}"
    );
}

async fn hashes_whose_caller_hung_up_are_skipped(backend: Backend) {
    let app = spawn_with(backend, |c| {
        behind_proxy(c);
        c.passwords.hash_concurrency = Some(1);
        // Slow hashes (tens of milliseconds), so the queue outlasts the callers.
        c.passwords.argon2_iterations = 8;
    })
    .await;
    // Sixty clients that give up after 300 ms, each from its own address.
    let impatient = (0..60).map(|i| {
        let (http, url) = (app.client.clone(), app.url("/graphql"));
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .header("x-forwarded-for", format!("198.51.100.{}", 100 + i))
                .timeout(Duration::from_millis(300))
                .json(&json!({ "query": CREATE_TOKEN, "variables": { "input": { "login": "nobody", "password": WRONG } } }))
                .send()
                .await;
        })
    });
    for call in impatient.collect::<Vec<_>>() {
        call.await.expect("task");
    }
    // The next sign-up does not pay for sixty abandoned hashes; the skipped
    // ones are counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = app.metrics().await;
        if metrics.contains("authql_password_hash_shed_total{reason=\"caller_gone\"}") {
            break;
        }
        if std::time::Instant::now() > deadline {
            let evaluated = evaluated_guesses(&app).await;
            let hash_lines: Vec<&str> = metrics.lines().filter(|l| l.contains("hash")).collect();
            panic!("no job was skipped ({evaluated} evaluated): {hash_lines:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.sign_up("patient").await["accessToken"].is_string());
}

async fn refusals_are_aggregated_and_the_audit_trail_has_a_retention(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.security.rate_sign_in = RateLimit {
            max: 1,
            window: Duration::from_secs(600),
        };
        c.security.audit_retention = Duration::from_secs(24 * 3600);
        c.security.cleanup_every = 1;
    })
    .await;
    app.sign_up("refused").await;
    let flood = (0..300).map(|_| {
        let (client, url) = (app.client.clone(), app.url("/graphql"));
        tokio::spawn(async move {
            post_graphql(
                &client,
                &url,
                None,
                None,
                CREATE_TOKEN,
                json!({ "input": { "login": "refused", "password": WRONG } }),
            )
            .await
        })
    });
    for call in flood.collect::<Vec<_>>() {
        call.await.expect("task");
    }
    let pool = app.db_pool().await;
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT COUNT(*), CAST(SUM(count) AS BIGINT) FROM security_events WHERE kind = 'rate_limited'",
    )
    .fetch_all(&pool)
    .await
    .expect("rows");
    let (rows, refused) = rows[0];
    assert!(
        rows <= 2,
        "{rows} rows for {refused} refusals (one per minute)"
    );
    assert!(refused >= 299, "{refused}");
    // Counts only grow; nothing else changes; young rows stay.
    assert!(sqlx::query(
        "UPDATE security_events SET count = count - 1 WHERE kind = 'rate_limited'"
    )
    .execute(&pool)
    .await
    .is_err());
    assert!(
        sqlx::query("UPDATE security_events SET detail = 'x' WHERE kind = 'rate_limited'")
            .execute(&pool)
            .await
            .is_err()
    );
    assert!(sqlx::query("DELETE FROM security_events")
        .execute(&pool)
        .await
        .is_err());
    // A row past retention is removed by the cleanup a sign-in triggers.
    let old = match backend {
        Backend::Sqlite => "INSERT INTO security_events (at, kind) VALUES (1000, 'sign_in')",
        Backend::Postgres | Backend::Pooled => {
            "INSERT INTO security_events (at, kind) VALUES (now() - interval '2 days', 'sign_in')"
        }
    };
    sqlx::query(old).execute(&pool).await.expect("old row");
    let ok = app.create_token("refused", PASSWORD).await;
    assert_eq!(
        error_code(&ok),
        "RATE_LIMITED",
        "still limited, but cleanup runs on sign-ups"
    );
    app.sign_up("trigger-cleanup").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let old_rows: i64 = sqlx::query_scalar(match backend {
            Backend::Sqlite => "SELECT COUNT(*) FROM security_events WHERE at = 1000",
            Backend::Postgres | Backend::Pooled => {
                "SELECT COUNT(*) FROM security_events WHERE at < now() - interval '1 day'"
            }
        })
        .fetch_one(&pool)
        .await
        .expect("count");
        if old_rows == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old row was not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.count("security_events").await >= 2, "young rows stay");
}

async fn revoke_token_is_rate_limited(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.security.rate_revoke = RateLimit {
            max: 2,
            window: Duration::from_secs(300),
        };
    })
    .await;
    let rt = app.sign_up("revoker").await["refreshToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    assert_eq!(app.revoke(&rt).await["data"]["revokeToken"], true);
    assert_eq!(
        error_code(&app.revoke("garbage").await),
        "INVALID_REFRESH_TOKEN"
    );
    assert_eq!(error_code(&app.revoke(&rt).await), "RATE_LIMITED");
}

crate::on_both_backends!(
    a_burst_of_guesses_is_evaluated_no_further_than_a_sequence,
    username_and_email_of_one_account_share_a_streak,
    ipv6_clients_are_limited_per_prefix,
    forwarded_entries_with_ports_and_unknown_are_understood,
    a_dual_stack_listener_sees_ipv4_clients_as_ipv4,
    usernames_and_emails_share_one_namespace,
    control_characters_are_refused_the_same_on_both_backends,
    create_token_reports_blank_and_over_long_fields,
    a_full_hashing_queue_refuses_at_once_and_serves_others,
    hashes_whose_caller_hung_up_are_skipped,
    refusals_are_aggregated_and_the_audit_trail_has_a_retention,
    revoke_token_is_rate_limited,
);

/// SQLite commits with synchronous=NORMAL; a revocation is followed by a
/// write committed with FULL, whose WAL fsync makes it survive a power loss.
/// (A power loss cannot be staged here; what can be seen is the barrier.)
#[tokio::test]
async fn revocations_are_followed_by_a_durability_barrier_on_sqlite() {
    let app = spawn_app(Backend::Sqlite).await;
    let pool = app.db_pool().await;
    let rt = app.sign_up("durable").await["refreshToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    // The generated keys wrote the barrier row at start; remove it, so only
    // the revocation can write it again.
    sqlx::query("DELETE FROM settings WHERE key = 'durable_at'")
        .execute(&pool)
        .await
        .expect("delete");
    assert_eq!(app.revoke(&rt).await["data"]["revokeToken"], true);
    let barrier: Option<String> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'durable_at'")
            .fetch_optional(&pool)
            .await
            .expect("read");
    assert!(barrier.is_some(), "revokeToken made durable");
}
