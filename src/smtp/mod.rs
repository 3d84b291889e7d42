//! The inbound SMTP listener (SPEC §4, acceptance): tokio accept loop with
//! connection limits, per-session state machine (`session`), smtp-proto as
//! the command parser, replies in `reply`, recipient policy in `policy`,
//! the DATA state machine in `data`, STARTTLS with rustls.
//!
//! mailin-embedded was evaluated and rejected for this: its parser refuses
//! `MAIL FROM:<>` and `SIZE=`, it serves only as many connections as pool
//! threads, stays in DATA after an error reply and cannot be shut down.

pub mod data;
pub mod policy;
pub mod quota;
pub mod reply;
mod session;
pub mod submission;
mod submission_session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::Config;
use crate::limits::Limits;
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;
use session::{Outcome, Session};

/// State shared by every session of one listener.
pub(crate) struct Shared {
    config: Arc<Config>,
    store: Store,
    tls: Option<TlsAcceptor>,
    active: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    next_session: AtomicU64,
    /// Woken after every committed message (the ingest worker waits on it).
    committed: Arc<Notify>,
    /// Per-address abuse limits: connection rate, failed recipients.
    limits: Arc<Limits>,
    /// Tokens of side conversations already found at RCPT.
    known_tokens: KnownTokens,
    /// Messages and bytes per envelope sender and hour.
    sender_quota: quota::SenderQuota,
}

/// Tokens the store has accepted at RCPT. A side conversation and its
/// token are never deleted, so a token once found stays valid: vendors
/// replying to the same threads are answered without a store round trip
/// per recipient. An entry is trusted for [`KnownTokens::FRESH`] only, so a
/// thread that reaches its quota (`ingest.max_thread_*`) is refused soon
/// after. Unknown tokens are always looked up (nothing negative is kept),
/// and the set is emptied when it reaches its size.
#[derive(Default)]
struct KnownTokens(Mutex<HashMap<String, std::time::Instant>>);

impl KnownTokens {
    const MAX: usize = 100_000;
    const FRESH: std::time::Duration = std::time::Duration::from_secs(2);

    fn contains(&self, token: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|map| map.get(token).is_some_and(|at| at.elapsed() < Self::FRESH))
    }

    fn insert(&self, token: &str) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(token.to_string(), std::time::Instant::now());
        }
    }
}

/// The SMTP server of one gateway.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        committed: Arc<Notify>,
        limits: Arc<Limits>,
    ) -> anyhow::Result<Server> {
        let tls = match &config.smtp.tls {
            Some(files) => Some(crate::net::tls::acceptor(files).context("SMTP TLS certificate")?),
            None => None,
        };
        describe_metrics();
        let sender_quota = quota::SenderQuota::new(
            config.smtp.max_messages_per_sender_per_hour,
            config.smtp.max_bytes_per_sender_per_hour,
            config.limits.max_tracked_ips,
        );
        Ok(Server {
            shared: Arc::new(Shared {
                config,
                store,
                tls,
                active: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
                next_session: AtomicU64::new(1),
                committed,
                limits,
                known_tokens: KnownTokens::default(),
                sender_quota,
            }),
        })
    }

    /// Accepts connections until `shutdown`; then stops accepting, lets
    /// sessions in DATA finish within `smtp.shutdown_grace` and answers the
    /// others `421`.
    pub async fn run(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let grace = self.shared.config.smtp.shutdown_grace + Duration::from_secs(5);
        crate::net::accept::serve(
            "SMTP",
            listener,
            &shutdown,
            grace,
            |stream, peer, sessions| self.admit(stream, peer, &shutdown, sessions),
        )
        .await;
        Ok(())
    }

    /// Runs one session on an already-connected byte stream as if it had
    /// come from `peer`, bypassing the accept loop and its connection
    /// limits. The fuzz targets (`fuzz/`) drive the real session code over
    /// an in-memory duplex through this; the listener uses the same path.
    pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: SocketAddr,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        serve_connection(&self.shared, stream, peer, shutdown).await
    }

    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: &Shutdown,
        sessions: &mut JoinSet<()>,
    ) {
        let cfg = &self.shared.config.smtp;
        let ip = peer.ip();
        // An address blocked for guessing recipients, or connecting too
        // often, is told to come back later before anything else.
        if let Err(wait) = self.shared.limits.smtp_rcpt.check(ip) {
            metrics::inc("smtp_connections_refused_total", &[("reason", "blocked")]);
            tracing::debug!(peer = %peer, retry_after = wait.secs(), "refused a blocked address");
            tokio::spawn(refuse(stream, reply::blocked()));
            return;
        }
        if self.shared.limits.smtp_connections.acquire(ip).is_err() {
            metrics::inc("smtp_connections_refused_total", &[("reason", "rate")]);
            tokio::spawn(refuse(stream, reply::connection_rate()));
            return;
        }
        if self.shared.active.load(Ordering::SeqCst) >= cfg.max_connections {
            metrics::inc(
                "smtp_connections_refused_total",
                &[("reason", "max_connections")],
            );
            tokio::spawn(refuse(stream, reply::too_many_connections()));
            return;
        }
        {
            let Ok(mut per_ip) = self.shared.per_ip.lock() else {
                return;
            };
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= cfg.max_connections_per_ip {
                metrics::inc("smtp_connections_refused_total", &[("reason", "per_ip")]);
                tokio::spawn(refuse(stream, reply::too_many_from_ip()));
                return;
            }
            *n += 1;
        }
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        let guard = ConnGuard {
            shared: self.shared.clone(),
            ip,
        };
        let id = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("smtp", session = id, peer = %peer);
        let shared = self.shared.clone();
        let shutdown = shutdown.clone();
        sessions.spawn(
            async move {
                let _guard = guard;
                metrics::inc("smtp_sessions_total", &[]);
                metrics::gauge_add("smtp_sessions_active", &[], 1);
                let _ = stream.set_nodelay(true);
                if let Err(e) = serve_connection(&shared, stream, peer, shutdown).await {
                    tracing::debug!(error = %e, "session ended with an I/O error");
                }
                metrics::gauge_add("smtp_sessions_active", &[], -1);
            }
            .instrument(span),
        );
    }
}

/// Releases a connection's slots when its session ends, however it ends.
struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut per_ip) = self.shared.per_ip.lock()
            && let Some(n) = per_ip.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, r: reply::Reply) {
    let mut out = Vec::new();
    r.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut stream: S,
    peer: SocketAddr,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut session = Session::new(shared, peer, shutdown);
    session.greet();
    match session.run(&mut stream).await? {
        Outcome::Close => return Ok(()),
        Outcome::StartTls => {}
    }
    let Some(acceptor) = shared.tls.clone() else {
        return Ok(());
    };
    let handshake = tokio::time::timeout(
        shared.config.smtp.tls_handshake_timeout,
        acceptor.accept(stream),
    )
    .await;
    let mut tls_stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::inc("smtp_tls_handshakes_total", &[("result", "failed")]);
            tracing::info!(error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            metrics::inc("smtp_tls_handshakes_total", &[("result", "timeout")]);
            return Ok(());
        }
    };
    metrics::inc("smtp_tls_handshakes_total", &[("result", "ok")]);
    session.reset_for_tls();
    session.run(&mut tls_stream).await?;
    Ok(())
}

fn describe_metrics() {
    metrics::describe("smtp_sessions_total", "SMTP sessions started");
    metrics::describe("smtp_sessions_active", "SMTP sessions open now");
    metrics::describe(
        "smtp_connections_refused_total",
        "SMTP connections refused by a limit",
    );
    metrics::describe("smtp_commands_total", "SMTP commands received, by command");
    metrics::describe("smtp_replies_total", "SMTP replies sent, by class");
    metrics::describe("smtp_rcpt_total", "RCPT outcomes");
    metrics::describe(
        "smtp_messages_accepted_total",
        "Messages committed and answered 250",
    );
    metrics::describe(
        "smtp_messages_rejected_total",
        "Messages refused after MAIL, by reason",
    );
    metrics::describe("smtp_bytes_accepted_total", "Bytes of accepted messages");
    metrics::describe(
        "smtp_commit_seconds",
        "Time from end of DATA to durable commit",
    );
    metrics::describe(
        "smtp_tls_handshakes_total",
        "STARTTLS handshakes, by result",
    );
    metrics::describe(
        "smtp_tarpit_seconds",
        "Delays added to failed RCPT replies (the tarpit)",
    );
    metrics::describe(
        "smtp_sessions_cut_total",
        "Sessions closed by an abuse limit, by reason",
    );
}
