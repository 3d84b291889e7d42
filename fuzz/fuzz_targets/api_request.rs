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
//! (side conversation id) and `$M` (a message id) are replaced by values of
//! the seeded thread anywhere in the input. Bytes a URI may not hold are
//! percent-encoded.
//!
//! Checks: no panic, no 500, and every API error is the JSON error shape.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Uri, header};
use backchannel::api::{self, ApiState};
use backchannel::conversations::Conversations;
use backchannel::model::Role;
use backchannel_fuzz::Gateway;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Harness {
    gw: Gateway,
    router: axum::Router,
    tokens: [String; 4],
    substitutions: Vec<(&'static [u8], Vec<u8>)>,
}

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req.body(Body::from(body)).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (status, ct, bytes)
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let gw = Gateway::new();
        let tokens = [
            gw.user("owner@gw.example.com", Role::Owner),
            gw.user("admin2@gw.example.com", Role::Admin),
            gw.user("member@gw.example.com", Role::Member),
            gw.user("viewer@gw.example.com", Role::Viewer),
        ];
        let resolver =
            backchannel::senders::dns::Resolver::new(&gw.config.dns).expect("resolver");
        let conversations = Conversations::new(
            gw.config.clone(),
            gw.store.clone(),
            Arc::new(tokio::sync::Notify::new()),
        );
        let router = api::router(ApiState {
            store: gw.store.clone(),
            config: gw.config.clone(),
            conversations,
            resolver,
        });
        // A thread with a portal link, so paths and bodies can name real
        // ids and tokens.
        let (sc, token, portal, message, csrf) = gw.rt.block_on(async {
            let owner = Some(tokens[0].as_str());
            let (s, _, _) = call(
                &router,
                Method::PUT,
                "/api/parents/T-1",
                owner,
                Some("application/json"),
                json!({"subject": "Order 1001", "requester": {"name": "Ann", "email": "ann@customer.example"}})
                    .to_string()
                    .into_bytes(),
            )
            .await;
            assert!(s.is_success(), "parent upsert: {s}");
            let (s, _, body) = call(
                &router,
                Method::POST,
                "/api/parents/T-1/side-conversations",
                owner,
                Some("application/json"),
                json!({"to": ["vendor@carrier.example"], "subject": "Pallet 7", "body_text": "Where is it?", "share_portal_link": true})
                    .to_string()
                    .into_bytes(),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "start: {}", String::from_utf8_lossy(&body));
            let v: Value = serde_json::from_slice(&body).expect("start JSON");
            let sc = v["id"].as_i64().expect("id");
            let token = v["token"].as_str().expect("token").to_string();
            let portal_url = v["portal_url"].as_str().expect("portal_url");
            let portal = portal_url.rsplit('/').next().expect("portal token").to_string();
            let message = v["messages"][0]["id"].as_i64().expect("message id");
            let (s, _, page) = call(&router, Method::GET, &format!("/p/{portal}"), None, None, Vec::new()).await;
            assert_eq!(s, StatusCode::OK, "portal page");
            let page = String::from_utf8_lossy(&page).into_owned();
            let csrf = page
                .split("name=\"csrf\" value=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("csrf in the portal form")
                .to_string();
            (sc, token, portal, message, csrf)
        });
        let substitutions = vec![
            (&b"$T"[..], token.into_bytes()),
            (&b"$P"[..], portal.into_bytes()),
            (&b"$C"[..], csrf.into_bytes()),
            (&b"$S"[..], sc.to_string().into_bytes()),
            (&b"$M"[..], message.to_string().into_bytes()),
        ];
        Harness {
            gw,
            router,
            tokens,
            substitutions,
        }
    })
}

fn substitute(data: &[u8], subs: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
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
    let h = harness();
    let data = substitute(data, &h.substitutions);
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
    let head = method == Method::HEAD;
    let (status, ct, resp) =
        h.gw.rt
            .block_on(call(&h.router, method, &uri, token, content_type, body));
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 for {uri}: {}",
        String::from_utf8_lossy(&resp)
    );
    let path = uri.split('?').next().unwrap_or("");
    // A HEAD answer has no body to check.
    let api = path.starts_with("/api/") && path != "/api/openapi.json" && !head;
    if api && (status.is_client_error() || status.is_server_error()) {
        assert!(
            ct.as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{status} for {uri} is not JSON: {ct:?}"
        );
        let v: Value = match serde_json::from_slice(&resp) {
            Ok(v) => v,
            Err(e) => panic!("{status} for {uri}: body is not JSON ({e})"),
        };
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{status} for {uri}: not the error shape: {v}"
        );
    }
});
