//! JMAP request bodies (RFC 8620/8621 subset, SPEC §9): the real router's
//! `POST /jmap` through tower's `oneshot`, on the seeded thread of
//! [`backchannel_fuzz::Api`] (a side conversation with an outbound message,
//! the vendor's reply with an attachment). The first input byte picks the
//! caller (o owner, m member, v viewer, anything else none); the rest is the
//! body, with `$A` (the owner's account id), `$S`, `$M`, `$T` placeholders.
//!
//! Checks: no panic, no 500, a 200 is a JSON object with `methodResponses`
//! (one per call, each `[name, arguments, call id]`), errors are problem
//! documents or the API's error shape.
#![no_main]

use std::sync::OnceLock;

use axum::http::{Method, StatusCode};
use backchannel_fuzz::{Api, call, check_api_answer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn api() -> &'static Api {
    static A: OnceLock<Api> = OnceLock::new();
    A.get_or_init(Api::new)
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, body)) = data.split_first() else {
        return;
    };
    let h = api();
    let token = match who {
        b'o' => Some(h.tokens[0].as_str()),
        b'm' => Some(h.tokens[2].as_str()),
        b'v' => Some(h.tokens[3].as_str()),
        _ => None,
    };
    let body = h.substitute(body);
    let (status, ct, resp) = h.gw.rt.block_on(call(
        &h.router,
        Method::POST,
        "/jmap",
        token,
        Some("application/json"),
        body,
    ));
    check_api_answer("POST /jmap", status, ct.as_deref(), &resp);
    if status == StatusCode::OK {
        let v: Value = match serde_json::from_slice(&resp) {
            Ok(v) => v,
            Err(e) => panic!("200 from /jmap is not JSON ({e})"),
        };
        let Some(responses) = v["methodResponses"].as_array() else {
            panic!("200 from /jmap without methodResponses: {v}");
        };
        for r in responses {
            let ok = r
                .as_array()
                .is_some_and(|a| a.len() == 3 && a[0].is_string() && a[1].is_object());
            assert!(ok, "malformed method response {r}");
        }
    }
});
