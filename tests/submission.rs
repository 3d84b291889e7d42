//! The submission listener (SPEC §12) from the outside: real sockets on
//! 127.0.0.1, a raw SMTP client, tokio-rustls for STARTTLS and lettre as a
//! real client. AUTH by email + API token (PLAIN, LOGIN), the refusals
//! (wrong token or email, viewer, deactivated, throttled, plaintext from
//! afar), a reply becoming a follow-up composed by the gateway, a start by
//! `ticket+<id>`, every refusal with its code and nothing queued, a retried
//! submission sent once, a user deactivated mid-session.

mod common;

use std::sync::Arc;

use backchannel::conversations::{Actor, StartRequest};
use backchannel::model::Role;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Client, TestServer, api_call, code, connect, make_user, wait_until};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

const ANN: &str = "ann@acme.com";
/// Fast failures: the delay is for guessers, not for tests.
const FAST: &str = "auth_failure_delay = \"0s\"\nmax_errors = 100\n";

/// A gateway with Ann (member) who started side conversation on T-1 with
/// Vera; returns (server, Ann's token, side conversation id, its token, the
/// Message-ID of the gateway's first message).
struct World {
    s: TestServer,
    token: String,
    sc: i64,
    sc_token: String,
    first_message_id: String,
}

async fn world(submission_extra: &str, rest: &str) -> World {
    let s = TestServer::start_with_submission(&format!("{FAST}{submission_extra}"), rest).await;
    let token = make_user(&s, ANN, "Ann Agent", Role::Member).await;
    let actor = actor_of(&s, ANN).await;
    let sent = s
        .conversations
        .start(
            actor,
            "T-1".into(),
            StartRequest {
                to: vec!["vera@vendor.example".into()],
                subject: "Pallet 7 delayed".into(),
                body_text: Some("When does pallet 7 ship?".into()),
                ..Default::default()
            },
        )
        .await
        .expect("started");
    let raw = raw_of(&s, sent.message).await;
    let first_message_id = MessageParser::default()
        .parse(&raw)
        .and_then(|m| m.message_id().map(str::to_string))
        .expect("message-id");
    World {
        s,
        token,
        sc: sent.side_conversation,
        sc_token: sent.token.to_string(),
        first_message_id,
    }
}

async fn actor_of(s: &TestServer, email: &str) -> Actor {
    let e = email.to_string();
    let user = s
        .store
        .read(move |db| backchannel::store::users::by_email(db, &e))
        .await
        .expect("user");
    Actor {
        user_id: user.id,
        name: user.name,
        email: user.email,
    }
}

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

async fn outbox_rows(s: &TestServer) -> i64 {
    s.query::<i64>("SELECT COUNT(*) FROM outbox").await
}

async fn out_messages(s: &TestServer) -> i64 {
    s.query::<i64>("SELECT COUNT(*) FROM messages WHERE direction = 'out'")
        .await
}

fn plain(email: &str, token: &str) -> String {
    B64.encode(format!("\0{email}\0{token}"))
}

fn addr(s: &TestServer) -> std::net::SocketAddr {
    s.submission.expect("the submission listener is on")
}

/// Connected, greeted, EHLO'd and logged in with AUTH PLAIN.
async fn login(s: &TestServer, email: &str, token: &str) -> Client<TcpStream> {
    let mut c = connect(addr(s)).await;
    assert_eq!(code(&c.reply().await), "220");
    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(code(&ehlo), "250", "{ehlo}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(email, token))).await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    c
}

/// MAIL, RCPTs (each must be accepted), DATA; the reply to the final dot.
async fn submit<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Client<S>,
    from: &str,
    rcpts: &[&str],
    data: &str,
) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    assert!(r.starts_with("250"), "MAIL: {r}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.starts_with("250"), "RCPT {rcpt}: {r}");
    }
    let r = c.cmd("DATA").await;
    assert!(r.starts_with("354"), "DATA: {r}");
    let body = data.replace("\r\n", "\n").replace('\n', "\r\n");
    let stuffed: Vec<String> = body
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut text = stuffed.join("\r\n");
    if !text.ends_with("\r\n") {
        text.push_str("\r\n");
    }
    c.send(text.as_bytes()).await;
    c.cmd(".").await
}

fn reply_text(w: &World, message_id: &str) -> String {
    format!(
        "From: Ann Agent <{ANN}>\r\nTo: vera@vendor.example\r\nSubject: Re: Pallet 7 delayed\r\n\
Message-ID: <{message_id}>\r\nIn-Reply-To: <{}>\r\nReferences: <{}>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Shipped today, tracking attached.\r\n\r\nOn Tue, Vera wrote:\r\n> internal: margin is 40%\r\n> When?\r\n\r\n\
--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=pod.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n",
        w.first_message_id, w.first_message_id
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_plain_and_login_with_email_and_api_token() {
    let mut w = world("", "").await;
    let s = &w.s;
    let mut c = connect(addr(s)).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = c.cmd("EHLO client.example").await;
    for cap in [
        "SIZE 26214400",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.contains(cap), "{cap} missing from {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"), "no certificate: {ehlo}");
    // Nothing before AUTH.
    let r = c.cmd(&format!("MAIL FROM:<{ANN}>")).await;
    assert!(r.starts_with("530 5.7.0"), "{r}");
    let r = c.cmd("RCPT TO:<vera@vendor.example>").await;
    assert!(r.starts_with("530 5.7.0"), "{r}");
    let r = c.cmd("DATA").await;
    assert!(r.starts_with("530 5.7.0"), "{r}");
    // PLAIN by continuation.
    let r = c.cmd("AUTH PLAIN").await;
    assert_eq!(r, "334 ");
    let r = c.cmd(&plain(ANN, &w.token)).await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ANN, &w.token))).await;
    assert!(r.starts_with("503 5.5.1"), "only once: {r}");
    let r = c.cmd(&format!("MAIL FROM:<{ANN}>")).await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT").await;

    // LOGIN, the user name as initial response and as a challenge answer.
    for initial in [false, true] {
        let mut c = connect(addr(s)).await;
        c.reply().await;
        c.cmd("EHLO client.example").await;
        let r = if initial {
            c.cmd(&format!("AUTH LOGIN {}", B64.encode(ANN))).await
        } else {
            let r = c.cmd("AUTH LOGIN").await;
            assert_eq!(r, "334 VXNlcm5hbWU6", "Username:");
            c.cmd(&B64.encode(ANN)).await
        };
        assert_eq!(r, "334 UGFzc3dvcmQ6", "Password:");
        let r = c.cmd(&B64.encode(&w.token)).await;
        assert!(r.starts_with("235 2.7.0"), "{r}");
    }

    // Refusals: wrong token, the right token with another email, a
    // cancelled exchange, garbage, an unknown mechanism.
    let bob = make_user(s, "bob@acme.com", "Bob", Role::Member).await;
    let mut c = connect(addr(s)).await;
    c.reply().await;
    c.cmd("EHLO client.example").await;
    for (email, token) in [
        (ANN, "not-the-token"),
        (ANN, bob.as_str()),
        ("bob@acme.com", w.token.as_str()),
    ] {
        let r = c.cmd(&format!("AUTH PLAIN {}", plain(email, token))).await;
        assert!(r.starts_with("535 5.7.8"), "{email}: {r}");
    }
    // No user name at all: a malformed response.
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", &w.token))).await;
    assert!(r.starts_with("501 5.5.2"), "{r}");
    let r = c.cmd("AUTH LOGIN").await;
    assert!(r.starts_with("334"));
    let r = c.cmd("*").await;
    assert!(r.starts_with("501 5.0.0"), "{r}");
    let r = c.cmd("AUTH PLAIN !!!notbase64").await;
    assert!(r.starts_with("501 5.5.2"), "{r}");
    let r = c.cmd("AUTH CRAM-MD5").await;
    assert!(r.starts_with("504 5.5.4"), "{r}");
    // Acting for someone else (authzid) is refused.
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            B64.encode(format!("bob@acme.com\0{ANN}\0{}", w.token))
        ))
        .await;
    assert!(r.starts_with("501 5.5.2"), "{r}");
    let r = c.cmd(&format!("MAIL FROM:<{ANN}>")).await;
    assert!(r.starts_with("530 5.7.0"), "still not logged in: {r}");

    // A viewer is refused with a reason; so is a deactivated user.
    let viewer = make_user(s, "vic@acme.com", "Vic", Role::Viewer).await;
    let r = c
        .cmd(&format!("AUTH PLAIN {}", plain("vic@acme.com", &viewer)))
        .await;
    assert!(r.starts_with("535 5.7.8") && r.contains("viewer"), "{r}");
    let owner = make_user(s, "owner@acme.com", "Olga", Role::Owner).await;
    let bob_id = s
        .query::<i64>("SELECT id FROM users WHERE email = 'bob@acme.com'")
        .await;
    let (st, body) = api_call(
        s,
        "PATCH",
        &format!("/api/users/{bob_id}"),
        &owner,
        Some(json!({"active": false})),
    )
    .await;
    assert!(st.is_success(), "{st} {body}");
    let r = c
        .cmd(&format!("AUTH PLAIN {}", plain("bob@acme.com", &bob)))
        .await;
    assert!(r.starts_with("535 5.7.8"), "deactivated: {r}");
    c.cmd("QUIT").await;

    let m = s.metrics_text().await;
    assert!(
        m.contains("submission_auth_total{result=\"ok\"}"),
        "metrics: {m}"
    );
    assert!(m.contains("submission_auth_total{result=\"failed\"}"));
    w.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_address() {
    let mut w = world("", "[limits]\nexempt = []\nlogin_failures = 3\n").await;
    let s = &w.s;
    let mut c = connect(addr(s)).await;
    c.reply().await;
    c.cmd("EHLO client.example").await;
    for i in 0..3 {
        let r = c.cmd(&format!("AUTH PLAIN {}", plain(ANN, "wrong"))).await;
        assert!(r.starts_with("535 5.7.8"), "failure {i}: {r}");
    }
    // Blocked now: even the right token is refused, with when to retry.
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ANN, &w.token))).await;
    assert!(
        r.starts_with("454 4.7.0") && r.contains("try again in"),
        "{r}"
    );
    w.s.shutdown().await;
}

/// The rule "plaintext AUTH only after STARTTLS or from loopback", on the
/// real session code, for a peer that is not loopback: the session is run
/// over an in-memory stream as if it came from 203.0.113.9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_auth_is_refused_to_a_remote_peer_before_starttls() {
    let certdir = tempfile::tempdir().expect("tempdir");
    let (tls_keys, _) = certificate(certdir.path());
    let data = tempfile::tempdir().expect("tempdir");
    let config = backchannel::config::Config::from_toml_str(
        &format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[smtp]\n{tls_keys}[submission]\nauth_failure_delay = \"0s\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n",
            data.path().display()
        ),
        Vec::new(),
    )
    .expect("config");
    let store = common::open_store(&config.db_path());
    let token = store
        .write(|db| backchannel::store::users::create(db, ANN, "Ann", Role::Member))
        .await
        .expect("user")
        .1
        .as_str()
        .to_string();
    let config = Arc::new(config);
    let limits = backchannel::limits::Limits::new(&config);
    let conversations = backchannel::conversations::Conversations::new(
        config.clone(),
        store.clone(),
        Arc::new(tokio::sync::Notify::new()),
    );
    let server = backchannel::smtp::submission::SubmissionServer::new(
        config,
        store.clone(),
        conversations,
        limits,
    )
    .expect("server");
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (_trigger, shutdown) = backchannel::shutdown::Shutdown::new();
    let peer: std::net::SocketAddr = "203.0.113.9:40000".parse().expect("addr");
    let session = tokio::spawn(async move { server.serve_stream(theirs, peer, shutdown).await });
    let mut c = Client {
        io: tokio::io::BufReader::new(ours),
    };
    assert_eq!(code(&c.reply().await), "220");
    let ehlo = c.cmd("EHLO remote.example").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(
        !ehlo.contains("AUTH"),
        "no AUTH offered in the clear: {ehlo}"
    );
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ANN, &token))).await;
    assert!(r.starts_with("538 5.7.11"), "{r}");
    let r = c.cmd(&format!("MAIL FROM:<{ANN}>")).await;
    assert!(r.starts_with("530 5.7.0"), "{r}");
    c.cmd("QUIT").await;
    session.await.expect("session").expect("io");
    store.close();
}

/// A self-signed certificate for `localhost`, written as PEM files.
fn certificate(dir: &std::path::Path) -> (String, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ck.cert.der().to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_auth_with_rustls_and_with_lettre() {
    let certdir = tempfile::tempdir().expect("tempdir");
    let (tls_keys, cert_der) = certificate(certdir.path());
    let mut w = world(&tls_keys, "").await;
    let s = &w.s;

    // Raw: STARTTLS (pipelined commands after it are dropped), then AUTH
    // over TLS, then a reply.
    let mut c = connect(addr(s)).await;
    c.reply().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    c.send(format!("STARTTLS\r\nAUTH PLAIN {}\r\n", plain(ANN, &w.token)).as_bytes())
        .await;
    assert!(c.reply().await.starts_with("220 2.0.0"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert_der.clone()))
        .expect("root");
    let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
    let tls = connector
        .connect("localhost".try_into().expect("name"), c.io.into_inner())
        .await
        .expect("handshake");
    let mut c = Client {
        io: tokio::io::BufReader::new(tls),
    };
    let r = c.cmd(&format!("MAIL FROM:<{ANN}>")).await;
    assert!(
        r.starts_with("530 5.7.0"),
        "the pipelined AUTH was dropped: {r}"
    );
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ANN, &w.token))).await;
    assert!(r.starts_with("235"), "{r}");
    let r = submit(
        &mut c,
        ANN,
        &["vera@vendor.example"],
        &reply_text(&w, "tls-1@client.example"),
    )
    .await;
    assert_eq!(r, format!("250 2.0.0 Sent in side conversation {}", w.sc));
    c.cmd("QUIT").await;

    // lettre, a real client: STARTTLS required, AUTH PLAIN.
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let params = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_der(cert_der).expect("cert"))
        .build_rustls()
        .expect("tls params");
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(addr(s).port())
        .tls(Tls::Required(params))
        .credentials(Credentials::new(ANN.into(), w.token.clone()))
        .authentication(vec![Mechanism::Plain])
        .build();
    let msg = Message::builder()
        .from(ANN.parse().expect("from"))
        .to("vera@vendor.example".parse().expect("to"))
        .subject("Re: Pallet 7 delayed")
        .in_reply_to(format!("<{}>", w.first_message_id))
        .header(ContentType::TEXT_PLAIN)
        .body("Sent from lettre.".to_string())
        .expect("message");
    let resp = mailer.send(msg).await.expect("sent through lettre");
    assert!(resp.is_positive());
    assert_eq!(out_messages(s).await, 3, "the start and two follow-ups");
    let (_, thread) = api_call(
        s,
        "GET",
        &format!("/api/side-conversations/{}", w.sc),
        &w.token,
        None,
    )
    .await;
    assert!(thread.to_string().contains("Sent from lettre."), "{thread}");
    w.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_by_in_reply_to_becomes_a_follow_up_composed_by_the_gateway() {
    let mut w = world("", "").await;
    w.s.store
        .write(|db| {
            backchannel::store::put_setting(
                db,
                "signature",
                &json!({"text": "-- \n{{agent.name}}, Acme support", "html": ""}),
            )
        })
        .await
        .expect("signature");
    let s = &w.s;
    let before = outbox_rows(s).await;
    let mut c = login(s, ANN, &w.token).await;
    let r = submit(
        &mut c,
        ANN,
        &["vera@vendor.example"],
        &reply_text(&w, "r1@client.example"),
    )
    .await;
    assert_eq!(r, format!("250 2.0.0 Sent in side conversation {}", w.sc));
    c.cmd("QUIT").await;

    assert_eq!(outbox_rows(s).await, before + 1, "one row, for Vera");
    let (recipient, message): (String, i64) = s
        .sql
        .read(|c| {
            Ok(c.query_row(
                "SELECT recipient, message_id FROM outbox ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .expect("outbox");
    assert_eq!(recipient, "vera@vendor.example");
    let raw = raw_of(s, message).await;
    let m = MessageParser::default().parse(&raw).expect("parses");
    let from = m.from().and_then(|a| a.first()).expect("from");
    assert_eq!(
        from.address(),
        Some("reply@gw.example.com"),
        "the sender address, not Ann's"
    );
    assert_eq!(from.name(), Some("Ann Agent"));
    let mid = m.message_id().expect("message-id");
    assert!(
        mid.starts_with(&format!("{}.", w.sc_token)) && mid.ends_with("@gw.example.com"),
        "{mid}"
    );
    assert_eq!(m.in_reply_to().as_text(), Some(w.first_message_id.as_str()));
    let text = m.body_text(0).expect("text");
    assert!(text.contains("Shipped today, tracking attached."), "{text}");
    assert!(
        text.contains("Ann Agent, Acme support"),
        "signature: {text}"
    );
    assert!(
        !text.contains("margin is 40%"),
        "the quoted text stays behind: {text}"
    );
    let names: Vec<&str> = m
        .attachments()
        .filter_map(|a| a.attachment_name())
        .collect();
    assert_eq!(names, vec!["pod.pdf"]);
    // The API shows it on the thread.
    let (st, thread) = api_call(
        s,
        "GET",
        &format!("/api/side-conversations/{}", w.sc),
        &w.token,
        None,
    )
    .await;
    assert!(st.is_success());
    assert!(thread.to_string().contains("Shipped today"), "{thread}");
    // And it is delivered (maildir mode).
    wait_until("the follow-up delivered", || async {
        s.query::<i64>("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
            .await
            == before + 1
    })
    .await;
    w.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_by_ticket_address_and_a_retry_sends_once() {
    let mut w = world("", "").await;
    let s = &w.s;
    let before = outbox_rows(s).await;
    let mut c = login(s, ANN, &w.token).await;
    let data = format!(
        "From: {ANN}\r\nTo: Otto <otto@supplier.example>\r\nCc: ticket+T-1@gw.example.com, kim@supplier.example\r\n\
Subject: Spare pallet?\r\nMessage-ID: <start-1@client.example>\r\n\r\nDo you have a spare pallet?\r\n"
    );
    let rcpts = [
        "otto@supplier.example",
        "ticket+T-1@gw.example.com",
        "kim@supplier.example",
    ];
    let r = submit(&mut c, ANN, &rcpts, &data).await;
    let started: i64 = s.query("SELECT MAX(id) FROM side_conversations").await;
    assert_ne!(started, w.sc);
    assert_eq!(
        r,
        format!("250 2.0.0 Sent: started side conversation {started}")
    );
    assert_eq!(outbox_rows(s).await, before + 2, "Otto (to) and Kim (cc)");
    let parent: String = s
        .query(&format!(
            "SELECT p.external_id FROM side_conversations sc JOIN parents p ON p.id = sc.parent_id WHERE sc.id = {started}"
        ))
        .await;
    assert_eq!(parent, "T-1");
    // The client retries (lost the 250): the same Message-ID is sent once.
    let r = submit(&mut c, ANN, &rcpts, &data).await;
    assert_eq!(
        r,
        format!("250 2.0.0 Already sent in side conversation {started} (same Message-ID)")
    );
    assert_eq!(outbox_rows(s).await, before + 2);
    c.cmd("QUIT").await;
    w.s.shutdown().await;
}

/// Every refusal, each with its code, and nothing queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_their_code_and_queue_nothing() {
    let mut w = world("max_message_bytes = 4096\n", "").await;
    let s = &w.s;
    // A second side conversation, for the mix.
    let other = s
        .conversations
        .start(
            actor_of(s, ANN).await,
            "T-2".into(),
            StartRequest {
                to: vec!["otto@supplier.example".into()],
                subject: "Other".into(),
                body_text: Some("Other thread".into()),
                ..Default::default()
            },
        )
        .await
        .expect("second");
    make_user(s, "bob@acme.com", "Bob", Role::Member).await;
    let before = (outbox_rows(s).await, out_messages(s).await);
    let mut c = login(s, ANN, &w.token).await;

    // At the end of DATA, with the reason the client shows.
    let reply_addr = format!("reply+{}@gw.example.com", w.sc_token);
    let other_addr = format!("reply+{}@gw.example.com", other.token);
    let cases: Vec<(&str, Vec<String>, String, &str)> = vec![
        (
            "no target",
            vec!["vera@vendor.example".into()],
            format!("From: {ANN}\r\nTo: vera@vendor.example\r\nSubject: hi\r\n\r\nHello\r\n"),
            "no side conversation to send this in",
        ),
        (
            "two conversations",
            vec![reply_addr.clone(), other_addr.clone()],
            format!(
                "From: {ANN}\r\nTo: {reply_addr}, {other_addr}\r\nSubject: hi\r\n\r\nHello\r\n"
            ),
            "more than one side conversation",
        ),
        (
            "forged From",
            vec![reply_addr.clone()],
            format!("From: bob@acme.com\r\nTo: {reply_addr}\r\nSubject: hi\r\n\r\nHello\r\n"),
            "is not your address",
        ),
        (
            "a Bcc vendor",
            vec![reply_addr.clone(), "spy@vendor.example".into()],
            format!("From: {ANN}\r\nTo: {reply_addr}\r\nSubject: hi\r\n\r\nHello\r\n"),
            "Bcc",
        ),
        (
            "only quoted text",
            vec![reply_addr.clone()],
            format!(
                "From: {ANN}\r\nTo: {reply_addr}\r\nSubject: hi\r\n\r\n> Where is it?\r\n> Vera\r\n"
            ),
            "no text of its own",
        ),
        (
            "another agent in Cc",
            vec![reply_addr.clone(), "bob@acme.com".into()],
            format!(
                "From: {ANN}\r\nTo: {reply_addr}\r\nCc: bob@acme.com\r\nSubject: hi\r\n\r\nHello\r\n"
            ),
            "mention them in a note",
        ),
    ];
    for (what, rcpts, data, reason) in cases {
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let r = submit(&mut c, ANN, &rcpts, &data).await;
        assert!(
            r.starts_with("550 5.7.1") && r.contains(reason),
            "{what}: {r}"
        );
    }

    // At MAIL: another sender.
    let r = c.cmd("MAIL FROM:<bob@acme.com>").await;
    assert!(
        r.starts_with("550 5.7.1") && r.contains("not your address"),
        "{r}"
    );
    let r = c.cmd("MAIL FROM:<>").await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let r = c.cmd(&format!("MAIL FROM:<{ANN}> SIZE=999999")).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");

    // At RCPT: gateway addresses that name nothing, relay tricks.
    let r = c.cmd(&format!("MAIL FROM:<{ANN}>")).await;
    assert!(r.starts_with("250"), "{r}");
    for unknown in [
        "ticket+T-404@gw.example.com",
        "reply+zzzzzzzzzzzzzzzz@gw.example.com",
        "reply@gw.example.com",
        "postmaster@gw.example.com",
        "bounce+k1@gw.example.com",
        "bob@gw.example.com",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{unknown}>")).await;
        assert!(r.starts_with("550 5.1.1"), "{unknown}: {r}");
    }
    for trick in [
        "<@evil.example:vera@vendor.example>",
        "<@a,@b:vera@vendor.example>",
        "<\"vera@evil.example\"@vendor.example>",
        "<victim%elsewhere.example@vendor.example>",
        "<evil.example!vera@vendor.example>",
        "<vera@[127.0.0.1]>",
        "<vera@[IPv6:::1]>",
        "<vera@vendor.example.>",
        "<victim%elsewhere.example@gw.example.com>",
        &format!("<reply+{}%evil.example@gw.example.com>", w.sc_token),
        &format!("<@evil.example:reply+{}@gw.example.com>", w.sc_token),
    ] {
        let r = c.cmd(&format!("RCPT TO:{trick}")).await;
        assert!(r.starts_with("550 5.7.1"), "{trick}: {r}");
    }
    // A non-ASCII look-alike domain is refused too (no SMTPUTF8 here).
    let r = c.cmd("RCPT TO:<vera@v\u{0435}ndor.example>").await;
    assert!(r.starts_with("550 5.7.1") || r.starts_with("501"), "{r}");

    // 200 recipients: the 51st and every later one is refused at RCPT.
    for i in 0..200 {
        let r = c.cmd(&format!("RCPT TO:<p{i}@vendor.example>")).await;
        if i < 50 {
            assert!(r.starts_with("250"), "{i}: {r}");
        } else {
            assert_eq!(r, "452 4.5.3 Too many recipients", "{i}");
        }
    }
    assert!(c.cmd("RSET").await.starts_with("250"));

    // Oversized: refused at the end of DATA.
    let big = format!(
        "From: {ANN}\r\nTo: vera@vendor.example\r\nIn-Reply-To: <{}>\r\n\r\n{}\r\n",
        w.first_message_id,
        "x".repeat(8000)
    );
    let r = submit(&mut c, ANN, &["vera@vendor.example"], &big).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // The session is still usable after all that.
    assert!(c.cmd("NOOP").await.starts_with("250"));
    c.cmd("QUIT").await;

    assert_eq!(
        (outbox_rows(s).await, out_messages(s).await),
        before,
        "nothing queued, nothing stored"
    );
    let m = s.metrics_text().await;
    assert!(
        m.contains("submission_messages_total{result=\"refused\"}"),
        "{m}"
    );
    w.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deactivated_mid_session_is_cut_at_the_next_command() {
    let mut w = world("", "").await;
    let s = &w.s;
    let owner = make_user(s, "owner@acme.com", "Olga", Role::Owner).await;
    let mut c = login(s, ANN, &w.token).await;
    assert!(
        c.cmd(&format!("MAIL FROM:<{ANN}>"))
            .await
            .starts_with("250")
    );
    let ann_id = s
        .query::<i64>("SELECT id FROM users WHERE email = 'ann@acme.com'")
        .await;
    let (st, body) = api_call(
        s,
        "PATCH",
        &format!("/api/users/{ann_id}"),
        &owner,
        Some(json!({"active": false})),
    )
    .await;
    assert!(st.is_success(), "{st} {body}");
    let r = c.cmd("RCPT TO:<vera@vendor.example>").await;
    assert!(r.starts_with("421 4.7.0") && r.contains("revoked"), "{r}");
    assert_eq!(c.reply().await, "", "the connection is closed");
    w.s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_can_be_turned_off() {
    let mut s = TestServer::start_with_submission("listen = \"\"\n", "").await;
    assert_eq!(s.submission, None);
    s.shutdown().await;
}
