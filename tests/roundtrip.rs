//! The whole loop: a side conversation started over the API leaves through
//! the outbox (maildir delivery), a real client (lettre) answers what
//! arrived, once to its Reply-To (the plus address) and once with only the
//! References left (the reply went to the sender's own address and came in
//! through forwarding), and both land on the same side conversation.

mod common;

use std::time::Duration;

use common::TestServer;
use lettre::message::{Mailbox, header};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mail_parser::MessageParser;
use serde_json::{Value, json};

async fn api(s: &TestServer, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new()
        .request(m, format!("http://{}{path}", s.http))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// The delivered file for `rcpt`, without the delivery lines the local
/// delivery agent prepends.
async fn delivered(s: &TestServer, rcpt: &str, needle: &str) -> Vec<u8> {
    let dir = s.dir.path().join("data/sent/new");
    for _ in 0..300 {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            if text.contains(&format!("Delivered-To: {rcpt}")) && text.contains(needle) {
                let mut rest: &[u8] = &bytes;
                while rest.starts_with(b"Return-Path:") || rest.starts_with(b"Delivered-To:") {
                    let nl = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |p| p + 1);
                    rest = &rest[nl..];
                }
                return rest.to_vec();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing delivered to {rcpt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_a_real_client_lands_on_the_same_side_conversation() {
    let mut s = TestServer::start_with("", "").await;
    let token = s
        .store
        .write(|c| {
            backchannel::store::users::create(
                c,
                "ann@acme.com",
                "Ann Agent",
                backchannel::model::Role::Admin,
            )
        })
        .await
        .expect("user")
        .1
        .as_str()
        .to_string();
    s.sql
        .write(|c| {
            Ok(c.execute(
                "INSERT INTO senders (email, name, reply_mode, status, forwarding_local, created_at)
                 VALUES ('support@acme.com', 'Acme Support', 'gateway', 'verified', 'fwd-roundtrip', 0)",
                [],
            )?)
        })
        .await
        .expect("sender");
    let sc = api(
        &s,
        "POST",
        "/api/parents/T-42/side-conversations",
        &token,
        Some(json!({"to": ["vera@carrier.example"], "subject": "Pallet 7 delayed", "body_text": "When does it ship?", "from": "support@acme.com"})),
    )
    .await;
    let id = sc["id"].as_i64().expect("id");

    // What the vendor received.
    let raw = delivered(&s, "vera@carrier.example", "When does it ship?").await;
    let got = MessageParser::default()
        .parse(&raw)
        .expect("parse")
        .into_owned();
    let reply_to = got
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("reply-to")
        .to_string();
    let their_id = got.message_id().expect("message-id").to_string();
    assert_eq!(
        reply_to,
        format!(
            "reply+{}@gw.example.com",
            sc["token"].as_str().expect("token")
        )
    );

    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.smtp.port())
        .build();
    // 1. The vendor presses Reply: to the Reply-To, threading headers set.
    let reply = Message::builder()
        .from(
            "Vera Vendor <vera@carrier.example>"
                .parse::<Mailbox>()
                .expect("from"),
        )
        .to(reply_to.parse::<Mailbox>().expect("to"))
        .subject("Re: Pallet 7 delayed")
        .in_reply_to(format!("<{their_id}>"))
        .references(format!("<{their_id}>"))
        .header(header::ContentType::TEXT_PLAIN)
        .body(String::from(
            "Monday.

On Tue, Acme Support wrote:
> When does it ship?
",
        ))
        .expect("reply");
    mailer.send(reply).await.expect("accepted");

    // 2. A colleague answers to support@acme.com (the plus address is gone);
    //    acme.com forwards it to the gateway's forwarding address.
    let lost = Message::builder()
        .from(
            "Bob <bob@carrier.example>"
                .parse::<Mailbox>()
                .expect("from"),
        )
        .to("Acme Support <support@acme.com>"
            .parse::<Mailbox>()
            .expect("to"))
        .subject("Re: Pallet 7 delayed")
        .references(format!("<{their_id}>"))
        .header(header::ContentType::TEXT_PLAIN)
        .body(String::from("Tuesday at the latest.\r\n"))
        .expect("reply");
    let envelope = lettre::address::Envelope::new(
        Some("bob@carrier.example".parse().expect("from")),
        vec!["fwd-roundtrip@gw.example.com".parse().expect("to")],
    )
    .expect("envelope");
    mailer
        .send_raw(&envelope, &lost.formatted())
        .await
        .expect("accepted");
    s.wait_ingested().await;

    let thread = api(
        &s,
        "GET",
        &format!("/api/side-conversations/{id}"),
        &token,
        None,
    )
    .await;
    let msgs = thread["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 3, "{thread}");
    assert_eq!(
        (msgs[1]["route"].as_str(), msgs[1]["visible_reply"].as_str()),
        (Some("token"), Some("Monday."))
    );
    assert_eq!(
        (msgs[2]["route"].as_str(), msgs[2]["visible_reply"].as_str()),
        (Some("references"), Some("Tuesday at the latest."))
    );
    assert!(
        msgs[2]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "unverified_sender")),
        "Bob was not a participant"
    );
    let delivery = &msgs[0]["delivery"][0];
    assert_eq!(
        (delivery["recipient"].as_str(), delivery["state"].as_str()),
        (Some("vera@carrier.example"), Some("sent"))
    );

    // The agent answers: the follow-up goes to everyone, threaded on the vendor's last message.
    let f = api(
        &s,
        "POST",
        &format!("/api/side-conversations/{id}/messages"),
        &token,
        Some(json!({"body_text": "Thanks both."})),
    )
    .await;
    assert_eq!(f["to"].as_array().map(Vec::len), Some(2), "{f}");
    let raw = delivered(&s, "bob@carrier.example", "Thanks both.").await;
    let m = MessageParser::default().parse(&raw).expect("parse");
    assert_eq!(m.subject(), Some("Re: Pallet 7 delayed"));
    let refs = format!("{:?}", m.references());
    assert!(refs.contains(&their_id), "{refs}");
    s.shutdown().await;
}
