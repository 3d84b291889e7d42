//! The metrics listener (SPEC §10): `GET /metrics`, the Prometheus text of
//! `crate::metrics`, without authentication — so it is served only on its
//! own address, `http.metrics_listen` (loopback by default; empty turns it
//! off), never on the public listener with the API and the portal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::error::ApiError;
use super::listener::LimitedListener;
use crate::limits::Limits;
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Connections the metrics listener serves at once (scrapers are few; more
/// wait in the backlog).
const MAX_CONNECTIONS: usize = 16;

/// What a scrape reads besides the counters: queue depths from the store,
/// the limiters' gauges.
#[derive(Clone)]
pub struct ScrapeState {
    pub store: Store,
    pub limits: Arc<Limits>,
}

/// `GET /metrics` and nothing else (other paths are 404).
pub fn router(state: ScrapeState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::NotFound("route") })
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown`, with the public
/// listener's idle and head timeouts (`idle`).
pub async fn serve(
    listener: TcpListener,
    state: ScrapeState,
    idle: Duration,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    axum::serve(
        LimitedListener::new(listener, MAX_CONNECTIONS, idle),
        router(state).into_make_service(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
    .context("metrics listener")
}

async fn metrics_text(State(st): State<ScrapeState>) -> impl IntoResponse {
    // Queue depths and message counts are read at scrape time (indexed counts).
    let depths = st.store.read(crate::store::stats::depths).await;
    st.limits.publish();
    if st.store.is_shared() {
        metrics::describe(
            "store_round_trips_total",
            "Requests this node sent to PostgreSQL and waited on",
        );
        metrics::gauge_set(
            "store_round_trips_total",
            &[],
            i64::try_from(crate::store::sql::round_trips()).unwrap_or(i64::MAX),
        );
    }
    match depths {
        Ok(crate::store::stats::Depths {
            inbound,
            outbox,
            webhooks: hooks,
            messages_in: msg_in,
            messages_out: msg_out,
            delivery_failures: failures,
        }) => {
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
        metrics::render(),
    )
}
