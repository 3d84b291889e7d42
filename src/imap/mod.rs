//! IMAP: the agent view served over IMAP4rev1 (SPEC §9).
//!
//! `mime` and `thread` are pure (bytes in, imap-types values out, no I/O): the message-structure
//! layer the server calls for ENVELOPE, BODY/BODYSTRUCTURE, BODY[section] and THREAD.
//!
//! The server: a tokio accept loop with connection limits (server-wide and
//! per address) and implicit TLS when a certificate is configured
//! (`mod.rs`); the I/O driver around imap-next's protocol state machine
//! (`conn`); the session state machine and its commands (`session`); the
//! selected mailbox's in-memory sequence map kept current from the store's
//! change records (`selected`); FETCH and STORE (`fetch`), SEARCH
//! (`search`), mailbox names and LIST patterns (`names`). Everything is
//! read through `store::view`.

pub mod mime;
pub mod thread;

mod conn;
mod fetch;
pub mod names;
mod search;
mod selected;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::Config;
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// State shared by every session of one listener.
pub(crate) struct Shared {
    config: Arc<Config>,
    store: Store,
    tls: Option<TlsAcceptor>,
    /// `imap_login`: failed LOGIN/AUTHENTICATE per address.
    limits: Arc<crate::limits::Limits>,
    active: AtomicUsize,
    next_session: AtomicU64,
    /// ENVELOPE and RFC822.SIZE of messages already fetched once.
    summaries: Arc<fetch::Summaries>,
}

/// The IMAP server of one gateway.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        limits: Arc<crate::limits::Limits>,
    ) -> anyhow::Result<Server> {
        let tls = match &config.imap.tls {
            Some(files) => Some(crate::net::tls::acceptor(files).context("IMAP TLS certificate")?),
            None => None,
        };
        describe_metrics();
        Ok(Server {
            shared: Arc::new(Shared {
                config,
                store,
                tls,
                limits,
                active: AtomicUsize::new(0),
                next_session: AtomicU64::new(1),
                summaries: Arc::new(fetch::Summaries::default()),
            }),
        })
    }

    /// Accepts connections until `shutdown`; then stops accepting and
    /// gives sessions `imap.shutdown_grace` to say `BYE` and close (they
    /// are told as soon as their current command is done).
    pub async fn run(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let grace = self.shared.config.imap.shutdown_grace;
        crate::net::accept::serve(
            "IMAP",
            listener,
            &shutdown,
            grace,
            |stream, peer, sessions| self.admit(stream, peer, &shutdown, sessions),
        )
        .await;
        Ok(())
    }

    /// Runs one session (no TLS) on an already-connected byte stream as if
    /// it had come from `peer`, bypassing the accept loop and its connection
    /// limit. The `imap_command` fuzz target (`fuzz/`) drives the real
    /// session code over an in-memory duplex through this.
    pub async fn serve_stream<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: SocketAddr,
        shutdown: Shutdown,
    ) {
        session::run(&self.shared, stream, peer, false, shutdown).await
    }

    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: &Shutdown,
        sessions: &mut JoinSet<()>,
    ) {
        // One address over its own cap is told so first: the server-wide
        // cap must stay reachable for everyone else.
        let Some(per_ip) = self.shared.limits.imap_connections.acquire(peer.ip()) else {
            metrics::inc("imap_connections_refused_total", &[("reason", "per_ip")]);
            tracing::debug!(peer = %peer, "refused: too many connections from the address");
            let tls = self.shared.tls.clone();
            tokio::spawn(refuse(stream, tls, TOO_MANY_FROM_IP));
            return;
        };
        if self.shared.active.load(Ordering::SeqCst) >= self.shared.config.imap.max_connections {
            metrics::inc(
                "imap_connections_refused_total",
                &[("reason", "max_connections")],
            );
            let tls = self.shared.tls.clone();
            tokio::spawn(refuse(stream, tls, TOO_MANY));
            return;
        }
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        let guard = ConnGuard {
            shared: self.shared.clone(),
            _per_ip: per_ip,
        };
        let id = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("imap", session = id, peer = %peer);
        let shared = self.shared.clone();
        let shutdown = shutdown.clone();
        sessions.spawn(
            async move {
                let _guard = guard;
                metrics::inc("imap_sessions_total", &[]);
                metrics::gauge_add("imap_sessions_active", &[], 1);
                serve_connection(&shared, stream, peer, shutdown).await;
                metrics::gauge_add("imap_sessions_active", &[], -1);
            }
            .instrument(span),
        );
    }
}

/// Releases a connection's slots when its session ends, however it ends.
struct ConnGuard {
    shared: Arc<Shared>,
    _per_ip: crate::limits::ConnectionSlot,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

const TOO_MANY: &[u8] = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n";
const TOO_MANY_FROM_IP: &[u8] =
    b"* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n";

/// Tells a connection over a limit why it is closed (over TLS when the
/// listener is TLS, or the client would only see a failed handshake).
async fn refuse(mut stream: TcpStream, tls: Option<TlsAcceptor>, bye: &'static [u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        match tls {
            None => {
                stream.write_all(bye).await?;
                stream.shutdown().await
            }
            Some(acceptor) => {
                let mut s = acceptor.accept(stream).await?;
                s.write_all(bye).await?;
                s.shutdown().await
            }
        }
    })
    .await;
}

async fn serve_connection(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    match shared.tls.clone() {
        None => session::run(shared, stream, peer, false, shutdown).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(
                shared.config.imap.tls_handshake_timeout,
                acceptor.accept(stream),
            )
            .await;
            match handshake {
                Ok(Ok(tls_stream)) => {
                    metrics::inc("imap_tls_handshakes_total", &[("result", "ok")]);
                    session::run(shared, tls_stream, peer, true, shutdown).await
                }
                Ok(Err(e)) => {
                    metrics::inc("imap_tls_handshakes_total", &[("result", "failed")]);
                    tracing::info!(error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics::inc("imap_tls_handshakes_total", &[("result", "timeout")]);
                }
            }
        }
    }
}

fn describe_metrics() {
    metrics::describe("imap_sessions_total", "IMAP sessions started");
    metrics::describe("imap_sessions_active", "IMAP sessions open now");
    metrics::describe(
        "imap_connections_refused_total",
        "IMAP connections refused by a limit",
    );
    metrics::describe("imap_commands_total", "IMAP commands received, by command");
    metrics::describe("imap_logins_total", "IMAP logins, by result");
    metrics::describe(
        "imap_sessions_cut_total",
        "IMAP sessions closed by a limit, by reason",
    );
    metrics::describe(
        "imap_tls_handshakes_total",
        "IMAP TLS handshakes, by result",
    );
}
