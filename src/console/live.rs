//! Live pages (SPEC §11): `GET /app/events?watch=…&latest=N` is an
//! EventSource stream for a signed-in page. It waits on the store's commit
//! signal and sends `event: changed` (data: the newest message id) when
//! the page would show a message newer than `latest`; `console.js` then
//! fetches the page again and swaps in its live parts. Comment lines keep
//! the connection under the HTTP idle timeout. A stream ends when the
//! server shuts down, when its user is deactivated (the credentials signal,
//! then the session is looked up again), or after an hour (the browser
//! reconnects with a fresh `latest`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Chrome, Refusal};
use crate::http::AppState;
use crate::shutdown::Shutdown;
use crate::store::inbox::{self, Watch};
use crate::store::{parents, users};

/// Streams one user may hold open at once (tabs).
const PER_USER: usize = 8;
/// Longest life of one stream.
const MAX_LIFE: Duration = Duration::from_secs(3600);

/// Open streams per user, and the shutdown signal.
#[derive(Clone)]
pub struct Streams {
    shutdown: Shutdown,
    open: Arc<Mutex<HashMap<i64, usize>>>,
}

struct Slot {
    open: Arc<Mutex<HashMap<i64, usize>>>,
    user: i64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.open.lock()
            && let Some(n) = m.get_mut(&self.user)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

impl Streams {
    pub fn new(shutdown: Shutdown) -> Streams {
        Streams {
            shutdown,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn acquire(&self, user: i64, total: usize) -> Option<Slot> {
        let mut m = self.open.lock().ok()?;
        let all: usize = m.values().sum();
        let n = m.entry(user).or_insert(0);
        if *n >= PER_USER || all >= total {
            return None;
        }
        *n += 1;
        Some(Slot {
            open: self.open.clone(),
            user,
        })
    }
}

pub fn routes(streams: Streams) -> Router<AppState> {
    Router::new()
        .route("/app/events", get(events))
        .layer(Extension(streams))
}

#[derive(Debug, Deserialize)]
pub struct Params {
    watch: String,
    latest: Option<i64>,
}

/// What a `watch` parameter names, checked against the store.
async fn watch_of(st: &AppState, w: &str) -> Result<Watch, Refusal> {
    if w == "inbox" || w == "unrouted" {
        return Ok(Watch::Inbound);
    }
    if let Some(id) = w.strip_prefix("sc:") {
        let id: i64 = id
            .parse()
            .map_err(|_| Refusal::BadRequest("watch: unknown".into()))?;
        return Ok(Watch::SideConversation(id));
    }
    if let Some(ext) = w.strip_prefix("parent:") {
        let ext = ext.to_string();
        let parent = st.store.read(move |c| parents::id_of(c, &ext)).await?;
        return match parent {
            Some(id) => Ok(Watch::Parent(id)),
            None => Err(Refusal::NotFound("That ticket")),
        };
    }
    Err(Refusal::BadRequest("watch: unknown".into()))
}

async fn events(
    State(st): State<AppState>,
    Extension(streams): Extension<Streams>,
    chrome: Chrome,
    Query(p): Query<Params>,
) -> Result<Response, Refusal> {
    let watch = watch_of(&st, &p.watch).await?;
    let total = (st.config.http.max_connections / 2).max(1);
    let Some(slot) = streams.acquire(chrome.user.id, total) else {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            "too many live pages are open at once",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        return Ok(r);
    };
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let mut commits = st.store.commits();
    let mut credentials = st.store.credentials();
    let shutdown = streams.shutdown.clone();
    let user = chrome.user.id;
    let mut latest = p.latest.unwrap_or(0);
    let keepalive = (st.config.http.idle_timeout / 2).max(Duration::from_secs(1));
    tokio::spawn(async move {
        let _slot = slot;
        let deadline = tokio::time::Instant::now() + MAX_LIFE;
        // Retry hint for the browser's reconnects.
        if tx
            .send(Bytes::from_static(b"retry: 3000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut check_now = true;
        let mut watching_credentials = true;
        loop {
            if check_now {
                check_now = false;
                let w = watch.clone();
                match st.store.read(move |c| inbox::latest(c, &w)).await {
                    Ok(n) if n > latest => {
                        latest = n;
                        let ev = format!("event: changed\ndata: {n}\n\n");
                        if tx.send(Bytes::from(ev)).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "console live: cannot read"),
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tx.closed() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                changed = credentials.changed(), if watching_credentials => {
                    if changed.is_err() {
                        watching_credentials = false;
                    } else {
                        let active = st
                            .store
                            .read(move |c| users::by_id(c, user))
                            .await
                            .map(|u| u.active)
                            .unwrap_or(false);
                        if !active {
                            break;
                        }
                    }
                }
                changed = commits.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    check_now = true;
                }
                _ = tokio::time::sleep(keepalive) => {
                    if tx.send(Bytes::from_static(b":\n\n")).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut resp = crate::http::event_stream(rx);
    // The console's headers (Cache-Control: no-store among them).
    super::harden(resp.headers_mut());
    Ok(resp)
}
