//! HTTP API and portal requests: the real axum router (every handler, the
//! body limit, the deadline layer) called through tower's `oneshot` with a
//! fuzzed method, path, query, caller and body, on a real store. Webhook
//! delivery and the outbox worker are not running: events and mail are only
//! queued.
//!
//! Input format (text, so seeds are easy to write and mutate):
//!
//! ```text
//! METHOD /path?query          first line
//! AC                          A: caller o|a|m|v (owner, admin, member, viewer),
//!                             n (none), anything else a bogus token;
//!                             C: content type j (JSON), m (multipart,
//!                             boundary "XyZ"), f (form), t (text), none else
//! body…                       the rest
//! ```
//!
//! `$T` (reply token), `$P` (portal token), `$C` (portal CSRF token), `$S`
//! (side conversation id), `$M` (a message id) and `$A` (JMAP account) are
//! replaced by values of the seeded thread anywhere in the input. Bytes a URI may not hold are
//! percent-encoded.
//!
//! Checks: no panic, no 500, and every API error is the JSON error shape
//! (JMAP's problem documents included).
#![no_main]

use std::sync::OnceLock;

use axum::http::{Method, Uri};
use backchannel_fuzz::{Api, call, check_api_answer};
use libfuzzer_sys::fuzz_target;

fn api() -> &'static Api {
    static A: OnceLock<Api> = OnceLock::new();
    A.get_or_init(Api::new)
}

/// Percent-encodes what a URI cannot hold; keeps the path/query syntax.
fn uri_text(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len() + 1);
    if raw.first() != Some(&b'/') {
        s.push('/');
    }
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"/?&=%-._~+:@!$'()*,;".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let h = api();
    let data = h.substitute(data);
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let request_line = parts.next().unwrap_or_default();
    let selectors = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().to_vec();
    let (method, target) = match request_line.iter().position(|b| *b == b' ') {
        Some(sp) => (&request_line[..sp], &request_line[sp + 1..]),
        None => (&b"GET"[..], request_line),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let uri = uri_text(target);
    if uri.parse::<Uri>().is_err() {
        return;
    }
    let token = match selectors.first() {
        Some(b'o') => Some(h.tokens[0].as_str()),
        Some(b'a') => Some(h.tokens[1].as_str()),
        Some(b'm') => Some(h.tokens[2].as_str()),
        Some(b'v') => Some(h.tokens[3].as_str()),
        Some(b'n') | None => None,
        Some(_) => Some("bc_not-a-real-token"),
    };
    let content_type = match selectors.get(1) {
        Some(b'j') => Some("application/json"),
        Some(b'm') => Some("multipart/form-data; boundary=XyZ"),
        Some(b'f') => Some("application/x-www-form-urlencoded"),
        Some(b't') => Some("text/plain"),
        _ => None,
    };
    // The event stream never ends by itself: not something to fuzz here.
    if uri.starts_with("/jmap/eventsource") {
        return;
    }
    let head = method == Method::HEAD;
    let (status, ct, resp) =
        h.gw.rt
            .block_on(call(&h.router, method, &uri, token, content_type, body));
    let path = uri.split('?').next().unwrap_or("");
    // A HEAD answer has no body to check; the portal answers HTML pages.
    let json_api = (path.starts_with("/api/") && path != "/api/openapi.json")
        || path.starts_with("/jmap")
        || path.starts_with("/.well-known/jmap");
    if json_api && !head {
        check_api_answer(&uri, status, ct.as_deref(), &resp);
    } else {
        assert_ne!(
            status,
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "500 for {uri}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
});
