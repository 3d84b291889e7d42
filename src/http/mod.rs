//! What the HTTP doors (the JSON API, the vendor portal, JMAP) share: the
//! application state, the caller extractor, the error type, the listener
//! with its per-address limits, downloads, the metrics listener, and the
//! layers every request goes through ([`finish`]). It imports no door; the
//! doors import it, and `app` puts their routes together.

pub mod download;
pub mod error;
pub mod extract;
pub mod listener;
pub mod origin;
pub mod scrape;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Config;
use crate::conversations::Conversations;
use crate::metrics;
use crate::store::Store;
use error::ApiError;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub conversations: Conversations,
    /// For sender DNS checks.
    pub resolver: crate::senders::dns::Resolver,
    /// Per-address limits on bad tokens (API) and bad links (portal).
    pub limits: Arc<crate::limits::Limits>,
}

/// The routes of every door, finished with what each request goes
/// through: the body limit, the request deadline, the metrics, and JSON
/// answers for unknown routes and methods.
pub fn finish(routes: Router<AppState>, state: AppState) -> Router {
    metrics::describe(
        "http_requests_total",
        "HTTP requests, by method, route and status",
    );
    metrics::describe("http_request_seconds", "HTTP request latency, by route");
    let limit = state.config.http.max_body_bytes;
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.config.http.request_timeout,
            deadline,
        ))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Answers 503 when a request takes longer than `http.request_timeout`.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"error": {"code": "timeout", "message": "the request took too long"}}),
            ),
        )
            .into_response(),
    }
}

/// Human size for limits and file lists: `10 MB`, `1.5 MB`, `12 KB`, `80 bytes`.
pub fn human_size(bytes: usize) -> String {
    const MB: usize = 1024 * 1024;
    if bytes >= MB {
        if bytes.is_multiple_of(MB) {
            format!("{} MB", bytes / MB)
        } else {
            format!("{:.1} MB", bytes as f64 / MB as f64)
        }
    } else if bytes >= 1024 {
        format!("{} KB", bytes.div_ceil(1024))
    } else {
        format!("{bytes} bytes")
    }
}

/// The body of an EventSource stream: the chunks a task sends.
struct Chunks(tokio::sync::mpsc::Receiver<axum::body::Bytes>);

impl futures_core::Stream for Chunks {
    type Item = Result<axum::body::Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

/// A `200 text/event-stream` answer whose body is what the sender of `rx`
/// sends, until it is dropped (JMAP push, the console's live pages).
pub fn event_stream(rx: tokio::sync::mpsc::Receiver<axum::body::Bytes>) -> Response {
    use axum::http::{HeaderValue, StatusCode, header};
    let mut resp = (StatusCode::OK, axum::body::Body::from_stream(Chunks(rx))).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> Response {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"error": {"code": "method_not_allowed", "message": "this method is not allowed here"}})),
    )
        .into_response()
}

/// Counts every request and its latency by route template (never by raw
/// path, so ids do not explode the label set).
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // Only known methods become label values: a client inventing methods
    // must not grow the metrics without bound.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::inc(
        "http_requests_total",
        &[("method", &method), ("route", &route), ("status", &status)],
    );
    metrics::observe(
        "http_request_seconds",
        &[("route", &route)],
        started.elapsed().as_secs_f64(),
    );
    response
}
