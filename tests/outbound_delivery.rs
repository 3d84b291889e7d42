//! Outbound delivery end to end: messages seeded in the store and queued
//! with `outbox::enqueue`, delivered by the running gateway's outbox worker
//! to a Maildir, to a scriptable SMTP sink written here (relay mode), or
//! through a fake DNS server to sinks on loopback addresses (mx mode).

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backchannel::metrics;
use backchannel::model::{Token, now_ms};
use backchannel::store::Store;
use backchannel::store::outbox::{self, DeliveryState};
use common::TestServer;
use common::dns::{FakeDns, RecordKind};
use rusqlite::params;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A message as composition would store it; one line starts with a dot so
/// SMTP dot-stuffing is exercised.
const RAW: &[u8] = b"From: Agent <reply@gw.example.com>\r\n\
To: bob@vendor.example\r\n\
Subject: Pallet 7 delayed\r\n\
Message-ID: <abcdefghijklmn23.1.x@gw.example.com>\r\n\
\r\n\
Hello,\r\n\
.a line that starts with a dot\r\n\
bye\r\n";

// ---------------------------------------------------------------------------
// gateway helpers

async fn gateway(rest: &str) -> TestServer {
    TestServer::start_with("", rest).await
}

/// Starts a gateway on an existing directory (its `data/` holds the store
/// and the Maildir), as a restart would.
async fn gateway_at(dir: tempfile::TempDir, rest: &str) -> TestServer {
    TestServer::start_in(dir, "", rest).await
}

/// Stores an outbound message (parent, side conversation, `messages` row)
/// and queues it to `recipients`; returns the message id and VERP keys.
async fn seed(
    store: &Store,
    sql: &common::Sql,
    recipients: &[&str],
    raw: &[u8],
) -> (i64, Vec<String>) {
    let token = Token::generate().to_string();
    let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let raw = raw.to_vec();
    let now = now_ms();
    let message = sql
        .write(move |c| {
            c.execute(
                "INSERT INTO parents (external_id, created_at, updated_at) VALUES (?1, ?2, ?2)",
                params![format!("T-{token}"), now],
            )?;
            let parent = c.last_insert_rowid();
            c.execute(
                "INSERT INTO side_conversations
                   (parent_id, token, subject, sender_email, created_at, updated_at)
                 VALUES (?1, ?2, 'Pallet 7 delayed', 'reply@gw.example.com', ?3, ?3)",
                params![parent, token, now],
            )?;
            let sc = c.last_insert_rowid();
            c.execute(
                "INSERT INTO messages
                   (side_conversation_id, direction, kind, route, raw, raw_sha256, received_at)
                 VALUES (?1, 'out', 'agent', 'api', ?2, ?3, ?4)",
                params![sc, raw, vec![0u8; 32], now],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
        .expect("seed outbound message");
    store
        .write(move |db| {
            let mut keys = Vec::new();
            for r in &recipients {
                keys.push(outbox::enqueue(db, message, r, now)?);
            }
            Ok((message, keys))
        })
        .await
        .expect("queue outbound message")
}

/// Seeds and wakes the worker, as composition does.
async fn queue(server: &TestServer, recipients: &[&str]) -> (i64, Vec<String>) {
    let seeded = seed(&server.store, &server.sql, recipients, RAW).await;
    server
        .running
        .as_ref()
        .expect("running")
        .outbound_wake
        .notify_one();
    seeded
}

async fn state(store: &Store, key: &str) -> DeliveryState {
    let key = key.to_string();
    store
        .read(move |c| outbox::by_verp_key(c, &key))
        .await
        .expect("read outbox")
        .expect("outbox row")
}

/// Polls the row until `want` holds.
async fn wait_for(
    store: &Store,
    key: &str,
    what: &str,
    want: impl Fn(&DeliveryState) -> bool,
) -> DeliveryState {
    common::wait_for(what, || async {
        let s = state(store, key).await;
        want(&s).then_some(s)
    })
    .await
}

async fn wait_state(store: &Store, key: &str, want: &str) -> DeliveryState {
    wait_for(store, key, want, |s| s.state == want).await
}

async fn last_attempt_at(sql: &common::Sql, key: &str) -> i64 {
    let key = key.to_string();
    sql.read(move |c| {
        Ok(c.query_row(
            "SELECT last_attempt_at FROM outbox WHERE verp_key = ?1",
            [key],
            |r| r.get(0),
        )?)
    })
    .await
    .expect("last_attempt_at")
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read maildir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read file"),
            )
        })
        .collect();
    out.sort();
    out
}

fn delivered_copy(key: &str, recipient: &str) -> Vec<u8> {
    let mut want =
        format!("Return-Path: <bounce+{key}@gw.example.com>\r\nDelivered-To: {recipient}\r\n")
            .into_bytes();
    want.extend_from_slice(RAW);
    want
}

// ---------------------------------------------------------------------------
// a scriptable SMTP sink

#[derive(Clone, Default)]
struct Script {
    /// Answer the greeting with this reply and close.
    greeting: Option<&'static str>,
    /// Accept the connection and never say anything.
    hang: bool,
    /// Wait this long before the greeting.
    greeting_delay: Option<Duration>,
    /// Answer `451 4.7.1` to the first N RCPTs (over all connections).
    temp_fail_rcpts: usize,
    /// Answer every RCPT with this reply.
    reject_rcpt: Option<&'static str>,
    /// Offer STARTTLS with a self-signed certificate for `localhost`.
    starttls: bool,
    /// Require AUTH: (advertised mechanisms, user, password).
    auth: Option<(&'static str, &'static str, &'static str)>,
}

/// One accepted transaction.
#[derive(Debug, Clone)]
struct Txn {
    mail_from: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
    tls: bool,
    user: Option<String>,
    /// The sink address the client reached.
    local: SocketAddr,
}

#[derive(Debug, Default)]
struct Log {
    connections: usize,
    open: usize,
    max_open: usize,
    txns: Vec<Txn>,
    /// (mechanism, accepted)
    auths: Vec<(String, bool)>,
    starttls: usize,
    temp_failed: usize,
    /// RCPT commands seen per transaction, including refused ones.
    rcpts_per_txn: Vec<usize>,
}

struct Sink {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    async fn start(script: Script) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        Sink::serve(listener, script)
    }

    /// Two sinks on two loopback addresses, same port (MX hosts share
    /// `outbound.mx_port`).
    async fn pair(a: (IpAddr, Script), b: (IpAddr, Script)) -> (Sink, Sink) {
        for _ in 0..50 {
            let first = TcpListener::bind((a.0, 0)).await.expect("bind sink");
            let port = first.local_addr().expect("addr").port();
            if let Ok(second) = TcpListener::bind((b.0, port)).await {
                return (
                    Sink::serve(first, a.1.clone()),
                    Sink::serve(second, b.1.clone()),
                );
            }
        }
        panic!("no port free on both loopback addresses");
    }

    fn serve(listener: TcpListener, script: Script) -> Sink {
        let addr = listener.local_addr().expect("sink addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let tls = script.starttls.then(acceptor);
        let script = Arc::new(script);
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                // Dropped with the accept loop: every session ends with it.
                let mut sessions = JoinSet::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    {
                        let mut l = log.lock().expect("log");
                        l.connections += 1;
                        l.open += 1;
                        l.max_open = l.max_open.max(l.open);
                    }
                    let (script, log, tls) = (script.clone(), log.clone(), tls.clone());
                    sessions.spawn(async move {
                        if !session(tcp, &script, &log, tls).await {
                            log.lock().expect("log").open -= 1;
                        }
                    });
                }
            })
        };
        Sink { addr, log, task }
    }

    fn log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.log.lock().expect("log"))
    }

    fn txns(&self) -> Vec<Txn> {
        self.log(|l| l.txns.clone())
    }
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

async fn read_line(io: &mut BufReader<Stream>) -> Option<String> {
    let mut buf = Vec::new();
    match io.read_until(b'\n', &mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(
            String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
    }
}

async fn say(io: &mut BufReader<Stream>, reply: &str) -> bool {
    io.get_mut()
        .write_all(format!("{reply}\r\n").as_bytes())
        .await
        .is_ok()
}

fn b64decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in text.trim().bytes().filter(|b| *b != b'=') {
        let v = ALPHABET.iter().position(|a| *a == b)? as u32;
        buffer = (buffer << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// Serves one connection; returns whether it already counted itself as
/// closed (at QUIT, before the reply, so a client that waits for the reply
/// before connecting again is never seen twice).
async fn session(
    tcp: TcpStream,
    script: &Script,
    log: &Mutex<Log>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> bool {
    let local = tcp.local_addr().expect("local addr");
    let mut io = BufReader::new(Stream::Plain(tcp));
    if script.hang {
        let mut sink = Vec::new();
        let _ = io.read_to_end(&mut sink).await;
        return false;
    }
    if let Some(delay) = script.greeting_delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(greeting) = script.greeting {
        say(&mut io, greeting).await;
        return false;
    }
    say(&mut io, "220 sink.test ESMTP").await;
    let (mut encrypted, mut user): (bool, Option<String>) = (false, None);
    let mut mail_from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut rcpt_commands = 0;
    while let Some(line) = read_line(&mut io).await {
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut caps = vec!["sink.test", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"];
            if tls.is_some() && !encrypted {
                caps.push("STARTTLS");
            }
            let auth_line;
            if let Some((mechs, _, _)) = script.auth {
                auth_line = format!("AUTH {mechs}");
                caps.push(&auth_line);
            }
            caps.push("SIZE 10000000");
            let last = caps.len() - 1;
            caps.iter()
                .enumerate()
                .map(|(i, c)| format!("250{}{c}", if i == last { ' ' } else { '-' }))
                .collect::<Vec<_>>()
                .join("\r\n")
        } else if upper == "STARTTLS" {
            match (&tls, encrypted) {
                (Some(acceptor), false) => {
                    say(&mut io, "220 2.0.0 go ahead").await;
                    log.lock().expect("log").starttls += 1;
                    let Stream::Plain(tcp) = io.into_inner() else {
                        return false;
                    };
                    match acceptor.accept(tcp).await {
                        Ok(s) => {
                            io = BufReader::new(Stream::Tls(Box::new(s)));
                            encrypted = true;
                            (mail_from, user) = (None, None);
                            rcpts.clear();
                            continue;
                        }
                        Err(_) => return false,
                    }
                }
                _ => "502 5.5.1 not available".into(),
            }
        } else if upper.starts_with("AUTH ") {
            let Some((_, want_user, want_pass)) = script.auth else {
                say(&mut io, "502 5.5.1 no auth").await;
                continue;
            };
            let mut words = line.split_whitespace().skip(1);
            let mech = words.next().unwrap_or("").to_ascii_uppercase();
            let initial = words.next().map(str::to_string);
            let (got_user, got_pass) = match mech.as_str() {
                "PLAIN" => {
                    let response = match initial {
                        Some(r) => r,
                        None => {
                            say(&mut io, "334 ").await;
                            read_line(&mut io).await.unwrap_or_default()
                        }
                    };
                    let decoded = b64decode(&response).unwrap_or_default();
                    let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
                    match parts.as_slice() {
                        [_, u, p] => (
                            String::from_utf8_lossy(u).into_owned(),
                            String::from_utf8_lossy(p).into_owned(),
                        ),
                        _ => (String::new(), String::new()),
                    }
                }
                "LOGIN" => {
                    let u = match initial {
                        Some(r) => r,
                        None => {
                            say(&mut io, "334 VXNlcm5hbWU6").await;
                            read_line(&mut io).await.unwrap_or_default()
                        }
                    };
                    say(&mut io, "334 UGFzc3dvcmQ6").await;
                    let p = read_line(&mut io).await.unwrap_or_default();
                    (
                        String::from_utf8_lossy(&b64decode(&u).unwrap_or_default()).into_owned(),
                        String::from_utf8_lossy(&b64decode(&p).unwrap_or_default()).into_owned(),
                    )
                }
                _ => {
                    say(&mut io, "504 5.5.4 unknown mechanism").await;
                    continue;
                }
            };
            let ok = got_user == want_user && got_pass == want_pass;
            log.lock().expect("log").auths.push((mech, ok));
            if ok {
                user = Some(got_user);
                "235 2.7.0 authenticated".into()
            } else {
                "535 5.7.8 authentication credentials invalid".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            if script.auth.is_some() && user.is_none() {
                "530 5.7.0 authentication required".into()
            } else {
                let addr = line[10..].trim();
                let addr = addr.split_whitespace().next().unwrap_or("");
                mail_from = Some(addr.trim_matches(['<', '>']).to_string());
                rcpts.clear();
                rcpt_commands = 0;
                "250 2.1.0 ok".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            rcpt_commands += 1;
            let addr = line[8..].trim().trim_matches(['<', '>']).to_string();
            let mut l = log.lock().expect("log");
            if mail_from.is_none() {
                "503 5.5.1 MAIL first".into()
            } else if let Some(reject) = script.reject_rcpt {
                reject.into()
            } else if l.temp_failed < script.temp_fail_rcpts {
                l.temp_failed += 1;
                "451 4.7.1 greylisted, try again later".into()
            } else {
                rcpts.push(addr);
                "250 2.1.5 ok".into()
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "554 5.5.1 no valid recipients".into()
            } else {
                say(&mut io, "354 end with <CRLF>.<CRLF>").await;
                let mut data = Vec::new();
                loop {
                    let mut buf = Vec::new();
                    match io.read_until(b'\n', &mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(_) => {}
                    }
                    if buf == b".\r\n" {
                        break;
                    }
                    let line = buf.strip_prefix(b".").unwrap_or(&buf);
                    data.extend_from_slice(line);
                }
                let mut l = log.lock().expect("log");
                l.txns.push(Txn {
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpts: std::mem::take(&mut rcpts),
                    data,
                    tls: encrypted,
                    user: user.clone(),
                    local,
                });
                l.rcpts_per_txn.push(rcpt_commands);
                "250 2.0.0 queued".into()
            }
        } else if upper == "RSET" {
            mail_from = None;
            rcpts.clear();
            "250 2.0.0 ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            log.lock().expect("log").open -= 1;
            say(&mut io, "221 2.0.0 bye").await;
            return true;
        } else {
            "500 5.5.2 unknown command".into()
        };
        if !say(&mut io, &reply).await {
            return false;
        }
    }
    false
}

fn relay_config(sink: &Sink, userinfo: &str, extra: &str) -> String {
    format!(
        "[outbound]\nmode = \"relay\"\nrelay_url = \"smtp://{userinfo}{}\"\n{extra}\n",
        sink.addr
    )
}

// ---------------------------------------------------------------------------
// maildir

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildir_writes_one_file_per_recipient_with_the_raw_bytes() {
    let mut server = gateway("").await;
    let (message, keys) = queue(&server, &["bob@vendor.example", "carol@vendor.example"]).await;
    for key in &keys {
        let s = wait_state(&server.store, key, "sent").await;
        assert_eq!(s.attempts, 1);
        assert_eq!(s.next_attempt_at, None);
        assert!(s.sent_at.is_some());
        assert_eq!(s.last_error, None);
    }
    let maildir = server.dir.path().join("data/sent");
    let new = files(&maildir.join("new"));
    assert_eq!(
        new.len(),
        2,
        "{:?}",
        new.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (key, recipient) in keys
        .iter()
        .zip(["bob@vendor.example", "carol@vendor.example"])
    {
        let (name, bytes) = new
            .iter()
            .find(|(name, _)| name.contains(key.as_str()))
            .unwrap_or_else(|| panic!("no file for {key}"));
        assert!(name.ends_with(".gw.example.com"), "{name}");
        assert_eq!(
            bytes,
            &delivered_copy(key, recipient),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(files(&maildir.join("tmp")).is_empty());
    assert!(files(&maildir.join("cur")).is_empty());

    // The API view of the message.
    let store = server.store.clone();
    let states = store
        .read(move |c| outbox::for_message(c, message))
        .await
        .expect("for_message");
    assert_eq!(states.len(), 2);
    assert!(states.iter().all(|s| s.state == "sent"));
    assert_eq!(states[0].recipient, "bob@vendor.example");

    assert!(metrics::counter_value("outbound_deliveries_total", &[("result", "sent")]) >= 2);
    assert!(metrics::render().contains("outbox_queue_depth"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildir_restart_does_not_duplicate_a_delivered_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A previous run crashed with two rows in `sending`: the first one's
    // file had already been renamed into new/, the second one's had not.
    let store = common::open_store(&dir.path().join("data/backchannel.db"));
    let sql = common::Sql::at(dir.path().join("data/backchannel.db"));
    let (_, keys) = seed(
        &store,
        &sql,
        &["bob@vendor.example", "carol@vendor.example"],
        RAW,
    )
    .await;
    let created: i64 = {
        let k = keys[0].clone();
        sql.write(move |c| {
            c.execute(
                "UPDATE outbox SET state = 'sending', attempts = 1, last_attempt_at = created_at",
                [],
            )?;
            // A webhook, so the events are queued (never reached: not allowed).
            c.execute(
                "INSERT INTO webhooks (url, secret, events, created_at)
                 VALUES ('http://127.0.0.1:9/hook', 'k', '[\"message.sent\"]', 0)",
                [],
            )?;
            Ok(c.query_row(
                "SELECT created_at FROM outbox WHERE verp_key = ?1",
                [k],
                |r| r.get(0),
            )?)
        })
        .await
        .expect("crash state")
    };
    store.close();
    drop(store);
    let new = dir.path().join("data/sent/new");
    std::fs::create_dir_all(&new).expect("maildir");
    let earlier = format!("{created}.{}.gw.example.com", keys[0]);
    std::fs::write(new.join(&earlier), b"delivered before the crash").expect("file");

    let mut server = gateway_at(dir, "").await;
    let first = wait_state(&server.store, &keys[0], "sent").await;
    let second = wait_state(&server.store, &keys[1], "sent").await;
    assert_eq!(first.attempts, 1, "settled from the file, not sent again");
    assert_eq!(second.attempts, 2, "sent again after the restart");

    let new = files(&server.dir.path().join("data/sent/new"));
    assert_eq!(
        new.len(),
        2,
        "{:?}",
        new.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let earlier_file = new
        .iter()
        .find(|(n, _)| *n == earlier)
        .expect("earlier file");
    assert_eq!(earlier_file.1, b"delivered before the crash");
    let second_file = new
        .iter()
        .find(|(n, _)| n.contains(keys[1].as_str()))
        .expect("second file");
    assert_eq!(
        second_file.1,
        delivered_copy(&keys[1], "carol@vendor.example")
    );
    // The row settled from the file was the message's first delivery: one
    // `message.sent`, naming it; the second delivery adds none.
    let payloads: Vec<String> = server
        .sql
        .read(|c| {
            let mut stmt =
                c.prepare("SELECT payload FROM webhook_deliveries WHERE event = 'message.sent'")?;
            let rows = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await
        .expect("events");
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    let event: serde_json::Value = serde_json::from_str(&payloads[0]).expect("json");
    assert_eq!(event["data"]["recipient"], "bob@vendor.example");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// relay

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_authenticates_and_sends_one_recipient_per_transaction() {
    for mechs in ["PLAIN LOGIN", "LOGIN"] {
        let sink = Sink::start(Script {
            auth: Some((mechs, "bob", "p@ss:word")),
            ..Script::default()
        })
        .await;
        let mut server = gateway(&relay_config(&sink, "bob:p%40ss%3Aword@", "")).await;
        let recipients = ["vendor1@vendor.example", "vendor2@vendor.example"];
        let (_, keys) = queue(&server, &recipients).await;
        for key in &keys {
            let s = wait_state(&server.store, key, "sent").await;
            assert_eq!(s.attempts, 1);
        }
        let txns = sink.txns();
        assert_eq!(txns.len(), 2, "{mechs}: {txns:?}");
        for (key, recipient) in keys.iter().zip(recipients) {
            let txn = txns
                .iter()
                .find(|t| t.rcpts == [recipient])
                .unwrap_or_else(|| panic!("{mechs}: no transaction for {recipient}"));
            assert_eq!(txn.mail_from, format!("bounce+{key}@gw.example.com"));
            assert_eq!(txn.data, RAW, "{}", String::from_utf8_lossy(&txn.data));
            assert_eq!(txn.user.as_deref(), Some("bob"));
            assert!(!txn.tls);
        }
        sink.log(|l| {
            assert_eq!(l.rcpts_per_txn, vec![1, 1], "one RCPT per transaction");
            let want = mechs.split(' ').next().unwrap_or("");
            assert!(!l.auths.is_empty());
            assert!(
                l.auths.iter().all(|(m, ok)| m == want && *ok),
                "{:?}",
                l.auths
            );
        });
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_with_wrong_password_defers() {
    let sink = Sink::start(Script {
        auth: Some(("PLAIN", "bob", "right")),
        ..Script::default()
    })
    .await;
    let mut server = gateway(&relay_config(
        &sink,
        "bob:wrong@",
        "retry_schedule = [\"1h\"]",
    ))
    .await;
    let (_, keys) = queue(&server, &["vendor@vendor.example"]).await;
    let s = wait_state(&server.store, &keys[0], "deferred").await;
    let error = s.last_error.unwrap_or_default();
    assert!(error.contains("535"), "{error}");
    assert!(
        !error.contains("wrong"),
        "the password never shows: {error}"
    );
    assert!(sink.txns().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_refusal_defers_then_the_retry_delivers() {
    let sink = Sink::start(Script {
        temp_fail_rcpts: 1,
        ..Script::default()
    })
    .await;
    let mut server = gateway(&relay_config(&sink, "", "retry_schedule = [\"1s\"]")).await;
    let (_, keys) = queue(&server, &["vendor@vendor.example"]).await;
    let key = &keys[0];
    let deferred = wait_for(&server.store, key, "deferred", |s| {
        s.state == "deferred" || s.state == "sent"
    })
    .await;
    assert_eq!(deferred.state, "deferred", "caught the deferred state");
    assert_eq!(deferred.attempts, 1);
    let error = deferred.last_error.clone().unwrap_or_default();
    assert!(error.starts_with("451 4.7.1"), "{error}");
    let next = deferred.next_attempt_at.expect("next attempt");
    let last = last_attempt_at(&server.sql, key).await;
    assert!(next >= last + 1000, "next {next} last {last}");
    assert!(next < last + 60_000, "next {next} last {last}");

    let sent = wait_state(&server.store, key, "sent").await;
    assert_eq!(sent.attempts, 2);
    assert_eq!(sent.last_error, None);
    assert_eq!(sink.txns().len(), 1);
    assert_eq!(sink.log(|l| l.temp_failed), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusal_fails_at_once() {
    let sink = Sink::start(Script {
        reject_rcpt: Some("550 5.1.1 <vendor@vendor.example>: no such user"),
        ..Script::default()
    })
    .await;
    let mut server = gateway(&relay_config(&sink, "", "retry_schedule = [\"1s\"]")).await;
    let (message, keys) = queue(&server, &["vendor@vendor.example"]).await;
    let s = wait_state(&server.store, &keys[0], "failed").await;
    assert_eq!(s.attempts, 1);
    assert_eq!(s.next_attempt_at, None);
    let error = s.last_error.unwrap_or_default();
    assert!(error.starts_with("550 5.1.1"), "{error}");
    assert!(sink.txns().is_empty());
    let store = server.store.clone();
    let api = store
        .read(move |c| outbox::for_message(c, message))
        .await
        .expect("for_message");
    assert_eq!(api[0].state, "failed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_times_out_and_defers() {
    let sink = Sink::start(Script {
        hang: true,
        ..Script::default()
    })
    .await;
    let mut server = gateway(&relay_config(
        &sink,
        "",
        "send_timeout = \"2s\"\nretry_schedule = [\"1h\"]",
    ))
    .await;
    // More recipients than sends allowed at once.
    let recipients: Vec<String> = (0..10).map(|i| format!("v{i}@vendor.example")).collect();
    let refs: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let (_, keys) = queue(&server, &refs).await;
    // Watch the rows in `sending` until every one is deferred.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut most_sending = 0;
    loop {
        let (sending, deferred): (i64, i64) = server
            .sql
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FILTER (WHERE state = 'sending'),
                            COUNT(*) FILTER (WHERE state = 'deferred') FROM outbox",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .expect("count");
        most_sending = most_sending.max(sending);
        if deferred == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "{deferred} deferred so far");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        (1..=8).contains(&most_sending),
        "at most 8 sends at once, saw {most_sending}"
    );
    for key in &keys {
        let s = state(&server.store, key).await;
        assert_eq!(s.attempts, 1);
        let error = s.last_error.unwrap_or_default();
        assert!(error.contains("timed out after 2000 ms"), "{error}");
    }
    assert_eq!(sink.log(|l| l.connections), 10);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_never_downgrades_a_failed_starttls() {
    // smtp:// upgrades when STARTTLS is offered; a certificate the native
    // roots do not trust is an error, not a reason to send in clear.
    let sink = Sink::start(Script {
        starttls: true,
        ..Script::default()
    })
    .await;
    let mut server = gateway(&relay_config(&sink, "", "retry_schedule = [\"1h\"]")).await;
    let (_, keys) = queue(&server, &["vendor@vendor.example"]).await;
    let s = wait_state(&server.store, &keys[0], "deferred").await;
    let error = s.last_error.unwrap_or_default();
    assert!(error.starts_with("TLS failed: "), "{error}");
    assert!(error.contains("certificate"), "{error}");
    assert!(sink.txns().is_empty());
    assert_eq!(sink.log(|l| l.starttls), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_sends_an_interrupted_row_once() {
    let sink = Sink::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open_store(&dir.path().join("data/backchannel.db"));
    let sql = common::Sql::at(dir.path().join("data/backchannel.db"));
    let (_, keys) = seed(&store, &sql, &["vendor@vendor.example"], RAW).await;
    sql.write(|c| {
        c.execute(
            "UPDATE outbox SET state = 'sending', attempts = 1, last_attempt_at = created_at",
            [],
        )?;
        Ok(())
    })
    .await
    .expect("crash state");
    store.close();
    drop(store);

    let mut server = gateway_at(dir, &relay_config(&sink, "", "")).await;
    let s = wait_state(&server.store, &keys[0], "sent").await;
    assert_eq!(s.attempts, 2);
    let txns = sink.txns();
    assert_eq!(txns.len(), 1, "{txns:?}");
    assert_eq!(
        txns[0].mail_from,
        format!("bounce+{}@gw.example.com", keys[0])
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// mx

/// Mode mx through `dns`, every host on `port`. The sinks listen on
/// loopback, which mode mx reaches only when allowed (SPEC §10).
fn mx_config(dns: &FakeDns, port: u16) -> String {
    mx_config_allowing(dns, port, "[\"127.0.0.0/8\"]")
}

fn mx_config_allowing(dns: &FakeDns, port: u16, allow: &str) -> String {
    format!(
        "[outbound]\nmode = \"mx\"\nmx_port = {port}\nretry_schedule = [\"1h\"]\nsend_timeout = \"10s\"\nallow_destinations = {allow}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n",
        dns.addr
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_tries_hosts_in_preference_order() {
    let (busy, good) = Sink::pair(
        (
            ip("127.0.0.2"),
            Script {
                greeting: Some("421 4.3.2 too busy, try another"),
                ..Script::default()
            },
        ),
        (ip("127.0.0.3"), Script::default()),
    )
    .await;
    let dns = FakeDns::start(&[
        // listed out of order: preference decides
        (
            "vendor.example",
            RecordKind::Mx(20, "mx2.vendor.example".into()),
        ),
        (
            "vendor.example",
            RecordKind::Mx(10, "mx1.vendor.example".into()),
        ),
        (
            "mx1.vendor.example",
            RecordKind::A("127.0.0.2".parse().expect("ip")),
        ),
        (
            "mx2.vendor.example",
            RecordKind::A("127.0.0.3".parse().expect("ip")),
        ),
    ])
    .await;
    let mut server = gateway(&mx_config(&dns, busy.addr.port())).await;
    let (_, keys) = queue(&server, &["bob@vendor.example"]).await;
    let s = wait_state(&server.store, &keys[0], "sent").await;
    assert_eq!(s.attempts, 1);
    assert_eq!(
        busy.log(|l| l.connections),
        1,
        "the preferred host was tried first"
    );
    assert!(busy.txns().is_empty());
    let txns = good.txns();
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].local.ip(), ip("127.0.0.3"));
    assert_eq!(txns[0].rcpts, ["bob@vendor.example"]);
    assert_eq!(
        txns[0].mail_from,
        format!("bounce+{}@gw.example.com", keys[0])
    );
    assert_eq!(txns[0].data, RAW);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_all_hosts_busy_defers_naming_the_host() {
    let sink = Sink::start(Script {
        greeting: Some("421 4.3.2 too busy"),
        ..Script::default()
    })
    .await;
    let dns = FakeDns::start(&[
        (
            "vendor.example",
            RecordKind::Mx(10, "mx1.vendor.example".into()),
        ),
        (
            "mx1.vendor.example",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
    ])
    .await;
    let mut server = gateway(&mx_config(&dns, sink.addr.port())).await;
    let (_, keys) = queue(&server, &["bob@vendor.example"]).await;
    let s = wait_state(&server.store, &keys[0], "deferred").await;
    let error = s.last_error.unwrap_or_default();
    assert!(
        error.starts_with("mx1.vendor.example [127.0.0.1]: 421 4.3.2"),
        "{error}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_without_mx_records_falls_back_to_the_address() {
    let sink = Sink::start(Script::default()).await;
    let dns = FakeDns::start(&[(
        "plain.example",
        RecordKind::A("127.0.0.1".parse().expect("ip")),
    )])
    .await;
    let mut server = gateway(&mx_config(&dns, sink.addr.port())).await;
    let (_, keys) = queue(&server, &["carol@plain.example"]).await;
    wait_state(&server.store, &keys[0], "sent").await;
    let txns = sink.txns();
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].rcpts, ["carol@plain.example"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_null_mx_and_unknown_domains_fail_permanently() {
    let sink = Sink::start(Script::default()).await;
    let dns = FakeDns::start(&[
        ("nullmx.example", RecordKind::Mx(0, ".".into())),
        // an address exists, but the null MX says no mail
        (
            "nullmx.example",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
        // exists, but has neither MX nor address records
        ("nomail.example", RecordKind::Txt("v=spf1 -all".into())),
    ])
    .await;
    let mut server = gateway(&mx_config(&dns, sink.addr.port())).await;
    let (_, keys) = queue(
        &server,
        &[
            "dan@nullmx.example",
            "erin@nowhere.example",
            "frank@nomail.example",
        ],
    )
    .await;
    let mut errors = HashMap::new();
    for key in &keys {
        let s = wait_state(&server.store, key, "failed").await;
        assert_eq!(s.attempts, 1);
        errors.insert(s.recipient.clone(), s.last_error.unwrap_or_default());
    }
    assert!(
        errors["dan@nullmx.example"].contains("null MX"),
        "{errors:?}"
    );
    assert!(
        errors["erin@nowhere.example"].contains("does not exist"),
        "{errors:?}"
    );
    assert!(
        errors["frank@nomail.example"].contains("no MX or address"),
        "{errors:?}"
    );
    assert_eq!(sink.log(|l| l.connections), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_starttls_failure_falls_back_to_clear_text() {
    // Opportunistic TLS (RFC 7435): the host offers STARTTLS with a
    // certificate the native roots do not trust; the same host is tried
    // again without TLS.
    let sink = Sink::start(Script {
        starttls: true,
        ..Script::default()
    })
    .await;
    let dns = FakeDns::start(&[
        ("tls.example", RecordKind::Mx(10, "mx.tls.example".into())),
        (
            "mx.tls.example",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
    ])
    .await;
    let mut server = gateway(&mx_config(&dns, sink.addr.port())).await;
    let (_, keys) = queue(&server, &["gina@tls.example"]).await;
    wait_state(&server.store, &keys[0], "sent").await;
    sink.log(|l| {
        assert_eq!(l.starttls, 1, "STARTTLS was tried");
        assert_eq!(l.connections, 2, "then the host again in clear");
        assert_eq!(l.txns.len(), 1);
        assert!(!l.txns[0].tls);
    });
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_limits_sessions_per_host() {
    // Three messages for one slow host, one session at a time allowed: the
    // sessions follow each other instead of overlapping.
    let sink = Sink::start(Script {
        greeting_delay: Some(Duration::from_millis(200)),
        ..Script::default()
    })
    .await;
    let dns = FakeDns::start(&[
        ("slow.example", RecordKind::Mx(10, "mx.slow.example".into())),
        (
            "mx.slow.example",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
    ])
    .await;
    let config = mx_config(&dns, sink.addr.port()).replace(
        "send_timeout = \"10s\"",
        "send_timeout = \"10s\"\nper_host_concurrency = 1",
    );
    let mut server = gateway(&config).await;
    let (_, keys) = queue(
        &server,
        &["a@slow.example", "b@slow.example", "c@slow.example"],
    )
    .await;
    for key in &keys {
        wait_state(&server.store, key, "sent").await;
    }
    sink.log(|l| {
        assert_eq!(l.connections, 3);
        assert_eq!(l.txns.len(), 3);
        assert_eq!(l.max_open, 1, "one session at a time");
    });
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// destinations (SPEC §10): mode mx never connects to internal addresses
// unless `outbound.allow_destinations` lists them.

/// Starts a side conversation over the API as `token`.
async fn api_start(
    server: &TestServer,
    token: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    common::api_call(
        server,
        "POST",
        "/api/parents/T-1/side-conversations",
        token,
        Some(body),
    )
    .await
}

/// The VERP key of the outbox row to `recipient`.
async fn key_of(sql: &common::Sql, recipient: &'static str) -> String {
    sql.read(move |c| {
        Ok(c.query_row(
            "SELECT verp_key FROM outbox WHERE recipient = ?1",
            [recipient],
            |r| r.get::<_, String>(0),
        )?)
    })
    .await
    .expect("outbox row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_literal_recipients_are_refused_at_the_api() {
    use backchannel::model::Role;
    use reqwest::StatusCode;
    use serde_json::json;

    // Any mode: addresses are domain names (here the default, maildir).
    let mut server = gateway("[ingest]\nauthenticate = false\n").await;
    let member = common::make_user(&server, "mo@acme.com", "Mo Member", Role::Member).await;
    for (to, cc, field) in [
        (vec!["anyone@[127.0.0.1]"], vec![], "to[0]"),
        (vec!["anyone@[IPv6:::1]"], vec![], "to[0]"),
        (vec!["anyone@127.0.0.1"], vec![], "to[0]"),
        (
            vec!["vera@vendor.example"],
            vec!["x@[169.254.169.254]"],
            "cc[0]",
        ),
    ] {
        let (st, v) = api_start(
            &server,
            &member,
            json!({"to": to, "cc": cc, "subject": "s", "body_text": "b"}),
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{to:?} {cc:?}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("IP address"), "{message}");
    }
    let queued: i64 = server.query("SELECT COUNT(*) FROM outbox").await;
    assert_eq!(queued, 0, "nothing refused was queued");

    let (st, sc) = api_start(
        &server,
        &member,
        json!({"to": ["vera@vendor.example"], "subject": "s", "body_text": "b"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    let (st, v) = common::api_call(
        &server,
        "POST",
        &format!("/api/side-conversations/{}/messages", sc["id"]),
        &member,
        Some(json!({"body_text": "more", "cc": ["y@[127.0.0.1]"]})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "cc[0]", "{v}");
    let queued: i64 = server.query("SELECT COUNT(*) FROM outbox").await;
    assert_eq!(queued, 1, "only the start's recipient");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_never_connects_to_internal_addresses_unless_allowed() {
    use backchannel::model::Role;
    use reqwest::StatusCode;
    use serde_json::json;

    // An internal SMTP server on loopback whose answer would land in
    // last_error.
    let sink = Sink::start(Script {
        reject_rcpt: Some("550 5.1.1 internal-secret=hunter2"),
        ..Script::default()
    })
    .await;
    let dns = FakeDns::start(&[
        (
            "internal.example",
            RecordKind::Mx(10, "mx.internal.example".into()),
        ),
        (
            "mx.internal.example",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
        // No MX: the domain's own address, loopback too.
        (
            "bare.example",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
        // Allowed by name in the allow-list below.
        ("corp.example", RecordKind::Mx(10, "mx.corp.example".into())),
        (
            "mx.corp.example",
            RecordKind::A("127.0.0.1".parse().expect("ip")),
        ),
    ])
    .await;
    let mut server = gateway(&format!(
        "{}[ingest]\nauthenticate = false\n",
        mx_config_allowing(&dns, sink.addr.port(), "[\"corp.example\"]")
    ))
    .await;
    let member = common::make_user(&server, "mo@acme.com", "Mo Member", Role::Member).await;

    // Names are accepted at the API and judged on what they resolve to at
    // delivery: refused for good, naming host and address, the internal
    // server never contacted. The domain the allow-list names is delivered
    // to, and what its server says is kept as a status line.
    let (st, sc) = api_start(
        &server,
        &member,
        json!({
            "to": ["bob@internal.example", "carol@bare.example", "vera@corp.example"],
            "subject": "Pallet 7",
            "body_text": "b"
        }),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    // A literal that reached the outbox some other way (a row from before
    // the API refused them, a participant's Reply-To) is refused too.
    let (_, keys) = queue(&server, &["dave@[127.0.0.1]"]).await;
    let literal = wait_state(&server.store, &keys[0], "failed").await;
    assert_eq!(
        literal.last_error.as_deref(),
        Some("destination refused: 127.0.0.1 is an internal address")
    );
    for (recipient, want) in [
        (
            "bob@internal.example",
            "destination refused: mx.internal.example resolves to 127.0.0.1 (internal address)",
        ),
        (
            "carol@bare.example",
            "destination refused: bare.example resolves to 127.0.0.1 (internal address)",
        ),
        (
            "vera@corp.example",
            "mx.corp.example [127.0.0.1]: 550 5.1.1 internal-secret=hunter2",
        ),
    ] {
        let key = key_of(&server.sql, recipient).await;
        let s = wait_state(&server.store, &key, "failed").await;
        assert_eq!(s.attempts, 1, "{recipient}");
        assert_eq!(s.last_error.as_deref(), Some(want), "{recipient}");
    }
    assert_eq!(sink.log(|l| l.connections), 1, "only the allowed domain");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_replies_reach_last_error_only_as_a_bounded_status_line() {
    // A long multi-line refusal with control characters, and a server that
    // is not SMTP at all (an internal web server's page).
    const LONG: &str = "550-5.7.1 first line\r\n550-5.7.1 \x1b[2Jxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n550 5.7.1 db_password=hunter2";
    let refusing = Sink::start(Script {
        reject_rcpt: Some(LONG),
        ..Script::default()
    })
    .await;
    let web = Sink::start(Script {
        greeting: Some(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\ndb_password=hunter2",
        ),
        ..Script::default()
    })
    .await;
    for (sink, want_start) in [
        (&refusing, "550 5.7.1 first line"),
        (
            &web,
            "protocol error: the server's answer is not a valid SMTP reply",
        ),
    ] {
        let mut server = gateway(&relay_config(sink, "", "retry_schedule = [\"1h\"]")).await;
        let (_, keys) = queue(&server, &["vendor@vendor.example"]).await;
        let s = wait_for(&server.store, &keys[0], "settled", |s| {
            s.state == "failed" || s.state == "deferred"
        })
        .await;
        let error = s.last_error.unwrap_or_default();
        assert!(error.starts_with(want_start), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        assert!(!error.chars().any(char::is_control), "{error:?}");
        assert!(
            error.chars().count() <= 220,
            "{} chars",
            error.chars().count()
        );
        server.shutdown().await;
    }
}
