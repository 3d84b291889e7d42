//! The trust boundary of a thread (SPEC §10, SECURITY.md), attacked from
//! the outside as a security probe did: over SMTP on loopback, against fake
//! DNS zones —
//!
//! - `vendor.test`: SPF `-all`, no DMARC (mail from loopback fails SPF);
//! - `strict.test`: SPF `-all`, DMARC `p=reject`;
//! - `good.test`: SPF authorising loopback, no DMARC (a verified vendor);
//! - `evil.test`: nothing at all.
//!
//! Each test reproduces one finding and fails on the code before the fix.

mod common;

use backchannel::model::Role;
use backchannel::store::sql::Dialect;
use common::dns::{FakeDns, RecordKind};
use common::{TestServer, api_call, make_user, smtp_send, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn zones() -> Vec<(&'static str, RecordKind)> {
    vec![
        ("vendor.test", RecordKind::Txt("v=spf1 -all".into())),
        ("strict.test", RecordKind::Txt("v=spf1 -all".into())),
        (
            "_dmarc.strict.test",
            RecordKind::Txt("v=DMARC1; p=reject".into()),
        ),
        (
            "good.test",
            RecordKind::Txt("v=spf1 ip4:127.0.0.0/8 -all".into()),
        ),
    ]
}

struct Probe {
    s: TestServer,
    _dns: FakeDns,
    agent: String,
}

impl Probe {
    async fn start(extra: &str) -> Probe {
        Self::start_full(FakeDns::start(&zones()).await, "", extra).await
    }

    async fn start_with_dns(dns: FakeDns, extra: &str) -> Probe {
        Self::start_full(dns, "", extra).await
    }

    /// `smtp_extra`: keys of the `[smtp]` section; `extra`: other sections.
    async fn start_full(dns: FakeDns, smtp_extra: &str, extra: &str) -> Probe {
        let s = TestServer::start_with(
            smtp_extra,
            &format!(
                "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n{}{extra}",
                dns.addr,
                if extra.contains("[notifications]") {
                    ""
                } else {
                    "[notifications]\nbatch_window = \"1s\"\n"
                }
            ),
        )
        .await;
        let agent = make_user(&s, "ann@acme.com", "Ann Agent", Role::Member).await;
        Probe {
            s,
            _dns: dns,
            agent,
        }
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        api_call(&self.s, method, path, &self.agent, body).await
    }

    /// Starts a side conversation with `to`; (id, token, first Message-ID).
    async fn start_thread(&self, parent: &str, to: &[&str]) -> (i64, String, String) {
        let (st, v) = self
            .api(
                "POST",
                &format!("/api/parents/{parent}/side-conversations"),
                Some(json!({"to": to, "subject": "Pallet 7", "body_text": "Where is pallet 7?"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (
            v["id"].as_i64().expect("id"),
            v["token"].as_str().expect("token").to_string(),
            v["messages"][0]["message_id"]
                .as_str()
                .expect("message id")
                .to_string(),
        )
    }

    async fn send(&self, mail_from: &str, rcpts: &[&str], data: &str) {
        let r = smtp_send(self.s.smtp, mail_from, rcpts, data).await;
        assert!(r.starts_with("250"), "{r}");
    }

    async fn participants(&self, sc: i64) -> Vec<String> {
        let (_, v) = self
            .api("GET", &format!("/api/side-conversations/{sc}"), None)
            .await;
        let mut p: Vec<String> = v["participants"]
            .as_array()
            .expect("participants")
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        p.sort();
        p
    }

    /// The newest inbound message of a side conversation (API shape).
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

    /// Posts a follow-up; the recipients its deliveries go to.
    async fn follow_up(&self, sc: i64, text: &str) -> Vec<String> {
        let (st, v) = self
            .api(
                "POST",
                &format!("/api/side-conversations/{sc}/messages"),
                Some(json!({"body_text": text})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let mut r: Vec<String> = v["delivery"]
            .as_array()
            .expect("delivery")
            .iter()
            .filter_map(|d| d["recipient"].as_str().map(str::to_string))
            .collect();
        r.sort();
        r
    }
}

fn flags(m: &Value) -> Vec<String> {
    m["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn mail(headers: &str, body: &str) -> String {
    format!(
        "{headers}\nSubject: Re: Pallet 7\nMessage-ID: <{}@probe.test>\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n\n{body}\n",
        backchannel::model::Token::generate()
    )
}

// ---------------------------------------------------------------------------
// High 1: several From authors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_from_fields_or_two_authors_are_attributed_to_none() {
    let mut p = Probe::start("").await;
    let (sc, token, _) = p
        .start_thread("T-1", &["vera@good.test", "boss@strict.test"])
        .await;
    let reply = format!("reply+{token}@gw.example.com");
    for (n, from) in [
        "From: attacker@evil.test\nFrom: Boss <boss@strict.test>",
        "From: Boss <boss@strict.test>, attacker@evil.test",
    ]
    .into_iter()
    .enumerate()
    {
        p.send(
            "attacker@evil.test",
            &[&reply],
            &mail(
                &format!("{from}\nTo: {reply}\nCc: spy{n}@evil.test"),
                "Please use the new account.",
            ),
        )
        .await;
        p.s.wait_ingested().await;
        let m = p.last_inbound(sc).await;
        assert_eq!(m["from"], Value::Null, "attributed to nobody: {m}");
        let f = flags(&m);
        assert!(f.contains(&"unverified_sender".to_string()), "{f:?}");
        assert!(f.contains(&"multiple_from".to_string()), "{f:?}");
    }
    assert_eq!(
        p.participants(sc).await,
        ["boss@strict.test", "vera@good.test"]
    );
    assert_eq!(
        p.follow_up(sc, "Confidential: account 99-88").await,
        ["boss@strict.test", "vera@good.test"]
    );
    p.s.shutdown().await;
}

// ---------------------------------------------------------------------------
// Medium 3 and Low 10: who becomes a participant

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unauthenticated_and_stranger_senders_never_join() {
    let mut p = Probe::start("").await;
    let (sc, token, first_id) = p
        .start_thread("T-2", &["vendor@vendor.test", "boss@strict.test"])
        .await;
    let reply = format!("reply+{token}@gw.example.com");
    let gw = "reply@gw.example.com";
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        // A forged participant of a domain without DMARC (SPF fails).
        (
            "vendor@vendor.test",
            vec![reply.clone()],
            mail(
                &format!("From: Vendor <vendor@vendor.test>\nTo: {reply}\nCc: spy1@evil.test"),
                "forged",
            ),
        ),
        // A stranger who knows the public outbound Message-ID, to reply@.
        (
            "attacker@evil.test",
            vec![gw.to_string()],
            mail(
                &format!(
                    "From: attacker@evil.test\nTo: {gw}\nCc: spy2@evil.test\nReferences: <{first_id}>"
                ),
                "stranger by reference",
            ),
        ),
        // A stranger with the reply address only in Cc.
        (
            "attacker@evil.test",
            vec![reply.clone()],
            mail(
                &format!("From: attacker@evil.test\nTo: someone@evil.test\nCc: {reply}"),
                "stranger by cc",
            ),
        ),
        // A guessed Message-ID in the gateway's format.
        (
            "attacker@evil.test",
            vec![gw.to_string()],
            mail(
                &format!(
                    "From: attacker@evil.test\nTo: {gw}\nIn-Reply-To: <{token}.99.zzzz@gw.example.com>"
                ),
                "stranger by a guessed id",
            ),
        ),
        // Malformed authors that a lenient parser reads as the participant.
        (
            "attacker@evil.test",
            vec![reply.clone()],
            mail(
                &format!(
                    "From: boss@strict.test (Boss) <attacker@evil.test>\nTo: {reply}\nCc: spy3@evil.test"
                ),
                "malformed",
            ),
        ),
        (
            "attacker@evil.test",
            vec![reply.clone()],
            mail(
                &format!("From: boss@strict.test.\nTo: {reply}\nCc: spy4@evil.test"),
                "trailing dot",
            ),
        ),
    ];
    for (mail_from, rcpts, data) in &cases {
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        p.send(mail_from, &rcpts, data).await;
        p.s.wait_ingested().await;
        let m = p.last_inbound(sc).await;
        assert!(
            flags(&m).contains(&"unverified_sender".to_string()),
            "flagged: {m}"
        );
    }
    let (_, v) = p
        .api("GET", &format!("/api/side-conversations/{sc}"), None)
        .await;
    let inbound = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["direction"] == "in")
        .count();
    assert_eq!(inbound, cases.len(), "every message is kept on the thread");
    assert_eq!(
        p.participants(sc).await,
        ["boss@strict.test", "vendor@vendor.test"],
        "nobody joined through unverified mail"
    );
    let contacts: i64 =
        p.s.query("SELECT COUNT(*) FROM contacts WHERE email LIKE '%evil.test%'")
            .await;
    assert_eq!(contacts, 0, "no leads from unverified mail");
    assert_eq!(
        p.follow_up(sc, "Confidential: account 99-88").await,
        ["boss@strict.test", "vendor@vendor.test"]
    );

    // An agent admits the stranger: from then on they get the follow-ups.
    let (st, v) = p
        .api(
            "POST",
            &format!("/api/side-conversations/{sc}/participants"),
            Some(json!({"email": "attacker@evil.test"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, _) = p
        .api(
            "POST",
            &format!("/api/side-conversations/{sc}/participants"),
            Some(json!({"email": "attacker@evil.test"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    for bad in [
        "not-an-address",
        "ann@acme.com",
        "x@gw.example.com",
        "a@[127.0.0.1]",
    ] {
        let (st, v) = p
            .api(
                "POST",
                &format!("/api/side-conversations/{sc}/participants"),
                Some(json!({"email": bad})),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    assert_eq!(
        p.follow_up(sc, "Welcome").await,
        [
            "attacker@evil.test",
            "boss@strict.test",
            "vendor@vendor.test"
        ]
    );
    let (_, activity) = p.api("GET", "/api/parents/T-2/activity", None).await;
    assert!(
        activity
            .to_string()
            .contains("Ann Agent admitted attacker@evil.test"),
        "{activity}"
    );
    // And removes them again.
    let (st, _) = p
        .api(
            "DELETE",
            &format!("/api/side-conversations/{sc}/participants/attacker@evil.test"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        p.participants(sc).await,
        ["boss@strict.test", "vendor@vendor.test"]
    );
    p.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_participant_brings_in_colleagues_and_a_verified_colleague_joins_alone() {
    let mut p = Probe::start("").await;
    let (sc, token, _) = p.start_thread("T-3", &["vera@good.test"]).await;
    let reply = format!("reply+{token}@gw.example.com");
    // Vera (SPF aligned pass, no DMARC) copies in a colleague.
    p.send(
        "vera@good.test",
        &[&reply],
        &mail(
            &format!("From: Vera <vera@good.test>\nTo: {reply}\nCc: sam@good.test"),
            "adding Sam",
        ),
    )
    .await;
    p.s.wait_ingested().await;
    let m = p.last_inbound(sc).await;
    assert_eq!(flags(&m), Vec::<String>::new(), "{m}");
    assert_eq!(
        p.participants(sc).await,
        ["sam@good.test", "vera@good.test"]
    );
    // A colleague the thread was forwarded to, verified: joins alone.
    p.send(
        "tom@good.test",
        &[&reply],
        &mail(
            &format!("From: Tom <tom@good.test>\nTo: {reply}\nCc: outsider@evil.test"),
            "Tom here",
        ),
    )
    .await;
    p.s.wait_ingested().await;
    assert_eq!(
        p.participants(sc).await,
        ["sam@good.test", "tom@good.test", "vera@good.test"]
    );
    p.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sender_during_a_dns_outage_is_not_trusted() {
    // strict.test's name server does not answer: every lookup times out.
    let dns = FakeDns::start_with_stalled(&zones(), &["strict.test"]).await;
    let mut p = Probe::start_with_dns(dns, "").await;
    let (sc, token, _) = p.start_thread("T-4", &["boss@strict.test"]).await;
    let reply = format!("reply+{token}@gw.example.com");
    p.send(
        "boss@strict.test",
        &[&reply],
        &mail(
            &format!("From: Boss <boss@strict.test>\nTo: {reply}\nCc: spy@evil.test"),
            "new account",
        ),
    )
    .await;
    p.s.wait_ingested().await;
    let m = p.last_inbound(sc).await;
    assert_eq!(m["auth"]["dmarc"], "temperror", "{m}");
    assert!(flags(&m).contains(&"unverified_sender".to_string()), "{m}");
    assert_eq!(p.participants(sc).await, ["boss@strict.test"]);
    p.s.shutdown().await;
}

// ---------------------------------------------------------------------------
// Medium 4: forged bounces

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_naming_another_recipient_changes_no_delivery() {
    let mut p = Probe::start("").await;
    let (sc, _, first_id) = p.start_thread("T-5", &["vera@good.test"]).await;
    let delivery_state = |s: &TestServer| {
        let store = s.sql.clone();
        async move {
            store
                .read(|c| {
                    Ok(c.query_row(
                        "SELECT state FROM outbox WHERE recipient = 'vera@good.test'",
                        [],
                        |r| r.get::<_, String>(0),
                    )?)
                })
                .await
                .expect("state")
        }
    };
    wait_until("the first message is sent", || async {
        delivery_state(&p.s).await == "sent"
    })
    .await;
    let dsn = |recipient: &str| {
        format!(
            "From: MAILER-DAEMON@mx.evil.test\nTo: reply@gw.example.com\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <{}@mx.evil.test>\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.evil.test\n\nFinal-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 attacker says gone\n\n--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <{first_id}>\nFrom: Ann <reply@gw.example.com>\nSubject: Pallet 7\n\n--b--\n",
            backchannel::model::Token::generate()
        )
    };
    p.send("", &["reply@gw.example.com"], &dsn("nobody-else@evil.test"))
        .await;
    p.s.wait_ingested().await;
    assert_eq!(delivery_state(&p.s).await, "sent", "the delivery stands");
    let (kind, sc_of): (String, Option<i64>) = p
        .s
        .sql
        .read(|c| {
            Ok(c.query_row(
                "SELECT kind, side_conversation_id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .expect("bounce row");
    assert_eq!((kind.as_str(), sc_of), ("bounce", None), "kept unrouted");
    let (_, unrouted) = api_call(&p.s, "GET", "/api/unrouted", &p.agent, None).await;
    assert_eq!(
        unrouted["items"],
        Value::Null,
        "members do not see unrouted mail"
    );

    // A report that names that exact recipient of that exact message does.
    p.send("", &["reply@gw.example.com"], &dsn("vera@good.test"))
        .await;
    p.s.wait_ingested().await;
    assert_eq!(delivery_state(&p.s).await, "bounced");
    let bounce_sc: Option<i64> = p
        .s
        .query("SELECT side_conversation_id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1")
        .await;
    assert_eq!(bounce_sc, Some(sc));
    p.s.shutdown().await;
}

// ---------------------------------------------------------------------------
// High 2 and Medium 6: large replies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_give_bounded_answers_and_notifications() {
    let mut p = Probe::start("[notifications]\nbatch_window = \"20s\"\n").await;
    let (sc, token, _) = p.start_thread("T-6", &["vera@good.test"]).await;
    let reply = format!("reply+{token}@gw.example.com");
    let big = "All the details of pallet seven, line after line.\n".repeat(6_000); // ~300 KB
    for i in 0..25 {
        p.send(
            "vera@good.test",
            &[&reply],
            &mail(
                &format!("From: Vera <vera@good.test>\nTo: {reply}"),
                &format!("Reply {i}.\n\n{big}"),
            ),
        )
        .await;
    }
    p.s.wait_ingested().await;

    // The thread: bodies cut in the list, whole from /api/messages/{id}.
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/api/side-conversations/{sc}?limit=10",
            p.s.http
        ))
        .bearer_auth(&p.agent)
        .send()
        .await
        .expect("thread");
    let bytes = resp.bytes().await.expect("body");
    assert!(bytes.len() < 2_000_000, "{} bytes", bytes.len());
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    let msgs = v["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 10);
    let cursor = v["messages_next_cursor"].as_str().expect("more pages");
    let inbound = msgs
        .iter()
        .find(|m| m["direction"] == "in")
        .expect("a reply");
    assert_eq!(inbound["truncated"], true);
    assert!(inbound["text"].as_str().expect("text").chars().count() <= 16 * 1024);
    let (_, whole) = p
        .api("GET", &format!("/api/messages/{}", inbound["id"]), None)
        .await;
    assert_eq!(whole["truncated"], false);
    assert!(whole["text"].as_str().expect("text").len() > 250_000);
    let (_, rest) = p
        .api(
            "GET",
            &format!("/api/side-conversations/{sc}?limit=200&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(rest["messages"].as_array().map(Vec::len), Some(16));
    assert_eq!(rest["messages_next_cursor"], Value::Null);

    // Notifications, bounded: at most 20 replies listed with an excerpt
    // each, the rest of a batch counted. (The window is long enough for the
    // 25 replies to share the first email; if ingest were slower they would
    // spread over several, which is fine: every reply is told of once.)
    let told = |text: &str| {
        let listed = text.matches("replied in the side conversation").count();
        let more = text
            .split("… and ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        (listed, more)
    };
    let read = || {
        let store = p.s.sql.clone();
        async move {
            store
                .read(|c| {
                    let mut st = c.prepare(
                        "SELECT subject, length(raw), text_body FROM messages WHERE kind = 'notification'",
                    )?;
                    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    Ok(rows.collect::<Result<Vec<(String, i64, String)>, _>>()?)
                })
                .await
                .expect("notifications")
        }
    };
    let total = |emails: &[(String, i64, String)]| {
        emails
            .iter()
            .map(|(_, _, t)| {
                let (l, m) = told(t);
                l + m
            })
            .sum::<usize>()
    };
    wait_until("every reply told of", || async {
        total(&read().await) == 25
    })
    .await;
    let emails = read().await;
    for (subject, size, text) in &emails {
        let (listed, _) = told(text);
        assert!(listed <= 20, "{subject}: {listed} listed");
        assert!(*size < 200_000, "{subject}: {size} bytes");
    }
    let (subject, _, text) = &emails[0];
    assert!(subject.contains("new replies"), "{subject}");
    assert!(text.contains("more replies"), "{text}");
    p.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_notification_batch_does_not_hold_back_the_others() {
    let mut p = Probe::start("").await;
    let bob = make_user(&p.s, "bob@acme.com", "Bob Agent", Role::Member).await;
    let (_, ann_token, _) = p.start_thread("T-7", &["vera@good.test"]).await;
    let (st, v) = api_call(
        &p.s,
        "POST",
        "/api/parents/T-8/side-conversations",
        &bob,
        Some(json!({"to": ["vera@good.test"], "subject": "Other", "body_text": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let bob_token = v["token"].as_str().expect("token").to_string();
    // Every notification email to Ann fails to be written.
    p.s.sql
        .write(|c| {
            c.execute_batch(match c.dialect() {
                Dialect::Sqlite => {
                    "CREATE TRIGGER fail_ann BEFORE INSERT ON messages
                     WHEN NEW.kind = 'notification' AND NEW.to_addrs LIKE '%ann@acme.com%'
                     BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
                }
                Dialect::Postgres => {
                    "CREATE FUNCTION fail_ann() RETURNS trigger LANGUAGE plpgsql
                       AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
                     CREATE TRIGGER fail_ann BEFORE INSERT ON messages FOR EACH ROW
                     WHEN (NEW.kind = 'notification' AND NEW.to_addrs LIKE '%ann@acme.com%')
                     EXECUTE FUNCTION fail_ann();"
                }
            })?;
            Ok(())
        })
        .await
        .expect("trigger");
    for token in [&ann_token, &bob_token] {
        let reply = format!("reply+{token}@gw.example.com");
        p.send(
            "vera@good.test",
            &[&reply],
            &mail(&format!("From: Vera <vera@good.test>\nTo: {reply}"), "hi"),
        )
        .await;
    }
    p.s.wait_ingested().await;
    let notified = |to: &'static str| {
        let store = p.s.sql.clone();
        async move {
            store
                .read(move |c| {
                    Ok(c.query_row(
                        "SELECT COUNT(*) FROM messages WHERE kind = 'notification' AND to_addrs LIKE ?1",
                        [format!("%{to}%")],
                        |r| r.get::<_, i64>(0),
                    )?)
                })
                .await
                .expect("count")
        }
    };
    wait_until("Bob's notification", || async {
        notified("bob@acme.com").await == 1
    })
    .await;
    assert_eq!(notified("ann@acme.com").await, 0);
    // The failure passes: Ann's batch goes out on a later round.
    p.s.sql
        .write(|c| {
            c.execute_batch(match c.dialect() {
                Dialect::Sqlite => "DROP TRIGGER fail_ann",
                Dialect::Postgres => "DROP TRIGGER fail_ann ON messages",
            })?;
            Ok(())
        })
        .await
        .expect("drop trigger");
    wait_until("Ann's notification", || async {
        notified("ann@acme.com").await == 1
    })
    .await;
    p.s.shutdown().await;
}

// ---------------------------------------------------------------------------
// Quotas (Medium 6)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_over_its_quota_refuses_more_mail_at_rcpt() {
    let mut p = Probe::start("[ingest]\nmax_thread_messages = 2\n").await;
    let (_, token, _) = p.start_thread("T-9", &["vera@good.test"]).await;
    let reply = format!("reply+{token}@gw.example.com");
    for _ in 0..2 {
        p.send(
            "vera@good.test",
            &[&reply],
            &mail(&format!("From: vera@good.test\nTo: {reply}"), "hi"),
        )
        .await;
    }
    p.s.wait_ingested().await;
    let smtp = p.s.smtp;
    let reply2 = reply.clone();
    wait_until("552 at RCPT", move || {
        let reply = reply2.clone();
        async move {
            let mut c = common::connect(smtp).await;
            c.reply().await;
            c.cmd("EHLO probe.test").await;
            c.cmd("MAIL FROM:<vera@good.test>").await;
            let r = c.cmd(&format!("RCPT TO:<{reply}>")).await;
            c.cmd("QUIT").await;
            if r.starts_with("250") {
                return false;
            }
            assert!(r.starts_with("552 5.2.2"), "{r}");
            true
        }
    })
    .await;
    p.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_is_held_to_its_hourly_quota() {
    let mut p = Probe::start_full(
        FakeDns::start(&zones()).await,
        "max_messages_per_sender_per_hour = 2\nmax_bytes_per_sender_per_hour = 5000\n",
        "[limits]\nexempt = []\n",
    )
    .await;
    let send = |from: &'static str, body: String| {
        let smtp = p.s.smtp;
        async move {
            let mut c = common::connect(smtp).await;
            c.reply().await;
            c.cmd("EHLO probe.test").await;
            let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
            if !r.starts_with("250") {
                return r;
            }
            c.cmd("RCPT TO:<reply@gw.example.com>").await;
            c.cmd("DATA").await;
            c.send(format!("From: {from}\r\nSubject: q\r\n\r\n{body}\r\n").as_bytes())
                .await;
            let r = c.cmd(".").await;
            c.cmd("QUIT").await;
            r
        }
    };
    assert!(send("a@good.test", "x".into()).await.starts_with("250"));
    assert!(send("a@good.test", "x".into()).await.starts_with("250"));
    let r = send("a@good.test", "x".into()).await;
    assert!(r.starts_with("451 4.7.1"), "third message in the hour: {r}");
    // Another sender is not affected; its bytes are counted too.
    assert!(
        send("b@good.test", "y".repeat(3000))
            .await
            .starts_with("250")
    );
    let r = send("b@good.test", "y".repeat(3000)).await;
    assert!(r.starts_with("451 4.7.1"), "over the byte quota: {r}");
    p.s.shutdown().await;
}

// ---------------------------------------------------------------------------
// Shown to people (SPEC §4)

/// Sends IMAP commands one by one over a plain socket; every line read.
async fn imap_session(addr: std::net::SocketAddr, commands: &[String]) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("imap");
    let mut io = BufReader::new(stream);
    let mut lines = Vec::new();
    let mut line = String::new();
    io.read_line(&mut line).await.expect("greeting");
    for (i, cmd) in commands.iter().enumerate() {
        lines.extend(common::imap_cmd(&mut io, &format!("t{i}"), cmd).await);
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_mail_is_marked_wherever_people_meet_it() {
    let mut p = Probe::start("").await;
    p.s.sql
        .write(|c| {
            c.execute(
                "INSERT INTO webhooks (url, secret, events, created_at) VALUES ('http://127.0.0.1:9/h', 's', '[]', 0)",
                [],
            )?;
            Ok(())
        })
        .await
        .expect("webhook");
    let (sc, token, _) = p.start_thread("T-10", &["vendor@vendor.test"]).await;
    let reply = format!("reply+{token}@gw.example.com");
    p.send(
        "vendor@vendor.test",
        &[&reply],
        &mail(
            &format!("From: Vendor <vendor@vendor.test>\nTo: {reply}"),
            "Pay to the new account.",
        ),
    )
    .await;
    p.s.wait_ingested().await;
    let m = p.last_inbound(sc).await;
    assert!(flags(&m).contains(&"unverified_sender".to_string()), "{m}");

    // The webhook payload carries the flags and the authentication results.
    let payload: String =
        p.s.query("SELECT payload FROM webhook_deliveries WHERE event = 'message.received'")
            .await;
    let payload: Value = serde_json::from_str(&payload).expect("payload");
    let text = payload.to_string();
    assert!(text.contains("unverified_sender"), "{text}");
    assert!(text.contains("\"spf\":\"fail\""), "{text}");

    // The activity entry.
    let (_, activity) = p.api("GET", "/api/parents/T-10/activity", None).await;
    assert!(
        activity
            .to_string()
            .contains("Vendor replied in a side conversation (unverified sender)"),
        "{activity}"
    );

    // The notification email: [unverified] in its subject, a warning first.
    wait_until("the notification", || async {
        p.s.query::<i64>("SELECT COUNT(*) FROM messages WHERE kind = 'notification'")
            .await
            == 1
    })
    .await;
    let (subject, body): (String, String) =
        p.s.sql
            .read(|c| {
                Ok(c.query_row(
                    "SELECT subject, text_body FROM messages WHERE kind = 'notification'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .expect("notification");
    assert!(subject.starts_with("[unverified] "), "{subject}");
    assert!(body.starts_with("Warning: "), "{body}");

    // IMAP: the keyword $unverified, and SEARCH KEYWORD finds it.
    let lines = imap_session(
        p.s.imap,
        &[
            format!("LOGIN ann@acme.com {}", p.agent),
            "SELECT INBOX".into(),
            "FETCH 1:* (FLAGS)".into(),
            "SEARCH KEYWORD $unverified".into(),
            "LOGOUT".into(),
        ],
    )
    .await;
    let all = lines.join("\n");
    assert!(all.contains("* 1 FETCH (FLAGS ($unverified))"), "{all}");
    assert!(lines.iter().any(|l| l == "* SEARCH 1"), "{all}");

    // JMAP: the same keyword.
    let http = reqwest::Client::new();
    let session: Value = http
        .get(format!("http://{}/.well-known/jmap", p.s.http))
        .bearer_auth(&p.agent)
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    let account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        .as_str()
        .expect("account")
        .to_string();
    let v: Value = http
        .post(format!("http://{}/jmap", p.s.http))
        .bearer_auth(&p.agent)
        .json(&json!({
            "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
            "methodCalls": [
                ["Email/query", {"accountId": account}, "q"],
                ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}, "properties": ["keywords", "from"]}, "g"]
            ]
        }))
        .send()
        .await
        .expect("jmap")
        .json()
        .await
        .expect("json");
    let text = v.to_string();
    assert!(text.contains("\"$unverified\":true"), "{text}");
    p.s.shutdown().await;
}

// ---------------------------------------------------------------------------
// Medium 8: the portal

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_portal_link_handed_out_before_keeps_working() {
    let mut p = Probe::start("").await;
    let (sc, _, _) = p
        .start_thread("T-11", &["vera@good.test", "sam@good.test"])
        .await;
    // A link of the kind every side conversation had before links were per
    // recipient.
    let legacy = "a".repeat(20) + &"b".repeat(12);
    let l = legacy.clone();
    p.s.sql
        .write(move |c| {
            c.execute(
                "UPDATE side_conversations SET portal_token = ?2 WHERE id = ?1",
                rusqlite::params![sc, l],
            )?;
            Ok(())
        })
        .await
        .expect("legacy link");
    let page = reqwest::get(format!("http://{}/p/{legacy}", p.s.http))
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("<select id=\"email\" name=\"email\">"),
        "the reader chooses among the participants, as before: {page}"
    );
    let (_, v) = p
        .api("GET", &format!("/api/side-conversations/{sc}"), None)
        .await;
    assert_eq!(
        v["portal_url"],
        format!("http://127.0.0.1:8080/p/{legacy}"),
        "{v}"
    );
    p.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgers_text_never_reaches_the_portal() {
    let mut p = Probe::start("").await;
    let (st, v) = p
        .api(
            "POST",
            "/api/parents/T-12/side-conversations",
            Some(
                json!({"to": ["vendor@vendor.test", "vera@good.test"], "subject": "Pallet 7",
                        "body_text": "Where is pallet 7?", "share_portal_link": true}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().expect("token").to_string();
    let portal = v["portal_url"]
        .as_str()
        .and_then(|u| u.split("/p/").nth(1))
        .expect("portal link")
        .to_string();
    let reply = format!("reply+{token}@gw.example.com");
    // A forged participant (vendor.test's SPF fails) and a verified one.
    p.send(
        "vendor@vendor.test",
        &[&reply],
        &mail(
            &format!("From: Vendor <vendor@vendor.test>\nTo: {reply}"),
            "FORGED: pay to account 13-37.",
        ),
    )
    .await;
    p.send(
        "vera@good.test",
        &[&reply],
        &mail(
            &format!("From: Vera <vera@good.test>\nTo: {reply}"),
            "GENUINE: it ships Monday.",
        ),
    )
    .await;
    p.s.wait_ingested().await;
    let page = reqwest::get(format!("http://{}/p/{portal}", p.s.http))
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("GENUINE: it ships Monday."), "{page}");
    assert!(!page.contains("FORGED"), "{page}");
    p.s.shutdown().await;
}
