use serde_json::json;

use crate::helpers::*;

const INTROSPECTION: &str = include_str!("../queries/introspection.graphql");

async fn graphiqls_introspection_query_passes_the_default_limits(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app.gql(INTROSPECTION, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t["name"] == "SignUpInput"));
}

async fn deep_documents_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    // __schema > types > fields > type > 20 x ofType > name: depth 25.
    let mut inner = String::from("name");
    for _ in 0..20 {
        inner = format!("ofType {{ {inner} }}");
    }
    let deep = format!("{{ __schema {{ types {{ fields {{ type {{ {inner} }} }} }} }} }}");
    let body = app.gql(&deep, json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");

    // Absurdly deep nesting is refused before it can exhaust the stack.
    // (10,000 levels, just under the 64 KiB document limit.)
    let absurd = format!("{}{}", "{ me ".repeat(10_000), "}".repeat(10_000));
    let body = app.gql(&absurd, json!({})).await;
    assert!(
        ["GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"].contains(&error_code(&body).as_str()),
        "{body}"
    );
    let shallow = app.gql("{ __schema { types { name } } }", json!({})).await;
    assert!(shallow["errors"].is_null(), "still serving");
}

async fn complex_documents_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let fields: String = (0..600).map(|i| format!("f{i}: username ")).collect();
    let body = app
        .gql(&format!("{{ me {{ {fields} }} }}"), json!({}))
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
}

async fn too_many_root_fields_or_aliases_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let aliases: String = (0..21).map(|i| format!("a{i}: __typename ")).collect();
    let body = app.gql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    let twenty: String = (0..20).map(|i| format!("a{i}: __typename ")).collect();
    assert!(app.gql(&format!("{{ {twenty} }}"), json!({})).await["errors"].is_null());
    // Through a fragment too.
    let body = app
        .gql(
            &format!("{{ ...F }} fragment F on Query {{ {aliases} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
}

async fn one_credential_attempt_per_document(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("guessme").await;
    let guesses = r#"mutation {
        a: createToken(input: {login: "guessme", password: "guess number one"}) { accessToken }
        b: createToken(input: {login: "guessme", password: "correct horse battery staple"}) { accessToken }
    }"#;
    let body = app.gql(guesses, json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    assert!(body["data"].is_null(), "nothing ran: {body}");
    let mixed = r#"mutation {
        signUp(input: {username: "x1x", password: "correct horse battery staple"}) { accessToken }
        refreshToken(refreshToken: "x") { accessToken }
    }"#;
    assert_eq!(
        error_code(&app.gql(mixed, json!({})).await),
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(app.count("users").await, 1);
    // revokeToken is not a credential attempt: several per document are fine.
    let revokes =
        r#"mutation { a: revokeToken(refreshToken: "x") b: revokeToken(refreshToken: "y") }"#;
    let body = app.gql(revokes, json!({})).await;
    assert_eq!(error_code(&body), "INVALID_REFRESH_TOKEN");
}

crate::on_both_backends!(
    graphiqls_introspection_query_passes_the_default_limits,
    deep_documents_are_refused,
    complex_documents_are_refused,
    too_many_root_fields_or_aliases_are_refused,
    one_credential_attempt_per_document,
);
