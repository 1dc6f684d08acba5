use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "test-secret-test-secret-test-secret!";

fn token_str(v: &Value) -> &str {
    v.as_str().expect("token string")
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}

fn sign(header: &Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        header,
        claims,
        &EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("encode")
}

async fn access_token_has_the_documented_header_and_claims(backend: Backend) {
    let app = spawn_app(backend).await;
    let payload = app.sign_up("claims").await;
    let jwt = token_str(&payload["accessToken"]);
    let header = jsonwebtoken::decode_header(jwt).expect("header");
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert!(header.kid.is_some());
    let claims = claims_of(jwt);
    for claim in [
        "sub",
        "sid",
        "iat",
        "nbf",
        "exp",
        "jti",
        "iss",
        "aud",
        "token_type",
        "roles",
    ] {
        assert!(!claims[claim].is_null(), "claim {claim} missing: {claims}");
    }
    assert_eq!(claims["sub"], payload["user"]["id"]);
    assert_eq!(claims["iss"], "authql");
    assert_eq!(claims["aud"], "authql");
    assert_eq!(claims["token_type"], "access");
    assert_eq!(claims["roles"], json!([]));
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );
}

async fn me_refuses_every_kind_of_bad_access_token(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.tokens.jwt_secret = Some(authql::config::Secret::new(SECRET))
    })
    .await;
    let payload = app.sign_up("victim").await;
    let good = token_str(&payload["accessToken"]).to_owned();
    assert_eq!(app.me(&good).await["data"]["me"]["username"], "victim");

    let header = jsonwebtoken::decode_header(&good).expect("header");
    let claims = claims_of(&good);
    let now = chrono::Utc::now().timestamp();
    let with = |key: &str, value: Value| {
        let mut c = claims.clone();
        c[key] = value;
        c
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let mut bad: Vec<(&str, String)> = vec![
        ("garbage", "not-a-token".into()),
        ("empty", String::new()),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({ "alg": "none", "typ": "at+jwt", "kid": header.kid })),
                b64(&claims)
            ),
        ),
        (
            "other secret",
            sign(&header, &claims, b"another-secret-another-secret-xxxx"),
        ),
        (
            "wrong iss",
            sign(&header, &with("iss", json!("evil")), SECRET.as_bytes()),
        ),
        (
            "wrong aud",
            sign(&header, &with("aud", json!("evil")), SECRET.as_bytes()),
        ),
        (
            "expired",
            sign(&header, &with("exp", json!(now - 10)), SECRET.as_bytes()),
        ),
        (
            "not yet valid",
            sign(&header, &with("nbf", json!(now + 600)), SECRET.as_bytes()),
        ),
        (
            "a sid that is no session id",
            sign(
                &header,
                &with("sid", json!("not-a-uuid")),
                SECRET.as_bytes(),
            ),
        ),
        (
            // Would outlive a later sign-out everywhere ("tokens valid after").
            "issued in the future",
            sign(&header, &with("iat", json!(now + 600)), SECRET.as_bytes()),
        ),
        (
            "refresh type",
            sign(
                &header,
                &with("token_type", json!("refresh")),
                SECRET.as_bytes(),
            ),
        ),
        ("no exp", {
            let mut c = claims.clone();
            c.as_object_mut().expect("object").remove("exp");
            sign(&header, &c, SECRET.as_bytes())
        }),
        (
            "refresh token as bearer",
            token_str(&payload["refreshToken"]).to_owned(),
        ),
    ];
    let mut plain_typ = header.clone();
    plain_typ.typ = Some("JWT".into());
    bad.push(("typ JWT", sign(&plain_typ, &claims, SECRET.as_bytes())));
    let mut unknown_kid = header.clone();
    unknown_kid.kid = Some("someone-elses-key".into());
    bad.push((
        "unknown kid",
        sign(&unknown_kid, &claims, SECRET.as_bytes()),
    ));
    let mut hs512 = header.clone();
    hs512.alg = Algorithm::HS512;
    bad.push(("HS512", sign(&hs512, &claims, SECRET.as_bytes())));
    // A tampered payload under the original signature.
    let parts: Vec<&str> = good.split('.').collect();
    bad.push((
        "tampered sub",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&with("sub", json!("999"))),
            parts[2]
        ),
    ));

    for (what, token) in bad {
        let body = app.me(&token).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{what}: {body}");
    }
    let none = app.gql(ME, json!({})).await;
    assert_eq!(error_code(&none), "UNAUTHENTICATED");
    // The good token still works: refusals changed nothing.
    assert_eq!(app.me(&good).await["data"]["me"]["username"], "victim");
}

async fn refresh_rotates_and_reuse_revokes_the_whole_family(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.sign_up("rotator").await;
    let rt1 = token_str(&first["refreshToken"]).to_owned();

    let second = app.refresh(&rt1).await;
    assert!(second["errors"].is_null(), "{second}");
    let second = &second["data"]["refreshToken"];
    let rt2 = token_str(&second["refreshToken"]).to_owned();
    assert_ne!(rt1, rt2);
    assert_eq!(second["user"]["username"], "rotator");
    assert_eq!(second["tokenType"], "Bearer");
    let at2 = token_str(&second["accessToken"]).to_owned();
    assert_eq!(app.me(&at2).await["data"]["me"]["username"], "rotator");

    let third = app.refresh(&rt2).await;
    let rt3 = token_str(&third["data"]["refreshToken"]["refreshToken"]).to_owned();

    // rt1 again: its successor is already used, so this is reuse.
    assert_eq!(
        error_code(&app.refresh(&rt1).await),
        "INVALID_REFRESH_TOKEN"
    );
    // The whole family is gone: the current token and the access tokens too.
    assert_eq!(
        error_code(&app.refresh(&rt3).await),
        "INVALID_REFRESH_TOKEN"
    );
    assert_eq!(error_code(&app.me(&at2).await), "UNAUTHENTICATED");
    // Other sessions of the same user are untouched.
    let other = app.create_token("rotator", PASSWORD).await;
    let other_rt = token_str(&other["data"]["createToken"]["refreshToken"]).to_owned();
    assert!(app.refresh(&other_rt).await["errors"].is_null());
}

async fn a_racing_client_inside_the_grace_window_gets_the_same_successor(backend: Backend) {
    let app = spawn_app(backend).await;
    let rt1 = token_str(&app.sign_up("racer").await["refreshToken"]).to_owned();
    let a = app.refresh(&rt1).await;
    let b = app.refresh(&rt1).await;
    let rt_a = token_str(&a["data"]["refreshToken"]["refreshToken"]).to_owned();
    let rt_b = token_str(&b["data"]["refreshToken"]["refreshToken"]).to_owned();
    assert_eq!(rt_a, rt_b, "same successor inside the grace window");
    // Once the successor is used, the old token is plain reuse.
    assert!(app.refresh(&rt_a).await["errors"].is_null());
    assert_eq!(
        error_code(&app.refresh(&rt1).await),
        "INVALID_REFRESH_TOKEN"
    );
}

async fn without_grace_parallel_refreshes_of_one_token_never_both_succeed(backend: Backend) {
    let app = spawn_with(backend, |c| c.tokens.refresh_grace = Duration::ZERO).await;
    let rt = token_str(&app.sign_up("parallel").await["refreshToken"]).to_owned();
    let results = futures::future::join_all((0..10).map(|_| app.refresh(&rt))).await;
    let winners = results.iter().filter(|b| b["errors"].is_null()).count();
    assert!(winners <= 1, "{winners} parallel refreshes succeeded");
    for body in results.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(error_code(body), "INVALID_REFRESH_TOKEN", "{body}");
    }
    // Any loser counts as reuse, so the family is revoked whatever the winner got.
    if let Some(w) = results.iter().find(|b| b["errors"].is_null()) {
        let next = token_str(&w["data"]["refreshToken"]["refreshToken"]);
        assert_eq!(
            error_code(&app.refresh(next).await),
            "INVALID_REFRESH_TOKEN"
        );
    }
}

async fn revoke_is_idempotent_and_ends_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let payload = app.sign_up("leaver").await;
    let rt = token_str(&payload["refreshToken"]).to_owned();
    let at = token_str(&payload["accessToken"]).to_owned();
    assert_eq!(app.revoke(&rt).await["data"]["revokeToken"], true);
    assert_eq!(
        app.revoke(&rt).await["data"]["revokeToken"],
        true,
        "idempotent"
    );
    assert_eq!(error_code(&app.refresh(&rt).await), "INVALID_REFRESH_TOKEN");
    assert_eq!(error_code(&app.me(&at).await), "UNAUTHENTICATED");

    // A consumed token of a family revokes the family too.
    let rt1 = token_str(
        &app.create_token("leaver", PASSWORD).await["data"]["createToken"]["refreshToken"],
    )
    .to_owned();
    let rt2 =
        token_str(&app.refresh(&rt1).await["data"]["refreshToken"]["refreshToken"]).to_owned();
    assert_eq!(app.revoke(&rt1).await["data"]["revokeToken"], true);
    assert_eq!(
        error_code(&app.refresh(&rt2).await),
        "INVALID_REFRESH_TOKEN"
    );

    for bad in ["", "garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(
            error_code(&app.revoke(bad).await),
            "INVALID_REFRESH_TOKEN",
            "{bad:?}"
        );
        assert_eq!(
            error_code(&app.refresh(bad).await),
            "INVALID_REFRESH_TOKEN",
            "{bad:?}"
        );
    }
}

async fn expired_tokens_are_refused(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(backend, clock.clone(), |_| {}).await;
    let payload = app.sign_up("shortlived").await;
    assert_eq!(payload["expiresIn"], 900);
    // The access token lives 15 minutes (to the second), the refresh token 30 days.
    clock.advance(Duration::from_secs(900));
    assert!(app.me(token_str(&payload["accessToken"])).await["errors"].is_null());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        error_code(&app.me(token_str(&payload["accessToken"])).await),
        "UNAUTHENTICATED"
    );
    clock.advance(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        error_code(&app.refresh(token_str(&payload["refreshToken"])).await),
        "INVALID_REFRESH_TOKEN"
    );
}

async fn sessions_end_at_their_absolute_lifetime_however_often_refreshed(backend: Backend) {
    const DAY: u64 = 24 * 3600;
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(backend, clock.clone(), |_| {}).await;
    let mut rt = token_str(&app.sign_up("bounded").await["refreshToken"]).to_owned();
    // Rotations every 20 days keep the 30-day inactivity timeout at bay...
    for _ in 0..4 {
        clock.advance(Duration::from_secs(20 * DAY));
        let body = app.refresh(&rt).await;
        assert!(body["errors"].is_null(), "{body}");
        rt = token_str(&body["data"]["refreshToken"]["refreshToken"]).to_owned();
    }
    // ...but the last successor (day 80) expires with the session at day 90,
    // not 30 days later: no rotation extends the absolute lifetime.
    clock.advance(Duration::from_secs(10 * DAY + 1));
    assert_eq!(error_code(&app.refresh(&rt).await), "INVALID_REFRESH_TOKEN");
}

async fn a_restart_keeps_the_generated_key_and_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let payload = app.sign_up("persistent").await;
    let app = app.restart(|_| {}).await;
    assert_eq!(
        app.me(token_str(&payload["accessToken"])).await["data"]["me"]["username"],
        "persistent"
    );
    let refreshed = app.refresh(token_str(&payload["refreshToken"])).await;
    assert!(refreshed["errors"].is_null(), "{refreshed}");
    // A configured secret replaces the generated key: old tokens stop verifying.
    let app = app
        .restart(|c| c.tokens.jwt_secret = Some(authql::config::Secret::new(SECRET)))
        .await;
    assert_eq!(
        error_code(&app.me(token_str(&payload["accessToken"])).await),
        "UNAUTHENTICATED"
    );
}

async fn instances_starting_together_share_one_generated_key(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let (a, b) = tokio::join!(spawn_on(db.clone(), |_| {}), spawn_on(db.clone(), |_| {}));
    let payload = a.sign_up("shared").await;
    assert_eq!(
        b.me(token_str(&payload["accessToken"])).await["data"]["me"]["username"],
        "shared"
    );
    let pool = a.db_pool().await;
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settings WHERE key = 'jwt_hs256_key'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(keys, 1);
}

crate::on_both_backends!(
    access_token_has_the_documented_header_and_claims,
    me_refuses_every_kind_of_bad_access_token,
    refresh_rotates_and_reuse_revokes_the_whole_family,
    a_racing_client_inside_the_grace_window_gets_the_same_successor,
    without_grace_parallel_refreshes_of_one_token_never_both_succeed,
    revoke_is_idempotent_and_ends_the_session,
    expired_tokens_are_refused,
    sessions_end_at_their_absolute_lifetime_however_often_refreshed,
    a_restart_keeps_the_generated_key_and_sessions,
    instances_starting_together_share_one_generated_key,
);
