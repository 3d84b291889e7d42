//! A vendor who answers from their own ticket system (SPEC §5): its
//! Reply-To and the tag it puts in the subject are kept for follow-ups —
//! from verified mail only — and the visible reply stops at its "reply above
//! this line" marker. Over SMTP on loopback, against fake DNS zones:
//!
//! - `good.test`: SPF authorising loopback, no DMARC (verified vendors);
//! - `vendor.test`: SPF `-all` (mail from loopback is unverified).

mod common;

use backchannel::model::Role;
use common::dns::{FakeDns, RecordKind};
use common::{TestServer, api_call, make_user, smtp_send};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Desk {
    s: TestServer,
    _dns: FakeDns,
    agent: String,
}

impl Desk {
    async fn start() -> Desk {
        let dns = FakeDns::start(&[
            (
                "good.test",
                RecordKind::Txt("v=spf1 ip4:127.0.0.0/8 -all".into()),
            ),
            ("vendor.test", RecordKind::Txt("v=spf1 -all".into())),
        ])
        .await;
        let s = TestServer::start_with(
            "",
            &format!(
                "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n",
                dns.addr
            ),
        )
        .await;
        let agent = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
        Desk {
            s,
            _dns: dns,
            agent,
        }
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        api_call(&self.s, method, path, &self.agent, body).await
    }

    /// Starts "RMA 1234" with `to`; (id, token).
    async fn start_thread(&self, to: &[&str]) -> (i64, String) {
        let (st, v) = self
            .api(
                "POST",
                "/api/parents/T-9/side-conversations",
                Some(json!({"to": to, "subject": "RMA 1234", "body_text": "Please send an RMA."})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (
            v["id"].as_i64().expect("id"),
            v["token"].as_str().expect("token").to_string(),
        )
    }

    /// Sends a reply into the thread and waits until it is stored.
    async fn reply(&self, token: &str, from: &str, extra_headers: &str, subject: &str, body: &str) {
        let rcpt = format!("reply+{token}@gw.example.com");
        let data = format!(
            "From: {from}\nTo: {rcpt}\n{extra_headers}Subject: {subject}\nMessage-ID: <{}@desk.test>\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n\n{body}\n",
            backchannel::model::Token::generate()
        );
        let envelope = from
            .rsplit('<')
            .next()
            .unwrap_or(from)
            .trim_end_matches('>');
        let r = smtp_send(self.s.smtp, envelope, &[&rcpt], &data).await;
        assert!(r.starts_with("250"), "{r}");
        self.s.wait_ingested().await;
    }

    /// Posts a follow-up; (its subject, its recipients sorted).
    async fn follow_up(&self, sc: i64) -> (String, Vec<String>) {
        let (st, v) = self
            .api(
                "POST",
                &format!("/api/side-conversations/{sc}/messages"),
                Some(json!({"body_text": "Thanks, any news?"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let mut to: Vec<String> = v["delivery"]
            .as_array()
            .expect("delivery")
            .iter()
            .filter_map(|d| d["recipient"].as_str().map(str::to_string))
            .collect();
        to.sort();
        let id = v["id"].as_i64().expect("message id");
        let (_, m) = self.api("GET", &format!("/api/messages/{id}"), None).await;
        let (_, raw) = self
            .api("GET", &format!("/api/messages/{id}/raw"), None)
            .await;
        let raw = raw.as_str().expect("raw text").to_string();
        for r in &to {
            assert!(raw.contains(r.as_str()), "{r} in the To/Cc of:\n{raw}");
        }
        (m["subject"].as_str().expect("subject").to_string(), to)
    }

    async fn last_inbound(&self, sc: i64) -> Value {
        let (_, v) = self
            .api("GET", &format!("/api/side-conversations/{sc}"), None)
            .await;
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .rev()
            .find(|m| m["direction"] == "in")
            .cloned()
            .expect("an inbound message")
    }
}

const ZENDESK_STYLE: &str = "##- Please type your reply above this line -##\n\n\
Your request (4711) has been updated. To add additional comments, reply to this email.\n\n\
Vera (VendorDesk)\n\nWe shipped the replacement.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_ticket_system_keeps_its_reply_to_and_subject_tag() {
    let d = Desk::start().await;
    let (sc, token) = d.start_thread(&["vera@good.test"]).await;

    d.reply(
        &token,
        "Vera <vera@good.test>",
        "Reply-To: VendorDesk <desk+id4711@vendordesk.test>\n",
        "[VendorDesk #4711] Re: RMA 1234",
        &format!("RMA number is 88-1.\n\n{ZENDESK_STYLE}"),
    )
    .await;
    let m = d.last_inbound(sc).await;
    assert_eq!(m["reply_to"], "desk+id4711@vendordesk.test", "{m}");
    let visible = m["visible_reply"].as_str().expect("visible reply");
    assert!(visible.contains("RMA number is 88-1."), "{visible}");
    assert!(
        !visible.contains("type your reply") && !visible.contains("replacement"),
        "cut at the helpdesk marker: {visible:?}"
    );

    let (subject, to) = d.follow_up(sc).await;
    assert_eq!(to, vec!["desk+id4711@vendordesk.test"]);
    assert_eq!(subject, "Re: [VendorDesk #4711] RMA 1234");
    // Still the participant: the thread lists Vera, not her ticket system.
    let (_, v) = d
        .api("GET", &format!("/api/side-conversations/{sc}"), None)
        .await;
    assert_eq!(v["participants"], json!(["vera@good.test"]), "{v}");

    // Her next reply from a plain mail client (no Reply-To, no tag): answers
    // go back to her address and the plain subject.
    d.reply(
        &token,
        "vera@good.test",
        "",
        "Re: RMA 1234",
        "Sent from my phone: it left today.",
    )
    .await;
    let (subject, to) = d.follow_up(sc).await;
    assert_eq!(to, vec!["vera@good.test"]);
    assert_eq!(subject, "Re: RMA 1234");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_mail_cannot_redirect_the_thread_or_retag_it() {
    let d = Desk::start().await;
    let (sc, token) = d.start_thread(&["vera@good.test", "bob@vendor.test"]).await;

    // bob@vendor.test is a participant, but mail in his name fails SPF: its
    // Reply-To and subject must change nothing.
    d.reply(
        &token,
        "bob@vendor.test",
        "Reply-To: collect@evil.test\n",
        "[Evil #1] Re: RMA 1234",
        "Please write to our new address.",
    )
    .await;
    let m = d.last_inbound(sc).await;
    assert!(
        m["flags"]
            .as_array()
            .expect("flags")
            .contains(&json!("unverified_sender")),
        "{m}"
    );
    let (subject, to) = d.follow_up(sc).await;
    assert_eq!(to, vec!["bob@vendor.test", "vera@good.test"]);
    assert_eq!(subject, "Re: RMA 1234");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_that_would_loop_or_reach_an_agent_is_ignored() {
    let d = Desk::start().await;
    let (sc, token) = d.start_thread(&["vera@good.test"]).await;
    for reply_to in [
        format!("reply+{token}@gw.example.com"),
        "ann@acme.com".to_string(),
        "not an address".to_string(),
    ] {
        d.reply(
            &token,
            "vera@good.test",
            &format!("Reply-To: {reply_to}\n"),
            "Re: RMA 1234",
            "Noted.",
        )
        .await;
        let (_, to) = d.follow_up(sc).await;
        assert_eq!(to, vec!["vera@good.test"], "Reply-To {reply_to}");
    }
}
