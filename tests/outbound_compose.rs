//! Outbound composition through the side-conversation service: the stored
//! bytes parsed back with mail-parser (headers, a threading chain over five
//! follow-ups, signature placement, attachments, context block, portal
//! link), DKIM verified with mail-auth against a local DNS server, and the
//! service's refusals.

mod common;

use backchannel::conversations::{Attachment, FollowUpRequest, ServiceError, StartRequest};
use common::{TestServer, agent};
use mail_parser::{MessageParser, MimeHeaders};

const NO_AUTH: &str = "";

async fn raw_of(s: &TestServer, message: i64) -> Vec<u8> {
    s.sql
        .read(move |c| {
            Ok(
                c.query_row("SELECT raw FROM messages WHERE id = ?1", [message], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
        .expect("raw")
}

fn start(to: &[&str], subject: &str, text: &str) -> StartRequest {
    StartRequest {
        to: to.iter().map(|s| s.to_string()).collect(),
        subject: subject.into(),
        body_text: Some(text.into()),
        ..Default::default()
    }
}

fn header<'a>(m: &'a mail_parser::Message<'a>, name: &'a str) -> Option<&'a str> {
    m.header_raw(name).map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_carries_token_reply_to_and_thread_index() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let ann = agent(&s.store, "ann@acme.com", "Ann Agent").await;
    let mut req = start(
        &["vera@carrier.example"],
        "Pallet 7 delayed",
        "When does pallet 7 ship?",
    );
    req.cc = vec!["boss@carrier.example".into(), "VERA@carrier.example".into()];
    let sent = s
        .conversations
        .start(ann, "T-100".into(), req)
        .await
        .expect("started");
    let raw = raw_of(&s, sent.message).await;
    let m = MessageParser::default().parse(&raw).expect("parses");

    let from = m.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.address(), Some("reply@gw.example.com"));
    assert_eq!(from.name(), Some("Ann Agent"));
    let reply_to = m
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("reply-to");
    assert_eq!(reply_to, format!("reply+{}@gw.example.com", sent.token));
    let mid = m.message_id().expect("message-id");
    assert!(
        mid.starts_with(&format!("{}.1.", sent.token)) && mid.ends_with("@gw.example.com"),
        "{mid}"
    );
    assert_eq!(m.subject(), Some("Pallet 7 delayed"));
    assert!(m.header_raw("In-Reply-To").is_none() && m.header_raw("References").is_none());
    assert!(
        m.header_raw("Auto-Submitted").is_none(),
        "human mail is not auto-submitted"
    );
    let ti = thread_index(header(&m, "Thread-Index").expect("thread-index")).expect("base64");
    assert_eq!(ti.len(), 22);
    assert_eq!(header(&m, "Thread-Topic"), Some("Pallet 7 delayed"));
    assert!(
        m.body_text(0)
            .is_some_and(|t| t.contains("When does pallet 7 ship?"))
    );
    assert!(
        m.body_html(0)
            .is_some_and(|h| h.contains("<p>When does pallet 7 ship?</p>"))
    );
    // The duplicate Cc of a To address is dropped: one outbox row per person.
    let rows: Vec<String> = s
        .sql
        .read(|c| {
            // (The worker may already be delivering them: recipients only.)
            let mut st = c.prepare("SELECT recipient FROM outbox ORDER BY id")?;
            Ok(st
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
        .expect("outbox");
    assert_eq!(rows, vec!["vera@carrier.example", "boss@carrier.example"]);
    assert_eq!(
        s.query::<String>("SELECT text FROM activity").await,
        "Ann Agent started a side conversation with vera@carrier.example, boss@carrier.example"
    );
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM participants").await, 2);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_follow_ups_chain_in_reply_to_references_and_thread_index() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let ann = agent(&s.store, "ann@acme.com", "Ann Agent").await;
    let sent = s
        .conversations
        .start(
            ann.clone(),
            "T-101".into(),
            start(&["vera@carrier.example"], "Invoice 55", "first"),
        )
        .await
        .expect("start");
    let first = MessageParser::default()
        .parse(&raw_of(&s, sent.message).await)
        .expect("parse")
        .into_owned();
    let mut ids = vec![first.message_id().expect("id").to_string()];
    let mut index = thread_index(header(&first, "Thread-Index").expect("ti")).expect("b64");
    for n in 2..=6 {
        let f = s
            .conversations
            .follow_up(
                ann.clone(),
                sent.side_conversation,
                FollowUpRequest {
                    body_text: Some(format!("follow-up {n}")),
                    ..Default::default()
                },
            )
            .await
            .expect("follow-up");
        let raw = raw_of(&s, f.message).await;
        let m = MessageParser::default().parse(&raw).expect("parse");
        let mid = m.message_id().expect("id").to_string();
        assert!(mid.starts_with(&format!("{}.{n}.", sent.token)), "{mid}");
        assert_eq!(m.subject(), Some("Re: Invoice 55"));
        assert_eq!(
            m.in_reply_to().as_text(),
            ids.last().map(String::as_str),
            "message {n}"
        );
        let refs: Vec<String> = match m.references() {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
            _ => Vec::new(),
        };
        assert_eq!(refs, ids, "References of message {n}");
        let ti = thread_index(header(&m, "Thread-Index").expect("ti")).expect("b64");
        assert_eq!(
            ti.len(),
            index.len() + 5,
            "Thread-Index grows by one child block"
        );
        assert_eq!(&ti[..index.len()], &index[..], "and keeps what came before");
        assert_eq!(
            m.to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("vera@carrier.example")
        );
        ids.push(mid);
        index = ti;
    }
    assert_eq!(
        s.query::<i64>(
            "SELECT COUNT(*) FROM activity WHERE text = 'Ann Agent replied in a side conversation'"
        )
        .await,
        5
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_context_portal_link_and_attachments() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let ann = agent(&s.store, "ann@acme.com", "Ann Agent").await;
    s.store
        .write(|db| {
            backchannel::store::put_setting(
                db,
                "signature",
                &serde_json::json!({"text": "{{agent.name}}\n{{sender.name}} <{{sender.email}}>", "html": "<p><b>{{agent.name}}</b> · {{sender.name}}</p>"}),
            )
        })
        .await
        .expect("signature");
    s.sql
        .write(|c| {
            c.execute(
                "INSERT INTO parents (external_id, subject, requester_name, requester_email, status, created_at, updated_at)
                 VALUES ('T-102', 'Broken pallet on delivery', 'Rita Requester', 'rita@customer.example', 'open', 0, 0)",
                [],
            )?;
            c.execute(
                "INSERT INTO senders (email, name, reply_mode, status, forwarding_local, signature_text, created_at)
                 VALUES ('support@acme.com', 'Acme Support', 'plus', 'verified', 'fwd-aaaa', NULL, 0)",
                [],
            )?;
            Ok(())
        })
        .await
        .expect("setup");
    let mut req = start(
        &["vera@carrier.example"],
        "Damage claim",
        "Please see the photo.",
    );
    req.from = Some("support@acme.com".into());
    req.body_html = Some("<html><body><p>Please see the <i>photo</i>.</p></body></html>".into());
    req.include_context = true;
    req.share_portal_link = true;
    req.attachments = vec![Attachment {
        filename: "claim.pdf".into(),
        content_type: "application/pdf".into(),
        data: b"%PDF-1.4 test".to_vec(),
    }];
    let sent = s
        .conversations
        .start(ann, "T-102".into(), req)
        .await
        .expect("start");
    let raw = raw_of(&s, sent.message).await;
    let m = MessageParser::default().parse(&raw).expect("parse");
    let from = m.from().and_then(|a| a.first()).expect("from");
    assert_eq!(
        (from.name(), from.address()),
        (Some("Acme Support"), Some("support@acme.com"))
    );
    let reply_to = m
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("reply-to");
    assert_eq!(
        reply_to,
        format!("support+{}@acme.com", sent.token),
        "plus mode"
    );

    let text = m.body_text(0).expect("text").replace("\r\n", "\n");
    let body_at = text.find("Please see the photo.").expect("body");
    let sig_at = text
        .find("-- \nAnn Agent\nAcme Support <support@acme.com>")
        .expect("signature with placeholders filled");
    let ctx_at = text.find("Ticket #T-102").expect("context");
    assert!(body_at < sig_at && sig_at < ctx_at, "{text}");
    assert!(text.contains("Requester: Rita Requester <rita@customer.example>"));
    assert!(text.contains("Status: open"));
    assert!(text.contains("> Broken pallet on delivery"));
    // The (only) recipient's own link (SPEC §8).
    let portal: String = s.query("SELECT token FROM portal_links").await;
    assert!(
        text.contains(&format!(
            "View conversation: http://127.0.0.1:8080/p/{portal}"
        )),
        "{text}"
    );
    assert_ne!(
        portal, sent.token,
        "the portal token is not the reply token"
    );

    let html = m.body_html(0).expect("html").to_string();
    let sig = html
        .find("<b>Ann Agent</b> · Acme Support")
        .expect("html signature");
    assert!(html.find("<i>photo</i>").expect("body") < sig);
    assert!(
        sig < html.find("</body>").expect("body end"),
        "signature inside the body"
    );
    assert!(html.contains("Requester: Rita Requester &lt;rita@customer.example&gt;"));
    assert!(html.contains(&format!("href=\"http://127.0.0.1:8080/p/{portal}\"")));

    let att = m.attachment(0).expect("attachment");
    assert_eq!(att.attachment_name(), Some("claim.pdf"));
    assert_eq!(
        att.content_type().map(|c| (c.ctype(), c.subtype())),
        Some(("application", Some("pdf")))
    );
    assert_eq!(att.contents(), b"%PDF-1.4 test");
    assert_eq!(
        s.query::<String>("SELECT last_sender FROM parents").await,
        "support@acme.com"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signature_verifies_against_the_published_key() {
    use common::dns::{FakeDns, RecordKind};
    use mail_auth::common::crypto::Ed25519Key;
    let pkcs8 = Ed25519Key::generate_pkcs8().expect("key");
    let public = Ed25519Key::from_pkcs8_der(&pkcs8)
        .expect("key")
        .public_key();
    let record = format!("v=DKIM1; k=ed25519; p={}", b64(&public));
    let dns = FakeDns::start(&[("backchannel._domainkey.acme.com", RecordKind::Txt(record))]).await;
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let ann = agent(&s.store, "ann@acme.com", "Ann Agent").await;
    s.sql
        .write(move |c| {
            c.execute(
                "INSERT INTO senders (email, name, status, forwarding_local, dns, created_at)
                 VALUES ('support@acme.com', 'Acme', 'verified', 'fwd-b', '{\"dkim\":{\"status\":\"pass\"}}', 0)",
                [],
            )?;
            c.execute(
                "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key, created_at)
                 VALUES ('acme.com', 'backchannel', 'ed25519', ?1, '', 0)",
                [pkcs8],
            )?;
            Ok(())
        })
        .await
        .expect("setup");
    let mut req = start(&["vera@carrier.example"], "Signed", "This is signed.");
    req.from = Some("support@acme.com".into());
    let sent = s
        .conversations
        .start(ann, "T-103".into(), req)
        .await
        .expect("start");
    let raw = raw_of(&s, sent.message).await;
    assert!(raw.starts_with(b"DKIM-Signature:"), "signed");
    let config = backchannel::config::DnsConfig {
        nameservers: vec![dns.addr],
        timeout: std::time::Duration::from_secs(2),
    };
    let auth = backchannel::ingest::auth::Authenticator::new(&config).expect("authenticator");
    let result = auth
        .authenticate(
            &raw,
            "192.0.2.1".parse().expect("ip"),
            "gw.example.com",
            "bounce+x@gw.example.com",
            "gw.example.com",
        )
        .await;
    assert_eq!(result.dkim, "pass", "{result:?}");
    assert!(result.detail.contains("acme.com"), "{}", result.detail);
    s.shutdown().await;
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_field_or_the_state() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let ann = agent(&s.store, "ann@acme.com", "Ann Agent").await;
    agent(&s.store, "bob@acme.com", "Bob").await;
    s.sql
        .write(|c| {
            Ok(c.execute(
                "INSERT INTO senders (email, status, forwarding_local, created_at) VALUES ('new@acme.com', 'pending', 'fwd-c', 0)",
                [],
            )?)
        })
        .await
        .expect("sender");
    let field = |r: Result<backchannel::conversations::Sent, ServiceError>| match r {
        Err(ServiceError::Invalid { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let c = &s.conversations;
    assert_eq!(
        field(
            c.start(ann.clone(), "T-1".into(), start(&[], "s", "b"))
                .await
        ),
        "to"
    );
    assert_eq!(
        field(
            c.start(
                ann.clone(),
                "T-1".into(),
                start(&["not an address"], "s", "b")
            )
            .await
        ),
        "to[0]"
    );
    assert_eq!(
        field(
            c.start(
                ann.clone(),
                "T-1".into(),
                start(&["BOB@acme.com"], "s", "b")
            )
            .await
        ),
        "to[0]"
    );
    assert_eq!(
        field(
            c.start(ann.clone(), "T-1".into(), start(&["v@x.example"], " ", "b"))
                .await
        ),
        "subject"
    );
    assert_eq!(
        field(
            c.start(ann.clone(), "T-1".into(), start(&["v@x.example"], "s", " "))
                .await
        ),
        "body_text"
    );
    let mut unverified = start(&["v@x.example"], "s", "b");
    unverified.from = Some("new@acme.com".into());
    assert_eq!(
        field(c.start(ann.clone(), "T-1".into(), unverified).await),
        "from"
    );
    let mut unknown = start(&["v@x.example"], "s", "b");
    unknown.from = Some("nobody@acme.com".into());
    assert_eq!(
        field(c.start(ann.clone(), "T-1".into(), unknown).await),
        "from"
    );
    // The user-as-recipient message tells the agent what to do instead.
    match c
        .start(
            ann.clone(),
            "T-1".into(),
            start(&["bob@acme.com"], "s", "b"),
        )
        .await
    {
        Err(ServiceError::Invalid { message, .. }) => assert!(
            message.contains("mention them in a note instead"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    // Closed: follow-up refused with a conflict until reopened.
    let sent = c
        .start(ann.clone(), "T-1".into(), start(&["v@x.example"], "s", "b"))
        .await
        .expect("start");
    c.set_status(ann.clone(), sent.side_conversation, false)
        .await
        .expect("close");
    let r = c
        .follow_up(
            ann.clone(),
            sent.side_conversation,
            FollowUpRequest {
                body_text: Some("x".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(ServiceError::Conflict(_))), "{r:?}");
    assert!(matches!(
        c.set_status(ann.clone(), sent.side_conversation, false)
            .await,
        Err(ServiceError::Conflict(_))
    ));
    c.set_status(ann.clone(), sent.side_conversation, true)
        .await
        .expect("reopen");
    c.follow_up(
        ann.clone(),
        sent.side_conversation,
        FollowUpRequest {
            body_text: Some("x".into()),
            ..Default::default()
        },
    )
    .await
    .expect("after reopen");
    let log: String = s
        .query("SELECT string_agg(text, '|' ORDER BY id) FROM activity")
        .await;
    assert_eq!(
        log,
        "Ann Agent started a side conversation with v@x.example|Ann Agent closed a side conversation|Ann Agent reopened a side conversation|Ann Agent replied in a side conversation"
    );
    // Turned off in the settings: a conflict.
    s.store
        .write(|db| {
            backchannel::store::put_setting(
                db,
                "side_conversations_enabled",
                &serde_json::json!(false),
            )
        })
        .await
        .expect("setting");
    assert!(matches!(
        c.start(ann.clone(), "T-2".into(), start(&["v@x.example"], "s", "b"))
            .await,
        Err(ServiceError::Conflict(_))
    ));
    // Header injection through the subject cannot add a header.
    s.store
        .write(|db| {
            backchannel::store::put_setting(
                db,
                "side_conversations_enabled",
                &serde_json::json!(true),
            )
        })
        .await
        .expect("setting");
    let sent = c
        .start(
            ann,
            "T-3".into(),
            start(&["v@x.example"], "Hi\r\nBcc: victim@evil.example", "b"),
        )
        .await
        .expect("start");
    let raw = raw_of(&s, sent.message).await;
    let m = MessageParser::default().parse(&raw).expect("parse");
    assert!(m.header_raw("Bcc").is_none());
    assert_eq!(m.subject(), Some("Hi  Bcc: victim@evil.example"));
    s.shutdown().await;
}

/// A Thread-Index header's bytes (standard base64).
fn thread_index(v: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
}
