//! The GraphiQL playground, served entirely from the binary: the page, its
//! scripts and styles are embedded at build time (see
//! scripts/update-graphiql.sh), so it works with no internet access.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../assets/graphiql.html");
const INIT_JS: &str = include_str!("../../assets/graphiql-init.js");
const GRAPHIQL_JS: &str = include_str!("../../assets/vendor/graphiql/graphiql.min.js");
const GRAPHIQL_CSS: &str = include_str!("../../assets/vendor/graphiql/graphiql.min.css");
const REACT_JS: &str = include_str!("../../assets/vendor/graphiql/react.production.min.js");
const REACT_DOM_JS: &str = include_str!("../../assets/vendor/graphiql/react-dom.production.min.js");

/// Everything the page may load comes from this origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

/// The playground, unless introspection is off (with trusted documents
/// only, unless switched on explicitly): it could not work then.
pub async fn index(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<super::AppState>>,
) -> Response {
    if !state.graphiql {
        return super::not_found().await;
    }
    page()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "init.js" => (INIT_JS, "text/javascript; charset=utf-8"),
        "graphiql.min.js" => (GRAPHIQL_JS, "text/javascript; charset=utf-8"),
        "graphiql.min.css" => (GRAPHIQL_CSS, "text/css; charset=utf-8"),
        "react.production.min.js" => (REACT_JS, "text/javascript; charset=utf-8"),
        "react-dom.production.min.js" => (REACT_DOM_JS, "text/javascript; charset=utf-8"),
        _ => return super::not_found().await,
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
