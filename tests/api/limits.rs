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

    // Too deep is a validation failure at every depth (API.md), also past
    // the parser's own recursion limit, up to absurd nesting.
    for levels in [21, 32, 33, 64, 65, 200, 10_000] {
        let deep = format!("{}{}", "{ me ".repeat(levels), "}".repeat(levels));
        let body = app.gql(&deep, json!({})).await;
        assert_eq!(
            error_code(&body),
            "GRAPHQL_VALIDATION_FAILED",
            "{levels}: {body}"
        );
    }
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

/// The shapes that overflowed the parser's stack: nested lists, nested
/// objects, variable defaults and directive arguments.
fn deep_documents(levels: usize) -> Vec<String> {
    let (open, close) = ("[".repeat(levels), "]".repeat(levels));
    vec![
        format!("{{ __typename(a: {open}1{close}) }}"),
        format!(
            "{{ __typename(a: {}1{}) }}",
            "{a:".repeat(levels),
            "}".repeat(levels)
        ),
        format!("query($v: [Int] = {open}1{close}) {{ __typename }}"),
        format!("{{ __typename @skip(if: {open}true{close}) }}"),
    ]
}

async fn deeply_nested_values_are_refused_and_the_server_keeps_serving(backend: Backend) {
    let app = spawn_app(backend).await;
    for levels in [2_000, 10_000, 30_000] {
        for document in deep_documents(levels) {
            for get in [false, true] {
                let (status, text) = if get {
                    raw_get_graphql(app.addr, &document).await
                } else {
                    let response = app
                        .client
                        .post(app.url("/graphql"))
                        .json(&json!({ "query": document }))
                        .send()
                        .await
                        .expect("the server answers");
                    let status = response.status().as_u16();
                    (status, response.text().await.expect("body"))
                };
                let body: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{levels} {get}: status {status}, not JSON ({e})"));
                // Over the document or URL size limit: 413/414; otherwise refused
                // by the nesting scan before any parse.
                let code = body["errors"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("");
                match status {
                    200 => assert_eq!(code, "GRAPHQL_VALIDATION_FAILED", "{levels} {get}"),
                    413 | 414 => assert_eq!(code, "BAD_REQUEST", "{levels} {get}"),
                    other => panic!("{levels} levels, GET {get}: status {other}"),
                }
                assert!(body["data"].is_null());
                let health = app
                    .client
                    .get(app.url("/healthz"))
                    .send()
                    .await
                    .expect("alive");
                assert_eq!(health.status(), 200, "still serving after {levels} levels");
            }
        }
    }
}

/// `F(levels)` expands to 2^levels fields in under a kilobyte.
fn doubling_fragments(levels: usize) -> String {
    let mut query = format!("{{ ...F{levels} }}");
    for i in (1..=levels).rev() {
        query.push_str(&format!(
            " fragment F{i} on Query {{ ...F{} ...F{} }}",
            i - 1,
            i - 1
        ));
    }
    query + " fragment F0 on Query { __typename }"
}

async fn exponential_fragments_are_refused_at_once_while_health_answers(backend: Backend) {
    let app = spawn_app(backend).await;
    let document = doubling_fragments(24);
    assert!(document.len() < 1_000, "{}", document.len());
    let attacks = (0..4).map(|_| {
        let (client, url, document) = (app.client.clone(), app.url("/graphql"), document.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let body: serde_json::Value = client
                .post(url)
                .json(&json!({ "query": document }))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            (started.elapsed(), body)
        })
    });
    let attacks: Vec<_> = attacks.collect();
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("alive");
    assert_eq!(health.status(), 200);
    for attack in attacks {
        let (took, body) = attack.await.expect("task");
        assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
        // Expanding the spreads takes seconds; refusing them, a millisecond.
        // The bound is loose because test machines are noisy.
        assert!(
            took < std::time::Duration::from_millis(500),
            "refused in {took:?}"
        );
    }
}

async fn nesting_and_fragments_cannot_multiply_root_fields_or_attempts(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("nested").await;
    let guesses: String = (0..8)
        .map(|i| {
            format!(r#"a{i}: createToken(input: {{login: "nested", password: "guess {i} wrong"}}) {{ accessToken }} "#)
        })
        .collect();
    let mut nested = guesses.clone();
    for _ in 0..17 {
        nested = format!("... on Mutation {{ {nested} }}");
    }
    let body = app
        .gql(&format!("mutation {{ {nested} }}"), json!({}))
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["data"].is_null());
    let via_fragments = format!(
        "mutation {{ ...A ...B }} fragment A on Mutation {{ ... on Mutation {{ {} }} }} fragment B on Mutation {{ {} }}",
        &guesses[..guesses.find("a1:").expect("two guesses")],
        &guesses[guesses.find("a1:").expect("two guesses")..],
    );
    let body = app.gql(&via_fragments, json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    // No guess was evaluated.
    let pool = app.db_pool().await;
    let failed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM security_events WHERE kind = 'sign_in_failed'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(failed, 0);

    let mes: String = (0..240).map(|i| format!("m{i}: me {{ id }} ")).collect();
    let mut nested = mes;
    for _ in 0..17 {
        nested = format!("... on Query {{ {nested} }}");
    }
    let body = app.gql(&format!("{{ {nested} }}"), json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
}

crate::on_both_backends!(
    deeply_nested_values_are_refused_and_the_server_keeps_serving,
    exponential_fragments_are_refused_at_once_while_health_answers,
    nesting_and_fragments_cannot_multiply_root_fields_or_attempts,
    graphiqls_introspection_query_passes_the_default_limits,
    deep_documents_are_refused,
    complex_documents_are_refused,
    too_many_root_fields_or_aliases_are_refused,
    one_credential_attempt_per_document,
);
