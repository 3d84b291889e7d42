//! The inbound SMTP listener, from real clients on 127.0.0.1: lettre for the
//! ordinary paths (plain and STARTTLS), raw sockets for the protocol edges.

mod common;

use std::sync::Arc;

use common::{TOKEN, TestServer, code, connect};
use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

fn message(to: &str) -> Message {
    Message::builder()
        .from(
            "Vendor <vendor@carrier.example>"
                .parse::<Mailbox>()
                .expect("from"),
        )
        .to(to.parse::<Mailbox>().expect("to"))
        .subject("Re: Pallet 7 delayed")
        .message_id(Some("<m1@carrier.example>".into()))
        .body(String::from("It ships Monday.\r\n.leading dot line\r\n"))
        .expect("message")
}

fn lettre_plain(server: &TestServer) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.smtp.port())
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_delivers_and_the_bytes_are_stored_exactly() {
    let mut server = TestServer::start("").await;
    server.add_side_conversation(TOKEN).await;
    let mailer = lettre_plain(&server);
    let msg = message(&format!("reply+{}@gw.example.com", TOKEN.to_uppercase()));
    // lettre ends the data with CRLF . CRLF after the message, adding a
    // CRLF of its own: that is what goes on the wire and what is kept.
    let mut expected = msg.formatted();
    expected.extend_from_slice(b"\r\n");
    let resp = mailer.send(msg).await.expect("accepted");
    assert_eq!(resp.code().to_string(), "250");

    let stored = server.inbound().await;
    assert_eq!(stored.len(), 1);
    let (from, rcpts, tls, raw) = &stored[0];
    assert_eq!(from, "vendor@carrier.example");
    assert!(
        rcpts.contains(&format!("reply+{}@gw.example.com", TOKEN.to_uppercase())),
        "{rcpts}"
    );
    assert!(!tls);
    assert_eq!(raw, &expected, "stored bytes differ from the sent message");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_refused_recipients_get_the_spec_codes() {
    let mut server = TestServer::start("").await;
    let mailer = lettre_plain(&server);
    let err = mailer
        .send(message("someone@elsewhere.example"))
        .await
        .expect_err("relay refused");
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("5.7.1"), "{err}");
    let err = mailer
        .send(message(&format!("reply+{TOKEN}@gw.example.com")))
        .await
        .expect_err("unknown token");
    assert!(err.to_string().contains("5.1.1"), "{err}");
    assert!(server.inbound().await.is_empty());
    server.shutdown().await;
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
async fn starttls_with_lettre_and_the_session_is_reset() {
    let certdir = tempfile::tempdir().expect("tempdir");
    let (tls_keys, cert_der) = certificate(certdir.path());
    let mut server = TestServer::start(&tls_keys).await;

    // EHLO advertises STARTTLS.
    let mut c = connect(server.smtp).await;
    assert_eq!(code(&c.reply().await), "220");
    let ehlo = c.cmd("EHLO client.example").await;
    for cap in [
        "SIZE 26214400",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(cap), "{cap} missing from {ehlo}");
    }
    drop(c);

    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(
            lettre::transport::smtp::client::Certificate::from_der(cert_der.clone()).expect("cert"),
        )
        .build_rustls()
        .expect("tls params");
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.smtp.port())
        .tls(Tls::Required(tls))
        .build();
    mailer
        .send(message("reply@gw.example.com"))
        .await
        .expect("sent over TLS");
    let stored = server.inbound().await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].2, "message marked as received over TLS");

    // Raw: commands pipelined after STARTTLS are discarded (no injection),
    // and after the handshake EHLO is needed again.
    let tcp = tokio::net::TcpStream::connect(server.smtp)
        .await
        .expect("connect");
    let mut c = common::Client {
        io: tokio::io::BufReader::new(tcp),
    };
    assert_eq!(code(&c.reply().await), "220");
    c.cmd("EHLO client.example").await;
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        .await;
    assert!(c.reply().await.starts_with("220 2.0.0"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert_der))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = c.io.into_inner();
    let tls_stream = connector
        .connect("localhost".try_into().expect("name"), tcp)
        .await
        .expect("handshake");
    let mut c = common::Client {
        io: tokio::io::BufReader::new(tls_stream),
    };
    // If the injected MAIL had been kept, this would be 503 nested MAIL or
    // 250; with a reset session MAIL needs EHLO first.
    assert!(
        c.cmd("MAIL FROM:<a@b.example>")
            .await
            .starts_with("503 5.5.1")
    );
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(!ehlo.contains("STARTTLS"), "no STARTTLS inside TLS: {ehlo}");
    assert!(c.cmd("STARTTLS").await.starts_with("503"));
    assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("250"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    server.shutdown().await;
}

/// `smtp.tls_handshake_timeout` is a config key: a client that asks for
/// STARTTLS and then sends nothing is let go after it (the default, 30 s,
/// is longer than this test waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_starttls_client_is_let_go_after_the_configured_timeout() {
    let certdir = tempfile::tempdir().expect("tempdir");
    let (tls_keys, _) = certificate(certdir.path());
    let mut server =
        TestServer::start(&format!("{tls_keys}tls_handshake_timeout = \"1s\"\n")).await;
    let mut c = connect(server.smtp).await;
    assert_eq!(code(&c.reply().await), "220");
    assert_eq!(code(&c.cmd("EHLO client.example").await), "250");
    assert_eq!(code(&c.cmd("STARTTLS").await), "220");
    // No ClientHello: the server closes the connection.
    assert_eq!(c.reply().await, "");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_answers_451_and_stores_nothing_then_recovers() {
    let mut server = TestServer::start("").await;
    let mut c = connect(server.smtp).await;
    c.reply().await;
    c.cmd("EHLO x.example").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<a@b.example>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<reply@gw.example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    server.store.fail_next_commit();
    let r = c.cmd("Subject: one\r\n\r\nbody\r\n.").await;
    assert!(r.starts_with("451 4.3.0"), "{r}");
    assert!(server.inbound().await.is_empty());
    // Same connection, next attempt succeeds.
    assert_eq!(code(&c.cmd("MAIL FROM:<a@b.example>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<reply@gw.example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    assert!(
        c.cmd("Subject: two\r\n\r\nbody\r\n.")
            .await
            .starts_with("250 2.0.0")
    );
    assert_eq!(server.inbound().await.len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_are_checked_against_the_store() {
    let mut server = TestServer::start("max_recipients = 5").await;
    server.add_side_conversation(TOKEN).await;
    server.add_sender("support@acme.com", "fwd-k3j9x2").await;
    let mut c = connect(server.smtp).await;
    c.reply().await;
    c.cmd("EHLO x.example").await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<>").await),
        "250",
        "null sender accepted"
    );
    let cases = [
        ("<reply@gw.example.com>", "250 2.1.5"),
        ("<Reply@GW.Example.COM>", "250 2.1.5"),
        ("<postmaster>", "250 2.1.5"),
        ("<bounce+Xk29@gw.example.com>", "250 2.1.5"),
        ("<fwd-k3j9x2@gw.example.com>", "250 2.1.5"),
        ("<nobody@gw.example.com>", "550 5.1.1"),
        ("<reply+zzzzzzzzzzzzzzzz@gw.example.com>", "550 5.1.1"),
        ("<someone@acme.com>", "550 5.7.1"),
        ("<support+zzzzzzzzzzzzzzzz@acme.com>", "550 5.1.1"),
        ("<other+abcdefghijklmn23@unregistered.example>", "550 5.7.1"),
        ("<@gw.example.com:victim@elsewhere.example>", "550 5.7.1"),
        ("<victim%elsewhere.example@gw.example.com>", "550 5.7.1"),
        ("<\"victim@elsewhere.example\"@gw.example.com>", "550 5.7.1"),
        ("<>", "501 5.1.3"),
        ("<support+abcdefghijklmn23@acme.com>", "250 2.1.5"),
        // the cap counts distinct accepted recipients and applies before lookups
        ("<abuse@gw.example.com>", "452 4.5.3"),
        ("<nobody@gw.example.com>", "452 4.5.3"),
    ];
    for (rcpt, expected) in cases {
        let r = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert!(
            r.starts_with(expected),
            "RCPT TO:{rcpt} → {r}, expected {expected}"
        );
    }
    // RSET starts over: the cap applies per transaction.
    assert!(c.cmd("RSET").await.starts_with("250"));
    c.cmd("MAIL FROM:<>").await;
    let r = c.cmd("RCPT TO:<abuse@gw.example.com>").await;
    assert!(r.starts_with("250 2.1.5"), "{r}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let mut server = TestServer::start("").await;
    let mut c = connect(server.smtp).await;
    c.reply().await;
    c.cmd("EHLO x.example").await;
    c.send(
        b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<reply@gw.example.com> NOTIFY=FAILURE ORCPT=rfc822;reply@gw.example.com\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("550 5.7.1"));
    assert!(c.reply().await.starts_with("354"));
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 2.0.0"));
    assert!(c.reply().await.starts_with("250 2.0.0"));
    assert!(c.reply().await.starts_with("221 2.0.0"));
    let stored = server.inbound().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].3, b"Subject: p\r\n\r\nbody\r\n");
    let params: String = server
        .sql
        .read(|c| Ok(c.query_row("SELECT params FROM inbound_queue", [], |r| r.get(0))?))
        .await
        .expect("params");
    assert!(
        params.contains("SIZE=100") && params.contains("BODY=8BITMIME"),
        "{params}"
    );
    assert!(
        params.contains("NOTIFY=FAILURE") && params.contains("ORCPT=reply@gw.example.com"),
        "{params}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_chunks_make_one_message() {
    let mut server = TestServer::start("max_message_bytes = 2048").await;
    let mut c = connect(server.smtp).await;
    c.reply().await;
    assert!(c.cmd("EHLO x.example").await.contains("CHUNKING"));
    c.cmd("MAIL FROM:<a@b.example>").await;
    c.cmd("RCPT TO:<reply@gw.example.com>").await;
    c.send(b"BDAT 14\r\nSubject: b\r\n\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 14 octets"));
    c.send(b"BDAT 9 LAST\r\n.x\r\nbody\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 OK: queued"));
    // BDAT bytes are taken literally: no dot-unstuffing.
    assert_eq!(
        server.inbound().await[0].3,
        b"Subject: b\r\n\r\n.x\r\nbody\n"
    );
    // Over the limit: the chunk is consumed, 552, connection usable.
    c.cmd("MAIL FROM:<a@b.example>").await;
    c.cmd("RCPT TO:<reply@gw.example.com>").await;
    let big = vec![b'x'; 4000];
    c.send(format!("BDAT {} LAST\r\n", big.len()).as_bytes())
        .await;
    c.send(&big).await;
    assert!(c.reply().await.starts_with("552 5.3.4"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
    // BDAT without a transaction: consumed and refused.
    c.send(b"BDAT 3\r\nabc").await;
    assert!(c.reply().await.starts_with("503 5.5.1"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert_eq!(server.inbound().await.len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_answers_421_and_frees_slots() {
    let mut server = TestServer::start("max_connections = 3").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = connect(server.smtp).await;
        assert_eq!(code(&c.reply().await), "220");
        open.push(c);
    }
    let mut extra = connect(server.smtp).await;
    let r = extra.reply().await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert_eq!(extra.reply().await, "", "closed after 421");
    // Freeing one slot lets the next client in.
    let mut first = open.remove(0);
    assert!(first.cmd("QUIT").await.starts_with("221"));
    assert_eq!(first.reply().await, "");
    let mut again = None;
    for _ in 0..50 {
        let mut c = connect(server.smtp).await;
        let r = c.reply().await;
        if r.starts_with("220") {
            again = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "slot never freed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_data_finish_and_421s_idle_sessions() {
    let mut server = TestServer::start("shutdown_grace = \"10s\"").await;
    let mut idle = connect(server.smtp).await;
    idle.reply().await;
    idle.cmd("EHLO idle.example").await;
    let mut busy = connect(server.smtp).await;
    busy.reply().await;
    busy.cmd("EHLO busy.example").await;
    busy.cmd("MAIL FROM:<a@b.example>").await;
    busy.cmd("RCPT TO:<reply@gw.example.com>").await;
    assert_eq!(code(&busy.cmd("DATA").await), "354");
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;

    let running = server.running.take().expect("running");
    let stopper = tokio::spawn(async move { running.shutdown().await });
    let r = idle.reply().await;
    assert!(r.starts_with("421 4.3.2"), "idle session: {r}");
    // New connections are no longer accepted.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(server.smtp).await.is_err()
            || connect(server.smtp).await.reply().await.is_empty()
    );
    busy.send(b"second half\r\n.\r\n").await;
    let r = busy.reply().await;
    assert!(r.starts_with("250 2.0.0"), "in-flight message: {r}");
    let r = busy.reply().await;
    assert!(r.starts_with("421 4.3.2"), "then closed: {r}");
    stopper.await.expect("join").expect("clean");
    let stored = server.inbound().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].3,
        b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    );
}

/// A client that pipelines a whole message and then closes its side in
/// the middle of the next BDAT chunk still reads the `250` of the message
/// that was committed (found by the `smtp_session` fuzz target: the reply
/// was queued but dropped with the session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_still_gets_the_replies_already_due() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = TestServer::start("").await;
    let mut s = tokio::net::TcpStream::connect(server.smtp)
        .await
        .expect("connect");
    s.write_all(
        b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<reply@gw.example.com>\r\n\
          BDAT 5 LAST\r\nhello\
          MAIL FROM:<a@b.example>\r\nRCPT TO:<reply@gw.example.com>\r\nBDAT 5 LAST\r\nlo",
    )
    .await
    .expect("write");
    s.shutdown().await.expect("half-close");
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("the server closes")
        .expect("read");
    let out = String::from_utf8_lossy(&out);
    assert_eq!(server.inbound().await.len(), 1, "{out}");
    assert_eq!(
        out.matches("250 2.0.0 OK: queued as ").count(),
        1,
        "the committed message is acknowledged: {out}"
    );
    server.shutdown().await;
}
