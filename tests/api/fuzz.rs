//! Property-based fuzzing of the HTTP/GraphQL entry point: whatever arrives,
//! the answer is JSON with a documented status and codes, never a 500 or a
//! panic, and the server keeps serving. `PROPTEST_CASES` sets the case count
//! (default 500 over real HTTP).

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::helpers::*;

const CODES: [&str; 16] = [
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
    "INVALID_TOKEN",
    "EMAIL_NOT_VERIFIED",
    "NOT_ENABLED",
    "CSRF_REFUSED",
    "PERSISTED_QUERY_NOT_FOUND",
    "TRUSTED_DOCUMENT_REQUIRED",
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
        Just("uploadAvatar(file: $f)"),
        Just("uploadAvatar(file: \"#__graphql_file__:7\")"),
        Just("$f: Upload!"),
        Just("updateProfile(input: {name: null, email: $e})"),
        Just("addCar(input: {brand: \"b\", model: \"m\"})"),
        Just("removeCar(id: $t)"),
        Just("changePassword(currentPassword: \"a\", newPassword: \"b\")"),
        Just("... on UserError { code }"),
        Just("avatarUrl(size: ORIGINAL)"),
        Just("sessions"),
        Just("requestPasswordReset(email: $e)"),
        Just("resetPassword(token: $t, newPassword: \"b\")"),
        Just("verifyEmail(token: \"\")"),
        Just("confirmEmailChange(token: $t)"),
        Just("requestEmailChange(password: \"p\", newEmail: $e)"),
        Just("signInWithCode(email: $e, code: \"00000000\")"),
        Just("requestSignInCode(email: $e)"),
        Just("emailVerified"),
        Just("refreshSession { __typename }"),
        Just("signOut { __typename }"),
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
        // The engine's own upload marker, which it would trust.
        "#__graphql_file__:[0-9x]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::hash_map("[a-zA-Z]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Multipart bodies (boundary `B`) built from plausible parts: operations
/// and maps that are JSON or not, that name files that exist or not.
fn multipart() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        (document(), json_value()).prop_map(|(query, variables)| (
            "operations".to_owned(),
            json!({ "query": query, "variables": variables }).to_string()
        )),
        Just((
            "operations".to_owned(),
            json!({ "query": "mutation($f: Upload!) { uploadAvatar(file: $f) { __typename } }", "variables": { "f": null } }).to_string()
        )),
        Just(("operations".to_owned(), "[{\"query\": \"{ me { id } }\"}]".to_owned())),
        json_value().prop_map(|map| ("map".to_owned(), map.to_string())),
        Just(("map".to_owned(), json!({ "0": ["variables.f"] }).to_string())),
        Just(("map".to_owned(), json!({ "0": ["variables.f"], "1": ["variables.f"] }).to_string())),
        ("[0-9a-z]{0,3}", any::<Vec<u8>>()).prop_map(|(name, bytes)| (name, String::from_utf8_lossy(&bytes).into_owned())),
    ];
    proptest::collection::vec(part, 0..5).prop_map(|parts| {
        let mut body = Vec::new();
        for (name, content) in parts {
            body.extend(format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
            body.extend(content.as_bytes());
            body.extend(b"\r\n");
        }
        body.extend(b"--B--\r\n");
        body
    })
}

#[derive(Debug, Clone)]
enum Body {
    /// Bytes sent as JSON, or as a multipart request (an upload).
    Raw(Vec<u8>, bool),
    Request {
        query: String,
        variables: Value,
        operation: Option<String>,
    },
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<Vec<u8>>(), any::<bool>())
            .prop_map(|(bytes, multipart)| Body::Raw(bytes, multipart)),
        multipart().prop_map(|bytes| Body::Raw(bytes, true)),
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
                (Body::Raw(bytes, multipart), _) => app
                    .client
                    .post(app.url("/graphql"))
                    .header(
                        "content-type",
                        if *multipart { "multipart/form-data; boundary=B" } else { "application/json" },
                    )
                    .body(bytes.clone()),
            };
            let request = if authenticated { request.bearer_auth(&token) } else { request };
            let response = request.send().await.expect("the server answers");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            (status, text)
        });
        prop_assert!([200, 400, 401, 405, 413].contains(&status), "status {status}: {answer}");
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

/// Adversarial structure rather than token soup: what the shallow
/// generator above could not express and what did stop the server once
/// (deep values, doubling fragment graphs), plus cycles, fan-out, aliases,
/// huge variables and long headers. Every answer must be a documented JSON
/// error or a result, quickly, and the server must keep serving.
#[derive(Debug, Clone)]
enum Hostile {
    /// Brackets nested `depth` deep in an argument, a default or a directive.
    DeepValue {
        depth: usize,
        object: bool,
        place: u8,
    },
    /// Selections nested `depth` deep, as fields or inline fragments.
    DeepSelection { depth: usize, inline: bool },
    /// `fragments` fragments, each spreading `spreads[i]` others (cycles allowed).
    FragmentGraph {
        spreads: Vec<Vec<usize>>,
        fields: usize,
    },
    /// `count` aliases of one root field.
    Aliases { count: usize, field: u8 },
    /// A variables object `depth` deep and `width` wide.
    Variables { depth: usize, width: usize },
    /// A long bearer token and a long X-Forwarded-For list.
    Headers { token: usize, hops: usize },
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        (1usize..40_000, any::<bool>(), 0u8..3).prop_map(|(depth, object, place)| {
            Hostile::DeepValue {
                depth,
                object,
                place,
            }
        }),
        (1usize..5_000, any::<bool>())
            .prop_map(|(depth, inline)| Hostile::DeepSelection { depth, inline }),
        (1usize..80)
            .prop_flat_map(|n| (
                proptest::collection::vec(proptest::collection::vec(0..n, 0..4), n),
                0usize..4
            ))
            .prop_map(|(spreads, fields)| Hostile::FragmentGraph { spreads, fields }),
        (1usize..3_000, 0u8..4).prop_map(|(count, field)| Hostile::Aliases { count, field }),
        (1usize..200, 1usize..5_000).prop_map(|(depth, width)| Hostile::Variables { depth, width }),
        (1usize..60_000, 1usize..3_000).prop_map(|(token, hops)| Hostile::Headers { token, hops }),
    ]
}

impl Hostile {
    /// The document, variables and extra headers of the request.
    fn request(&self) -> (String, Value, Vec<(&'static str, String)>) {
        match self {
            Hostile::DeepValue {
                depth,
                object,
                place,
            } => {
                let (open, close) = if *object {
                    ("{a:".repeat(*depth), "}".repeat(*depth))
                } else {
                    ("[".repeat(*depth), "]".repeat(*depth))
                };
                let doc = match place {
                    0 => format!("{{ __typename(a: {open}1{close}) }}"),
                    1 => format!("query($v: [Int] = {open}1{close}) {{ __typename }}"),
                    _ => format!("{{ __typename @skip(if: {open}true{close}) }}"),
                };
                (doc, json!({}), vec![])
            }
            Hostile::DeepSelection { depth, inline } => {
                let doc = if *inline {
                    format!(
                        "{{ {} __typename {} }}",
                        "... on Query { ".repeat(*depth),
                        "}".repeat(*depth)
                    )
                } else {
                    format!("{}{}", "{ me ".repeat(*depth), "}".repeat(*depth))
                };
                (doc, json!({}), vec![])
            }
            Hostile::FragmentGraph { spreads, fields } => {
                let mut doc = String::from("{ ...F0 }");
                for (i, targets) in spreads.iter().enumerate() {
                    doc.push_str(&format!(" fragment F{i} on Query {{"));
                    for f in 0..*fields {
                        doc.push_str(&format!(" f{f}: __typename"));
                    }
                    for t in targets {
                        doc.push_str(&format!(" ...F{t}"));
                    }
                    if targets.is_empty() && *fields == 0 {
                        doc.push_str(" __typename");
                    }
                    doc.push_str(" }");
                }
                (doc, json!({}), vec![])
            }
            Hostile::Aliases { count, field } => {
                let field = [
                    "__typename",
                    "me { id }",
                    "revokeToken(refreshToken: \"x\")",
                    "createToken(input: {login: \"a\", password: \"b\"}) { accessToken }",
                ][*field as usize];
                let op = if field.starts_with("revoke") || field.starts_with("create") {
                    "mutation"
                } else {
                    "query"
                };
                let aliases: String = (0..*count).map(|i| format!("a{i}: {field} ")).collect();
                (format!("{op} {{ {aliases} }}"), json!({}), vec![])
            }
            Hostile::Variables { depth, width } => {
                let mut value = json!(1);
                for _ in 0..*depth {
                    value = json!([value]);
                }
                let wide: serde_json::Map<String, Value> =
                    (0..*width).map(|i| (format!("k{i}"), json!("x"))).collect();
                (
                    "query($v: [Int], $w: String) { __typename }".into(),
                    json!({ "v": value, "w": wide, "extra": "y".repeat(*width) }),
                    vec![],
                )
            }
            Hostile::Headers { token, hops } => {
                let forwarded: Vec<String> = (0..*hops)
                    .map(|i| format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256))
                    .collect();
                (
                    "{ me { id } }".into(),
                    json!({}),
                    vec![
                        ("authorization", format!("Bearer {}", "A".repeat(*token))),
                        ("x-forwarded-for", forwarded.join(", ")),
                    ],
                )
            }
        }
    }
}

#[test]
fn hostile_structure_never_stops_the_server() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let app = rt.block_on(spawn_with(Backend::Sqlite, |c| {
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    }));
    proptest!(ProptestConfig::with_cases(cases), |(case in hostile(), get in any::<bool>())| {
        let (document, variables, headers) = case.request();
        let (status, text) = rt.block_on(async {
            // reqwest refuses URLs over 64 KiB: long GETs are the connection tests' job.
            let mut request = if get && document.len() + variables.to_string().len() < 8_000 {
                app.client.get(app.url("/graphql")).query(&[("query", &document), ("variables", &variables.to_string())])
            } else {
                app.client.post(app.url("/graphql")).json(&json!({ "query": document, "variables": variables }))
            };
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            // A hang is a failure too.
            let response = request.timeout(std::time::Duration::from_secs(10)).send().await.expect("answered in time");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        });
        prop_assert!([200, 400, 405, 408, 413, 414, 431].contains(&status), "status {status}: {case:?}");
        let value: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("not JSON ({e}) for {case:?}")))?;
        assert_no_secrets(&value);
        for error in value["errors"].as_array().into_iter().flatten() {
            let code = error["extensions"]["code"].as_str().unwrap_or("");
            prop_assert!(CODES.contains(&code), "undocumented code {code:?} for {case:?}");
            prop_assert!(code != "INTERNAL", "internal error for {case:?}");
        }
    });
    let health = rt
        .block_on(app.client.get(app.url("/healthz")).send())
        .expect("alive");
    assert_eq!(health.status(), 200);
}
