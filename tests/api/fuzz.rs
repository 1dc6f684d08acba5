//! Property-based fuzzing of the HTTP/GraphQL entry point: whatever arrives,
//! the answer is JSON with a documented status and codes, never a 500 or a
//! panic, and the server keeps serving. `PROPTEST_CASES` sets the case count
//! (default 500 over real HTTP).

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::helpers::*;

const CODES: [&str; 10] = [
    "VALIDATION",
    "UNAUTHENTICATED",
    "INVALID_CREDENTIALS",
    "INVALID_REFRESH_TOKEN",
    "RATE_LIMITED",
    "INTERNAL",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "BAD_REQUEST",
    "NOT_FOUND",
];

/// GraphQL-shaped token soup: mostly invalid, sometimes valid documents.
fn document() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{"),
        Just("}"),
        Just("("),
        Just(")"),
        Just(":"),
        Just("["),
        Just("]"),
        Just("..."),
        Just("query"),
        Just("mutation"),
        Just("subscription"),
        Just("fragment F on Query"),
        Just("...F"),
        Just("me"),
        Just("__typename"),
        Just("__schema"),
        Just("types"),
        Just("name"),
        Just("cars"),
        Just("signUp(input: {username: \"fuzzer\", password: \"correct horse battery\"})"),
        Just("createToken(input: {login: \"fuzzer\", password: \"x\"})"),
        Just("refreshToken(refreshToken: \"x\")"),
        Just("revokeToken(refreshToken: $t)"),
        Just("signOutEverywhere"),
        Just("accessToken"),
        Just("user"),
        Just("id"),
        Just("$t: String!"),
        Just("@skip(if: true)"),
        Just("@include(if: $b)"),
        Just("a:"),
        Just("\""),
        Just("\"\"\""),
        Just("#"),
        Just("\n"),
        Just("1e999"),
        Just("null"),
    ];
    prop_oneof![
        proptest::collection::vec(token, 0..40).prop_map(|t| t.join(" ")),
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::hash_map("[a-zA-Z]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Raw(Vec<u8>),
    Request {
        query: String,
        variables: Value,
        operation: Option<String>,
    },
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        any::<Vec<u8>>().prop_map(Body::Raw),
        (
            document(),
            json_value(),
            proptest::option::of("[A-Za-z]{0,6}")
        )
            .prop_map(|(query, variables, operation)| Body::Request {
                query,
                variables,
                operation
            }),
    ]
}

#[test]
fn the_graphql_endpoint_survives_arbitrary_requests() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let app = rt.block_on(spawn_app(Backend::Sqlite));
    let token = rt.block_on(app.sign_up("fuzz-owner"))["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();

    proptest!(ProptestConfig::with_cases(cases), |(body in body(), authenticated in any::<bool>(), get in any::<bool>())| {
        let (status, answer) = rt.block_on(async {
            let request = match (&body, get) {
                (Body::Request { query, variables, operation }, true) => {
                    let mut params = vec![("query", query.clone()), ("variables", variables.to_string())];
                    if let Some(op) = operation {
                        params.push(("operationName", op.clone()));
                    }
                    app.client.get(app.url("/graphql")).query(&params)
                }
                (Body::Request { query, variables, operation }, false) => app
                    .client
                    .post(app.url("/graphql"))
                    .json(&json!({ "query": query, "variables": variables, "operationName": operation })),
                (Body::Raw(bytes), _) => app
                    .client
                    .post(app.url("/graphql"))
                    .header("content-type", "application/json")
                    .body(bytes.clone()),
            };
            let request = if authenticated { request.bearer_auth(&token) } else { request };
            let response = request.send().await.expect("the server answers");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            (status, text)
        });
        prop_assert!([200, 400, 405, 413].contains(&status), "status {status}: {answer}");
        let value: Value = serde_json::from_str(&answer).map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {answer}")))?;
        assert_no_secrets(&value);
        for error in value["errors"].as_array().into_iter().flatten() {
            let code = error["extensions"]["code"].as_str().unwrap_or("");
            prop_assert!(CODES.contains(&code), "undocumented code {code:?}: {answer}");
            prop_assert!(code != "INTERNAL", "internal error: {answer}");
        }
    });

    let alive = rt.block_on(app.me(&token));
    assert_eq!(
        alive["data"]["me"]["username"], "fuzz-owner",
        "still serving"
    );
}
