//! `GET /avatars/{userId}-{hash}[?size=original]`: the stored copies, public
//! (an `<img>` sends no bearer token) and named by their content hash, so
//! each URL's bytes never change and may be cached for a year.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{http_error, AppState};
use crate::domain::avatar::AvatarSize;
use crate::error::{BAD_REQUEST, NOT_FOUND};

#[derive(Deserialize)]
pub struct AvatarQuery {
    size: Option<String>,
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    file: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(file)) = file else {
        return missing();
    };
    let Ok(query) = serde_urlencoded::from_str::<AvatarQuery>(raw.as_deref().unwrap_or("")) else {
        return http_error(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "malformed query string",
        );
    };
    let size = match query.size.as_deref() {
        None | Some("small") => AvatarSize::Small,
        Some("original") => AvatarSize::Original,
        Some(_) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                "size must be small or original",
            )
        }
    };
    let Some((user_id, hash)) = file
        .split_once('-')
        .and_then(|(id, hash)| Some((id.parse::<i64>().ok()?, hash)))
    else {
        return missing();
    };
    let etag = format!(
        "\"{hash}-{}\"",
        match size {
            AvatarSize::Small => "s",
            AvatarSize::Original => "o",
        }
    );
    let (format, bytes) = match state.accounts.avatar(user_id, hash, size).await {
        Ok(Some(found)) => found,
        Ok(None) => return missing(),
        Err(e) => return super::service_error(e),
    };
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
        (header::ETAG, etag.clone()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes() || tags.as_bytes() == b"*")
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            ),
            // Served as what it is and nothing else, even if opened directly.
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; sandbox"),
            ),
        ],
        bytes,
    )
        .into_response()
}

fn missing() -> Response {
    http_error(StatusCode::NOT_FOUND, NOT_FOUND, "no such avatar")
}
