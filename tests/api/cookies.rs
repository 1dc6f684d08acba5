//! Cookie mode (`AUTHQL_REFRESH_COOKIE`) over HTTP: the cookie's
//! attributes, rotation through it, reuse detection, every CSRF refusal,
//! sign-out, cookie-only JSON, and credentialed CORS.

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::helpers::*;

const APP: &str = "https://app.example.com";
const REFRESH_SESSION: &str = "mutation { refreshSession { __typename ... on RefreshSessionSuccess { auth { accessToken refreshToken } } ... on UserError { code } } }";
const SIGN_OUT: &str = "mutation { signOut { __typename ... on SignOutSuccess { hadSession } ... on UserError { code } } }";
const COOKIE: &str = "__Host-authql_refresh";

async fn cookie_app(backend: Backend, only: bool) -> TestApp {
    spawn_with(backend, |c| {
        c.cookie.refresh_cookie = true;
        c.cookie.refresh_cookie_only = only;
        c.cors_origins = vec![APP.into()];
    })
    .await
}

/// POSTs a GraphQL request with these headers; the answer's headers and body.
async fn post(
    app: &TestApp,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> (HeaderMap, Value) {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (headers, response.json().await.expect("json"))
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

/// The token a `Set-Cookie` stores.
fn token_of(set_cookie: &str) -> String {
    set_cookie
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|rest| rest.split(';').next())
        .expect("our cookie")
        .to_owned()
}

fn with_cookie(token: &str) -> String {
    format!("{COOKIE}={token}")
}

async fn refresh_with(app: &TestApp, token: &str, extra: &[(&str, &str)]) -> (HeaderMap, Value) {
    let cookie = with_cookie(token);
    let mut headers = vec![("cookie", cookie.as_str())];
    headers.extend_from_slice(extra);
    post(app, &headers, REFRESH_SESSION, json!({})).await
}

async fn sessions_live(app: &TestApp) -> i64 {
    let pool = app.db_pool().await;
    sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
        .fetch_one(&pool)
        .await
        .expect("count")
}

async fn sign_in_sets_an_http_only_cookie_that_refresh_session_rotates(backend: Backend) {
    let app = cookie_app(backend, false).await;
    let (headers, body) = post(
        &app,
        &[],
        SIGN_UP,
        json!({ "input": { "username": "cookie", "password": PASSWORD } }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let cookies = set_cookies(&headers);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let set = &cookies[0];
    for attribute in [
        "; HttpOnly",
        "; Secure",
        "; SameSite=Strict",
        "; Path=/;",
        "; Max-Age=2592000",
    ] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    let first = token_of(set);
    assert_eq!(
        body["data"]["signUp"]["refreshToken"],
        first.as_str(),
        "JSON carries it too"
    );

    let (headers, body) = post(
        &app,
        &[],
        CREATE_TOKEN,
        json!({ "input": { "login": "cookie", "password": PASSWORD } }),
    )
    .await;
    assert!(body["errors"].is_null());
    assert_eq!(set_cookies(&headers).len(), 1, "createToken sets it too");

    let (headers, body) = refresh_with(&app, &first, &[("x-requested-with", "fetch")]).await;
    let result = &body["data"]["refreshSession"];
    assert_eq!(result["__typename"], "RefreshSessionSuccess", "{body}");
    let second = token_of(&set_cookies(&headers)[0]);
    assert_ne!(second, first);
    assert_eq!(result["auth"]["refreshToken"], second.as_str());
    let me = app
        .gql_as(result["auth"]["accessToken"].as_str(), ME, json!({}))
        .await;
    assert_eq!(me["data"]["me"]["username"], "cookie");

    // The consumed cookie again, past the grace window: reuse detection
    // ends the family, the current cookie included, and the cookie goes.
    let app = app
        .restart(|c| {
            c.cookie.refresh_cookie = true;
            c.cors_origins = vec![APP.into()];
            c.tokens.refresh_grace = std::time::Duration::ZERO;
        })
        .await;
    let (headers, body) = refresh_with(&app, &first, &[("x-requested-with", "fetch")]).await;
    assert_eq!(
        body["data"]["refreshSession"]["__typename"], "InvalidRefreshToken",
        "{body}"
    );
    assert!(
        set_cookies(&headers)[0].contains("Max-Age=0"),
        "the cookie is removed"
    );
    let (_, body) = refresh_with(&app, &second, &[("x-requested-with", "fetch")]).await;
    assert_eq!(
        body["data"]["refreshSession"]["code"],
        "INVALID_REFRESH_TOKEN"
    );

    // No cookie at all.
    let (_, body) = post(
        &app,
        &[("x-requested-with", "fetch")],
        REFRESH_SESSION,
        json!({}),
    )
    .await;
    assert_eq!(
        body["data"]["refreshSession"]["__typename"],
        "InvalidRefreshToken"
    );
}

async fn requests_without_the_csrf_proofs_are_refused_and_change_nothing(backend: Backend) {
    let app = cookie_app(backend, false).await;
    let (headers, _) = post(
        &app,
        &[],
        SIGN_UP,
        json!({ "input": { "username": "csrf", "password": PASSWORD } }),
    )
    .await;
    let token = token_of(&set_cookies(&headers)[0]);
    let host = app.addr.to_string();
    let own = format!("http://{host}");
    let refusals: [&[(&str, &str)]; 5] = [
        &[],
        &[
            ("x-requested-with", "fetch"),
            ("origin", "https://evil.example"),
        ],
        &[
            ("x-requested-with", "fetch"),
            ("sec-fetch-site", "cross-site"),
        ],
        &[("x-requested-with", "fetch"), ("origin", "null")],
        // Its own origin, yet the browser says another site sent it.
        &[
            ("x-requested-with", "fetch"),
            ("origin", &own),
            ("sec-fetch-site", "cross-site"),
        ],
    ];
    for extra in refusals {
        for query in [REFRESH_SESSION, SIGN_OUT] {
            let cookie = with_cookie(&token);
            let mut headers = vec![("cookie", cookie.as_str())];
            headers.extend_from_slice(extra);
            let (answer, body) = post(&app, &headers, query, json!({})).await;
            assert_eq!(error_code(&body), "CSRF_REFUSED", "{extra:?} {body}");
            assert!(
                set_cookies(&answer).is_empty(),
                "{extra:?}: no cookie touched"
            );
        }
    }
    assert_eq!(sessions_live(&app).await, 1, "nothing was signed out");
    // The cookie still works, from the allowed origin and from authql's own,
    // also next to another app's cookie that is not ASCII.
    let (headers, body) = refresh_with(
        &app,
        &format!("{token}; other=\u{e9}t\u{e9}"),
        &[
            ("x-requested-with", "fetch"),
            ("origin", APP),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(
        body["data"]["refreshSession"]["__typename"], "RefreshSessionSuccess",
        "{body}"
    );
    let next = token_of(&set_cookies(&headers)[0]);
    let (_, body) = refresh_with(
        &app,
        &next,
        &[
            ("x-requested-with", "fetch"),
            ("origin", &own),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(
        body["data"]["refreshSession"]["__typename"], "RefreshSessionSuccess",
        "{body}"
    );
}

async fn sign_out_ends_the_cookies_session_and_removes_it(backend: Backend) {
    let app = cookie_app(backend, true).await;
    let (headers, body) = post(
        &app,
        &[],
        SIGN_UP,
        json!({ "input": { "username": "leaving", "password": PASSWORD } }),
    )
    .await;
    // Cookie-only: the JSON never carries the refresh token.
    assert_eq!(body["data"]["signUp"]["refreshToken"], "", "{body}");
    let token = token_of(&set_cookies(&headers)[0]);
    let (headers, body) = refresh_with(&app, &token, &[("x-requested-with", "fetch")]).await;
    assert_eq!(body["data"]["refreshSession"]["auth"]["refreshToken"], "");
    let successor = token_of(&set_cookies(&headers)[0]);
    // A racing second tab inside the grace window gets the same successor.
    let (headers, _) = refresh_with(&app, &token, &[("x-requested-with", "fetch")]).await;
    assert_eq!(token_of(&set_cookies(&headers)[0]), successor);

    let (headers, _) = post(
        &app,
        &[],
        CREATE_TOKEN,
        json!({ "input": { "login": "leaving", "password": PASSWORD } }),
    )
    .await;
    let token = token_of(&set_cookies(&headers)[0]);
    let cookie = with_cookie(&token);
    let (headers, body) = post(
        &app,
        &[("cookie", &cookie), ("x-requested-with", "fetch")],
        SIGN_OUT,
        json!({}),
    )
    .await;
    assert_eq!(
        body["data"]["signOut"],
        json!({ "__typename": "SignOutSuccess", "hadSession": true })
    );
    let removed = &set_cookies(&headers)[0];
    assert!(
        removed.starts_with(&format!("{COOKIE}=;")) && removed.contains("Max-Age=0"),
        "{removed}"
    );
    let (_, body) = refresh_with(&app, &token, &[("x-requested-with", "fetch")]).await;
    assert_eq!(
        body["data"]["refreshSession"]["__typename"],
        "InvalidRefreshToken"
    );
    let (_, body) = post(&app, &[("x-requested-with", "fetch")], SIGN_OUT, json!({})).await;
    assert_eq!(body["data"]["signOut"]["hadSession"], false);

    // Cookie-only holds for every mutation that returns a pair.
    let (headers, body) = post(
        &app,
        &[],
        CREATE_TOKEN,
        json!({ "input": { "login": "leaving", "password": PASSWORD } }),
    )
    .await;
    assert_eq!(body["data"]["createToken"]["refreshToken"], "");
    let token = token_of(&set_cookies(&headers)[0]);
    let (headers, body) = post(&app, &[], REFRESH, json!({ "token": token })).await;
    assert_eq!(body["data"]["refreshToken"]["refreshToken"], "", "{body}");
    assert_eq!(set_cookies(&headers).len(), 1);
    let access = body["data"]["refreshToken"]["accessToken"]
        .as_str()
        .expect("access")
        .to_owned();
    let (headers, body) = post(
        &app,
        &[("authorization", &format!("Bearer {access}"))],
        "mutation { changePassword(currentPassword: \"correct horse battery staple\", newPassword: \"a fresh passphrase here\") { ... on ChangePasswordSuccess { auth { refreshToken } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body["data"]["changePassword"]["auth"]["refreshToken"], "",
        "{body}"
    );
    assert_eq!(set_cookies(&headers).len(), 1);
}

async fn without_cookie_mode_nothing_sets_or_reads_a_cookie(backend: Backend) {
    let app = spawn_app(backend).await;
    let (headers, body) = post(
        &app,
        &[],
        SIGN_UP,
        json!({ "input": { "username": "plain", "password": PASSWORD } }),
    )
    .await;
    assert!(set_cookies(&headers).is_empty());
    let token = body["data"]["signUp"]["refreshToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let (_, body) = refresh_with(&app, &token, &[("x-requested-with", "fetch")]).await;
    assert_eq!(error_code(&body), "NOT_ENABLED");
}

async fn cors_allows_credentials_for_the_allowed_origin_only(backend: Backend) {
    let app = cookie_app(backend, false).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-requested-with",
            )
            .send()
    };
    let allowed = preflight(APP).await.expect("preflight");
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let allow_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii");
    assert!(
        allow_headers.contains("x-requested-with"),
        "{allow_headers}"
    );
    let vary = headers["vary"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(vary.contains("origin"), "{vary}");
    let refused = preflight("https://evil.example").await.expect("preflight");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // CORS origins without cookie mode: no credentials.
    let plain = spawn_with(backend, |c| c.cors_origins = vec![APP.into()]).await;
    let answer = plain
        .client
        .request(reqwest::Method::OPTIONS, plain.url("/graphql"))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(answer.headers()["access-control-allow-origin"], APP);
    assert!(answer
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

crate::on_both_backends!(
    sign_in_sets_an_http_only_cookie_that_refresh_session_rotates,
    requests_without_the_csrf_proofs_are_refused_and_change_nothing,
    sign_out_ends_the_cookies_session_and_removes_it,
    without_cookie_mode_nothing_sets_or_reads_a_cookie,
    cors_allows_credentials_for_the_allowed_origin_only,
);
