//! IMAP command handling: arbitrary bytes from a client, through the real
//! IMAP session (`imap::Server::serve_stream`, the code the listener runs
//! after accept) over an in-memory duplex, against the seeded store of
//! [`backchannel_fuzz::Api`] (a thread with inbound and outbound mail, so
//! SELECT, FETCH, SEARCH, STORE and THREAD have messages to work on).
//! `$K` in the input is replaced by the member's API token (the IMAP
//! password), `$O` by the owner's; the peer is on loopback, which the
//! default limits leave alone, and the fuzz config sets
//! `imap.login_failure_delay` to zero (a failed LOGIN would otherwise cost
//! each such input a second).
//!
//! Checks: no panic, no hang (libFuzzer's -timeout), the session ends when
//! the client closes, the greeting comes first, and every response line
//! starts with `*`, `+` or a tag the client sent (literal data aside).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use backchannel::imap::Server;
use backchannel_fuzz::Api;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    api: Api,
    server: Server,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let api = Api::new();
        let server = Server::new(
            api.gw.config.clone(),
            api.gw.store.clone(),
            api.gw.limits.clone(),
        )
        .expect("IMAP server");
        Harness { api, server }
    })
}

fn substitute(data: &[u8], subs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    'outer: while i < data.len() {
        for (from, to) in subs {
            if data[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
                continue 'outer;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let input = substitute(
        data,
        &[
            (&b"$K"[..], h.api.tokens[2].as_bytes()),
            (&b"$O"[..], h.api.tokens[0].as_bytes()),
        ],
    );
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("peer");
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    let out = h.api.gw.rt.block_on(async {
        let session = h
            .server
            .serve_stream(server_side, peer, h.api.gw.shutdown.clone());
        let input = &input;
        let talk = async move {
            let (mut rd, mut wr) = tokio::io::split(client);
            let write = async move {
                let _ = wr.write_all(input).await;
                let _ = wr.shutdown().await;
            };
            let read = async move {
                let mut out = Vec::new();
                let _ = rd.read_to_end(&mut out).await;
                out
            };
            tokio::join!(write, read).1
        };
        let ((), out) = tokio::join!(session, talk);
        out
    });
    assert!(
        out.starts_with(b"* OK"),
        "no greeting: {:?}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    // Tags the client used: the first word of each of its lines.
    let tags: std::collections::HashSet<&[u8]> = input
        .split(|b| *b == b'\n')
        .filter_map(|l| l.split(|b| *b == b' ' || *b == b'\r').next())
        .filter(|t| !t.is_empty())
        .collect();
    // Walk the responses: each starts with `*`, `+` or a known tag; a line
    // ending in `{n}` is followed by n bytes of literal data, after which
    // the same response goes on.
    let mut i = 0;
    while i < out.len() {
        let rest = &out[i..];
        let ok = rest.starts_with(b"* ")
            || rest.starts_with(b"+ ")
            || rest.starts_with(b"+\r\n")
            || rest
                .split(|b| *b == b' ' || *b == b'\r')
                .next()
                .is_some_and(|t| tags.contains(t));
        assert!(
            ok,
            "unexpected response line {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(200)])
        );
        loop {
            let Some(nl) = out[i..].iter().position(|b| *b == b'\n') else {
                i = out.len();
                break;
            };
            let line_end = i + nl + 1;
            let line = &out[i..line_end];
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(line);
            let literal = if trimmed.ends_with(b"}") {
                trimmed
                    .iter()
                    .rposition(|b| *b == b'{')
                    .and_then(|open| {
                        std::str::from_utf8(&trimmed[open + 1..trimmed.len() - 1]).ok()
                    })
                    .and_then(|n| n.trim_end_matches('+').parse::<usize>().ok())
            } else {
                None
            };
            match literal {
                Some(n) => i = line_end.saturating_add(n).min(out.len()),
                None => {
                    i = line_end;
                    break;
                }
            }
        }
    }
});
