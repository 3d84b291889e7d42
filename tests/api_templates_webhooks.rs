//! Templates (macros) and webhook endpoints over the HTTP API: roles,
//! validation, a side conversation started from a template carrying the
//! filled placeholders in its outbound mail, and webhooks registered through
//! the API receiving a signed event for an SMTP reply, retried after a 500.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use common::{TestServer, api_call as call, make_user as user, smtp_send};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_fill_a_side_conversation() {
    use backchannel::model::Role;
    let mut s = TestServer::start_with("", "").await;
    let admin = user(&s, "ada@acme.com", "Ada Admin", Role::Admin).await;
    let member = user(&s, "mo@acme.com", "Mo Member", Role::Member).await;
    let template = json!({
        "name": "Carrier damage claim",
        "to": ["claims@carrier.example"],
        "cc": ["ops@carrier.example"],
        "subject": "Damage claim for ticket {{parent.id}}",
        "body_text": "Hello,\n\n{{requester.name}} <{{requester.email}}> reports: {{parent.subject}}.\n\n{{agent.name}}",
    });
    let (st, _) = call(
        &s,
        "POST",
        "/api/templates",
        &member,
        Some(template.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let mut bad = template.clone();
    bad["body_text"] = json!("Hi {{customer.name}} and {{ticket.number}}");
    let (st, v) = call(&s, "POST", "/api/templates", &admin, Some(bad)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["field"], "body_text");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("{{customer.name}}") && msg.contains("{{ticket.number}}"),
        "{msg}"
    );
    let (st, t) = call(&s, "POST", "/api/templates", &admin, Some(template)).await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let tid = t["id"].as_i64().expect("id");
    let (_, list) = call(&s, "GET", "/api/templates", &member, None).await;
    assert_eq!(list["items"][0]["name"], "Carrier damage claim");

    call(&s, "PUT", "/api/parents/T-77", &member, Some(json!({"subject": "Pallet crushed", "requester": {"name": "Rita", "email": "rita@customer.example"}}))).await;
    let (st, sc) = call(
        &s,
        "POST",
        "/api/parents/T-77/side-conversations",
        &member,
        Some(json!({"template": tid})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    assert_eq!(sc["subject"], "Damage claim for ticket T-77");
    assert_eq!(
        sc["participants"],
        json!(["claims@carrier.example", "ops@carrier.example"])
    );
    let mid = sc["messages"][0]["id"].as_i64().expect("message");
    let raw: Vec<u8> = s
        .query(&format!("SELECT raw FROM messages WHERE id = {mid}"))
        .await;
    let m = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("parse");
    let text = m.body_text(0).expect("text").replace("\r\n", "\n");
    assert!(
        text.contains("Rita <rita@customer.example> reports: Pallet crushed."),
        "{text}"
    );
    assert!(text.contains("Mo Member"), "{text}");
    assert!(!text.contains("{{"), "no placeholder left: {text}");

    // Explicit fields win over the template.
    let (_, sc2) = call(
        &s,
        "POST",
        "/api/parents/T-77/side-conversations",
        &member,
        Some(json!({"template": tid, "to": ["other@carrier.example"], "subject": "Mine"})),
    )
    .await;
    assert_eq!(sc2["subject"], "Mine");
    assert_eq!(
        sc2["participants"],
        json!(["other@carrier.example", "ops@carrier.example"])
    );
    let (st, v) = call(
        &s,
        "POST",
        "/api/parents/T-77/side-conversations",
        &member,
        Some(json!({"template": 999})),
    )
    .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("template"))
    );

    let (st, _) = call(
        &s,
        "DELETE",
        &format!("/api/templates/{tid}"),
        &member,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(&s, "DELETE", &format!("/api/templates/{tid}"), &admin, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&s, "DELETE", &format!("/api/templates/{tid}"), &admin, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.shutdown().await;
}

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    fail_first: Arc<Mutex<u32>>,
}

async fn receiver(state: Received) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(st): axum::extract::State<Received>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    st.requests.lock().expect("lock").push((headers, body));
                    let mut fail = st.fail_first.lock().expect("lock");
                    if *fail > 0 {
                        *fail -= 1;
                        AxStatus::INTERNAL_SERVER_ERROR
                    } else {
                        AxStatus::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_registered_through_the_api_receive_signed_events() {
    use backchannel::model::Role;
    let got = Received::default();
    *got.fail_first.lock().expect("lock") = 1;
    let addr = receiver(got.clone()).await;
    let mut s = TestServer::start_with(
        "",
        // The receiver is on loopback, which endpoints reach only when allowed.
        "[webhooks]\nretry_schedule = [\"1s\"]\nallow_destinations = [\"127.0.0.0/8\"]\n",
    )
    .await;
    let admin = user(&s, "ada@acme.com", "Ada Admin", Role::Admin).await;
    let member = user(&s, "mo@acme.com", "Mo Member", Role::Member).await;
    let url = format!("http://{addr}/hook");
    let (st, _) = call(
        &s,
        "POST",
        "/api/webhooks",
        &member,
        Some(json!({"url": url, "secret": "s3cret"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = call(
        &s,
        "POST",
        "/api/webhooks",
        &admin,
        Some(json!({"url": "ftp://x", "secret": "s3cret"})),
    )
    .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("url"))
    );
    let (st, v) = call(
        &s,
        "POST",
        "/api/webhooks",
        &admin,
        Some(json!({"url": url, "secret": "s3cret", "events": ["message.exploded"]})),
    )
    .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("events"))
    );
    let (st, hook) = call(
        &s,
        "POST",
        "/api/webhooks",
        &admin,
        Some(json!({"url": url, "secret": "s3cret", "events": ["message.received"]})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    assert!(
        hook.get("secret").is_none(),
        "the secret is never shown back"
    );
    let hid = hook["id"].as_i64().expect("id");

    let (_, sc) = call(
        &s,
        "POST",
        "/api/parents/T-5/side-conversations",
        &admin,
        Some(json!({"to": ["vera@carrier.example"], "subject": "Pallet", "body_text": "b"})),
    )
    .await;
    let token = sc["token"].as_str().expect("token").to_string();
    let reply = format!(
        "From: Vera <vera@carrier.example>\nTo: reply+{token}@gw.example.com\nSubject: Re: Pallet\nMessage-ID: <w1@carrier.example>\n\nShipped.\n"
    );
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{token}@gw.example.com")],
        &reply,
    )
    .await;

    // The first attempt gets a 500, the retry a 204.
    let mut delivered = false;
    for _ in 0..200 {
        let (_, log) = call(
            &s,
            "GET",
            &format!("/api/webhooks/{hid}/deliveries"),
            &admin,
            None,
        )
        .await;
        if log["items"][0]["state"] == "delivered" {
            assert_eq!(log["items"][0]["attempts"], 2, "{log}");
            assert_eq!(log["items"][0]["event"], "message.received");
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(delivered, "the event was not delivered");
    let requests = got.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2, "one failure, one retry");
    for (headers, body) in &requests {
        let sig = headers["x-backchannel-signature"].to_str().expect("ascii");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(body);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let v: Value = serde_json::from_slice(body).expect("json payload");
        assert_eq!(v["event"], "message.received");
        assert_eq!(v["data"]["message"]["visible_reply"], "Shipped.");
        assert_eq!(v["data"]["parent"], "T-5");
    }
    let (_, list) = call(&s, "GET", "/api/webhooks", &admin, None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (st, _) = call(&s, "DELETE", &format!("/api/webhooks/{hid}"), &admin, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(
        &s,
        "GET",
        &format!("/api/webhooks/{hid}/deliveries"),
        &admin,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.shutdown().await;
}
