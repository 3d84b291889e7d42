//! The accept loop of the gateway's own TCP listeners (SMTP, IMAP): take
//! connections until shutdown, hand each to the door's `admit`, then give
//! the sessions a grace period to finish before the rest are aborted.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;

/// Accepts on `listener` until `shutdown`, passing each connection to
/// `admit` (which refuses it or spawns its session on the set). Then stops
/// accepting, waits up to `grace` for the sessions and aborts what is left.
/// `name` labels the log lines ("SMTP", "IMAP").
pub async fn serve<F>(
    name: &'static str,
    listener: TcpListener,
    shutdown: &Shutdown,
    grace: Duration,
    mut admit: F,
) where
    F: FnMut(TcpStream, SocketAddr, &mut JoinSet<()>),
{
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Reap finished sessions so the set stays small.
                    while sessions.try_join_next().is_some() {}
                    admit(stream, peer, &mut sessions);
                }
                Err(e) => {
                    // Usually out of file descriptors: back off briefly.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = name,
            left = sessions.len(),
            "aborting sessions past the grace period"
        );
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
}
