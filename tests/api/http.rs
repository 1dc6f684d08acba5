use serde_json::{json, Value};

use crate::helpers::*;

async fn post_raw(app: &TestApp, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let ct = response.headers()["content-type"]
        .to_str()
        .expect("ct")
        .to_owned();
    assert!(ct.starts_with("application/json"), "JSON error, got {ct}");
    (status, response.json().await.expect("JSON"))
}

async fn still_serving(app: &TestApp) {
    let body = app.gql("{ __typename }", json!({})).await;
    assert_eq!(body["data"]["__typename"], "Query");
}

async fn malformed_requests_get_json_errors_and_the_server_keeps_serving(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", b"not json".to_vec(), 400),
        ("application/json", b"{\"query\": ".to_vec(), 400),
        ("application/json", b"[1, 2, 3]".to_vec(), 400),
        ("application/json", b"{\"foo\": 1}".to_vec(), 400),
        ("application/json", b"{\"query\": 42}".to_vec(), 400),
        ("application/json", vec![0xff, 0xfe, 0x00], 400),
        ("application/json", Vec::new(), 400),
        (
            "text/plain",
            b"{\"query\": \"{ __typename }\"}".to_vec(),
            400,
        ),
        (
            "application/x-www-form-urlencoded",
            b"query=%7B__typename%7D".to_vec(),
            400,
        ),
    ];
    for (content_type, body, status) in cases {
        let (got, json) = post_raw(&app, content_type, body.clone()).await;
        assert_eq!(
            got,
            status,
            "{content_type} {:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(json["errors"][0]["extensions"]["code"], "BAD_REQUEST");
        still_serving(&app).await;
    }
}

async fn an_oversized_body_gets_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let padding = "x".repeat(2 * 1024 * 1024);
    let body = json!({ "query": "{ __typename }", "variables": { "pad": padding } }).to_string();
    let (status, json) = post_raw(&app, "application/json", body.into_bytes()).await;
    assert_eq!(status, 413);
    assert!(json["errors"][0]["message"].is_string());
    still_serving(&app).await;
    assert_eq!(app.count("users").await, 0);
}

async fn engine_errors_carry_apollo_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    let parse = app.gql("{ me { ", json!({})).await;
    assert_eq!(error_code(&parse), "GRAPHQL_PARSE_FAILED");
    let unknown = app.gql("{ nope }", json!({})).await;
    assert_eq!(error_code(&unknown), "GRAPHQL_VALIDATION_FAILED");
    let bad_variable = app
        .gql(SIGN_UP, json!({ "input": { "username": 5 } }))
        .await;
    assert_eq!(error_code(&bad_variable), "GRAPHQL_VALIDATION_FAILED");
    // Input that fails coercion only while executing is still the client's.
    let bad_cars = app
        .gql(
            SIGN_UP,
            json!({ "input": { "username": "coerced", "password": PASSWORD, "cars": "x" } }),
        )
        .await;
    assert_eq!(
        error_code(&bad_cars),
        "GRAPHQL_VALIDATION_FAILED",
        "{bad_cars}"
    );
    assert_eq!(app.count("users").await, 0);
    let no_operation = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": "query A { __typename } query B { __typename }" }))
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(error_code(&no_operation), "GRAPHQL_VALIDATION_FAILED");
}

async fn queries_over_get_work_and_mutations_over_get_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ok = app.get_json("/graphql?query=%7B%20__typename%20%7D").await;
    assert_eq!(ok["data"]["__typename"], "Query");

    let mutation = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { revokeToken(refreshToken: \"x\") }")])
        .send()
        .await
        .expect("sent");
    assert_eq!(mutation.status(), 405);
    let body: Value = mutation.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    let bad_vars = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ __typename }"), ("variables", "{not json")])
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_vars.status(), 400);

    let me = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { username } }")])
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(error_code(&me), "UNAUTHENTICATED");
}

async fn health_readiness_metrics_and_unknown_paths(backend: Backend) {
    let app = spawn_app(backend).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    assert_eq!(get("/healthz").await.expect("sent").status(), 200);
    assert_eq!(get("/readyz").await.expect("sent").status(), 200);
    app.sign_up("metered").await;
    app.create_token("metered", "wrong password!").await;
    app.create_token("metered", PASSWORD).await;
    let metrics = get("/metrics")
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    for needle in [
        "authql_graphql_requests_total{operation=\"signUp\",outcome=\"ok\"} 1",
        "authql_graphql_requests_total{operation=\"createToken\",outcome=\"error\"} 1",
        "authql_sign_ins_total{result=\"success\"} 1",
        "authql_sign_ins_total{result=\"failure\"} 1",
        "authql_graphql_request_duration_seconds_bucket",
        "authql_password_hash_queue_wait_seconds_count",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    let missing = get("/nope").await.expect("sent");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

async fn cors_allows_only_configured_origins(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.cors_origins = vec!["https://app.example.com".into()]
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("sent");
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .expect("headers")
        .to_lowercase();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));
    let refused = preflight("https://evil.example.net").await.expect("sent");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // An actual cross-origin POST from the allowed origin.
    let post = app
        .client
        .post(app.url("/graphql"))
        .header("origin", "https://app.example.com")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        post.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );

    // Default: no cross-origin access at all.
    let closed = spawn_app(backend).await;
    let response = closed
        .client
        .request(reqwest::Method::OPTIONS, closed.url("/graphql"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("sent");
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

async fn introspection_lists_exactly_the_types_of_schema_graphql(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app
        .gql(
            "{ __schema { types { name } } float: __type(name: \"Float\") { name } }",
            json!({}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(
        body["data"]["float"].is_null(),
        "Float is not part of this schema"
    );
    let served: std::collections::BTreeSet<String> = body["data"]["__schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .filter(|n| !n.starts_with("__"))
        .collect();
    let sdl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql");
    let mut declared: std::collections::BTreeSet<String> = sdl
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("type" | "input" | "scalar" | "enum" | "interface" | "union") => {
                    words.next().map(str::to_owned)
                }
                _ => None,
            }
        })
        .collect();
    // Built-in scalars are never declared in SDL; the used ones are listed.
    for scalar in ["Boolean", "ID", "Int", "String", "Float"] {
        if sdl.contains(&format!(": {scalar}")) || sdl.contains(&format!("[{scalar}")) {
            declared.insert(scalar.to_owned());
        }
    }
    declared.insert("Boolean".to_owned()); // introspection's own fields use it
    assert_eq!(served, declared);
}

crate::on_both_backends!(
    introspection_lists_exactly_the_types_of_schema_graphql,
    malformed_requests_get_json_errors_and_the_server_keeps_serving,
    an_oversized_body_gets_413,
    engine_errors_carry_apollo_codes,
    queries_over_get_work_and_mutations_over_get_are_refused,
    health_readiness_metrics_and_unknown_paths,
    cors_allows_only_configured_origins,
);
