//! HTTP side of the gateway (axum): the JSON API of SPEC §7, health and
//! metrics. Handlers live in `handlers`, JSON shapes in `views`, the error
//! type in `error`, extractors (bearer auth, JSON bodies) in `extract`.

pub mod error;
pub mod extract;
pub mod handlers;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use crate::config::Config;
use crate::conversations::Conversations;
use crate::metrics;
use crate::store::Store;
use error::ApiError;
use handlers as h;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub config: Arc<Config>,
    pub conversations: Conversations,
}

pub fn router(state: ApiState) -> Router {
    metrics::describe(
        "http_requests_total",
        "HTTP requests, by method, route and status",
    );
    metrics::describe("http_request_seconds", "HTTP request latency, by route");
    let limit = state.config.http.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route(
            "/api/parents/{external_id}",
            put(h::put_parent).get(h::get_parent),
        )
        .route(
            "/api/parents/{external_id}/activity",
            get(h::parent_activity),
        )
        .route(
            "/api/parents/{external_id}/side-conversations",
            post(h::start_side_conversation),
        )
        .route("/api/side-conversations", get(h::list_side_conversations))
        .route(
            "/api/side-conversations/{id}",
            get(h::get_side_conversation),
        )
        .route("/api/side-conversations/{id}/messages", post(h::follow_up))
        .route("/api/side-conversations/{id}/close", post(h::close))
        .route("/api/side-conversations/{id}/reopen", post(h::reopen))
        .route("/api/messages/{id}", get(h::get_message))
        .route("/api/messages/{id}/raw", get(h::get_raw))
        .route("/api/messages/{id}/attachments/{n}", get(h::get_attachment))
        .route("/api/unrouted", get(h::list_unrouted))
        .route("/api/unrouted/{id}/assign", post(h::assign_unrouted))
        .route("/api/contacts", get(h::list_contacts))
        .route("/api/users", post(h::create_user).get(h::list_users))
        .route("/api/me", get(h::get_me).put(h::put_me))
        .route("/api/settings", get(h::get_settings).put(h::put_settings))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
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
    let method = req.method().as_str().to_string();
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

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn metrics_text(
    axum::extract::State(st): axum::extract::State<ApiState>,
) -> impl IntoResponse {
    // Queue depths and message counts are read at scrape time (indexed counts).
    let depths = st
        .store
        .read(|c| {
            let count = |sql: &str| -> crate::store::Result<i64> { Ok(c.query_row(sql, [], |r| r.get(0))?) };
            Ok([
                count("SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'")?,
                count("SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'deferred', 'sending')")?,
                count("SELECT COUNT(*) FROM webhook_deliveries WHERE state IN ('queued', 'deferred', 'sending')")?,
                count("SELECT COUNT(*) FROM messages WHERE direction = 'in'")?,
                count("SELECT COUNT(*) FROM messages WHERE direction = 'out'")?,
                count("SELECT COUNT(*) FROM outbox WHERE state IN ('failed', 'bounced')")?,
            ])
        })
        .await;
    match depths {
        Ok([inbound, outbox, hooks, msg_in, msg_out, failures]) => {
            metrics::describe(
                "inbound_queue_depth",
                "Accepted messages waiting for ingest",
            );
            metrics::describe("outbox_queue_depth", "Outbound deliveries not yet final");
            metrics::describe("webhook_queue_depth", "Webhook deliveries not yet final");
            metrics::describe("messages_stored", "Messages stored, by direction");
            metrics::describe("delivery_failures", "Outbound deliveries failed or bounced");
            metrics::gauge_set("inbound_queue_depth", &[], inbound);
            metrics::gauge_set("outbox_queue_depth", &[], outbox);
            metrics::gauge_set("webhook_queue_depth", &[], hooks);
            metrics::gauge_set("messages_stored", &[("direction", "in")], msg_in);
            metrics::gauge_set("messages_stored", &[("direction", "out")], msg_out);
            metrics::gauge_set("delivery_failures", &[], failures);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read queue depths"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}
