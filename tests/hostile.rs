//! Hostile input against the real server (SPEC §10), over real sockets:
//! MIME bombs, CR/LF injection into outbound headers, path traversal and
//! odd bytes in attachment file names, script in mail shown on the portal,
//! SQL metacharacters in every API parameter, oversized and deeply nested
//! JSON, slow clients on SMTP, HTTP and IMAP, the open-relay tricks at
//! RCPT, and token guessers in thirty concurrent sessions.
//! The plainer relay cases live in tests/smtp.rs and
//! tests/clients/smtp_clients.py; these add the token-carrying variants
//! (on the gateway domain, a plus-mode sender's domain and its forwarding
//! address, each with its exact reply code),
//! IP literals, trailing dots and IDN look-alikes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use backchannel::model::Role;
use common::{TestServer, api_call, code, connect, make_user, smtp_send, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NO_AUTH: &str = "[webhooks]\ndeliver = false\n";

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

async fn wait_ingested_long(s: &TestServer) {
    wait_until("ingest of every queued message", || async {
        s.query::<i64>("SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'")
            .await
            == 0
    })
    .await;
}

/// Waits until the outbox has nothing left to send.
async fn wait_outbox_idle(s: &TestServer) {
    wait_until("outbox drained", || async {
        s.query::<i64>("SELECT COUNT(*) FROM outbox WHERE state IN ('queued','sending','deferred')")
            .await
            == 0
    })
    .await;
}

fn sent_files(s: &TestServer) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = s.dir.path().join("data/sent/new");
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            let b = std::fs::read(&p).expect("read maildir file");
            (p, b)
        })
        .collect();
    out.sort();
    out
}

/// The header section of a message (up to the first empty line).
fn header_block(msg: &[u8]) -> &[u8] {
    let crlf = msg.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = msg.windows(2).position(|w| w == b"\n\n");
    let end = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => msg.len(),
    };
    &msg[..end]
}

/// Header names of a header section, split at CR or LF so a bare CR that
/// a client would treat as a line end counts too.
fn header_names(block: &[u8]) -> Vec<String> {
    block
        .split(|b| *b == b'\r' || *b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b" ") && !l.starts_with(b"\t"))
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            Some(String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase())
        })
        .collect()
}

/// The unfolded value of the first header `name` of a message.
fn header_value(msg: &[u8], name: &str) -> Option<String> {
    let block = String::from_utf8_lossy(header_block(msg)).replace("\r\n", "\n");
    let mut lines = block.split('\n').peekable();
    while let Some(line) = lines.next() {
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            let mut value = v.trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with(' ') || next.starts_with('\t') {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(value);
        }
    }
    None
}

async fn put_parent(s: &TestServer, token: &str, ext: &str, requester_name: &str) {
    let (st, v) = api_call(
        s,
        "PUT",
        &format!("/api/parents/{ext}"),
        token,
        Some(json!({"subject": "Order 1001", "requester": {"name": requester_name, "email": "ann@customer.example"}})),
    )
    .await;
    assert!(st.is_success(), "parent upsert: {st} {v}");
}

async fn start(s: &TestServer, token: &str, ext: &str, body: Value) -> (StatusCode, Value) {
    api_call(
        s,
        "POST",
        &format!("/api/parents/{ext}/side-conversations"),
        token,
        Some(body),
    )
    .await
}

/// Resident-set high-water mark of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// the SMTP session over any stream (the seam the fuzz target uses)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_session_runs_over_an_in_memory_stream() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let config = backchannel::config::Config::from_toml_str(
        &format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n",
            s.dir.path().join("data").display()
        ),
        Vec::new(),
    )
    .expect("config");
    let limits = backchannel::limits::Limits::new(&config);
    let server = backchannel::smtp::Server::new(
        std::sync::Arc::new(config),
        s.store.clone(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
        limits,
    )
    .expect("server");
    let (_trigger, shutdown) = backchannel::shutdown::Shutdown::new();
    let (mut client, server_side) = tokio::io::duplex(4096);
    let dialogue = b"EHLO mem.example\r\nMAIL FROM:<a@mem.example>\r\nRCPT TO:<reply@gw.example.com>\r\nDATA\r\nSubject: in memory\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    let peer = "192.0.2.1:1".parse().expect("peer");
    let (ended, out) = tokio::join!(
        server.serve_stream(server_side, peer, shutdown),
        async move {
            client.write_all(dialogue).await.expect("write");
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read");
            out
        }
    );
    ended.expect("session");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("220 "), "{out}");
    assert!(out.contains("250 2.0.0 OK: queued as"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("221 2.0.0 gw.example.com closing connection")
            || out.contains("\r\n221 "),
        "{out}"
    );
    let stored = s.inbound().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].3, b"Subject: in memory\r\n\r\nhello\r\n");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// MIME bombs
// ---------------------------------------------------------------------------

fn deep_nesting(depth: usize) -> String {
    let mut m = String::from(
        "From: bomb@carrier.example\r\nTo: reply@gw.example.com\r\nSubject: deep\r\nMessage-ID: <deep@carrier.example>\r\nMIME-Version: 1.0\r\n",
    );
    for i in 0..depth {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    m.push_str("Content-Type: text/plain\r\n\r\nthe bottom\r\n");
    for i in (0..depth).rev() {
        m.push_str(&format!("--b{i}--\r\n"));
    }
    m
}

fn many_parts(n: usize) -> String {
    let mut m = String::from(
        "From: bomb@carrier.example\r\nTo: reply@gw.example.com\r\nSubject: wide\r\nMessage-ID: <wide@carrier.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"w\"\r\n\r\n",
    );
    for i in 0..n {
        if i % 2 == 0 {
            m.push_str("--w\r\n\r\nx\r\n");
        } else {
            m.push_str(&format!(
                "--w\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"f{i}.bin\"\r\n\r\ny\r\n"
            ));
        }
    }
    m.push_str("--w--\r\n");
    m
}

fn long_header_lines(len: usize) -> String {
    format!(
        "From: bomb@carrier.example\r\nTo: reply@gw.example.com\r\nSubject: {}\r\nX-Long: {}\r\nReferences: {}\r\nMessage-ID: <long@carrier.example>\r\n\r\nbody\r\n",
        "s".repeat(len),
        "x".repeat(len),
        "<r@x> ".repeat(len / 6),
    )
}

fn huge_attachment(total: usize) -> String {
    let head = "From: bomb@carrier.example\r\nTo: reply@gw.example.com\r\nSubject: big\r\nMessage-ID: <big@carrier.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"h\"\r\n\r\n--h\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--h\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"big.bin\"\r\n\r\n";
    let tail = "--h--\r\n";
    let mut m = String::with_capacity(total);
    m.push_str(head);
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    while m.len() + line.len() + tail.len() < total {
        m.push_str(line);
    }
    m.push_str(tail);
    m
}

/// Sends raw bytes (already CRLF, dot-stuffing applied here) in one DATA.
async fn send_raw(s: &TestServer, msg: &str) -> String {
    let mut c = connect(s.smtp).await;
    c.reply().await;
    c.cmd("EHLO bomb.example").await;
    assert!(
        c.cmd("MAIL FROM:<bomb@carrier.example>")
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<reply@gw.example.com>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    let stuffed = msg.replace("\r\n.", "\r\n..");
    c.send(stuffed.as_bytes()).await;
    let r = c.cmd(".").await;
    c.cmd("QUIT").await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mime_bombs_are_stored_raw_with_bounded_memory() {
    const LIMIT: usize = 8 * 1024 * 1024;
    let mut s = TestServer::start_with(&format!("max_message_bytes = {LIMIT}"), NO_AUTH).await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    let bombs = [
        ("10,000-deep nesting", deep_nesting(10_000)),
        ("100,000 parts", many_parts(100_000)),
        ("1 MB header lines", long_header_lines(1024 * 1024)),
        (
            "base64 attachment near the size limit",
            huge_attachment(LIMIT - 4096),
        ),
    ];
    let before = peak_rss_kib();
    for (what, msg) in &bombs {
        let r = send_raw(&s, msg).await;
        assert!(r.starts_with("250 2.0.0"), "{what}: {r}");
        wait_ingested_long(&s).await;
        let id: i64 = s
            .query("SELECT MAX(id) FROM messages WHERE direction = 'in'")
            .await;
        let raw: Vec<u8> = s
            .query(&format!("SELECT CASE WHEN length(m.raw) > 0 THEN m.raw ELSE (SELECT ir.raw FROM inbound_raw ir WHERE ir.id = m.inbound_id) END FROM messages m WHERE m.id = {id}"))
            .await;
        assert!(raw == msg.as_bytes(), "{what}: stored bytes differ");
        let flags: String = s
            .query(&format!("SELECT flags FROM messages WHERE id = {id}"))
            .await;
        assert!(!flags.contains("ingest_error"), "{what}: {flags}");
        // The API serves it: the message, and the raw bytes unchanged.
        let (st, v) = api_call(&s, "GET", &format!("/api/messages/{id}"), &owner, None).await;
        assert_eq!(st, StatusCode::OK, "{what}: {v}");
        let raw = reqwest::Client::new()
            .get(format!("http://{}/api/messages/{id}/raw", s.http))
            .bearer_auth(&owner)
            .send()
            .await
            .expect("raw")
            .bytes()
            .await
            .expect("raw body");
        assert!(raw == msg.as_bytes(), "{what}: /raw differs");
    }
    // 100,000 parts keep at most the attachment cap.
    let most: i64 = s
        .query("SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM attachments GROUP BY message_id) AS per_message")
        .await;
    assert!(most <= 1000, "attachments of one message: {most}");
    // The big attachment decoded whole.
    let size: i64 = s
        .query("SELECT length(data) FROM attachments WHERE filename = 'big.bin'")
        .await;
    assert!(size > (LIMIT as i64) / 2, "big.bin is {size} bytes");
    let grown = peak_rss_kib().saturating_sub(before);
    // Every bomb together stays well under 1 GiB (they total ~11 MB raw).
    assert!(grown < 1024 * 1024, "peak RSS grew by {grown} KiB");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// CR/LF injection into outbound headers
// ---------------------------------------------------------------------------

const INJECT: &str =
    "Hi\r\nX-Injected: crlf\nX-Injected: lf\rX-Injected: cr\r\n\r\nBcc: bcc@evil.example";

fn assert_no_injected_header(path: &Path, msg: &[u8]) {
    let names = header_names(header_block(msg));
    assert!(
        !names.iter().any(|n| n.contains("x-injected") || n == "bcc"),
        "{}: injected header in {names:?}\n{}",
        path.display(),
        String::from_utf8_lossy(header_block(msg))
    );
    // The header section is whole: it still ends with what compose puts
    // last, and no body started early.
    for needed in ["from", "message-id", "subject"] {
        assert!(
            names.iter().any(|n| n == needed),
            "{}: no {needed} header",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_in_api_fields_never_adds_an_outbound_header() {
    let mut s = TestServer::start_with(
        "",
        &format!("{NO_AUTH}[notifications]\nbatch_window = \"1s\"\n"),
    )
    .await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive Owner", Role::Owner).await;

    // Addresses with line breaks are refused outright.
    put_parent(&s, &owner, "T-1", INJECT).await;
    for field in ["to", "cc"] {
        let mut body = json!({"to": ["vendor@carrier.example"], "subject": "x", "body_text": "x"});
        body[field] = json!([format!("vendor@carrier.example{INJECT}")]);
        let (st, v) = start(&s, &owner, "T-1", body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {v}");
    }

    // The agent's own name (used by templates and signatures).
    let (st, _) = api_call(&s, "PUT", "/api/me", &owner, Some(json!({"name": INJECT}))).await;
    assert!(st.is_client_error() || st.is_success(), "{st}");

    // A sender with a hostile display name: its verification mail goes out
    // at once; verify it with the mailed code and send from it.
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/senders",
        &owner,
        Some(json!({"email": "support@acme.com", "name": INJECT, "reply_mode": "gateway", "dkim_algorithm": "ed25519"})),
    )
    .await;
    let sender_ok = st.is_success();
    if !sender_ok {
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    } else {
        wait_outbox_idle(&s).await;
        let mail = sent_files(&s)
            .into_iter()
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .find(|t| t.contains("Verification code: "))
            .expect("verification mail");
        let at = mail.find("Verification code: ").expect("code") + "Verification code: ".len();
        let code = &mail[at..at + 6];
        let (st, v) = api_call(
            &s,
            "POST",
            "/api/senders/support@acme.com/verify",
            &owner,
            Some(json!({"code": code})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }

    // Subject, attachment name and type, signature, from the sender.
    let (st, v) = api_call(
        &s,
        "PUT",
        "/api/settings",
        &owner,
        Some(json!({"signature": {"text": INJECT, "html": INJECT}})),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let mut body = json!({
        "to": ["vendor@carrier.example", "second@carrier.example"],
        "subject": INJECT,
        "body_text": INJECT,
        "include_context": true,
        "share_portal_link": true,
        "attachments": [{"filename": INJECT, "content_type": format!("text/plain{INJECT}"), "content_base64": "aGk="}],
    });
    if sender_ok {
        body["from"] = json!("support@acme.com");
    }
    let (st, v) = start(&s, &owner, "T-1", body).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let sc = v["id"].as_i64().expect("id");
    let token = v["token"].as_str().expect("token").to_string();
    let portal = v["portal_url"]
        .as_str()
        .and_then(|u| u.split("/p/").nth(1))
        .expect("portal")
        .to_string();

    // A template whose subject takes the requester's and the agent's names.
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/templates",
        &owner,
        Some(json!({"name": INJECT, "to": ["vendor@carrier.example"], "subject": "{{requester.name}} {{agent.name}} {{parent.subject}}", "body_text": "{{requester.name}}"})),
    )
    .await;
    if st.is_success() {
        let template = v["id"].as_i64().expect("template id");
        put_parent(&s, &owner, "T-2", INJECT).await;
        let (st, v) = start(&s, &owner, "T-2", json!({"template": template})).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    } else {
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }

    // A follow-up with a hostile cc is refused; with hostile text it goes.
    let (st, _) = api_call(
        &s,
        "POST",
        &format!("/api/side-conversations/{sc}/messages"),
        &owner,
        Some(json!({"body_text": INJECT, "cc": [format!("x@y.example{INJECT}")]})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, v) = api_call(
        &s,
        "POST",
        &format!("/api/side-conversations/{sc}/messages"),
        &owner,
        Some(json!({"body_text": INJECT})),
    )
    .await;
    assert!(st.is_success(), "{v}");

    // The vendor's display name comes from mail (an encoded word holding
    // CR LF): it reaches the agent's notification and the portal relay.
    let r = smtp_send(
        s.smtp,
        "vendor@carrier.example",
        &[&format!("reply+{token}@gw.example.com")],
        "From: =?UTF-8?Q?Vera=0D=0AX-Injected:_from=0D=0A?= <vendor@carrier.example>\nTo: reply@gw.example.com\nSubject: =?UTF-8?Q?Re=0D=0AX-Injected:_subj?=\nMessage-ID: <v1@carrier.example>\n\nOn its way.\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let page = reqwest::get(format!("http://{}/p/{portal}", s.http))
        .await
        .expect("page")
        .text()
        .await
        .expect("page text");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf")
        .to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // A file name with a line break breaks the form's own part header: the
    // form may be refused whole (400); a plain one goes through.
    for (file_name, must_pass) in [("a\r\nX-Injected: portal.txt", false), ("notes.txt", true)] {
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf.clone())
            .text("email", "vendor@carrier.example")
            .text("text", INJECT.to_string())
            .part(
                "attachment",
                reqwest::multipart::Part::bytes(b"x".to_vec())
                    .file_name(file_name)
                    .mime_str("text/plain")
                    .expect("mime"),
            );
        let resp = client
            .post(format!("http://{}/p/{portal}/reply", s.http))
            .multipart(form)
            .send()
            .await
            .expect("portal post");
        let st = resp.status();
        assert!(
            st.is_success() || st.is_redirection() || (!must_pass && st == StatusCode::BAD_REQUEST),
            "portal reply with {file_name:?}: {st}"
        );
    }

    // Give the notification batch its window, then read every file.
    wait_until("the agent's notification", || async {
        sent_files(&s)
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).contains("X-Backchannel-Notification"))
    })
    .await;
    wait_outbox_idle(&s).await;
    let files = sent_files(&s);
    assert!(files.len() >= 5, "only {} outbound files", files.len());
    let mut subject_reached = false;
    for (path, msg) in &files {
        assert_no_injected_header(path, msg);
        if header_value(msg, "subject").is_some_and(|v| v.contains("Injected")) {
            subject_reached = true;
        }
    }
    assert!(
        subject_reached,
        "the hostile subject never reached a header (nothing was tested)"
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// attachment file names
// ---------------------------------------------------------------------------

const ODD_NAMES: &[&str] = &[
    "../../../../etc/passwd",
    "/etc/shadow",
    "..\\..\\windows\\win.ini",
    "a\u{0}b.txt",
    "c\r\nX-Injected: yes.txt",
    "\u{1b}[31mred\u{7}.txt",
    "invoice\u{202e}gpj.exe",
    "\u{2067}report\u{2069}.pdf",
    "..",
];

fn long_name() -> String {
    format!("{}.txt", "L".repeat(5000))
}

fn rfc2231(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What a file name may look like wherever we hand it out.
fn assert_safe_name(where_: &str, name: &str) {
    assert!(
        !name.contains('/') && !name.contains('\\'),
        "{where_}: path separator in {name:?}"
    );
    assert!(name != "." && name != "..", "{where_}: {name:?}");
    assert!(
        !name.chars().any(|c| c.is_control()),
        "{where_}: control character in {name:?}"
    );
    assert!(
        !name.chars().any(|c| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}')),
        "{where_}: bidirectional control in {name:?}"
    );
    assert!(
        name.chars().count() <= 255,
        "{where_}: {} characters",
        name.chars().count()
    );
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a download's Content-Disposition: both the plain and the
/// RFC 6266 `filename*` forms.
fn check_disposition(where_: &str, headers: &reqwest::header::HeaderMap) {
    let cd = headers
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{where_}: no Content-Disposition"));
    assert!(cd.starts_with("attachment;"), "{where_}: {cd}");
    let plain = cd
        .split("filename=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("{where_}: no filename in {cd}"));
    assert_safe_name(where_, plain);
    if let Some(star) = cd.split("filename*=UTF-8''").nth(1) {
        assert_safe_name(
            where_,
            &percent_decode(star.split(';').next().unwrap_or("")),
        );
    }
    assert_eq!(
        headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "{where_}"
    );
}

fn mail_with_attachments(names: &[String], message_id: &str, token: &str) -> String {
    let mut m = format!(
        "From: Vera <vendor@carrier.example>\nTo: reply+{token}@gw.example.com\nSubject: files\nMessage-ID: <{message_id}>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"f\"\n\n--f\nContent-Type: text/plain\n\nFiles attached.\n"
    );
    for (i, name) in names.iter().enumerate() {
        m.push_str(&format!(
            "--f\nContent-Type: text/plain\nContent-Disposition: attachment; filename*=utf-8''{}\n\nfile {i}\n",
            rfc2231(name)
        ));
    }
    m.push_str("--f--\n");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_attachment_file_names_are_neutralised_everywhere() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    let mut names: Vec<String> = ODD_NAMES.iter().map(|n| n.to_string()).collect();
    names.push(long_name());

    // Outbound: the API's attachments, composed into the maildir files.
    put_parent(&s, &owner, "T-1", "Ann").await;
    let attachments: Vec<Value> = names
        .iter()
        .map(|n| json!({"filename": n, "content_type": "text/plain", "content_base64": "aGk="}))
        .collect();
    let (st, v) = start(
        &s,
        &owner,
        "T-1",
        json!({"to": ["vendor@carrier.example"], "subject": "files", "body_text": "x", "share_portal_link": true, "attachments": attachments}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().expect("token").to_string();
    let portal = v["portal_url"]
        .as_str()
        .and_then(|u| u.split("/p/").nth(1))
        .expect("portal")
        .to_string();
    let out_id = v["messages"][0]["id"].as_i64().expect("message id");
    wait_outbox_idle(&s).await;
    let files = sent_files(&s);
    assert_eq!(files.len(), 1, "one maildir file");
    // Nothing but the maildir's own folders next to it.
    let mut sent: Vec<String> = std::fs::read_dir(s.dir.path().join("data/sent"))
        .expect("sent dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    sent.sort();
    assert_eq!(sent, ["cur", "new", "tmp"]);
    let name = files[0]
        .0
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(!name.contains("passwd") && !name.contains(".."), "{name}");
    let parsed = mail_parser::MessageParser::default()
        .parse(&files[0].1)
        .expect("parse sent mail");
    let got: Vec<String> = parsed
        .attachments()
        .map(|a| {
            mail_parser::MimeHeaders::attachment_name(a)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(got.len(), names.len(), "{got:?}");
    for n in &got {
        assert_safe_name("maildir attachment", n);
    }
    assert_no_injected_header(&files[0].0, &files[0].1);
    for i in 0..names.len() {
        let resp = reqwest::Client::new()
            .get(format!(
                "http://{}/api/messages/{out_id}/attachments/{i}",
                s.http
            ))
            .bearer_auth(&owner)
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status(), StatusCode::OK);
        check_disposition(&format!("API download of outbound #{i}"), resp.headers());
    }

    // Inbound: the vendor's mail with those names, through the API and the
    // portal downloads.
    let r = smtp_send(
        s.smtp,
        "vendor@carrier.example",
        &[&format!("reply+{token}@gw.example.com")],
        &mail_with_attachments(&names, "files@carrier.example", &token),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let in_id: i64 = s
        .query("SELECT id FROM messages WHERE message_id = 'files@carrier.example'")
        .await;
    let (st, v) = api_call(&s, "GET", &format!("/api/messages/{in_id}"), &owner, None).await;
    assert_eq!(st, StatusCode::OK);
    let listed = v["attachments"].as_array().expect("attachments").len();
    assert_eq!(listed, names.len(), "{v}");
    for i in 0..names.len() {
        let resp = reqwest::Client::new()
            .get(format!(
                "http://{}/api/messages/{in_id}/attachments/{i}",
                s.http
            ))
            .bearer_auth(&owner)
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status(), StatusCode::OK);
        check_disposition(&format!("API download #{i}"), resp.headers());
        let resp = reqwest::get(format!(
            "http://{}/p/{portal}/attachments/{in_id}/{i}",
            s.http
        ))
        .await
        .expect("portal download");
        assert_eq!(resp.status(), StatusCode::OK, "portal #{i}");
        check_disposition(&format!("portal download #{i}"), resp.headers());
    }
    // The page lists them as text, never as markup.
    let page = reqwest::get(format!("http://{}/p/{portal}", s.http))
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(!page.contains('\u{202e}'), "RTL override on the page");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// script in HTML mail on the portal
// ---------------------------------------------------------------------------

/// Every start tag of a page: (name, raw text of the tag).
fn tags(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = page.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'<' && b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            let end = page[i..].find('>').map(|e| i + e + 1).unwrap_or(b.len());
            let tag = &page[i..end];
            let name: String = tag[1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            out.push((name, tag.to_string()));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_in_html_mail_is_inert_on_the_portal_page() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    put_parent(&s, &owner, "T-1", "Ann").await;
    let (st, v) = start(
        &s,
        &owner,
        "T-1",
        json!({"to": ["vendor@carrier.example"], "subject": "\"><script>alert('subj')</script>", "body_text": "x", "share_portal_link": true}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().expect("token").to_string();
    let portal = v["portal_url"]
        .as_str()
        .and_then(|u| u.split("/p/").nth(1))
        .expect("portal")
        .to_string();
    let html = "<html><head><meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\"><base href=\"https://evil.example/\"><style>body{background:url(javascript:alert(1))}</style></head><body>\
<p>Hello</p><svg onload=alert(1)><circle/></svg><iframe srcdoc=\"&lt;script&gt;alert(2)&lt;/script&gt;\"></iframe>\
<a href=\"&#106;avascript:alert(3)\">entity link</a> <a href=\"JaVaScRiPt:alert(4)\">mixed case</a> <a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCg1KTwvc2NyaXB0Pg==\">data</a>\
<img src=x onerror=\"alert(6)\"><form action=\"https://evil.example\"><input name=q></form><object data=\"x.swf\"></object><embed src=\"x.swf\">\
<math><mtext><table><mglyph><style><img src=x onerror=alert(7)></style></mglyph></table></mtext></math>\
<div style=\"width:expression(alert(8))\" onclick=alert(9)>styled</div><scr<script>ipt>alert(10)</scr</script>ipt></body></html>";
    let msg = format!(
        "From: \"Vera <script>alert('name')</script>\" <vendor@carrier.example>\nTo: reply+{token}@gw.example.com\nSubject: html\nMessage-ID: <xss@carrier.example>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"x\"\n\n--x\nContent-Type: text/html; charset=utf-8\n\n{html}\n--x\nContent-Type: image/svg+xml\nContent-Disposition: attachment; filename=\"<img src=x onerror=alert(11)>.svg\"\n\n<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(12)\"/>\n--x--\n"
    );
    let r = smtp_send(
        s.smtp,
        "vendor@carrier.example",
        &[&format!("reply+{token}@gw.example.com")],
        &msg,
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let resp = reqwest::get(format!("http://{}/p/{portal}", s.http))
        .await
        .expect("page");
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("Content-Security-Policy on the page")
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("base-uri 'none'"),
        "{csp}"
    );
    let page = resp.text().await.expect("page text");
    assert!(page.contains("Hello"), "the mail is on the page");
    let allowed = [
        "html", "head", "meta", "link", "title", "style", "body", "main", "header", "h1", "h2",
        "p", "section", "article", "div", "span", "details", "summary", "pre", "ul", "li", "a",
        "form", "input", "label", "textarea", "button", "time", "footer", "strong", "em", "small",
        "br", "dl", "dt", "dd", "nav", "ol",
    ];
    for (name, tag) in tags(&page) {
        assert!(
            allowed.contains(&name.as_str()),
            "unexpected tag on the page: {tag}"
        );
        let lower = tag.to_ascii_lowercase();
        assert!(!lower.contains("javascript:"), "script URL in {tag}");
        assert!(!lower.contains("data:text"), "data URL in {tag}");
        for attr in lower.split_whitespace().skip(1) {
            assert!(!attr.starts_with("on"), "event handler in {tag}");
            assert!(!attr.starts_with("style="), "inline style in {tag}");
            assert!(!attr.starts_with("srcdoc"), "srcdoc in {tag}");
        }
        if name == "link" {
            assert!(lower.contains("href=\"data:,\""), "{tag}");
        }
        if name == "meta" {
            assert!(!lower.contains("http-equiv=\"refresh\""), "{tag}");
        }
        if name == "form" {
            assert!(!lower.contains("evil.example"), "{tag}");
        }
        if name == "a" {
            assert!(!lower.contains("evil.example"), "{tag}");
        }
    }
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// SQL metacharacters
// ---------------------------------------------------------------------------

const SQL: &[&str] = &[
    "' OR '1'='1",
    "1; DROP TABLE users;--",
    "\" OR \"\"=\"",
    "1' UNION SELECT token_hash FROM users--",
    "%' --",
    "\\'; --",
    "');DELETE FROM messages;--",
    "1 OR 1=1",
    "*",
    "%",
    "_",
    "NULL",
    "-1",
    "9223372036854775808",
    "1e3",
    "0x1",
];

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A body for each route naming every field it takes, each set to `p`.
fn sql_body(method: &str, template: &str, p: &str) -> Option<Value> {
    Some(match (method, template) {
        ("PUT", "/api/parents/{external_id}") => {
            json!({"subject": p, "requester": {"name": p, "email": p}, "status": p, "snoozed_until": p, "assignee": p})
        }
        ("POST", "/api/parents/{external_id}/side-conversations") => {
            json!({"to": [p], "cc": [p], "subject": p, "body_text": p, "body_html": p, "from": p})
        }
        ("POST", "/api/side-conversations/{id}/messages") => {
            json!({"body_text": p, "body_html": p, "cc": [p]})
        }
        ("POST", "/api/unrouted/{id}/assign") => json!({"side_conversation_id": p}),
        ("POST", "/api/users") => json!({"email": p, "name": p, "role": p}),
        ("PUT", "/api/me") => json!({"name": p, "notifications": p}),
        ("PUT", "/api/settings") => {
            json!({"signature": {"text": p, "html": p}, "default_sender": p})
        }
        ("POST", "/api/senders") => json!({"email": p, "name": p, "reply_mode": p}),
        ("POST", "/api/senders/{email}/verify") => json!({"code": p}),
        ("POST", "/api/webhooks") => json!({"url": p, "secret": p, "events": [p]}),
        ("POST", "/api/templates") => json!({"name": p, "to": [p], "subject": p, "body_text": p}),
        ("POST", _) | ("PUT", _) => json!({}),
        _ => return None,
    })
}

/// A query answering the whole schema as one text: tables, columns,
/// indexes (and on SQLite triggers), whichever database the suite runs on.
fn schema_query() -> &'static str {
    if common::postgres_server().is_some() {
        "SELECT string_agg(d, ';' ORDER BY d) FROM (
           SELECT table_name || '.' || column_name || ' ' || data_type AS d
           FROM information_schema.columns WHERE table_schema = 'public'
           UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
           UNION ALL SELECT tgname FROM pg_trigger WHERE NOT tgisinternal) AS schema"
    } else {
        "SELECT group_concat(sql, ';') FROM (SELECT sql FROM sqlite_master ORDER BY name)"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metacharacters_in_every_api_parameter_are_plain_data() {
    let mut s = TestServer::start_with("", NO_AUTH).await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    put_parent(&s, &owner, "T-1", "Ann").await;
    let (st, v) = start(
        &s,
        &owner,
        "T-1",
        json!({"to": ["vendor@carrier.example"], "subject": "x", "body_text": "x"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let schema: String = s.query(schema_query()).await;
    let users: i64 = s.query("SELECT COUNT(*) FROM users").await;
    let http = reqwest::Client::new();
    let mut calls = 0;
    for (method, template) in backchannel::api::ROUTES {
        if !template.starts_with("/api/") || *template == "/api/openapi.json" {
            continue;
        }
        for p in SQL {
            // Every {param} of the path, and the list filters.
            let mut path = String::new();
            for seg in template.split('/').skip(1) {
                path.push('/');
                if seg.starts_with('{') {
                    path.push_str(&enc(p));
                } else {
                    path.push_str(seg);
                }
            }
            if *method == "GET" && !template.contains('{') {
                path.push_str(&format!(
                    "?parent={0}&status={0}&cursor={0}&limit={0}",
                    enc(p)
                ));
            }
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut req = http
                .request(m, format!("http://{}{path}", s.http))
                .bearer_auth(&owner);
            if let Some(b) = sql_body(method, template, p) {
                req = req.json(&b);
            }
            let resp = req.send().await.expect("request");
            let st = resp.status();
            let text = resp.text().await.expect("body");
            calls += 1;
            assert!(
                !st.is_server_error(),
                "{method} {path} with {p:?}: {st} {text}"
            );
            if st.is_client_error() {
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
                assert!(v["error"]["code"].is_string(), "{method} {path}: {v}");
            }
        }
    }
    assert!(calls > 300, "{calls} calls");
    // Values with metacharacters are stored and read back as they were.
    for p in SQL {
        let ext = format!("P-{}", enc(p));
        let (st, v) = api_call(
            &s,
            "PUT",
            &format!("/api/parents/{ext}"),
            &owner,
            Some(json!({"subject": p, "requester": {"name": p, "email": "r@c.example"}})),
        )
        .await;
        assert!(st.is_success(), "{p}: {st} {v}");
        let (st, v) = api_call(&s, "GET", &format!("/api/parents/{ext}"), &owner, None).await;
        assert_eq!(st, StatusCode::OK, "{p}");
        assert_eq!(v["subject"], json!(p), "{v}");
    }
    let after: String = s.query(schema_query()).await;
    assert_eq!(schema, after, "the schema changed");
    if common::postgres_server().is_none() {
        let ok: String = s.query("PRAGMA integrity_check").await;
        assert_eq!(ok, "ok");
    }
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM users").await, users);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// oversized and deeply nested JSON
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_deeply_nested_json_get_a_4xx_json_error() {
    let mut s = TestServer::start_with_http("", "max_body_bytes = 1048576", NO_AUTH).await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    put_parent(&s, &owner, "T-1", "Ann").await;
    let depth = 100_000;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "nested arrays",
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
            400,
        ),
        (
            "nested objects",
            format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes(),
            400,
        ),
        (
            "nested in a field",
            format!(
                "{{\"subject\": {}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes(),
            400,
        ),
        ("unclosed nesting", "[".repeat(depth).into_bytes(), 400),
        (
            "over the body limit",
            format!("{{\"subject\": \"{}\"}}", "a".repeat(2 * 1024 * 1024)).into_bytes(),
            413,
        ),
        (
            "huge number",
            format!("{{\"subject\": 1{}}}", "0".repeat(500_000)).into_bytes(),
            400,
        ),
        (
            "many keys",
            format!(
                "{{{}\"subject\": \"x\"}}",
                (0..50_000)
                    .map(|i| format!("\"k{i}\": 1,"))
                    .collect::<String>()
            )
            .into_bytes(),
            400,
        ),
        ("not UTF-8", b"{\"subject\": \"\xff\xfe\"}".to_vec(), 400),
    ];
    let http = reqwest::Client::new();
    for (what, body, want) in cases {
        for path in [
            "/api/parents/T-1",
            "/api/parents/T-1/side-conversations",
            "/api/templates",
        ] {
            let method = if path == "/api/parents/T-1" {
                reqwest::Method::PUT
            } else {
                reqwest::Method::POST
            };
            let resp = http
                .request(method, format!("http://{}{path}", s.http))
                .bearer_auth(&owner)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                // The server may close while a too-large body is still
                // being sent; it answered 413 first (checked below by a
                // request it does read).
                Err(e) if want == 413 => {
                    assert!(e.is_request() || e.is_body(), "{what}: {e}");
                    continue;
                }
                Err(e) => panic!("{what} {path}: {e}"),
            };
            let st = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            assert_eq!(st, want, "{what} {path}: {text}");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{what} {path}: not JSON: {text}"));
            assert!(v["error"]["code"].is_string(), "{what}: {v}");
        }
    }
    // Still serving.
    let (st, _) = api_call(&s, "GET", "/api/parents/T-1", &owner, None).await;
    assert_eq!(st, StatusCode::OK);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// slow clients
// ---------------------------------------------------------------------------

/// Sends `bytes` one at a time every `gap` until the server closes the
/// connection or says something; returns (bytes sent, what it said).
async fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> (usize, String) {
    let mut said = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        if stream.write_all(&[*b]).await.is_err() {
            return (i, String::from_utf8_lossy(&said).into_owned());
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(gap, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (i + 1, String::from_utf8_lossy(&said).into_owned()),
            Ok(Ok(n)) => {
                said.extend_from_slice(&buf[..n]);
                // Read what else there is, up to the close.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => said.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                return (i + 1, String::from_utf8_lossy(&said).into_owned());
            }
            Err(_) => {}
        }
    }
    (bytes.len(), String::from_utf8_lossy(&said).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_at_a_time_smtp_client_is_cut_by_the_timeouts() {
    let mut s = TestServer::start_with(
        "command_timeout = \"1s\"\ndata_timeout = \"1s\"\ndata_max_time = \"2s\"",
        NO_AUTH,
    )
    .await;
    let gap = Duration::from_millis(250);

    // A command line that never ends: each byte comes well within the
    // per-read timeout, the line as a whole does not.
    let mut c = TcpStream::connect(s.smtp).await.expect("connect");
    let mut greeting = [0u8; 256];
    let n = c.read(&mut greeting).await.expect("greeting");
    assert!(greeting[..n].starts_with(b"220"));
    let line = format!("EHLO {}\r\n", "s".repeat(400));
    let (sent, said) = trickle(&mut c, line.as_bytes(), gap).await;
    assert!(
        sent < line.len(),
        "the whole slow line went through ({sent} bytes): {said}"
    );
    assert!(said.contains("421 4.4.2"), "{said:?}");

    // DATA trickled a byte at a time.
    let mut c = connect(s.smtp).await;
    c.reply().await;
    c.cmd("EHLO slow.example").await;
    assert!(
        c.cmd("MAIL FROM:<slow@carrier.example>")
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<reply@gw.example.com>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut stream = c.io.into_inner();
    let body = format!("Subject: slow\r\n\r\n{}\r\n.\r\n", "d".repeat(400));
    let (sent, said) = trickle(&mut stream, body.as_bytes(), gap).await;
    assert!(
        sent < body.len(),
        "the whole slow message went through: {said}"
    );
    assert!(said.contains("421 4.4.2"), "{said:?}");
    assert!(s.inbound().await.is_empty(), "nothing stored");

    // A client that sends nothing at all is cut too.
    let mut c = connect(s.smtp).await;
    c.reply().await;
    let r = c.reply().await;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_at_a_time_http_client_is_cut_by_the_timeouts() {
    let mut s = TestServer::start_with_http(
        "",
        "idle_timeout = \"1s\"\nrequest_timeout = \"2s\"",
        NO_AUTH,
    )
    .await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    let gap = Duration::from_millis(250);

    // Headers that never end.
    let mut c = TcpStream::connect(s.http).await.expect("connect");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
        "h".repeat(400)
    );
    let (sent, said) = trickle(&mut c, head.as_bytes(), gap).await;
    assert!(sent < head.len(), "slow headers went through: {said}");

    // A body that never ends.
    let mut c = TcpStream::connect(s.http).await.expect("connect");
    let body = format!("{{\"subject\": \"{}\"}}", "b".repeat(400));
    let head = format!(
        "PUT /api/parents/T-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.expect("head");
    let (sent, said) = trickle(&mut c, body.as_bytes(), gap).await;
    assert!(sent < body.len(), "slow body went through: {said}");
    if !said.is_empty() {
        assert!(
            said.starts_with("HTTP/1.1 503") || said.starts_with("HTTP/1.1 408"),
            "{said}"
        );
    }

    // An idle connection is closed.
    let mut c = TcpStream::connect(s.http).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    s.shutdown().await;
}

/// How a slow-body connection ended.
#[derive(Debug)]
enum SlowEnd {
    /// The server answered (status line and the rest up to its close).
    Answered(String),
    /// The server closed or reset the connection without answering.
    Closed,
}

/// Sends `head` (declaring a `Content-Length` far larger than what follows)
/// on a fresh connection, then `body` a byte every `gap` — and nothing
/// more once it runs out — until the server answers or closes.
async fn slow_body(
    addr: std::net::SocketAddr,
    head: String,
    body: Vec<u8>,
    gap: Duration,
) -> SlowEnd {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(head.as_bytes()).await.expect("head");
    let mut said = Vec::new();
    let mut buf = [0u8; 4096];
    let mut pending = body.into_iter();
    loop {
        if let Some(b) = pending.next()
            && c.write_all(&[b]).await.is_err()
        {
            break;
        }
        match tokio::time::timeout(gap, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => said.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    if said.is_empty() {
        SlowEnd::Closed
    } else {
        SlowEnd::Answered(String::from_utf8_lossy(&said).into_owned())
    }
}

/// A slow body ends well before `bound` (the server's timeouts are 2 s):
/// closed, or answered 408 or 503 and closed.
async fn assert_cut(what: &str, task: tokio::task::JoinHandle<SlowEnd>) {
    let bound = Duration::from_secs(30);
    let end = tokio::time::timeout(bound, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {bound:?}"))
        .expect("slow client task");
    eprintln!("{what}: {end:?}");
    if let SlowEnd::Answered(text) = &end {
        assert!(
            text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 503"),
            "{what}: {text}"
        );
    }
}

/// Slowloris on the body: a POST declaring 100,000 bytes whose body
/// trickles in a byte a second, or stops after a few bytes, is cut within
/// the configured `http.request_timeout` / `http.idle_timeout` — on the
/// JSON API and on the portal's multipart reply form — while other clients
/// are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http_body_is_cut_and_others_are_served() {
    let mut s = TestServer::start_with_http(
        "",
        "idle_timeout = \"2s\"\nrequest_timeout = \"2s\"",
        NO_AUTH,
    )
    .await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    put_parent(&s, &owner, "T-1", "Ann").await;
    let (st, v) = start(
        &s,
        &owner,
        "T-1",
        json!({"to": ["vendor@carrier.example"], "subject": "Pallet 7", "body_text": "Where?", "share_portal_link": true}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let portal = v["portal_url"]
        .as_str()
        .and_then(|u| u.split("/p/").nth(1))
        .expect("portal link")
        .to_string();
    let before: i64 = s.query("SELECT COUNT(*) FROM messages").await;

    let api_head = format!(
        "POST /api/parents/T-2/side-conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    );
    let json_body = format!(
        "{{\"to\": [\"v@x.example\"], \"body_text\": \"{}",
        "b".repeat(200)
    )
    .into_bytes();
    let boundary = "slowboundary";
    let portal_head = format!(
        "POST /p/{portal}/reply HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 100000\r\n\r\n"
    );
    let form_body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n{}",
        "a".repeat(200)
    )
    .into_bytes();
    let gap = Duration::from_secs(1);
    let slow = [
        (
            "API body a byte a second",
            api_head.clone(),
            json_body.clone(),
        ),
        ("API body that stops", api_head, json_body[..5].to_vec()),
        (
            "portal form a byte a second",
            portal_head.clone(),
            form_body.clone(),
        ),
        (
            "portal form that stops",
            portal_head,
            form_body[..5].to_vec(),
        ),
    ];
    let tasks: Vec<_> = slow
        .into_iter()
        .map(|(what, head, body)| (what, tokio::spawn(slow_body(s.http, head, body, gap))))
        .collect();

    // Others are served while those connections are open.
    for _ in 0..3 {
        let (st, v) = api_call(&s, "GET", "/api/me", &owner, None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let page = reqwest::get(format!("http://{}/p/{portal}", s.http))
            .await
            .expect("portal page");
        assert_eq!(page.status(), StatusCode::OK);
    }
    for (what, task) in tasks {
        assert_cut(what, task).await;
    }
    let after: i64 = s.query("SELECT COUNT(*) FROM messages").await;
    assert_eq!(after, before, "nothing half-stored");
    let parents: i64 = s
        .query("SELECT COUNT(*) FROM parents WHERE external_id = 'T-2'")
        .await;
    assert_eq!(parents, 0);
    // And still served afterwards.
    let (st, _) = api_call(&s, "GET", "/api/me", &owner, None).await;
    assert_eq!(st, StatusCode::OK);
    s.shutdown().await;
}

/// The idle timeout ends idle connections, not requests in progress: a
/// body that pauses longer than `http.idle_timeout` (as a handler slower
/// than it on a loaded machine would) still gets its answer, within
/// `http.request_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_progress_is_not_cut_by_the_idle_timeout() {
    let mut s = TestServer::start_with_http(
        "",
        "idle_timeout = \"1s\"\nrequest_timeout = \"60s\"",
        NO_AUTH,
    )
    .await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    let body = br#"{"subject": "Order 1001"}"#;
    let mut c = TcpStream::connect(s.http).await.expect("connect");
    let head = format!(
        "PUT /api/parents/T-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.expect("head");
    c.write_all(&body[..5]).await.expect("part");
    // Longer than the idle timeout: the lower bound is what matters.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.write_all(&body[5..]).await.expect("rest");
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut said))
        .await
        .expect("answered")
        .expect("read");
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.starts_with("HTTP/1.1 200") || said.starts_with("HTTP/1.1 201"),
        "{said}"
    );
    let n: i64 = s
        .query("SELECT COUNT(*) FROM parents WHERE external_id = 'T-1'")
        .await;
    assert_eq!(n, 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_at_a_time_imap_client_is_cut_by_the_idle_timeout() {
    let mut s = TestServer::start_with_imap("idle_timeout = \"1s\"", NO_AUTH).await;
    let gap = Duration::from_millis(250);
    let mut c = TcpStream::connect(s.imap).await.expect("connect");
    let mut greeting = [0u8; 512];
    let n = c.read(&mut greeting).await.expect("greeting");
    assert!(
        greeting[..n].starts_with(b"* OK"),
        "{:?}",
        String::from_utf8_lossy(&greeting[..n])
    );
    // Each byte well within the timeout, the command as a whole not.
    let line = format!("a1 LOGIN someone@gw.example.com {}\r\n", "p".repeat(400));
    let (sent, said) = trickle(&mut c, line.as_bytes(), gap).await;
    assert!(
        sent < line.len(),
        "the whole slow command went through: {said}"
    );
    assert!(said.contains("* BYE"), "{said:?}");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// open-relay tricks at RCPT
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_relay_tricks_at_rcpt_are_refused_and_nothing_is_queued() {
    let mut s = TestServer::start_with("max_errors = 1000", NO_AUTH).await;
    let tok = common::TOKEN;
    s.add_side_conversation(tok).await;
    let cases: Vec<String> = vec![
        // percent hack, plain and on the reply address
        "user%evil.example@gw.example.com".into(),
        format!("reply+{tok}%evil.example@gw.example.com"),
        "user%gw.example.com@evil.example".into(),
        // source routes
        "@gw.example.com:user@evil.example".into(),
        format!("@gw.example.com:reply+{tok}@evil.example"),
        "@evil.example,@gw.example.com:user@evil.example".into(),
        // quoted local parts
        format!("\"reply+{tok}@evil.example\"@gw.example.com"),
        "\"user@evil.example\"@gw.example.com".into(),
        "\"user%evil.example\"@gw.example.com".into(),
        format!("\"reply+{tok}\"@evil.example"),
        // bang paths
        "evil.example!user@gw.example.com".into(),
        format!("evil.example!reply+{tok}@evil.example"),
        format!("reply+{tok}!user@gw.example.com"),
        // trailing dots
        "reply@gw.example.com.".into(),
        format!("reply+{tok}@gw.example.com."),
        "user@evil.example.".into(),
        "reply@gw.example.com..".into(),
        // IP literals
        "user@[127.0.0.1]".into(),
        format!("reply+{tok}@[127.0.0.1]"),
        "reply@[IPv6:::1]".into(),
        "postmaster@[127.0.0.1]".into(),
        // IDN look-alikes of gw.example.com (Cyrillic а and е, punycode)
        format!("reply+{tok}@gw.ex\u{0430}mple.com"),
        "reply@gw.\u{0435}xample.com".into(),
        format!("reply+{tok}@xn--gw-ex-mple-w0f.com"),
        "reply@xn--gw-6cd.example.com".into(),
        // sub- and super-domains, and a second @
        "reply@gw.example.com.evil.example".into(),
        format!("reply+{tok}@gw.example.com@evil.example"),
    ];
    let mut c = connect(s.smtp).await;
    c.reply().await;
    c.cmd("EHLO relay.example").await;
    assert!(
        c.cmd("MAIL FROM:<spammer@evil.example>")
            .await
            .starts_with("250")
    );
    let mut bad = Vec::new();
    for rcpt in &cases {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        let refused = r.starts_with("550 5.7.1")
            || r.starts_with("550 5.1.")
            || r.starts_with("553 5.1.")
            || r.starts_with("501 5.1.");
        if !refused {
            bad.push(format!("RCPT TO:<{rcpt}> → {r}"));
        }
    }
    let r = c.cmd("DATA").await;
    assert_eq!(code(&r), "503", "DATA with every recipient refused: {r}");
    c.cmd("QUIT").await;
    assert!(bad.is_empty(), "accepted:\n{}", bad.join("\n"));
    assert!(s.inbound().await.is_empty(), "something was queued");
    s.shutdown().await;
}

/// Every relay trick, each carrying the valid token of a side conversation
/// created through the API (and the forwarding address and plus address of
/// a registered sender): each refused with its documented code, nothing
/// queued, nothing on the thread; the plain addresses still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tricks_with_a_valid_token_are_refused_and_nothing_arrives() {
    let mut s = TestServer::start_with("max_errors = 1000", NO_AUTH).await;
    let owner = make_user(&s, "owner@gw.example.com", "Olive", Role::Owner).await;
    let (st, v) = api_call(
        &s,
        "POST",
        "/api/senders",
        &owner,
        Some(json!({"email": "support@acme.com", "name": "Acme", "reply_mode": "plus"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let fwd = v["forwarding_address"]
        .as_str()
        .and_then(|a| a.strip_suffix("@gw.example.com"))
        .expect("forwarding address")
        .to_string();
    put_parent(&s, &owner, "T-1", "Ann").await;
    let (st, v) = start(
        &s,
        &owner,
        "T-1",
        json!({"to": ["vendor@carrier.example"], "subject": "Pallet 7", "body_text": "Where is it?"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let sc = v["id"].as_i64().expect("id");
    let tok = v["token"].as_str().expect("token").to_string();
    let messages = || async {
        let (st, v) = api_call(
            &s,
            "GET",
            &format!("/api/side-conversations/{sc}"),
            &owner,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["messages"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(messages().await, 1, "the agent's first message");

    const RELAY: &str = "550 5.7.1";
    const UNKNOWN: &str = "550 5.1.1";
    const SYNTAX: &str = "501 5.1.3";
    let up = tok.to_ascii_uppercase();
    let cases: Vec<(String, &str)> = vec![
        // percent hack, anywhere in the local part
        (format!("user%evil.example+{tok}@gw.example.com"), RELAY),
        (format!("reply%evil.example+{tok}@gw.example.com"), RELAY),
        (format!("reply+{tok}%evil.example@gw.example.com"), RELAY),
        (format!("support%evil.example+{tok}@acme.com"), RELAY),
        (format!("{fwd}%evil.example@gw.example.com"), RELAY),
        // bang paths
        (format!("evil.example!reply+{tok}@gw.example.com"), RELAY),
        (format!("evil.example!user+{tok}@gw.example.com"), RELAY),
        (format!("reply+{tok}!user@gw.example.com"), RELAY),
        (format!("evil.example!support+{tok}@acme.com"), RELAY),
        (format!("evil.example!{fwd}@gw.example.com"), RELAY),
        // source routes, to us and through us
        (format!("@evil.example:reply+{tok}@gw.example.com"), RELAY),
        (
            format!("@a.example,@b.example:reply+{tok}@gw.example.com"),
            RELAY,
        ),
        (format!("@gw.example.com:reply+{tok}@evil.example"), RELAY),
        (format!("@evil.example:support+{tok}@acme.com"), RELAY),
        (format!("@evil.example:{fwd}@gw.example.com"), RELAY),
        // quoted local parts
        (format!("\"a@b\"+{tok}@gw.example.com"), RELAY),
        (format!("\"reply+{tok}\"@gw.example.com"), RELAY),
        (format!("\"reply\"+{tok}@gw.example.com"), RELAY),
        (
            format!("\"reply+{tok}@evil.example\"@gw.example.com"),
            RELAY,
        ),
        (format!("\"a b\"+{tok}@gw.example.com"), RELAY),
        (format!("\"support\"+{tok}@acme.com"), RELAY),
        (format!("\"{fwd}\"@gw.example.com"), RELAY),
        // trailing dots
        (format!("reply+{tok}@gw.example.com."), RELAY),
        (format!("reply+{tok}@gw.example.com.."), RELAY),
        (format!("support+{tok}@acme.com."), RELAY),
        (format!("{fwd}@gw.example.com."), RELAY),
        // IP literals
        (format!("reply+{tok}@[127.0.0.1]"), RELAY),
        (format!("reply+{tok}@[IPv6:::1]"), RELAY),
        (format!("support+{tok}@[127.0.0.1]"), RELAY),
        (format!("{fwd}@[127.0.0.1]"), RELAY),
        // IDN look-alikes of the gateway and the sender domain (Cyrillic а
        // U+0430 and е U+0435, and the punycode of the first)
        (format!("reply+{tok}@gw.ex\u{0430}mple.com"), RELAY),
        (format!("reply+{tok}@gw.\u{0435}xample.com"), RELAY),
        (format!("reply+{tok}@xn--gw-ex-mple-w0f.com"), RELAY),
        (format!("support+{tok}@\u{0430}cme.com"), RELAY),
        (format!("{fwd}@gw.ex\u{0430}mple.com"), RELAY),
        // a second @, sub- and super-domains
        (format!("reply+{tok}@gw.example.com@evil.example"), SYNTAX),
        (format!("reply+{tok}@sub.gw.example.com"), RELAY),
        (format!("reply+{tok}@gw.example.com.evil.example"), RELAY),
        // local parts the gateway never hands out: unknown
        (format!("reply.+{tok}@gw.example.com"), UNKNOWN),
        (format!("a#b+{tok}@gw.example.com"), UNKNOWN),
        (format!("r\u{0435}ply+{tok}@gw.example.com"), UNKNOWN),
        (format!("reply+{tok}+x@gw.example.com"), UNKNOWN),
        (format!("{fwd}x@gw.example.com"), UNKNOWN),
        // … or that are not dot-atoms at all (the command parser refuses them)
        (format!(".reply+{tok}@gw.example.com"), SYNTAX),
        (format!("re..ply+{tok}@gw.example.com"), SYNTAX),
    ];
    let mut c = connect(s.smtp).await;
    c.reply().await;
    c.cmd("EHLO relay.example").await;
    assert!(
        c.cmd("MAIL FROM:<spammer@evil.example> SMTPUTF8")
            .await
            .starts_with("250")
    );
    let mut bad = Vec::new();
    for (rcpt, want) in &cases {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        if !r.starts_with(want) {
            bad.push(format!("RCPT TO:<{rcpt}> → {r} (want {want})"));
        }
    }
    let r = c.cmd("DATA").await;
    assert_eq!(code(&r), "503", "DATA with every recipient refused: {r}");
    assert!(
        bad.is_empty(),
        "{} of {}:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );

    // The plain forms of the same addresses are accepted.
    assert!(c.cmd("RSET").await.starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<vendor@carrier.example>")
            .await
            .starts_with("250")
    );
    for rcpt in [
        format!("reply+{tok}@gw.example.com"),
        format!("REPLY+{up}@GW.EXAMPLE.COM"),
        format!("support+{tok}@acme.com"),
        format!("{fwd}@gw.example.com"),
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.starts_with("250 2.1.5"), "RCPT TO:<{rcpt}> → {r}");
    }
    c.cmd("QUIT").await;
    assert!(s.inbound().await.is_empty(), "something was queued");
    assert_eq!(messages().await, 1, "nothing reached the thread");

    // And mail to the plain reply address lands on the thread.
    let r = smtp_send(
        s.smtp,
        "vendor@carrier.example",
        &[&format!("reply+{tok}@gw.example.com")],
        "From: vendor@carrier.example\r\nTo: reply@gw.example.com\r\nSubject: Re: Pallet 7\r\nMessage-ID: <r1@carrier.example>\r\n\r\nOn its way.\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    wait_ingested_long(&s).await;
    assert_eq!(s.inbound().await.len(), 1);
    assert_eq!(messages().await, 2, "the genuine reply is on the thread");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// concurrent guessing
// ---------------------------------------------------------------------------

/// One SMTP reply (possibly multi-line) from a raw stream; "" at the end
/// of the stream or on a reset (a guesser's session is cut mid-dialogue).
async fn smtp_reply(r: &mut tokio::io::BufReader<TcpStream>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line))
            .await
            .expect("a reply in time");
        match read {
            Ok(n) if n > 0 => {}
            _ => return all,
        }
        let last = line.len() < 4 || line.as_bytes()[3] != b'-';
        all.push_str(line.trim_end());
        if last {
            return all;
        }
        all.push('\n');
    }
}

/// A token-shaped guess (16 characters of the token alphabet) for session
/// `n`, attempt `g`; no side conversation holds it.
fn guessed_token(n: usize, g: usize) -> String {
    let mut x = n * 1000 + g;
    let mut tail = String::new();
    for _ in 0..6 {
        tail.push(char::from(b'a' + (x % 26) as u8));
        x /= 26;
    }
    format!("guessguess{tail}")
}

/// Issue #20, item 13: thirty sessions from one address guessing reply
/// tokens at once. All of them pass the block check before the first
/// failure is counted; the failure limiter counts and decides under one
/// lock, so between them exactly `smtp.max_rcpt_failures` guesses are
/// answered `550 5.1.1`, and every session ends with the `421 4.7.0` of the
/// block — never a 21st failure answer. (Not in tests/limits.rs: its
/// servers share one set of SMTP limits for its `config_limit` checks, and
/// thirty connections are more than its connection rate allows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_token_guessers_get_exactly_max_rcpt_failures_answers() {
    const SESSIONS: usize = 30;
    const MAX: usize = 20;
    let mut s = TestServer::start_with(
        &format!(
            "max_rcpt_failures = {MAX}\nrcpt_failures_before_tarpit = {MAX}\nrcpt_failure_window = \"1h\"\nblock_time = \"1h\"\nconnections_per_minute_per_ip = 1000\n"
        ),
        "[ingest]\nauthenticate = false\n[limits]\nexempt = []\n",
    )
    .await;
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(SESSIONS));
    let mut sessions = Vec::new();
    for n in 0..SESSIONS {
        let (addr, ready) = (s.smtp, ready.clone());
        sessions.push(tokio::spawn(async move {
            let mut c = tokio::io::BufReader::new(TcpStream::connect(addr).await.expect("connect"));
            assert_eq!(code(&smtp_reply(&mut c).await), "220");
            for cmd in ["EHLO guesser.example", "MAIL FROM:<x@guesser.example>"] {
                c.get_mut()
                    .write_all(format!("{cmd}\r\n").as_bytes())
                    .await
                    .expect("write");
                assert_eq!(code(&smtp_reply(&mut c).await), "250", "{cmd}");
            }
            // Every session guesses at the same moment.
            ready.wait().await;
            let mut replies = Vec::new();
            for g in 0..=MAX {
                let rcpt = format!("RCPT TO:<reply+{}@gw.example.com>\r\n", guessed_token(n, g));
                // The server may have cut the session already: its `421`
                // is still there to read.
                let _ = c.get_mut().write_all(rcpt.as_bytes()).await;
                let r = smtp_reply(&mut c).await;
                let done = !r.starts_with("550 ");
                replies.push(r);
                if done {
                    break;
                }
            }
            replies
        }));
    }
    let mut failures = 0;
    for (n, session) in sessions.into_iter().enumerate() {
        let replies = session.await.expect("session task");
        let (last, answered) = replies.split_last().expect("a reply");
        assert!(
            answered.iter().all(|r| r.starts_with("550 5.1.1")),
            "session {n}: {replies:?}"
        );
        assert!(
            last.starts_with("421 4.7.0"),
            "session {n} ends with the block: {replies:?}"
        );
        failures += answered.len();
    }
    assert_eq!(
        failures, MAX,
        "failure answers across {SESSIONS} concurrent sessions"
    );
    assert!(s.inbound().await.is_empty());
    s.shutdown().await;
}
