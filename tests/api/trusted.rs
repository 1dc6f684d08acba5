//! Trusted documents (AUTHQL_TRUSTED_DOCUMENTS): documents named by id in
//! the GraphQL-over-HTTP and Apollo forms, and with
//! AUTHQL_TRUSTED_DOCUMENTS_ONLY nothing else (introspection and GraphiQL
//! only when switched on explicitly). The manifest GraphQL Code Generator
//! writes is driven end to end by `web_app` in a browser.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::helpers::{error_code, spawn_on, Backend, TestApp, TestDatabase, PASSWORD};

const SIGN_UP: &str =
    "mutation SignUp($input: SignUpInput!) { signUp(input: $input) { accessToken user { username } } }";
const ME: &str = "query Me { me { username } }";
const INTROSPECTION: &str = "{ __schema { queryType { name } } }";

fn hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn manifest(dir: &Path, documents: &[&str]) -> PathBuf {
    let path = dir.join("persisted-documents.json");
    let map: serde_json::Map<String, Value> =
        documents.iter().map(|d| (hash(d), json!(d))).collect();
    std::fs::write(&path, Value::Object(map).to_string()).expect("manifest");
    path
}

async fn post(app: &TestApp, body: Value, token: Option<&str>) -> Value {
    let mut request = app.client.post(app.url("/graphql")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200, "{body}");
    response.json().await.expect("JSON")
}

async fn documents_named_by_id_run_from_the_manifest(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let path = manifest(dir.path(), &[SIGN_UP, ME]);
    let db = TestDatabase::new(backend).await;
    let app = spawn_on(db.clone(), |c| c.trusted_documents = Some(path.clone())).await;
    let input = |name: &str| json!({"input": {"username": name, "password": PASSWORD}});

    // GraphQL over HTTP's `documentId`, the bare hash, and Apollo's form.
    let by_id = post(
        &app,
        json!({"documentId": format!("sha256:{}", hash(SIGN_UP)), "variables": input("by_id")}),
        None,
    )
    .await;
    assert_eq!(
        by_id["data"]["signUp"]["user"]["username"], "by_id",
        "{by_id}"
    );
    let token = by_id["data"]["signUp"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let bare = post(&app, json!({"documentId": hash(ME)}), Some(&token)).await;
    assert_eq!(bare["data"]["me"]["username"], "by_id", "{bare}");
    let apq = post(
        &app,
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash(ME)}}}),
        Some(&token),
    )
    .await;
    assert_eq!(apq["data"]["me"]["username"], "by_id", "{apq}");
    let get = app
        .client
        .get(app.url("/graphql"))
        .query(&[("documentId", format!("sha256:{}", hash(ME)))])
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    let get: Value = get.json().await.expect("JSON");
    assert_eq!(get["data"]["me"]["username"], "by_id", "{get}");
    // A mutation by id over GET is still refused (405), as by text.
    let status = app
        .client
        .get(app.url("/graphql"))
        .query(&[("documentId", format!("sha256:{}", hash(SIGN_UP)))])
        .send()
        .await
        .expect("GET")
        .status();
    assert_eq!(status, 405);

    // An unknown id, and a text that is not its hash's document.
    let unknown = post(
        &app,
        json!({"documentId": format!("sha256:{}", hash("{ me { id } }"))}),
        None,
    )
    .await;
    assert_eq!(
        error_code(&unknown),
        "PERSISTED_QUERY_NOT_FOUND",
        "{unknown}"
    );
    assert!(unknown["data"].is_null());
    let apq_unknown = post(
        &app,
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash("{ me { id } }")}}}),
        None,
    )
    .await;
    assert_eq!(error_code(&apq_unknown), "PERSISTED_QUERY_NOT_FOUND");
    let mismatch = post(
        &app,
        json!({"documentId": hash(ME), "query": "{ me { id } }"}),
        None,
    )
    .await;
    assert_eq!(error_code(&mismatch), "BAD_REQUEST", "{mismatch}");
    // Without AUTHQL_TRUSTED_DOCUMENTS_ONLY any document still runs.
    let text = post(&app, json!({"query": "{ __typename }"}), None).await;
    assert_eq!(text["data"]["__typename"], "Query", "{text}");
    // Neither a text nor an id: not a GraphQL request (HTTP 400).
    let neither = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({"variables": {}}))
        .send()
        .await
        .expect("request");
    assert_eq!(neither.status(), 400);
}

async fn only_trusted_documents_run_when_asked(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let path = manifest(dir.path(), &[SIGN_UP, ME]);
    let db = TestDatabase::new(backend).await;
    let strict = spawn_on(db.clone(), |c| {
        c.trusted_documents = Some(path.clone());
        c.trusted_documents_only = true;
    })
    .await;
    let signed = post(
        &strict,
        json!({"documentId": format!("sha256:{}", hash(SIGN_UP)), "variables": {"input": {"username": "strict", "password": PASSWORD}}}),
        None,
    )
    .await;
    assert!(signed["errors"].is_null(), "{signed}");
    // The exact text of a trusted document runs; any other text does not,
    // nor does introspection, and GraphiQL is not served.
    let token = signed["data"]["signUp"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let exact = post(&strict, json!({"query": ME}), Some(&token)).await;
    assert_eq!(exact["data"]["me"]["username"], "strict", "{exact}");
    for text in ["{ me { username } }", "{ __typename }", INTROSPECTION] {
        let refused = post(&strict, json!({"query": text}), Some(&token)).await;
        assert_eq!(
            error_code(&refused),
            "TRUSTED_DOCUMENT_REQUIRED",
            "{text}: {refused}"
        );
        assert!(refused["data"].is_null());
    }
    let apq_text = post(
        &strict,
        json!({"query": "{ __typename }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash("{ __typename }")}}}),
        None,
    )
    .await;
    assert_eq!(
        error_code(&apq_text),
        "TRUSTED_DOCUMENT_REQUIRED",
        "{apq_text}"
    );
    let page = strict
        .client
        .get(strict.url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 404);

    // Introspection switched on explicitly: introspection documents (and
    // GraphiQL) are served; other texts still are not.
    let tools = spawn_on(db.clone(), |c| {
        c.trusted_documents = Some(path.clone());
        c.trusted_documents_only = true;
        c.introspection = Some(true);
    })
    .await;
    let schema = post(&tools, json!({"query": INTROSPECTION}), None).await;
    assert_eq!(
        schema["data"]["__schema"]["queryType"]["name"], "Query",
        "{schema}"
    );
    let mixed = post(
        &tools,
        json!({"query": "{ __typename me { username } }"}),
        Some(&token),
    )
    .await;
    assert_eq!(error_code(&mixed), "TRUSTED_DOCUMENT_REQUIRED", "{mixed}");
    let page = tools
        .client
        .get(tools.url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 200);
}

/// A manifest entry that is not the SHA-256 of its document, or a setting
/// that cannot work, stops the start with a message.
async fn a_wrong_manifest_refuses_to_start(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        json!({ hash("{ me { id } }"): "{ me { username } }" }).to_string(),
    )
    .expect("write");
    let db = TestDatabase::new(backend).await;
    let mut config = crate::helpers::base_config(&db);
    config.trusted_documents = Some(path);
    let error = authql::App::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .contains("is not the SHA-256 of its document"),
        "{error:#}"
    );
    config.trusted_documents = None;
    config.trusted_documents_only = true;
    let error = authql::App::build(config).await.err().expect("refused");
    assert!(
        error
            .to_string()
            .contains("AUTHQL_TRUSTED_DOCUMENTS_ONLY needs"),
        "{error:#}"
    );
}

crate::on_both_backends!(
    documents_named_by_id_run_from_the_manifest,
    only_trusted_documents_run_when_asked,
    a_wrong_manifest_refuses_to_start,
);
