//! Webhook delivery end to end: the in-process gateway POSTs queued events
//! to HTTP receivers run here on 127.0.0.1, which record every request and
//! can answer 500 (or a redirect) N times, or hang; an https receiver with
//! an untrusted certificate; a closed port. Plus the store helpers the
//! `/api/webhooks` endpoints use.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use backchannel::config::Config;
use backchannel::store::webhooks::{self, Delivery, DeliveryState, Webhook, WebhookError};
use backchannel::store::{Store, StoreError, events};
use common::dns::{FakeDns, RecordKind};
use common::{TestServer, api_call, make_user, wait_for};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

// ---------------------------------------------------------------------------
// The receiver.

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Default)]
struct Behaviour {
    /// Answer `fail_status` to this many requests, then 200.
    failures_left: usize,
    fail_status: u16,
    /// Never answer (until switched off).
    hang: bool,
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    release: tokio::sync::Notify,
    /// Requests being held open by `hang`, now and at most.
    open: AtomicUsize,
    max_open: AtomicUsize,
}

/// Decrements the open count when the request's future is dropped: when it
/// finishes or when hyper drops it because the client went away.
struct OpenGuard(Arc<ReceiverState>);

impl OpenGuard {
    fn new(s: &Arc<ReceiverState>) -> OpenGuard {
        let now = s.open.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_open.fetch_max(now, Ordering::SeqCst);
        OpenGuard(s.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn receive(
    State(s): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.requests.lock().expect("lock").push(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    loop {
        // Registered before the check, so a release in between is not lost.
        let released = s.release.notified();
        if !s.behaviour.lock().expect("lock").hang {
            break;
        }
        let _open = OpenGuard::new(&s);
        released.await;
    }
    let status = {
        let mut b = s.behaviour.lock().expect("lock");
        if b.failures_left > 0 {
            b.failures_left -= 1;
            b.fail_status
        } else {
            200
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_redirection() {
        (status, [(header::LOCATION, "/elsewhere")], "moved").into_response()
    } else if status.is_success() {
        (status, "ok").into_response()
    } else {
        (status, "receiver says no").into_response()
    }
}

struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn fail(&self, times: usize, status: u16) {
        let mut b = self.state.behaviour.lock().expect("lock");
        b.failures_left = times;
        b.fail_status = status;
    }

    fn hang(&self, on: bool) {
        self.state.behaviour.lock().expect("lock").hang = on;
        if !on {
            self.state.release.notify_waiters();
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("lock").clone()
    }

    fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    async fn wait_requests(&self, n: usize) -> Vec<Received> {
        wait_for(&format!("{n} requests at {}", self.addr), || async {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Helpers.

const FAST: &str = "[webhooks]\ntimeout = \"1s\"\nretry_schedule = [\"1s\"]\n";

/// The receivers here listen on loopback, which endpoints may reach only
/// when allowed (SPEC §10).
const ALLOW_LOOPBACK: &str = "allow_destinations = [\"127.0.0.0/8\"]\n";

/// A gateway with `webhooks_toml` (a `[webhooks]` section) and loopback
/// allowed in it.
async fn server(webhooks_toml: &str) -> TestServer {
    server_without_allowance(&webhooks_toml.replacen(
        "[webhooks]\n",
        &format!("[webhooks]\n{ALLOW_LOOPBACK}"),
        1,
    ))
    .await
}

/// A gateway with `webhooks_toml` as given: internal destinations refused
/// unless it allows some.
async fn server_without_allowance(webhooks_toml: &str) -> TestServer {
    TestServer::start_with("", webhooks_toml).await
}

async fn add_hook(store: &Store, url: &str, secret: &str, events: &[&str]) -> Webhook {
    let (url, secret) = (url.to_string(), secret.to_string());
    let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    store
        .write_with(move |c| webhooks::create(c, &url, &secret, &events))
        .await
        .expect("create webhook")
}

async fn enqueue(store: &Store, event: &'static str, data: serde_json::Value) -> usize {
    store
        .write(move |c| events::enqueue(c, event, data))
        .await
        .expect("enqueue")
}

/// The endpoint's whole delivery log, newest first.
async fn log(store: &Store, hook: i64) -> Vec<Delivery> {
    store
        .read(move |c| webhooks::deliveries(c, hook, None, webhooks::MAX_PAGE))
        .await
        .expect("delivery log")
        .items
}

/// Waits until every delivery of `hook` satisfies `done` (and there are
/// `n`); returns them newest first.
async fn wait_log(
    store: &Store,
    hook: i64,
    n: usize,
    what: &str,
    done: impl Fn(&Delivery) -> bool,
) -> Vec<Delivery> {
    wait_for(what, || async {
        let l = log(store, hook).await;
        (l.len() == n && l.iter().all(&done)).then_some(l)
    })
    .await
}

async fn raw_payload(sql: &common::Sql, delivery: i64) -> String {
    sql.read(move |c| {
        Ok(c.query_row(
            "SELECT payload FROM webhook_deliveries WHERE id = ?1",
            [delivery],
            |r| r.get(0),
        )?)
    })
    .await
    .expect("payload")
}

fn verify_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // Constant-time comparison, as a receiver should do it.
    mac.verify_slice(&sig).is_ok()
        && hex_sig
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------
// Delivery.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_the_exact_payload_signed_with_event_and_delivery_headers() {
    let mut s = server(FAST).await;
    let all = Receiver::start().await;
    let other = Receiver::start().await;
    let hook = add_hook(&s.store, &all.url(), "top secret", &[]).await;
    let picky = add_hook(&s.store, &other.url(), "other secret", &["message.sent"]).await;

    let queued = enqueue(
        &s.store,
        "side_conversation.started",
        json!({"side_conversation_id": 7, "parent": "T-1", "subject": "Pallet 7 — délai"}),
    )
    .await;
    assert_eq!(queued, 1, "only the endpoint subscribed to everything");

    let got = all.wait_requests(1).await;
    let r = &got[0];
    let delivered = wait_log(&s.store, hook.id, 1, "delivered", |d| {
        d.state == DeliveryState::Delivered
    })
    .await;
    let d = &delivered[0];
    assert_eq!(r.path, "/hook");
    assert_eq!(r.body.as_ref(), raw_payload(&s.sql, d.id).await.as_bytes());
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(body["event"], "side_conversation.started");
    assert_eq!(body["data"]["subject"], "Pallet 7 — délai");
    assert_eq!(r.header("content-type"), "application/json");
    assert!(
        verify_signature("top secret", &r.body, r.header("x-backchannel-signature")),
        "signature {:?}",
        r.header("x-backchannel-signature")
    );
    assert!(!verify_signature(
        "wrong secret",
        &r.body,
        r.header("x-backchannel-signature")
    ));
    assert_eq!(r.header("x-backchannel-event"), "side_conversation.started");
    assert_eq!(r.header("x-backchannel-delivery"), d.id.to_string());
    assert_eq!(
        r.header("user-agent"),
        format!("backchannel/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_status, Some(200));
    assert_eq!(d.last_error, None);
    assert!(d.delivered_at.is_some());

    // The endpoint subscribed to other events got nothing.
    assert!(other.requests().is_empty());
    assert!(log(&s.store, picky.id).await.is_empty());

    // An event it does subscribe to reaches it, and only that one.
    assert_eq!(
        enqueue(&s.store, "message.sent", json!({"message": {"id": 1}})).await,
        2
    );
    let got = other.wait_requests(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-backchannel-event"), "message.sent");
    assert!(verify_signature(
        "other secret",
        &got[0].body,
        got[0].header("x-backchannel-signature")
    ));
    all.wait_requests(2).await;
    wait_log(&s.store, picky.id, 1, "delivered", |d| {
        d.state == DeliveryState::Delivered
    })
    .await;

    let metrics = backchannel::metrics::render();
    assert!(
        metrics.contains("webhook_deliveries_total{result=\"delivered\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("webhook_queue_depth"), "{metrics}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_then_delivered_and_the_log_keeps_the_failure() {
    let mut s = server(FAST).await;
    let r = Receiver::start().await;
    r.fail(1, 500);
    let hook = add_hook(&s.store, &r.url(), "k", &[]).await;
    enqueue(&s.store, "parent.woken", json!({"parent": "T-9"})).await;

    let log = wait_log(&s.store, hook.id, 1, "delivered", |d| {
        d.state == DeliveryState::Delivered
    })
    .await;
    let d = &log[0];
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_status, Some(200));
    // The status line only: the endpoint's body is never kept.
    assert_eq!(
        d.last_error.as_deref(),
        Some("HTTP 500 Internal Server Error")
    );

    // The same delivery twice: same id, same bytes, same signature.
    let got = r.requests();
    assert_eq!(got.len(), 2);
    for h in ["x-backchannel-delivery", "x-backchannel-signature"] {
        assert_eq!(got[0].header(h), got[1].header(h), "{h}");
    }
    assert_eq!(got[0].header("x-backchannel-delivery"), d.id.to_string());
    assert_eq!(got[0].body, got[1].body);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let mut s = server("[webhooks]\nretry_schedule = [\"1h\"]\n").await;
    let r = Receiver::start().await;
    r.fail(1, 302);
    let hook = add_hook(&s.store, &r.url(), "k", &[]).await;
    enqueue(&s.store, "sender.verified", json!({"email": "a@b.example"})).await;

    let log = wait_log(&s.store, hook.id, 1, "deferred", |d| {
        d.state == DeliveryState::Deferred
    })
    .await;
    assert_eq!(log[0].last_status, Some(302));
    assert_eq!(
        log[0].last_error.as_deref(),
        Some("HTTP 302 Found (redirects are not followed)")
    );
    assert_eq!(log[0].attempts, 1);
    let got = r.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hook");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_endpoint_times_out_and_is_retried_without_blocking_others() {
    let mut s = server(FAST).await;
    let slow = Receiver::start().await;
    slow.hang(true);
    let fast = Receiver::start().await;
    let slow_hook = add_hook(
        &s.store,
        &slow.url(),
        "slow",
        &["side_conversation.started"],
    )
    .await;
    let fast_hook = add_hook(&s.store, &fast.url(), "fast", &["message.received"]).await;

    // The hanging endpoint's deliveries are the oldest in the queue; all are
    // queued at once, so the worker finds them together.
    s.store
        .write(|db| {
            for i in 0..4 {
                events::enqueue(db, "side_conversation.started", json!({ "n": i }))?;
            }
            for i in 0..3 {
                events::enqueue(db, "message.received", json!({ "n": i }))?;
            }
            Ok(())
        })
        .await
        .expect("enqueue");

    // The other endpoint gets all three while the first two attempts to the
    // hanging one are still waiting for an answer (they time out only after
    // a second), and while its two younger deliveries wait for a slot.
    fast.wait_requests(3).await;
    let slow_log = log(&s.store, slow_hook.id).await;
    let mut states: Vec<_> = slow_log
        .iter()
        .rev()
        .map(|d| (d.state, d.attempts, d.last_error.is_some()))
        .collect();
    assert_eq!(
        states.split_off(2),
        [
            (DeliveryState::Queued, 0, false),
            (DeliveryState::Queued, 0, false)
        ],
        "the younger two wait: two per endpoint at most"
    );
    assert_eq!(
        states,
        [
            (DeliveryState::Sending, 1, false),
            (DeliveryState::Sending, 1, false)
        ],
        "the oldest two are still in their first attempt"
    );
    wait_log(&s.store, fast_hook.id, 3, "fast delivered", |d| {
        d.state == DeliveryState::Delivered && d.attempts == 1
    })
    .await;

    // The hanging attempts time out and are tried again.
    wait_for("a timed-out attempt retried", || async {
        log(&s.store, slow_hook.id).await.into_iter().find(|d| {
            d.attempts >= 2
                && d.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("timed out"))
        })
    })
    .await;
    // Never more than two attempts at once to one endpoint.
    assert!(slow.state.max_open.load(Ordering::SeqCst) <= 2);

    // Once the endpoint answers again, everything gets through.
    slow.hang(false);
    let done = wait_log(&s.store, slow_hook.id, 4, "slow delivered", |d| {
        d.state == DeliveryState::Delivered
    })
    .await;
    assert!(done.iter().all(|d| d.last_status == Some(200)));
    assert!(
        done.iter()
            .filter_map(|d| d.last_error.as_deref())
            .any(|e| e.contains("timed out"))
    );
    assert!(slow.state.max_open.load(Ordering::SeqCst) <= 2);
    assert_eq!(slow.open(), 0);
    s.shutdown().await;
}

/// An endpoint that accepts connections and never answers: it holds every
/// socket open, unread, until dropped.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind silent endpoint");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Silent {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_endpoints_holding_every_slot_never_starve_a_healthy_one() {
    // Two endpoints that accept and never answer, with a timeout far past
    // the test's deadline: they take all four slots (two each) before the
    // healthy endpoint has anything to send. Its deliveries must still go
    // out while the others hang, not after they time out.
    let mut s = server(
        "[webhooks]\ntimeout = \"60s\"\nretry_schedule = [\"1h\"]\nconcurrency = 4\nper_endpoint = 2\n",
    )
    .await;
    let (a, b) = (Silent::start().await, Silent::start().await);
    let healthy = Receiver::start().await;
    let a_hook = add_hook(
        &s.store,
        &format!("http://{}/a", a.addr),
        "a",
        &["side_conversation.started"],
    )
    .await;
    let b_hook = add_hook(
        &s.store,
        &format!("http://{}/b", b.addr),
        "b",
        &["side_conversation.closed"],
    )
    .await;
    let h_hook = add_hook(&s.store, &healthy.url(), "h", &["message.received"]).await;
    s.store
        .write(|db| {
            for i in 0..5 {
                events::enqueue(db, "side_conversation.started", json!({ "n": i }))?;
                events::enqueue(db, "side_conversation.closed", json!({ "n": i }))?;
            }
            Ok(())
        })
        .await
        .expect("enqueue");
    wait_for("both hanging endpoints holding two attempts", || async {
        (a.accepted() == 2 && b.accepted() == 2).then_some(())
    })
    .await;

    s.store
        .write(|db| {
            for i in 0..5 {
                events::enqueue(db, "message.received", json!({ "n": i }))?;
            }
            Ok(())
        })
        .await
        .expect("enqueue");
    healthy.wait_requests(5).await;
    wait_log(&s.store, h_hook.id, 5, "healthy delivered", |d| {
        d.state == DeliveryState::Delivered && d.attempts == 1
    })
    .await;

    // Meanwhile the hanging endpoints are still in their first attempts,
    // never more than two at once each, the rest waiting.
    for (silent, hook) in [(&a, a_hook.id), (&b, b_hook.id)] {
        assert_eq!(silent.accepted(), 2, "per_endpoint holds");
        let mut states: Vec<_> = log(&s.store, hook)
            .await
            .iter()
            .map(|d| (d.state, d.attempts, d.last_error.clone()))
            .collect();
        states.sort_by_key(|(state, ..)| state.as_str());
        assert_eq!(
            states,
            [
                (DeliveryState::Queued, 0, None),
                (DeliveryState::Queued, 0, None),
                (DeliveryState::Queued, 0, None),
                (DeliveryState::Sending, 1, None),
                (DeliveryState::Sending, 1, None),
            ],
            "endpoint {hook}"
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_defers_with_the_error() {
    let mut s = server("[webhooks]\nretry_schedule = [\"1h\"]\n").await;
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let hook = add_hook(&s.store, &format!("http://{closed}/hook"), "k", &[]).await;
    enqueue(
        &s.store,
        "message.bounced",
        json!({"recipient": "x@y.example"}),
    )
    .await;

    let log = wait_log(&s.store, hook.id, 1, "deferred", |d| {
        d.state == DeliveryState::Deferred
    })
    .await;
    let d = &log[0];
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_status, None);
    let error = d.last_error.as_deref().unwrap_or("");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    assert!(d.next_attempt_at >= d.created_at + 3_600_000);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_url_that_is_not_http_fails_at_once() {
    let mut s = server(FAST).await;
    let hook: i64 = s
        .sql
        .write(|c| {
            c.execute(
                "INSERT INTO webhooks (url, secret, events, created_at)
                 VALUES ('ftp://127.0.0.1:9/hook', 'k', '[]', 0)",
                [],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
        .expect("insert");
    enqueue(&s.store, "parent.woken", json!({})).await;
    let log = wait_log(&s.store, hook, 1, "failed", |d| {
        d.state == DeliveryState::Failed
    })
    .await;
    assert_eq!(log[0].attempts, 1);
    assert!(
        log[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("scheme")),
        "{:?}",
        log[0].last_error
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_left_sending_at_startup_are_sent_again() {
    let r = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::from_toml_str(
        &format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"\"\n[imap]\nlisten = \"127.0.0.1:0\"\n[submission]\nlisten = \"127.0.0.1:0\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[ingest]\nauthenticate = false\n{FAST}{ALLOW_LOOPBACK}",
            dir.path().join("data").display()
        ),
        Vec::new(),
    )
    .expect("config");
    let store = common::open_store(&config.db_path());
    let sql = common::Sql::at(config.db_path());
    let hook = add_hook(&store, &r.url(), "k", &[]).await;
    enqueue(
        &store,
        "side_conversation.closed",
        json!({"side_conversation_id": 3}),
    )
    .await;
    // As a crash mid-attempt leaves it: claimed, attempt counted, no outcome.
    sql.write(|c| {
        c.execute(
            "UPDATE webhook_deliveries SET state = 'sending', attempts = 1",
            [],
        )?;
        Ok(())
    })
    .await
    .expect("mark sending");

    let running = backchannel::app::start(config, store.clone())
        .await
        .expect("start");
    let got = r.wait_requests(1).await;
    let log = wait_log(&store, hook.id, 1, "delivered", |d| {
        d.state == DeliveryState::Delivered
    })
    .await;
    assert_eq!(log[0].attempts, 2);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("x-backchannel-delivery"),
        log[0].id.to_string()
    );
    running.shutdown().await.expect("shutdown");
    store.close();
}

// ---------------------------------------------------------------------------
// Destinations (SPEC §10): never loopback, private, link-local or metadata
// addresses unless `webhooks.allow_destinations` lists them.

/// Inserts an endpoint straight into the store, as one created before the
/// API refused internal URLs would be.
async fn insert_hook(sql: &common::Sql, url: String) -> i64 {
    sql.write(move |c| {
        c.execute(
            "INSERT INTO webhooks (url, secret, events, created_at) VALUES (?1, 'k', '[]', 0)",
            [url],
        )?;
        Ok(c.last_insert_rowid())
    })
    .await
    .expect("insert webhook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_urls_are_refused_at_creation_over_the_api() {
    use backchannel::model::Role;
    let mut s = server_without_allowance("[webhooks]\ndeliver = false\n").await;
    let admin = make_user(&s, "ada@acme.com", "Ada Admin", Role::Admin).await;
    // (url, what the message must name)
    let cases = [
        (
            "http://127.0.0.1:8080/hook",
            "127.0.0.1 is an internal address",
        ),
        ("http://0x7f000001/hook", "127.0.0.1 is an internal address"),
        ("http://2130706433/hook", "127.0.0.1 is an internal address"),
        ("http://0177.0.0.1/hook", "127.0.0.1 is an internal address"),
        ("http://127.1/hook", "127.0.0.1 is an internal address"),
        ("http://[::1]:8080/hook", "::1 is an internal address"),
        (
            "http://[::ffff:127.0.0.1]/hook",
            "::ffff:127.0.0.1 is an internal address",
        ),
        (
            "http://localhost:8080/hook",
            "localhost is an internal host name",
        ),
        (
            "http://admin.localhost/hook",
            "admin.localhost is an internal host name",
        ),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is an internal address",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata.google.internal is an internal host name",
        ),
        ("http://10.1.2.3/hook", "10.1.2.3 is an internal address"),
        (
            "http://100.64.0.1/hook",
            "100.64.0.1 is an internal address",
        ),
        (
            "http://192.168.1.1/hook",
            "192.168.1.1 is an internal address",
        ),
        ("https://[fd00::1]/hook", "fd00::1 is an internal address"),
        ("https://[fe80::1]/hook", "fe80::1 is an internal address"),
        (
            "gopher://hooks.example.com/",
            "scheme `gopher` is not http or https",
        ),
    ];
    for (url, want) in cases {
        let (st, v) = api_call(
            &s,
            "POST",
            "/api/webhooks",
            &admin,
            Some(json!({"url": url, "secret": "k"})),
        )
        .await;
        assert_eq!(st, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        assert_eq!(v["error"]["code"], "forbidden_destination", "{url}: {v}");
        assert_eq!(v["error"]["field"], "url", "{url}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(want), "{url}: {message}");
    }
    // A name is judged on what it resolves to, at delivery: accepted now.
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/webhooks",
        &admin,
        Some(json!({"url": "https://hooks.example.com/bc", "secret": "k"})),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{v}");
    let listed = s.store.read(webhooks::list).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    s.shutdown().await;

    // What the allow-list names is accepted; the rest is still refused.
    let mut s =
        server_without_allowance(&format!("[webhooks]\ndeliver = false\n{ALLOW_LOOPBACK}")).await;
    let admin = make_user(&s, "ada@acme.com", "Ada Admin", Role::Admin).await;
    for (url, status) in [
        ("http://127.0.0.1:9/hook", reqwest::StatusCode::CREATED),
        ("http://localhost:9/hook", reqwest::StatusCode::CREATED),
        (
            "http://10.0.0.1/hook",
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "http://[::1]:9/hook",
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (st, v) = api_call(
            &s,
            "POST",
            "/api/webhooks",
            &admin,
            Some(json!({"url": url, "secret": "k"})),
        )
        .await;
        assert_eq!(st, status, "{url}: {v}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_endpoint_is_never_contacted_and_never_echoed() {
    // The probe: endpoints on loopback, spelled every way, whose answer
    // (a 500 with a body) would land in the delivery log.
    let r = Receiver::start().await;
    r.fail(100, 500);
    let mut s = server_without_allowance(FAST).await;
    let port = r.addr.port();
    let cases = [
        (format!("http://127.0.0.1:{port}/hook"), "127.0.0.1"),
        (format!("http://0x7f000001:{port}/hook"), "127.0.0.1"),
        (format!("http://2130706433:{port}/hook"), "127.0.0.1"),
        (format!("http://0177.0.0.1:{port}/hook"), "127.0.0.1"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            "::ffff:127.0.0.1",
        ),
        (format!("http://[::1]:{port}/hook"), "::1"),
        (format!("http://localhost:{port}/hook"), "localhost"),
    ];
    let mut hooks = Vec::new();
    for (url, named) in &cases {
        hooks.push((insert_hook(&s.sql, url.clone()).await, url, *named));
    }
    enqueue(&s.store, "parent.woken", json!({"parent": "T-1"})).await;
    for (hook, url, named) in hooks {
        let log = wait_log(&s.store, hook, 1, "failed", |d| {
            d.state == DeliveryState::Failed
        })
        .await;
        let error = log[0].last_error.as_deref().unwrap_or("");
        assert!(
            error.starts_with(&format!("destination refused: {named} is an internal")),
            "{url}: {error}"
        );
        assert_eq!(log[0].attempts, 1, "{url}: refused for good");
        assert_eq!(log[0].last_status, None, "{url}");
        assert!(!error.contains("receiver says no"), "{url}: {error}");
    }
    assert!(r.requests().is_empty(), "the endpoint was contacted");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_judged_on_what_it_resolves_to_at_delivery() {
    // A name accepted at creation that resolves to loopback when delivery
    // comes (DNS rebinding) is refused; a name the allow-list lists by
    // name is delivered to, through the configured DNS.
    let r = Receiver::start().await;
    let dns = FakeDns::start(&[
        (
            "hook.rebind.test",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
        (
            "hook.allowed.test",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
    ])
    .await;
    let mut s = server_without_allowance(&format!(
        "[webhooks]\ntimeout = \"5s\"\nretry_schedule = [\"1h\"]\nallow_destinations = [\"HOOK.allowed.test\"]\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n",
        dns.addr
    ))
    .await;
    let admin = make_user(
        &s,
        "ada@acme.com",
        "Ada Admin",
        backchannel::model::Role::Admin,
    )
    .await;
    let port = r.addr.port();
    let mut ids = Vec::new();
    for name in ["hook.rebind.test", "hook.allowed.test"] {
        let (st, hook) = api_call(
            &s,
            "POST",
            "/api/webhooks",
            &admin,
            Some(json!({"url": format!("http://{name}:{port}/{name}"), "secret": "k"})),
        )
        .await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{name}: {hook}");
        ids.push(hook["id"].as_i64().expect("id"));
    }
    enqueue(&s.store, "sender.verified", json!({"email": "a@b.example"})).await;

    let refused = wait_log(&s.store, ids[0], 1, "refused", |d| {
        d.state == DeliveryState::Failed
    })
    .await;
    assert_eq!(
        refused[0].last_error.as_deref(),
        Some("destination refused: hook.rebind.test resolves to 127.0.0.1 (internal address)")
    );
    assert_eq!(refused[0].attempts, 1);
    wait_log(&s.store, ids[1], 1, "delivered", |d| {
        d.state == DeliveryState::Delivered
    })
    .await;
    let got = r.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/hook.allowed.test");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// Store helpers.

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bc.db")).expect("store");
    (dir, store)
}

#[tokio::test]
async fn create_validates_url_secret_and_event_names() {
    let (_dir, store) = store().await;
    // (url, secret, events, field named in the error)
    let cases: &[(&str, &str, &[&str], &str)] = &[
        ("ftp://example.com/h", "k", &[], "url"),
        ("example.com/h", "k", &[], "url"),
        ("http://", "k", &[], "url"),
        ("https://example.com/h", "", &[], "secret"),
        ("https://example.com/h", "   ", &[], "secret"),
        ("https://example.com/h", "k", &["message.deleted"], "events"),
        (
            "https://example.com/h",
            "k",
            &["message.sent", ""],
            "events",
        ),
    ];
    for &(url, secret, events, field) in cases {
        let (u, k) = (url.to_string(), secret.to_string());
        let ev: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        let err = store
            .write_with(move |c| webhooks::create(c, &u, &k, &ev))
            .await
            .expect_err(&format!("{url} {secret:?} {events:?} should be refused"));
        match err {
            WebhookError::Invalid { field: f, .. } => assert_eq!(f, field, "{url} {events:?}"),
            other => panic!("{url}: expected Invalid, got {other:?}"),
        }
    }
    assert!(store.read(webhooks::list).await.expect("list").is_empty());

    let a = add_hook(
        &store,
        " https://helpdesk.example/hooks/bc ",
        "k",
        &["message.sent", "message.received", "message.sent"],
    )
    .await;
    assert_eq!(a.url, "https://helpdesk.example/hooks/bc");
    assert_eq!(a.events, ["message.sent", "message.received"]);
    assert!(a.active);
    let b = add_hook(&store, "http://127.0.0.1:8081/", "k2", &[]).await;
    let listed = store.read(webhooks::list).await.expect("list");
    assert_eq!(listed, vec![a.clone(), b.clone()]);
    // The secret is write-only: not in what the API would show.
    let shown = serde_json::to_string(&listed).expect("json");
    assert!(!shown.contains("k2"), "{shown}");
    store.close();
}

#[tokio::test]
async fn delivery_log_pages_newest_first_and_delete_cascades() {
    let (_dir, store) = store().await;
    let a = add_hook(&store, "https://a.example/h", "k", &[]).await;
    let b = add_hook(&store, "https://b.example/h", "k", &["parent.woken"]).await;
    for i in 0..5 {
        enqueue(&store, "message.sent", json!({ "n": i })).await;
    }
    enqueue(&store, "parent.woken", json!({})).await;

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .read(move |c| webhooks::deliveries(c, a.id, cursor, 2))
            .await
            .expect("page");
        assert!(page.items.len() <= 2);
        seen.extend(
            page.items
                .iter()
                .map(|d| (d.id, d.payload["data"]["n"].clone())),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let ns: Vec<_> = seen.iter().map(|(_, n)| n.as_i64()).collect();
    assert_eq!(
        ns,
        [None, Some(4), Some(3), Some(2), Some(1), Some(0)],
        "newest first: parent.woken, then message.sent 4 … 0"
    );
    assert!(seen.windows(2).all(|w| w[0].0 > w[1].0));
    let first = &log(&store, a.id).await[0];
    assert_eq!(first.state, DeliveryState::Queued);
    assert_eq!(first.attempts, 0);
    assert_eq!(log(&store, b.id).await.len(), 1);

    store
        .write(move |c| webhooks::delete(c, a.id))
        .await
        .expect("delete");
    let left: i64 = common::Sql::at(_dir.path().join("bc.db"))
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM webhook_deliveries", [], |r| r.get(0))?))
        .await
        .expect("count");
    assert_eq!(left, 1, "only the other endpoint's delivery remains");
    assert_eq!(
        store.write(move |c| webhooks::delete(c, a.id)).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store
            .read(move |c| webhooks::deliveries(c, a.id, None, 10))
            .await
            .map(|p| p.items.len()),
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.read(move |c| webhooks::get(c, a.id)).await,
        Err(StoreError::NotFound)
    );
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_get_tls_with_certificate_checks() {
    let mut s = server("[webhooks]\nretry_schedule = [\"1h\"]\n").await;
    // A TLS receiver whose certificate no public root vouches for.
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handshakes = Arc::new(AtomicUsize::new(0));
    let seen = handshakes.clone();
    let tls = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = acceptor.accept(tcp).await;
        }
    });

    let hook = add_hook(&s.store, &format!("https://{addr}/hook"), "k", &[]).await;
    enqueue(&s.store, "message.sent", json!({})).await;
    let log = wait_log(&s.store, hook.id, 1, "deferred", |d| {
        d.state == DeliveryState::Deferred
    })
    .await;
    let error = log[0].last_error.as_deref().unwrap_or("");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(log[0].last_status, None);
    assert!(handshakes.load(Ordering::SeqCst) >= 1);
    tls.abort();
    s.shutdown().await;
}
