//! The HTTP listener's limits: at most `http.max_connections` connections
//! at once (more wait in the kernel's backlog until one closes), at most
//! `http.max_connections_per_ip` of them from one address (one more is
//! answered `429 {"error":{"code":"too_many_connections"}}` with
//! `Connection: close` and closed, so one address cannot take every slot
//! and starve the others), and each connection closed after
//! `http.idle_timeout` without a byte in either direction — which ends idle
//! keep-alives, while a long response the server keeps writing (a JMAP
//! EventSource stream with its pings) stays open —, and a request's headers
//! must be complete within `http.idle_timeout` of the connection opening or
//! of the server's last write, however their bytes are spread: a client
//! sending a byte a second (slowloris) is cut; a head already received
//! counts even when the server, busy, reads it after the deadline. While a
//! request is in progress (its head read, its response not yet begun) the
//! idle clock is off: the request body and the handler are bounded by
//! `http.request_timeout` (the router's deadline layer), so a handler
//! slower than the idle timeout on a loaded machine is not cut mid-request,
//! and a body that trickles or stops is answered 503 when that deadline
//! passes.
//!
//! Closing, the server lingers: it ends its side (FIN after the response)
//! and reads and discards what the client still sends, until the client
//! closes, sends nothing for [`LINGER`], or `http.idle_timeout` has passed
//! since it began. A response sent before the whole request body was read
//! — `413` for an upload past the limit — thus reaches the client instead
//! of being lost to the reset a close with unread input would send.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::limits::{ConnectionCap, ConnectionSlot};
use crate::metrics;

/// The client's address, for handlers (`ConnectInfo<ClientAddr>`): what the
/// abuse limits count by.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// The client's IP address of a request, when the server was started with
/// [`ClientAddr`] connect info (requests built in tests have none).
pub fn client_ip(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0.ip())
}

/// How long a closing connection waits for more of the client's input
/// before it stops reading and discarding it.
pub const LINGER: Duration = Duration::from_secs(2);

/// Reads per poll while lingering before yielding to other tasks.
const LINGER_READS_PER_POLL: usize = 32;

/// Connections over the per-address cap being answered at once; beyond
/// this a refused connection is closed without an answer, so a flood of
/// them costs no more than this many tasks.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

pub struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
    per_ip: Option<Arc<ConnectionCap>>,
    refusals: Arc<Semaphore>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max_connections: usize, idle: Duration) -> Self {
        metrics::describe(
            "http_connections_refused_total",
            "HTTP connections refused by a limit, by reason",
        );
        LimitedListener {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            idle,
            per_ip: None,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
        }
    }

    /// Caps the connections one address holds open at once.
    pub fn with_per_ip_cap(mut self, cap: Arc<ConnectionCap>) -> Self {
        self.per_ip = Some(cap);
        self
    }

    /// Answers a connection over the per-address cap, off the accept loop.
    fn refuse(&self, stream: TcpStream) {
        metrics::inc("http_connections_refused_total", &[("reason", "per_ip")]);
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            // Too many being answered already: close this one at once.
            Err(_) => drop(stream),
        }
    }
}

/// The answer to a connection over `http.max_connections_per_ip`.
fn too_many_from_ip() -> Vec<u8> {
    let body = r#"{"error":{"code":"too_many_connections","message":"too many connections from your address; close one or try again later"}}"#;
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes the 429, ends the server's side, then reads and drops what the
/// client sends (its request) until it closes, at most [`LINGER`] in all:
/// closing with its request unread would reset the connection and could
/// lose the answer.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all(&too_many_from_ip()).await?;
        stream.shutdown().await?;
        let mut scratch = [0u8; 4096];
        while stream.read(&mut scratch).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

/// A connection holding its slot until it is dropped.
pub struct LimitedStream {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Armed while a request's headers are awaited.
    headers: HeaderClock,
    /// Set once the server started closing: the end of the lingering.
    linger: Option<Pin<Box<Sleep>>>,
    /// A read left pending while a request was in progress, when no clock
    /// runs: the response arms the head clock again, and that read must be
    /// polled again to wait on it — else a kept-alive connection whose
    /// server had read ahead while answering would never be cut for
    /// idleness.
    read_waker: Option<Waker>,
    _slot: OwnedSemaphorePermit,
    _per_ip: Option<ConnectionSlot>,
}

/// Watches the byte stream for the end of a request head (`CRLF CRLF`) and
/// holds the deadline for it.
struct HeaderClock {
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    /// How much of `\r\n\r\n` the bytes read so far end with.
    matched: usize,
    /// HTTP/2 (prior knowledge) has no text head to watch: off for good.
    disabled: bool,
    seen_any: bool,
}

impl HeaderClock {
    fn new(limit: Duration) -> Self {
        HeaderClock {
            deadline: Box::pin(tokio::time::sleep(limit)),
            armed: true,
            matched: 0,
            disabled: false,
            seen_any: false,
        }
    }

    fn expired(&self) -> bool {
        self.armed && !self.disabled && self.deadline.is_elapsed()
    }

    /// Feeds bytes the client sent.
    fn read(&mut self, bytes: &[u8]) {
        if !self.seen_any && !bytes.is_empty() {
            self.seen_any = true;
            if bytes.starts_with(b"PRI ") {
                self.disabled = true;
            }
        }
        if !self.armed || self.disabled {
            return;
        }
        const END: &[u8] = b"\r\n\r\n";
        for &b in bytes {
            self.matched = if b == END[self.matched] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == END.len() {
                self.armed = false;
                self.matched = 0;
                return;
            }
        }
    }

    /// The server wrote a response (not an interim `1xx`): the next
    /// request's head is due within `limit`.
    fn wrote(&mut self, bytes: &[u8], limit: Duration) {
        if self.disabled || bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 1") {
            return;
        }
        self.armed = true;
        self.matched = 0;
        self.deadline.as_mut().reset(Instant::now() + limit);
    }
}

fn too_slow() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the request head did not arrive within the idle timeout",
    )
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Wait for a free slot before taking the next connection.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed; keep serving regardless.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let per_ip = match &self.per_ip {
                        None => None,
                        Some(cap) => match cap.acquire(addr.ip()) {
                            Some(held) => Some(held),
                            None => {
                                // The global slot goes back at once: others
                                // are served while this one is answered.
                                drop(slot);
                                tracing::debug!(peer = %addr, "refused: too many connections from the address");
                                self.refuse(stream);
                                continue;
                            }
                        },
                    };
                    let _ = stream.set_nodelay(true);
                    return (
                        LimitedStream {
                            inner: stream,
                            idle: self.idle,
                            deadline: Box::pin(tokio::time::sleep(self.idle)),
                            headers: HeaderClock::new(self.idle),
                            linger: None,
                            read_waker: None,
                            _slot: slot,
                            _per_ip: per_ip,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    // Usually out of file descriptors: back off briefly.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    drop(slot);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl LimitedStream {
    /// Traffic happened: the idle deadline starts again.
    fn touch(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// The server wrote `first` (the start of what it wrote): traffic, and
    /// maybe a response that arms the head clock for the next request.
    fn wrote(&mut self, first: &[u8]) {
        self.touch();
        let idle = self.idle;
        let was_armed = self.headers.armed;
        self.headers.wrote(first, idle);
        if !was_armed
            && self.headers.armed
            && let Some(waker) = self.read_waker.take()
        {
            waker.wake();
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                    let this = &mut *self;
                    this.headers.read(&buf.filled()[before..]);
                }
                // Bytes that arrived are honoured, however late the server
                // reads them; a head still incomplete past its deadline is not.
                if self.headers.expired() {
                    return Poll::Ready(Err(too_slow()));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.headers.disabled {
                    // HTTP/2: only the idle clock below.
                } else if self.headers.armed {
                    if self.headers.deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(too_slow()));
                    }
                } else {
                    // A request is in progress (head read, no response
                    // yet): `http.request_timeout` bounds it, not idleness.
                    self.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no data from the client within the idle timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.wrote(&buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Ends the server's side, then lingers (module docs): reads and drops
    /// the client's input until it closes, errs, or the linger time passes.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER.min(this.idle))));
            // The whole lingering is capped by the idle timeout.
            let cap = Instant::now() + this.idle;
            this.deadline.as_mut().reset(cap);
        }
        let Some(quiet) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 16 * 1024];
        for _ in 0..LINGER_READS_PER_POLL {
            if quiet.as_mut().poll(cx).is_ready() || this.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let next = Instant::now() + LINGER.min(this.idle);
                    quiet.as_mut().reset(next);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A client still sending fast: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            self.wrote(first);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_header_clock_finds_the_end_of_a_head_across_reads() {
        let limit = Duration::from_secs(60);
        let mut c = HeaderClock::new(limit);
        for chunk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r"[..], b"\n"] {
            assert!(c.armed);
            c.read(chunk);
        }
        assert!(!c.armed, "head complete across two reads");
        // A body with blank lines does not re-arm it; only a response does.
        c.read(b"\r\n\r\nmore");
        assert!(!c.armed);
        c.wrote(b"HTTP/1.1 100 Continue\r\n\r\n", limit);
        assert!(!c.armed, "an interim answer is not the end of the request");
        c.wrote(b"HTTP/1.1 200 OK\r\n", limit);
        assert!(c.armed);
        c.read(b"GET / HTTP/1.1\r\n\r\r\n\r\n");
        assert!(!c.armed, "\\r\\r\\n\\r\\n still ends a head");
    }

    #[tokio::test]
    async fn http2_prior_knowledge_is_not_watched() {
        let mut c = HeaderClock::new(Duration::from_secs(60));
        c.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        c.wrote(b"\x00\x00\x00\x04", Duration::from_secs(60));
        assert!(c.disabled);
        assert!(!c.expired());
    }
}
