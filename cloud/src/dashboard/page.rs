//! The dashboard page at `/`: plain HTML, CSS and JavaScript, with uPlot (vendored from npm
//! under `cloud/assets/vendor`) for the charts, all compiled into the binary. Nothing is
//! loaded from elsewhere, so it works offline; the page holds no data until it has the
//! token, which it asks for once and keeps in the browser's local storage.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::ApiError;

const INDEX: &str = include_str!("../../assets/index.html");

/// (name, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../assets/favicon.svg"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/vendor/uPlot.min.css"),
    ),
];

pub fn routes() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
}

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page may only talk to where it came from, may not be framed (clickjacking of the
    // token-holding page), is never sniffed as another type, and sends no referrer.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, kind, body)| respond(kind, body))
        .ok_or_else(|| ApiError::not_found("not_found", format!("no asset {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_page_cannot_be_framed_sniffed_or_leak_a_referrer() {
        for path in ["/", "/assets/uPlot.min.css"] {
            let request = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request");
            let response = routes().oneshot(request).await.expect("answer");
            let h = response.headers();
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("csp");
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{path}");
        }
    }
}
