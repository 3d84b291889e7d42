//! The submission listener (SPEC §12): agents' own mail clients send here,
//! authenticated by their email and API token. It is never a relay: what an
//! agent sends becomes a follow-up in one side conversation or starts one
//! on a parent ticket, decided by `conversations::agent_mail` (the rules
//! live there, not here); this door only speaks SMTP — STARTTLS, AUTH
//! PLAIN/LOGIN, the envelope checks it can make before the message
//! arrives, the size cap — and shares the inbound listener's parser,
//! replies, DATA state machine, relay-trick detection and accept loop.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::reply;
use super::submission_session::{Outcome, Session};
use crate::config::Config;
use crate::conversations::Conversations;
use crate::limits::{ConnectionSlot, Limits};
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// State shared by every session of the submission listener.
pub(super) struct Shared {
    pub(super) config: Arc<Config>,
    pub(super) store: Store,
    pub(super) conversations: Conversations,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) limits: Arc<Limits>,
    active: AtomicUsize,
    next_session: AtomicU64,
}

/// The submission server of one gateway.
pub struct SubmissionServer {
    shared: Arc<Shared>,
}

/// Whether AUTH may be offered and used in the clear: only after STARTTLS,
/// or from this machine (a loopback peer, IPv4-mapped included).
pub fn plaintext_auth_allowed(tls: bool, peer: IpAddr) -> bool {
    tls || peer.to_canonical().is_loopback()
}

impl SubmissionServer {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        conversations: Conversations,
        limits: Arc<Limits>,
    ) -> anyhow::Result<SubmissionServer> {
        let tls = match &config.submission.tls {
            Some(files) => {
                Some(crate::net::tls::acceptor(files).context("submission TLS certificate")?)
            }
            None => None,
        };
        describe_metrics();
        Ok(SubmissionServer {
            shared: Arc::new(Shared {
                config,
                store,
                conversations,
                tls,
                limits,
                active: AtomicUsize::new(0),
                next_session: AtomicU64::new(1),
            }),
        })
    }

    /// Accepts connections until `shutdown`; sessions then get
    /// `submission.shutdown_grace` to end (a message in DATA may finish:
    /// it is sent in one transaction or not at all).
    pub async fn run(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let grace = self.shared.config.submission.shutdown_grace;
        crate::net::accept::serve(
            "submission",
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
    /// limits: how tests show what a remote (non-loopback) client is
    /// offered; the listener uses the same path.
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
        let ip = peer.ip();
        let refused = |reason: &'static str, r: reply::Reply, stream: TcpStream| {
            metrics::inc(
                "submission_connections_refused_total",
                &[("reason", reason)],
            );
            tokio::spawn(super::refuse(stream, r));
        };
        if self.shared.limits.submission_rate.acquire(ip).is_err() {
            return refused("rate", reply::connection_rate(), stream);
        }
        let cfg = &self.shared.config.submission;
        if self.shared.active.load(Ordering::SeqCst) >= cfg.max_connections {
            return refused("max_connections", reply::too_many_connections(), stream);
        }
        let Some(slot) = self.shared.limits.submission_connections.acquire(ip) else {
            return refused("per_ip", reply::too_many_from_ip(), stream);
        };
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        let guard = ConnGuard {
            shared: self.shared.clone(),
            _slot: slot,
        };
        let id = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("submission", session = id, peer = %peer);
        let shared = self.shared.clone();
        let shutdown = shutdown.clone();
        sessions.spawn(
            async move {
                let _guard = guard;
                metrics::inc("submission_sessions_total", &[]);
                metrics::gauge_add("submission_sessions_active", &[], 1);
                let _ = stream.set_nodelay(true);
                if let Err(e) = serve_connection(&shared, stream, peer, shutdown).await {
                    tracing::debug!(error = %e, "session ended with an I/O error");
                }
                metrics::gauge_add("submission_sessions_active", &[], -1);
            }
            .instrument(span),
        );
    }
}

/// Releases a connection's places when its session ends, however it ends.
struct ConnGuard {
    shared: Arc<Shared>,
    _slot: ConnectionSlot,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
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
    let timeout = shared.config.submission.tls_handshake_timeout;
    let mut tls_stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::inc("submission_tls_handshakes_total", &[("result", "failed")]);
            tracing::info!(error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            metrics::inc("submission_tls_handshakes_total", &[("result", "timeout")]);
            return Ok(());
        }
    };
    metrics::inc("submission_tls_handshakes_total", &[("result", "ok")]);
    session.reset_for_tls();
    session.run(&mut tls_stream).await?;
    Ok(())
}

/// How long a failed AUTH waits before its answer.
pub(super) fn auth_failure_delay(config: &Config) -> Duration {
    config.submission.auth_failure_delay
}

fn describe_metrics() {
    metrics::describe("submission_sessions_total", "Submission sessions started");
    metrics::describe("submission_sessions_active", "Submission sessions open now");
    metrics::describe(
        "submission_connections_refused_total",
        "Submission connections refused by a limit, by reason",
    );
    metrics::describe(
        "submission_auth_total",
        "Submission AUTH attempts, by result",
    );
    metrics::describe(
        "submission_messages_total",
        "Messages submitted by agents, by result (sent, started, duplicate, refused, size, failed)",
    );
    metrics::describe(
        "submission_tls_handshakes_total",
        "Submission STARTTLS handshakes, by result",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_auth_only_after_starttls_or_from_loopback() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(plaintext_auth_allowed(false, ip("127.0.0.1")));
        assert!(plaintext_auth_allowed(false, ip("127.8.9.10")));
        assert!(plaintext_auth_allowed(false, ip("::1")));
        assert!(plaintext_auth_allowed(false, ip("::ffff:127.0.0.1")));
        for remote in [
            "203.0.113.5",
            "10.0.0.2",
            "2001:db8::1",
            "::ffff:203.0.113.5",
        ] {
            assert!(!plaintext_auth_allowed(false, ip(remote)), "{remote}");
            assert!(
                plaintext_auth_allowed(true, ip(remote)),
                "{remote} over TLS"
            );
        }
    }
}
