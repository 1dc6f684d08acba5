//! `POST /graphql` and `GET /graphql`.
//!
//! The body is parsed here rather than by async-graphql-axum's extractor so
//! that every malformed request gets a JSON error (HTTP 400/405/413) instead
//! of a plain-text rejection. The caller's bearer token is decoded once into a
//! [`Viewer`] and the request's [`Loaders`] are made per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::graphql::trusted::{is_introspection_only, DocumentRef, Resolved};
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{graphiql, http_error, AppState};
use crate::domain::client::{client_address, Client};
use crate::domain::cookie::{check_csrf, RequestOrigin, CSRF_HEADER};
use crate::error::{with_code, BAD_REQUEST, RATE_LIMITED, UNAUTHENTICATED};
use crate::graphql::CookieRequest;
use crate::graphql::{Loaders, Refusal};
use crate::service::Viewer;

pub async fn post(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if is_multipart(&headers) {
        return upload(state, peer, headers, body).await;
    }
    // Refused on the declared length before reading anything, so a client
    // that sent `Expect: 100-continue` is told at once and sends nothing.
    if declared_length(&headers).is_some_and(|len| len > state.max_body_bytes as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    if !is_json(&headers) {
        // Also what keeps cross-site form posts (text/plain) out.
        return refuse(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let body = match read_body(&state, body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let (request, named) = match serde_json::from_slice::<PostBody>(&body) {
        Ok(body) if body.names_a_document() => body.into_request(),
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "request body is not a GraphQL request: expected {\"query\": \"...\"} or {\"documentId\": \"sha256:...\"}",
            )
        }
        Err(e) if e.is_syntax() || e.is_eof() => {
            return refuse(StatusCode::BAD_REQUEST, "request body is not valid JSON")
        }
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "request body is not a GraphQL request: expected {\"query\": \"...\", \"variables\": {...}, \"operationName\": \"...\"}",
            )
        }
    };
    execute(&state, peer, &headers, request, named, Method::Post).await
}

/// A GraphQL multipart request (a file upload): only from a signed-in
/// caller, checked before the body is read, so no anonymous client can
/// make authql buffer megabytes; and only as many bodies at once as
/// `AUTHQL_MAX_UPLOADS`. (The bearer token is also what keeps cross-site
/// form posts out: a form can send multipart, but not `Authorization`.)
async fn upload(
    state: Arc<AppState>,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if declared_length(&headers).is_some_and(|len| len > state.max_upload_bytes as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let viewer = state.accounts.authenticate(bearer_token(&headers)).await;
    if !matches!(viewer, Viewer::Authenticated { .. }) {
        return http_error(
            StatusCode::UNAUTHORIZED,
            UNAUTHENTICATED,
            "file uploads need Authorization: Bearer <accessToken>",
        );
    }
    let Ok(_permit) = state.uploads.clone().try_acquire_owned() else {
        let mut response = http_error(
            StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMITED,
            "too many uploads at once; retry after 1 second",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let body = match read_body(&state, body, state.max_upload_bytes).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let options = async_graphql::http::MultipartOptions::default()
        .max_num_files(1)
        .max_file_size(state.max_upload_bytes);
    let request = match async_graphql::http::receive_body(content_type, &body[..], options).await {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!(error = %e, "malformed multipart request");
            return refuse(
                StatusCode::BAD_REQUEST,
                "not a GraphQL multipart request (https://github.com/jaydenseric/graphql-multipart-request-spec): \
                 expected the parts operations, map and one file",
            );
        }
    };
    let named = DocumentRef {
        text: Some(request.query.clone()),
        ..DocumentRef::default()
    };
    execute(&state, peer, &headers, request, named, Method::Post).await
}

/// How async-graphql marks a variable the multipart map filled with a file:
/// `#__graphql_file__:<index of the file>`.
const UPLOAD_MARKER: &str = "#__graphql_file__:";

/// Refuses requests that name uploads they did not bring. The engine
/// trusts the marker wherever it appears (a variable or a literal) and
/// would panic on a marker with no number or an index past the files.
/// Only the multipart map may write it, with an index it has.
fn check_upload_references(request: &async_graphql::Request) -> Result<(), &'static str> {
    const NAMES_NO_FILE: &str = "the request names a file upload it does not carry";
    if request.query.contains(UPLOAD_MARKER) {
        return Err(NAMES_NO_FILE);
    }
    let files = request.uploads.len();
    let mut pending: Vec<&async_graphql::Value> = request.variables.values().collect();
    while let Some(value) = pending.pop() {
        match value {
            async_graphql::Value::String(s) => {
                if let Some(index) = s.strip_prefix(UPLOAD_MARKER) {
                    if !index.parse::<usize>().is_ok_and(|i| i < files) {
                        return Err(NAMES_NO_FILE);
                    }
                }
            }
            async_graphql::Value::List(items) => pending.extend(items),
            async_graphql::Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
    Ok(())
}

/// The declared `Content-Length`, if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// The whole body, at most `limit` bytes, within the body timeout; else
/// the refusal to answer with (413, 408 or 400).
async fn read_body(
    state: &AppState,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, Response> {
    match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) if is_length_limit(&e) => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Ok(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "could not read the request body",
        )),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )),
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.type_() == mime::MULTIPART && m.subtype() == mime::FORM_DATA)
}

/// Whether reading a body failed on the size limit (`to_bytes`' limit).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A GraphQL-over-HTTP POST body, parsed in one pass. `query` or a
/// trusted document's id is required (async-graphql's own type would
/// default the query to "" and answer 200).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostBody {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    variables: Option<async_graphql::Variables>,
    #[serde(default)]
    operation_name: Option<String>,
    /// A trusted document's id, `sha256:<hex>` (GraphQL over HTTP's
    /// persisted documents).
    #[serde(default)]
    document_id: Option<String>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

/// Apollo's automatic persisted queries: `{"persistedQuery": {"version":
/// 1, "sha256Hash": "<hex>"}}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Extensions {
    #[serde(default)]
    persisted_query: Option<PersistedQuery>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedQuery {
    sha256_hash: String,
}

impl PostBody {
    fn names_a_document(&self) -> bool {
        self.query.is_some()
            || self.document_id.is_some()
            || self
                .extensions
                .as_ref()
                .is_some_and(|e| e.persisted_query.is_some())
    }

    /// The request (its text set once the document is resolved) and how
    /// it names its document.
    fn into_request(self) -> (async_graphql::Request, DocumentRef) {
        let mut request = async_graphql::Request::new(String::new());
        if let Some(variables) = self.variables {
            request = request.variables(variables);
        }
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        let named = DocumentRef {
            text: self.query,
            document_id: self.document_id,
            apq_hash: self
                .extensions
                .and_then(|e| e.persisted_query)
                .map(|p| p.sha256_hash),
        };
        (request, named)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    operation_name: Option<String>,
    document_id: Option<String>,
    /// JSON, as Apollo's clients send it over GET.
    extensions: Option<String>,
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params: GetParams = match serde_urlencoded::from_str(raw.as_deref().unwrap_or("")) {
        Ok(params) => params,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "malformed query string"),
    };
    let apq_hash = match params
        .extensions
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        None => None,
        Some(raw) => match serde_json::from_str::<Extensions>(raw) {
            Ok(extensions) => extensions.persisted_query.map(|p| p.sha256_hash),
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "`extensions` must be a JSON object",
                )
            }
        },
    };
    if params.query.is_none() && params.document_id.is_none() && apq_hash.is_none() {
        if wants_html(&headers) && state.graphiql {
            return graphiql::page().into_response();
        }
        return refuse(StatusCode::BAD_REQUEST, "missing `query` parameter");
    }
    let named = DocumentRef {
        text: params.query,
        document_id: params.document_id,
        apq_hash,
    };
    let mut request = async_graphql::Request::new(String::new());
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables.filter(|v| !v.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(&variables) {
            Ok(json @ serde_json::Value::Object(_)) => {
                request = request.variables(async_graphql::Variables::from_json(json));
            }
            _ => return refuse(StatusCode::BAD_REQUEST, "`variables` must be a JSON object"),
        }
    }
    execute(&state, peer, &headers, request, named, Method::Get).await
}

/// How the request arrived: mutations are refused over GET.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

async fn execute(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    mut request: async_graphql::Request,
    named: DocumentRef,
    method: Method,
) -> Response {
    if named
        .text
        .as_ref()
        .is_some_and(|t| t.len() > state.max_document_bytes)
    {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "GraphQL document longer than {} bytes",
                state.max_document_bytes
            ),
        );
    }
    let started = Instant::now();
    let manifest = state.trusted.current();
    let allowed_untrusted =
        |text: &str| state.graphiql && is_introspection_only(&state.documents, text);
    let prepared = match manifest.resolve(named, state.trusted.only, allowed_untrusted) {
        Ok(Resolved::Trusted(trusted)) => {
            request.query = trusted.text.to_string();
            Ok(trusted.prepared)
        }
        Ok(Resolved::Text(text)) => {
            let prepared = state.documents.prepare(&text);
            request.query = text;
            prepared
        }
        Err(refusal) => Err(refusal),
    };
    // With the text in place: markers in it count too.
    if let Err(message) = check_upload_references(&request) {
        return refuse(StatusCode::BAD_REQUEST, message);
    }
    let document = match prepared {
        Ok(document) => document,
        Err(refusal) => {
            state
                .metrics
                .observe_request("invalid", false, started.elapsed());
            return Json(refused(refusal)).into_response();
        }
    };
    if method == Method::Get && document.may_mutate(request.operation_name.as_deref()) {
        let mut response = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "mutations are only accepted over POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    request.set_parsed_query(document.document.clone());
    let viewer: Viewer = state.accounts.authenticate(bearer_token(headers)).await;
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = Client::new(
        client_address(peer.ip(), forwarded, &state.trusted_proxies),
        state.ipv6_prefix,
    )
    .with_user_agent(
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let mut request = request.data(viewer).data(client).data(document);
    if state.cookie.enabled {
        let header_text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let from = RequestOrigin {
            custom_header: headers.contains_key(CSRF_HEADER),
            origin: header_text(header::ORIGIN),
            sec_fetch_site: header_text(header::HeaderName::from_static("sec-fetch-site")),
            host: header_text(header::HOST),
            own_origin: state.own_origin.clone(),
        };
        request = request.data(CookieRequest {
            // Bytes, not `to_str`: another app's non-ASCII cookie on this
            // host must not hide ours.
            token: {
                let values: Vec<std::borrow::Cow<'_, str>> = headers
                    .get_all(header::COOKIE)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .collect();
                state.cookie.read(values.iter().map(|v| v.as_ref()))
            },
            csrf: check_csrf(&from, &state.cors_origins),
        });
    }
    let request = request.data(Loaders::new(state.accounts.clone()));
    // Every error comes out of the engine coded (graphql::RequestPolicy).
    let mut answer = state.schema.execute(request).await;
    // Headers resolvers set (the refresh cookie).
    let set = std::mem::take(&mut answer.http_headers);
    let mut response = Json(answer).into_response();
    for (name, value) in &set {
        response.headers_mut().append(name, value.clone());
    }
    response
}

/// The answer to a document refused before execution: `data` is null and
/// nothing ran.
fn refused(refusal: Refusal) -> async_graphql::Response {
    async_graphql::Response::from_errors(vec![with_code(
        async_graphql::ServerError::new(refusal.message, None),
        refusal.code,
    )])
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        })
}

pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// A JSON error for requests that never reach the GraphQL engine.
fn refuse(status: StatusCode, message: &str) -> Response {
    http_error(status, BAD_REQUEST, message)
}
