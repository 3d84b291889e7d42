//! SMTP session: arbitrary bytes from a client in, replies out. Drives the
//! real session code (`smtp::Server::serve_stream`, the same path the
//! listener takes after accept) over an in-memory duplex, against a real
//! store. Checks: no panic, no hang (libFuzzer's -timeout), the session ends
//! when the client closes, every reply is well formed, the first one is the
//! 220 greeting, and each `250 … queued as N` matches exactly one message
//! committed to the inbound queue during this input.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use backchannel::shutdown::Shutdown;
use backchannel::smtp::Server;
use backchannel_fuzz::{Gateway, replies_well_formed};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    gw: Gateway,
    server: Server,
    shutdown: Shutdown,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let gw = Gateway::new();
        let server = Server::new(
            gw.config.clone(),
            gw.store.clone(),
            Arc::new(tokio::sync::Notify::new()),
            gw.limits.clone(),
        )
        .expect("SMTP server");
        let shutdown = gw.shutdown.clone();
        Harness {
            gw,
            server,
            shutdown,
        }
    })
}

fn queued_rows(h: &Harness) -> i64 {
    h.gw.rt
        .block_on(h.gw.store.read(backchannel::store::inbound::count))
        .expect("count inbound_queue")
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let before = queued_rows(h);
    // Loopback: the default limits.exempt spares it the RCPT tarpit, which
    // would otherwise slow every input with a refused recipient.
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("peer");
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    let out = h.gw.rt.block_on(async {
        let session = h.server.serve_stream(server_side, peer, h.shutdown.clone());
        let talk = async move {
            let (mut rd, mut wr) = tokio::io::split(client);
            let write = async move {
                // The session may close first (QUIT, too many errors): a
                // refused write is expected then.
                let _ = wr.write_all(data).await;
                let _ = wr.shutdown().await;
            };
            let read = async move {
                let mut out = Vec::new();
                let _ = rd.read_to_end(&mut out).await;
                out
            };
            tokio::join!(write, read).1
        };
        let (_ended, out) = tokio::join!(session, talk);
        out
    });
    let after = queued_rows(h);
    let n = match replies_well_formed(&out) {
        Ok(n) => n,
        Err(e) => panic!("{e}\nwhole output: {:?}", String::from_utf8_lossy(&out)),
    };
    assert!(n >= 1, "no greeting");
    assert!(out.starts_with(b"220 "), "first reply is not the greeting");
    let acks = out
        .split(|b| *b == b'\n')
        .filter(|l| {
            l.strip_prefix(b"250 2.0.0 OK: queued as ")
                .and_then(|r| r.strip_suffix(b"\r"))
                .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
        })
        .count() as i64;
    assert_eq!(
        acks,
        after - before,
        "messages acknowledged vs committed differ\nwhole output: {:?}",
        String::from_utf8_lossy(&out)
    );
});
