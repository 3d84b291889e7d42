//! End to end: replies sent over SMTP to side conversations seeded in the
//! store, one test per routing rule, with the effects SPEC §4 lists.

mod common;

use common::{TOKEN, TestServer, seed_thread, smtp_send};

/// Mail is authenticated against the harness's fake DNS, which vouches for
/// `carrier.example` (a verified vendor) and knows no other domain.
async fn server() -> TestServer {
    TestServer::start_with("", "").await
}

fn reply(from: &str, to: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\nTo: {to}\nSubject: Re: Pallet 7 delayed\nMessage-ID: <{}@carrier.example>\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n{extra}\n{body}\n",
        rand_id()
    )
}

fn rand_id() -> String {
    backchannel::model::Token::generate().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rule_threads_reopens_and_wakes_the_parent() {
    let mut s = server().await;
    let (_, sc) = seed_thread(
        &s.sql,
        "T-1",
        TOKEN,
        "snoozed",
        "closed",
        &["vera@carrier.example"],
    )
    .await;
    s.sql
        .write(|c| Ok(c.execute("INSERT INTO webhooks (url, secret, events, created_at) VALUES ('http://127.0.0.1:9/h', 's', '[]', 0)", [])?))
        .await
        .expect("webhook");
    let body = "It ships Monday.\n\nOn Mon, Aug 31, 2026 at 9:00 AM Support <support@acme.com> wrote:\n> When does pallet 7 ship?\n";
    let r = smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &reply(
            "Vera Vendor <vera@carrier.example>",
            &format!("reply+{TOKEN}@gw.example.com"),
            "",
            body,
        ),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;

    let (msc, route, kind, flags, visible): (Option<i64>, String, String, String, String) = s
        .sql
        .read(|c| {
            Ok(c.query_row(
                "SELECT side_conversation_id, route, kind, flags, visible_reply FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?)
        })
        .await
        .expect("message");
    assert_eq!(msc, Some(sc));
    assert_eq!(route, "token");
    assert_eq!(kind, "reply");
    assert_eq!(flags, "[]", "a participant is not flagged");
    assert_eq!(visible.trim(), "It ships Monday.");
    assert_eq!(
        s.query::<String>("SELECT status FROM side_conversations")
            .await,
        "open"
    );
    assert_eq!(
        s.query::<String>("SELECT status FROM parents").await,
        "open"
    );
    assert_eq!(
        s.query::<String>("SELECT text FROM activity").await,
        "Vera Vendor replied in a side conversation"
    );
    let events: String = s
        .query("SELECT string_agg(event, ',' ORDER BY event) FROM webhook_deliveries")
        .await;
    assert_eq!(
        events,
        "message.received,parent.woken,side_conversation.reopened"
    );
    // Unread for agents and in the agent view's INBOX and ticket mailbox.
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM message_flags").await,
        0
    );
    let boxes: String = s.query("SELECT string_agg(b.name, ',' ORDER BY b.name) FROM mailbox_messages m JOIN mailboxes b ON b.id = m.mailbox_id").await;
    assert_eq!(boxes, "INBOX,Tickets/T-1");
    assert_eq!(
        s.query::<String>("SELECT state FROM inbound_queue").await,
        "done"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_reply_threads_by_references_alone() {
    let mut s = server().await;
    s.add_sender("support@acme.com", "fwd-k3j9x2").await;
    let (_, sc) = seed_thread(
        &s.sql,
        "T-2",
        TOKEN,
        "open",
        "open",
        &["vera@carrier.example"],
    )
    .await;
    // The vendor replied to support@acme.com (plus address lost); acme's
    // provider forwarded it to the gateway. Only References is left.
    let msg = reply(
        "vera@carrier.example",
        "Support <support@acme.com>",
        &format!(
            "References: <unrelated@x.example> <{TOKEN}.1.q7x2@gw.example.com>\nIn-Reply-To: <lost@elsewhere.example>"
        ),
        "Forwarded reply body",
    );
    let r = smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["fwd-k3j9x2@gw.example.com"],
        &msg,
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let (msc, route): (Option<i64>, String) = s
        .sql
        .read(|c| {
            Ok(c.query_row(
                "SELECT side_conversation_id, route FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .expect("row");
    assert_eq!(msc, Some(sc));
    assert_eq!(route, "references");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_stored_message_threads_by_in_reply_to() {
    let mut s = server().await;
    let (_, sc) = seed_thread(
        &s.sql,
        "T-3",
        TOKEN,
        "open",
        "open",
        &["vera@carrier.example"],
    )
    .await;
    let first = "From: vera@carrier.example\nTo: reply+abcdefghijklmn23@gw.example.com\nSubject: Re: x\nMessage-ID: <first@carrier.example>\n\nfirst\n";
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        first,
    )
    .await;
    // A colleague answers Vera's mail, to the bare reply mailbox.
    let second = "From: Bob <bob@carrier.example>\nTo: reply@gw.example.com\nCc: vera@carrier.example\nSubject: Re: x\nMessage-ID: <second@carrier.example>\nIn-Reply-To: <first@carrier.example>\n\nsecond\n";
    smtp_send(
        s.smtp,
        "bob@carrier.example",
        &["reply@gw.example.com"],
        second,
    )
    .await;
    s.wait_ingested().await;
    let rows: Vec<(Option<i64>, String, String)> = s
        .sql
        .read(|c| {
            let mut st =
                c.prepare("SELECT side_conversation_id, route, flags FROM messages ORDER BY id")?;
            let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(r.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("rows");
    assert_eq!(rows[0], (Some(sc), "token".into(), "[]".into()));
    assert_eq!(rows[1].0, Some(sc));
    assert_eq!(rows[1].1, "references");
    // Bob was not a participant: flagged; authenticated (carrier.example's
    // SPF) and of Vera's organisation, he joins alone (a colleague the thread
    // was forwarded to) and becomes a lead.
    assert_eq!(rows[1].2, "[\"unverified_sender\"]");
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM participants WHERE email = 'bob@carrier.example' AND role = 'joined'").await,
        1
    );
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM contacts WHERE email = 'bob@carrier.example'")
            .await,
        1
    );
    assert_eq!(
        s.query::<String>("SELECT text FROM activity ORDER BY id DESC LIMIT 1")
            .await,
        "Bob replied in a side conversation (unverified sender)"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_replies_thread_but_wake_nobody() {
    let mut s = server().await;
    seed_thread(
        &s.sql,
        "T-4",
        TOKEN,
        "snoozed",
        "closed",
        &["vera@carrier.example"],
    )
    .await;
    let msg = "From: vera@carrier.example\nTo: reply+abcdefghijklmn23@gw.example.com\nSubject: Automatic reply: Pallet 7 delayed\nAuto-Submitted: auto-replied\nMessage-ID: <ooo@carrier.example>\n\nI am out of the office until Monday.\n";
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        msg,
    )
    .await;
    s.wait_ingested().await;
    assert_eq!(
        s.query::<String>("SELECT kind FROM messages").await,
        "auto_reply"
    );
    assert_eq!(
        s.query::<String>("SELECT route FROM messages").await,
        "token"
    );
    assert_eq!(
        s.query::<String>("SELECT status FROM parents").await,
        "snoozed"
    );
    assert_eq!(
        s.query::<String>("SELECT status FROM side_conversations")
            .await,
        "closed"
    );
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM activity").await, 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_marks_the_outbound_row_and_is_never_a_reply() {
    let mut s = server().await;
    let (_, sc) = seed_thread(
        &s.sql,
        "T-5",
        TOKEN,
        "snoozed",
        "open",
        &["gone@carrier.example"],
    )
    .await;
    s.sql
        .write(move |c| {
            c.execute(
                "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256, message_id, received_at)
                 VALUES (?1, 'out', 'agent', 'api', ?2, ?2, 'abcdefghijklmn23.1.q7x2@gw.example.com', 0)",
                rusqlite::params![sc, &[0u8][..]],
            )?;
            c.execute(
                "INSERT INTO outbox (message_id, recipient, verp_key, state, next_attempt_at, created_at)
                 VALUES ((SELECT id FROM messages WHERE message_id = 'abcdefghijklmn23.1.q7x2@gw.example.com'),
                         'gone@carrier.example', 'k7a2', 'sent', 0, 0)",
                [],
            )?;
            Ok(())
        })
        .await
        .expect("outbound");
    let dsn = include_str!("../fixtures/postfix-dsn-user-unknown.eml");
    let r = smtp_send(s.smtp, "", &["bounce+k7a2@gw.example.com"], dsn).await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let (kind, route, msc, bounce): (String, String, Option<i64>, String) = s
        .sql
        .read(|c| Ok(c.query_row("SELECT kind, route, side_conversation_id, bounce FROM messages WHERE direction = 'in'", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?))
        .await
        .expect("bounce row");
    assert_eq!(
        (kind.as_str(), route.as_str(), msc),
        ("bounce", "bounce", Some(sc))
    );
    assert!(
        bounce.contains("gone@carrier.example") && bounce.contains("5.1.1"),
        "{bounce}"
    );
    let (state, err): (String, String) = s
        .sql
        .read(|c| {
            Ok(
                c.query_row("SELECT state, last_error FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?,
            )
        })
        .await
        .expect("outbox");
    assert_eq!(state, "bounced");
    assert!(err.contains("5.1.1"), "{err}");
    assert_eq!(
        s.query::<String>("SELECT status FROM parents").await,
        "snoozed",
        "a bounce wakes nobody"
    );
    assert_eq!(
        s.query::<String>("SELECT text FROM activity").await,
        format!("gone@carrier.example could not be reached: {err}"),
        "the one activity entry says who was not reached"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_and_provider_confirmation_mail_update_the_sender() {
    let mut s = server().await;
    s.add_sender("support@acme.com", "fwd-k3j9x2").await;
    s.add_sender("sales@acme.com", "fwd-p8w4m1").await;
    s.sql
        .write(|c| {
            Ok(c.execute(
                "UPDATE senders SET verification_nonce = 'n0nce7' WHERE email = 'support@acme.com'",
                [],
            )?)
        })
        .await
        .expect("nonce");
    let verification = "From: Support <support@acme.com>\nTo: support@acme.com\nSubject: Verify support@acme.com for backchannel\nMessage-ID: <verify.n0nce7@gw.example.com>\n\nYour code is 123456.\n";
    smtp_send(
        s.smtp,
        "bounce+v1@gw.example.com",
        &["fwd-k3j9x2@gw.example.com"],
        verification,
    )
    .await;
    let gmail = include_str!("../fixtures/gmail-forwarding-confirmation.eml");
    smtp_send(
        s.smtp,
        "forwarding-noreply@google.com",
        &["fwd-p8w4m1@gw.example.com"],
        gmail,
    )
    .await;
    s.wait_ingested().await;
    let (status, fwd): (String, String) = s
        .sql
        .read(|c| {
            Ok(c.query_row(
                "SELECT status, forwarding_state FROM senders WHERE email = 'support@acme.com'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .expect("sender");
    assert_eq!((status.as_str(), fwd.as_str()), ("verified", "confirmed"));
    let conf: String = s
        .query("SELECT forwarding_confirmation FROM senders WHERE email = 'sales@acme.com'")
        .await;
    let conf: serde_json::Value = serde_json::from_str(&conf).expect("json");
    assert_eq!(conf["provider"], "gmail");
    assert_eq!(conf["code"], "583920174");
    assert_eq!(
        conf["link"],
        "https://mail-settings.google.com/mail/vf-%5BANGjdJ8%5D-abc"
    );
    let kinds: String = s
        .query("SELECT string_agg(kind || ':' || route, ',' ORDER BY id) FROM messages")
        .await;
    assert_eq!(
        kinds,
        "verification:forwarding,forwarding_confirmation:forwarding"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_and_ambiguous_mail_is_kept_whole() {
    let mut s = server().await;
    let (_, sc1) = seed_thread(&s.sql, "T-6", TOKEN, "open", "open", &["v@x.example"]).await;
    let (_, sc2) = seed_thread(
        &s.sql,
        "T-7",
        "bbbbbbbbbbbbbbb2",
        "open",
        "open",
        &["v@x.example"],
    )
    .await;
    // A newsletter blast whose reference is stored on both threads.
    s.sql
        .write(move |c| {
            for sc in [sc1, sc2] {
                c.execute(
                    "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256, message_id, received_at)
                     VALUES (?1, 'in', 'reply', 'token', ?2, ?2, 'blast@news.example', 0)",
                    rusqlite::params![sc, &[0u8][..]],
                )?;
            }
            Ok(())
        })
        .await
        .expect("seed");
    let blast = "From: news@news.example\nTo: reply@gw.example.com\nSubject: Re: Pallet 7 delayed\nMessage-ID: <b2@news.example>\nReferences: <blast@news.example>\n\nnews\n";
    smtp_send(
        s.smtp,
        "news@news.example",
        &["reply@gw.example.com"],
        blast,
    )
    .await;
    // Same subject as a side conversation, nothing else: never routed by subject.
    let lone = "From: v@x.example\nTo: reply@gw.example.com\nSubject: Pallet 7 delayed\nMessage-ID: <lone@x.example>\n\nhello\n";
    smtp_send(s.smtp, "v@x.example", &["reply@gw.example.com"], lone).await;
    s.wait_ingested().await;
    let n: i64 = s.query("SELECT COUNT(*) FROM messages WHERE route = 'unrouted' AND side_conversation_id IS NULL").await;
    assert_eq!(n, 2);
    let raw: Vec<u8> = s
        .query("SELECT CASE WHEN length(m.raw) > 0 THEN m.raw ELSE (SELECT ir.raw FROM inbound_raw ir WHERE ir.id = m.inbound_id) END FROM messages m WHERE m.message_id = 'lone@x.example'")
        .await;
    assert!(raw.starts_with(b"From: v@x.example\r\n"), "stored whole");
    // Once: the bytes are the queue's copy, the message row holds none.
    let own: i64 = s
        .query("SELECT length(raw) FROM messages WHERE message_id = 'lone@x.example'")
        .await;
    assert_eq!(own, 0, "the raw bytes are stored once (inbound_raw)");
    let in_unrouted: i64 = s.query("SELECT COUNT(*) FROM mailbox_messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = 'Unrouted'").await;
    assert_eq!(in_unrouted, 2);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_reply_delivered_twice_is_stored_once() {
    let mut s = server().await;
    s.add_sender("support@acme.com", "fwd-k3j9x2").await;
    seed_thread(
        &s.sql,
        "T-8",
        TOKEN,
        "open",
        "open",
        &["vera@carrier.example"],
    )
    .await;
    let body = format!(
        "From: vera@carrier.example\nTo: reply+{TOKEN}@gw.example.com\nCc: support@acme.com\nSubject: Re: x\nMessage-ID: <twice@carrier.example>\n\nsame\n"
    );
    let r1 = smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &body,
    )
    .await;
    // The copy to support@acme.com comes back through forwarding with a trace header more.
    let forwarded = format!("Received: from mx.acme.com by mx.google.com\n{body}");
    let r2 = smtp_send(
        s.smtp,
        "vera@carrier.example",
        &["fwd-k3j9x2@gw.example.com"],
        &forwarded,
    )
    .await;
    assert!(r1.starts_with("250") && r2.starts_with("250"));
    // Exactly the same bytes again.
    let r3 = smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &body,
    )
    .await;
    assert!(r3.starts_with("250"));
    s.wait_ingested().await;
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM activity").await, 1);
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM inbound_queue WHERE state = 'done'")
            .await,
        3
    );
    // A different message reusing the Message-ID is kept, flagged.
    let other = body.replace("same", "different content");
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &other,
    )
    .await;
    s.wait_ingested().await;
    let flags: String = s
        .query("SELECT flags FROM messages ORDER BY id DESC LIMIT 1")
        .await;
    assert!(flags.contains("duplicate_of:"), "{flags}");
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM activity").await,
        1,
        "no second wake-up"
    );
    s.shutdown().await;
}

/// Queues a message the way the SMTP listener does.
async fn enqueue(s: &TestServer, rcpt: &str, raw: &str) -> i64 {
    let env = backchannel::store::inbound::Envelope {
        peer_ip: "127.0.0.1".into(),
        helo: "t".into(),
        mail_from: "vera@carrier.example".into(),
        rcpts: vec![rcpt.to_string()],
        received_at: 1,
        ..Default::default()
    };
    let raw = raw.replace('\n', "\r\n").into_bytes();
    s.store
        .write(move |db| backchannel::store::inbound::enqueue(db, &env, &raw))
        .await
        .expect("enqueue")
}

fn test_config(s: &TestServer) -> std::sync::Arc<backchannel::config::Config> {
    let text = format!(
        "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[ingest]\nauthenticate = false\n",
        s.dir.path().join("data").display()
    );
    std::sync::Arc::new(
        backchannel::config::Config::from_toml_str(&text, Vec::new()).expect("config"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_idempotent_across_restarts_and_concurrent_workers() {
    // A server whose own worker is stopped, so this test drives ingestion.
    let mut s = server().await;
    s.shutdown().await;
    seed_thread(
        &s.sql,
        "T-9",
        TOKEN,
        "closed",
        "closed",
        &["vera@carrier.example"],
    )
    .await;
    for i in 0..20 {
        let raw = format!(
            "From: vera@carrier.example\nTo: x@y\nSubject: n{i}\nMessage-ID: <n{i}@carrier.example>\n\nbody {i}\n"
        );
        enqueue(&s, &format!("reply+{TOKEN}@gw.example.com"), &raw).await;
    }
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let w1 = backchannel::ingest::Worker::new(test_config(&s), s.store.clone(), notify.clone())
        .expect("worker");
    let w2 =
        backchannel::ingest::Worker::new(test_config(&s), s.store.clone(), notify).expect("worker");
    // Two workers racing over the same queue, then each again ("restart").
    let (a, b) = tokio::join!(w1.drain_once(), w2.drain_once());
    a.expect("w1");
    b.expect("w2");
    w1.drain_once().await.expect("again");
    w2.drain_once().await.expect("again");
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM messages").await, 20);
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM activity").await, 20);
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM mailbox_messages")
            .await,
        40
    );
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM inbound_queue WHERE state = 'done'")
            .await,
        20
    );
    // Arrival order is kept: message ids follow queue ids.
    let ordered: i64 = s.query("SELECT COUNT(*) FROM messages m JOIN inbound_queue q ON q.id = m.inbound_id WHERE m.subject = 'n' || (q.id - 1)").await;
    assert_eq!(ordered, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_leaves_the_message_queued_and_a_retry_ingests_it_once() {
    let mut s = server().await;
    s.shutdown().await;
    seed_thread(
        &s.sql,
        "T-10",
        TOKEN,
        "open",
        "open",
        &["vera@carrier.example"],
    )
    .await;
    enqueue(
        &s,
        &format!("reply+{TOKEN}@gw.example.com"),
        "From: vera@carrier.example\nSubject: x\nMessage-ID: <c1@carrier.example>\n\nhello\n",
    )
    .await;
    let w = backchannel::ingest::Worker::new(
        test_config(&s),
        s.store.clone(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
    .expect("worker");
    s.store.fail_next_commit();
    w.drain_once().await.expect("drain with a failing commit");
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(
        s.query::<String>("SELECT state FROM inbound_queue").await,
        "queued"
    );
    w.drain_once().await.expect("retry");
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM activity").await, 1);
    assert_eq!(
        s.query::<String>("SELECT state FROM inbound_queue").await,
        "done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_that_fails_dmarc_is_flagged_even_for_a_participant() {
    use common::dns::{FakeDns, RecordKind};
    let dns = FakeDns::start(&[
        (
            "vendor.example",
            RecordKind::Txt("v=spf1 ip4:192.0.2.1 -all".into()),
        ),
        (
            "_dmarc.vendor.example",
            RecordKind::Txt("v=DMARC1; p=reject".into()),
        ),
        (
            "honest.example",
            RecordKind::Txt("v=spf1 ip4:127.0.0.1 -all".into()),
        ),
    ])
    .await;
    let mut s = TestServer::start_with(
        "",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n",
            dns.addr
        ),
    )
    .await;
    seed_thread(
        &s.sql,
        "T-11",
        TOKEN,
        "open",
        "open",
        &["ceo@vendor.example", "ann@honest.example"],
    )
    .await;
    let forged = format!(
        "From: CEO <ceo@vendor.example>\nTo: reply+{TOKEN}@gw.example.com\nSubject: Re: x\nMessage-ID: <forged@vendor.example>\n\nPay the invoice to a new account.\n"
    );
    smtp_send(
        s.smtp,
        "ceo@vendor.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &forged,
    )
    .await;
    let honest = format!(
        "From: Ann <ann@honest.example>\nTo: reply+{TOKEN}@gw.example.com\nSubject: Re: x\nMessage-ID: <honest@honest.example>\n\nFine.\n"
    );
    smtp_send(
        s.smtp,
        "ann@honest.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &honest,
    )
    .await;
    s.wait_ingested().await;
    let rows: Vec<(String, String, String)> = s
        .sql
        .read(|c| {
            let mut st = c.prepare("SELECT message_id, flags, auth FROM messages ORDER BY id")?;
            let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(r.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("rows");
    let forged_auth: serde_json::Value = serde_json::from_str(&rows[0].2).expect("auth json");
    assert_eq!(forged_auth["spf"], "fail");
    assert_eq!(forged_auth["dmarc"], "fail");
    assert_eq!(
        rows[0].1, "[\"unverified_sender\"]",
        "forged mail is flagged"
    );
    let honest_auth: serde_json::Value = serde_json::from_str(&rows[1].2).expect("auth json");
    assert_eq!(honest_auth["spf"], "pass");
    assert_eq!(
        rows[1].1, "[]",
        "an authenticated participant is not flagged"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_sender_cannot_copy_strangers_into_the_thread() {
    let mut s = server().await;
    seed_thread(
        &s.sql,
        "T-20",
        TOKEN,
        "open",
        "open",
        &["vera@carrier.example"],
    )
    .await;
    let cc: Vec<String> = (0..30)
        .map(|i| format!("stranger{i}@spam.example"))
        .collect();
    let msg = format!(
        "From: Mallory <mallory@evil.example>\nTo: reply+{TOKEN}@gw.example.com\nCc: {}\nSubject: Re: x\nMessage-ID: <m1@evil.example>\n\nhi\n",
        cc.join(", ")
    );
    smtp_send(
        s.smtp,
        "mallory@evil.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &msg,
    )
    .await;
    // A participant copies in colleagues: they join, up to the cap per message.
    let many: Vec<String> = (0..15)
        .map(|i| format!("colleague{i}@carrier.example"))
        .collect();
    let vera = format!(
        "From: Vera <vera@carrier.example>\nTo: reply+{TOKEN}@gw.example.com\nCc: {}\nSubject: Re: x\nMessage-ID: <v9@carrier.example>\n\nadding my team\n",
        many.join(", ")
    );
    smtp_send(
        s.smtp,
        "vera@carrier.example",
        &[&format!("reply+{TOKEN}@gw.example.com")],
        &vera,
    )
    .await;
    s.wait_ingested().await;
    let strangers: i64 = s
        .query("SELECT COUNT(*) FROM participants WHERE email LIKE '%@spam.example'")
        .await;
    assert_eq!(strangers, 0, "nobody an unverified sender copied in");
    // SPEC §10: an unverified sender (evil.example vouches for nothing)
    // joins only when an agent admits them.
    let mallory: i64 = s
        .query("SELECT COUNT(*) FROM participants WHERE email = 'mallory@evil.example'")
        .await;
    assert_eq!(mallory, 0, "an unverified sender does not join");
    let colleagues: i64 = s
        .query("SELECT COUNT(*) FROM participants WHERE email LIKE 'colleague%'")
        .await;
    assert_eq!(
        colleagues as usize,
        backchannel::conversations::MAX_NEW_PARTICIPANTS
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_matched_by_its_verp_key_alone_lands_on_its_thread() {
    let mut s = server().await;
    let (_, sc) = seed_thread(
        &s.sql,
        "T-21",
        TOKEN,
        "open",
        "open",
        &["gone@carrier.example"],
    )
    .await;
    s.sql
        .write(move |c| {
            c.execute(
                "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256, message_id, received_at)
                 VALUES (?1, 'out', 'agent', 'api', ?2, ?2, 'other-format@gw.example.com', 0)",
                rusqlite::params![sc, &[0u8][..]],
            )?;
            c.execute(
                "INSERT INTO outbox (message_id, recipient, verp_key, state, next_attempt_at, created_at)
                 VALUES ((SELECT id FROM messages WHERE message_id = 'other-format@gw.example.com'),
                         'gone@carrier.example', 'only7key', 'sent', 0, 0)",
                [],
            )?;
            Ok(())
        })
        .await
        .expect("outbound");
    // A non-standard bounce with no returned headers: only the VERP key ties it.
    let qmail = "From: MAILER-DAEMON@mx.carrier.example\nTo: bounce+only7key@gw.example.com\nSubject: failure notice\n\nHi. This is the qmail-send program at mx.carrier.example.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n<gone@carrier.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n";
    smtp_send(s.smtp, "", &["bounce+only7key@gw.example.com"], qmail).await;
    s.wait_ingested().await;
    let (kind, msc): (String, Option<i64>) = s
        .sql
        .read(|c| {
            Ok(c.query_row(
                "SELECT kind, side_conversation_id FROM messages WHERE direction = 'in'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .expect("row");
    assert_eq!((kind.as_str(), msc), ("bounce", Some(sc)));
    assert_eq!(
        s.query::<String>("SELECT state FROM outbox").await,
        "bounced"
    );
    s.shutdown().await;
}
