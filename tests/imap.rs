//! The IMAP server (SPEC §9) from outside: a real gateway on port 0,
//! messages ingested over SMTP, driven by Python's imaplib and by a raw
//! socket client that sees every byte of the answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use backchannel::model::Role;
use common::{TOKEN, TestServer, api_call, make_user, seed_thread, smtp_send};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const NO_AUTH: &str = "";
const OWNER: &str = "owner@gw.example.com";
const MEMBER: &str = "member@gw.example.com";

async fn server() -> TestServer {
    TestServer::start_with("", NO_AUTH).await
}

// ---------------------------------------------------------------------------
// A raw IMAP client

struct Imap<S> {
    io: BufReader<S>,
    n: u32,
}

async fn connect(s: &TestServer) -> Imap<TcpStream> {
    let tcp = TcpStream::connect(s.imap).await.expect("connect imap");
    let mut c = Imap {
        io: BufReader::new(tcp),
        n: 0,
    };
    let greeting = c.line().await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4REV1"),
        "{greeting}"
    );
    c
}

impl<S: AsyncRead + AsyncWrite + Unpin> Imap<S> {
    /// One response line with any literals it carries; "" at end of stream.
    async fn line(&mut self) -> String {
        let mut all: Vec<u8> = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(
                Duration::from_secs(20),
                self.io.read_until(b'\n', &mut line),
            )
            .await
            .expect("answer in time")
            .expect("read");
            if n == 0 {
                break;
            }
            all.extend_from_slice(&line);
            // A line ending in {N} announces N bytes of literal.
            let text = String::from_utf8_lossy(&line);
            let t = text.trim_end();
            if t.ends_with('}')
                && let Some(open) = t.rfind('{')
                && let Ok(len) = t[open + 1..t.len() - 1].parse::<usize>()
            {
                let mut lit = vec![0u8; len];
                self.io.read_exact(&mut lit).await.expect("literal");
                all.extend_from_slice(&lit);
                continue;
            }
            break;
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    async fn send(&mut self, data: &[u8]) {
        self.io.get_mut().write_all(data).await.expect("write");
    }

    fn next_tag(&mut self) -> String {
        self.n += 1;
        format!("t{}", self.n)
    }

    /// Sends `tag line` and returns every answer line, the tagged one last.
    async fn cmd(&mut self, line: &str) -> Vec<String> {
        let tag = self.next_tag();
        self.send(format!("{tag} {line}\r\n").as_bytes()).await;
        self.until_tagged(&tag).await
    }

    async fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            assert!(!l.is_empty(), "connection closed; got so far: {out:?}");
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    /// The command's tagged answer must be `OK`; returns all lines.
    async fn ok(&mut self, line: &str) -> Vec<String> {
        let r = self.cmd(line).await;
        let last = r.last().cloned().unwrap_or_default();
        assert!(last.split(' ').nth(1) == Some("OK"), "{line} → {r:?}");
        r
    }

    async fn login(&mut self, email: &str, token: &str) {
        self.ok(&format!("LOGIN {email} {token}")).await;
    }
}

fn status_of(lines: &[String]) -> String {
    let last = lines.last().cloned().unwrap_or_default();
    last.split(' ').nth(1).unwrap_or("").to_string()
}

// ---------------------------------------------------------------------------
// Python imaplib

/// Runs a Python script with `args`; it must exit 0. Returns its stdout.
fn python(script: &str, args: &[String]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.py");
    std::fs::write(&path, script).expect("write script");
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn python_async(script: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || python(script, &args))
        .await
        .expect("python task")
}

// ---------------------------------------------------------------------------
// Data

fn rand_id() -> String {
    backchannel::model::Token::generate().to_string()
}

/// A vendor reply to the thread of `token`; `extra` header lines end in
/// a newline.
async fn reply(s: &TestServer, token: &str, from: &str, subject: &str, extra: &str, body: &str) {
    let to = format!("reply+{token}@gw.example.com");
    let data = format!(
        "From: {from}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{}@carrier.example>\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n{extra}\n{body}\n",
        rand_id()
    );
    let addr = from
        .rsplit('<')
        .next()
        .unwrap_or(from)
        .trim_end_matches('>')
        .to_string();
    let r = smtp_send(s.smtp, &addr, &[&to], &data).await;
    assert!(r.starts_with("250"), "{r}");
}

const MP_HEADERS: &str = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n";
const MP_BODY: &str = "--b1\nContent-Type: text/plain; charset=utf-8\n\nThe pallet ships Monday.\n--b1\nContent-Type: application/pdf; name=\"pod.pdf\"\nContent-Disposition: attachment; filename=\"pod.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQKJcfsj6IKMSAwIG9iago=\n--b1--\n";

/// Users (owner, member) and two tickets: T-100 with a plain and a
/// multipart reply, T-200 with one reply. Returns (owner, member) tokens.
async fn seed(s: &TestServer) -> (String, String) {
    let owner = make_user(s, OWNER, "Owner", Role::Owner).await;
    let member = make_user(s, MEMBER, "Member", Role::Member).await;
    seed_thread(
        &s.sql,
        "T-100",
        TOKEN,
        "open",
        "open",
        &["vera@carrier.example"],
    )
    .await;
    seed_thread(
        &s.sql,
        "T-200",
        "bcdefghijklmn234",
        "open",
        "open",
        &["sam@supplier.example"],
    )
    .await;
    reply(
        s,
        TOKEN,
        "Vera Vendor <vera@carrier.example>",
        "Re: Pallet 7 delayed",
        "",
        "It ships Monday.",
    )
    .await;
    s.wait_ingested().await;
    reply(
        s,
        TOKEN,
        "Vera Vendor <vera@carrier.example>",
        "Proof of delivery",
        MP_HEADERS,
        MP_BODY,
    )
    .await;
    s.wait_ingested().await;
    reply(
        s,
        "bcdefghijklmn234",
        "Sam <sam@supplier.example>",
        "Invoice 42",
        "",
        "Invoice attached soon.",
    )
    .await;
    s.wait_ingested().await;
    (owner, member)
}

async fn raw_of_inbox(s: &TestServer) -> Vec<Vec<u8>> {
    s.sql
        .read(|c| {
            let mut st = c.prepare(
                "SELECT CASE WHEN length(m.raw) > 0 THEN m.raw ELSE (SELECT ir.raw FROM inbound_raw ir WHERE ir.id = m.inbound_id) END FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id
                 JOIN messages m ON m.id = mm.message_id WHERE mb.name = 'INBOX' ORDER BY mm.uid",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<Vec<u8>>, _>>()?)
        })
        .await
        .expect("raw")
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_literals_and_unknown_commands_keep_the_session() {
    let mut s = server().await;
    let token = make_user(&s, OWNER, "Owner", Role::Owner).await;
    let mut c = connect(&s).await;

    let caps = c.ok("CAPABILITY").await;
    assert!(
        caps[0].starts_with("* CAPABILITY IMAP4REV1")
            && caps[0].contains("IDLE")
            && caps[0].contains("THREAD=REFERENCES")
            && caps[0].contains("LITERAL+")
            && caps[0].contains("AUTH=PLAIN"),
        "{caps:?}"
    );
    // Before login only the not-authenticated commands work.
    let r = c.cmd("SELECT INBOX").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    // Wrong token, wrong email for a right token.
    let r = c.cmd(&format!("LOGIN {OWNER} bc_wrong")).await;
    assert!(r[0].starts_with("t3 NO [AUTHENTICATIONFAILED]"), "{r:?}");
    let r = c.cmd(&format!("LOGIN other@gw.example.com {token}")).await;
    assert!(r[0].contains("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    // Garbage, unknown commands, a line without a tag: BAD, and on we go.
    let r = c.cmd("FROBNICATE now").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    c.send(b"\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    let r = c.cmd("FETCH (((").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    // A line over the limit is refused, the session continues.
    let long = format!("NOOP {}", "x".repeat(300 * 1024));
    let r = c.cmd(&long).await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    // A synchronizing literal for the password, with the email in upper case.
    let tag = c.next_tag();
    c.send(
        format!(
            "{tag} LOGIN {} {{{}}}\r\n",
            OWNER.to_uppercase(),
            token.len()
        )
        .as_bytes(),
    )
    .await;
    let cont = c.line().await;
    assert!(cont.starts_with("+ "), "{cont}");
    c.send(format!("{token}\r\n").as_bytes()).await;
    let r = c.until_tagged(&tag).await;
    assert!(
        r.last()
            .is_some_and(|l| l.contains("OK [CAPABILITY IMAP4REV1")),
        "{r:?}"
    );
    let r = c.cmd("LOGIN again please").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    // A huge literal is refused without reading it; the session goes on.
    let tag = c.next_tag();
    c.send(format!("{tag} SELECT {{50000000}}\r\n").as_bytes())
        .await;
    let r = c.until_tagged(&tag).await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    // A non-synchronizing literal (LITERAL+).
    let r = c.cmd("STATUS {5+}\r\nINBOX (MESSAGES)").await;
    assert!(r[0].starts_with("* STATUS INBOX (MESSAGES 0)"), "{r:?}");
    // Write commands: NO, never a dropped connection.
    for cmd in [
        "CREATE Foo",
        "DELETE INBOX",
        "RENAME INBOX Bar",
        "APPEND INBOX {3+}\r\nabc",
        "EXPUNGE",
        "COPY 1 INBOX",
    ] {
        let r = c.cmd(cmd).await;
        assert!(
            matches!(status_of(&r).as_str(), "NO" | "BAD"),
            "{cmd}: {r:?}"
        );
    }
    // Commands that need a selected mailbox.
    let r = c.cmd("FETCH 1 FLAGS").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    let r = c.cmd("CLOSE").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    c.ok("NOOP").await;
    let r = c.ok("LOGOUT").await;
    assert!(r[0].starts_with("* BYE"), "{r:?}");
    assert_eq!(c.line().await, "", "closed after LOGOUT");

    // AUTHENTICATE PLAIN, with a continuation and as an initial response.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut c = connect(&s).await;
    let tag = c.next_tag();
    c.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())
        .await;
    assert!(c.line().await.starts_with('+'));
    c.send(format!("{}\r\n", b64.encode(format!("\0{OWNER}\0{token}"))).as_bytes())
        .await;
    let r = c.until_tagged(&tag).await;
    assert_eq!(status_of(&r), "OK", "{r:?}");
    c.ok("SELECT INBOX").await;
    let mut c = connect(&s).await;
    let r = c
        .cmd(&format!(
            "AUTHENTICATE PLAIN {}",
            b64.encode(format!("\0{OWNER}\0bc_nope"))
        ))
        .await;
    assert!(r[0].contains("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    let r = c.cmd("AUTHENTICATE CRAM-MD5").await;
    assert_eq!(status_of(&r), "NO", "{r:?}");
    s.shutdown().await;
}

/// `imap.max_line_bytes`, `imap.max_literal_bytes` and
/// `imap.max_bad_commands` are config keys: a server with small ones
/// answers a line or literal over them `BAD` (the same command under them
/// works) and the session goes on; that many invalid commands in a row end
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_line_and_literal_limits() {
    let mut s = TestServer::start_with_imap(
        "max_line_bytes = 4096\nmax_literal_bytes = 2048\nmax_append_bytes = 2048\nmax_bad_commands = 3\n",
        NO_AUTH,
    )
    .await;
    let token = make_user(&s, OWNER, "Owner", Role::Owner).await;
    let mut c = connect(&s).await;
    c.login(OWNER, &token).await;
    c.ok("SELECT INBOX").await;

    // A 3000-byte SEARCH is fine, a 5000-byte one is over the line limit
    // (the default, 256 KiB, would take it).
    c.ok(&format!("SEARCH SUBJECT \"{}\"", "a".repeat(3000)))
        .await;
    let r = c
        .cmd(&format!("SEARCH SUBJECT \"{}\"", "a".repeat(5000)))
        .await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    assert!(r.last().is_some_and(|l| l.contains("too long")), "{r:?}");
    c.ok("NOOP").await;

    // A 1500-byte literal is taken, a 3000-byte one refused unread.
    let tag = c.next_tag();
    c.send(format!("{tag} SEARCH SUBJECT {{1500}}\r\n").as_bytes())
        .await;
    let cont = c.line().await;
    assert!(cont.starts_with("+ "), "{cont}");
    c.send(format!("{}\r\n", "b".repeat(1500)).as_bytes()).await;
    let r = c.until_tagged(&tag).await;
    assert_eq!(status_of(&r), "OK", "{r:?}");
    let tag = c.next_tag();
    c.send(format!("{tag} SEARCH SUBJECT {{3000}}\r\n").as_bytes())
        .await;
    let r = c.until_tagged(&tag).await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    assert!(
        r.last().is_some_and(|l| l.contains("Literal too large")),
        "{r:?}"
    );
    c.ok("NOOP").await;

    // Two invalid commands are answered, the third in a row ends the
    // session.
    for _ in 0..2 {
        let r = c.cmd("FROBNICATE").await;
        assert_eq!(status_of(&r), "BAD", "{r:?}");
    }
    c.send(b"t99 FROBNICATE\r\n").await;
    assert!(c.line().await.starts_with("t99 BAD"));
    let bye = c.line().await;
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert_eq!(c.line().await, "", "closed after too many invalid commands");
    s.shutdown().await;
}

const LIST_SCRIPT: &str = r#"
import imaplib, sys
host, port, owner, otoken, member, mtoken = sys.argv[1:7]
m = imaplib.IMAP4(host, int(port))
typ, _ = m.login(owner, otoken)
assert typ == 'OK'
typ, lines = m.list('""', '*')
assert typ == 'OK', lines
got = [l.decode() for l in lines]
assert got == [
    '(\\HasNoChildren) "/" INBOX',
    '(\\HasNoChildren \\Sent) "/" Sent',
    '(\\Noselect \\HasChildren) "/" Tickets',
    '(\\HasNoChildren) "/" Tickets/T-100',
    '(\\HasNoChildren) "/" Tickets/T-200',
    '(\\HasNoChildren) "/" Unrouted',
], got
typ, lines = m.list('""', '%')
assert [l.decode().split(' ')[-1] for l in lines] == ['INBOX', 'Sent', 'Tickets', 'Unrouted'], lines
typ, lines = m.list('Tickets/', '%')
assert [l.decode().split(' ')[-1] for l in lines] == ['Tickets/T-100', 'Tickets/T-200'], lines
typ, lines = m.list('""', 'inbox')
assert [l.decode().split(' ')[-1] for l in lines] == ['INBOX'], lines
typ, lines = m.list('""', 'nothing*')
assert lines == [None], lines
typ, lines = m.lsub('""', '*')
assert len(lines) == 6, lines
typ, st = m.status('Tickets/T-100', '(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)')
assert typ == 'OK', st
s = st[0].decode()
assert s.startswith('Tickets/T-100 (MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY ') and s.endswith(' UNSEEN 2)'), s
typ, st = m.status('INBOX', '(MESSAGES UNSEEN)')
assert st[0].decode() == 'INBOX (MESSAGES 3 UNSEEN 3)', st
typ, st = m.status('Nope', '(MESSAGES)')
assert typ == 'NO', st
typ, data = m.select('Tickets/T-100')
assert typ == 'OK' and data == [b'2'], data
r = m.untagged_responses
# $unverified: the gateway's read-only keyword (SPEC §4), defined, not permanent.
assert r['FLAGS'] == [b'(\\Answered \\Flagged \\Seen $unverified)'], r
assert r['RECENT'] == [b'0'], r
assert r['UNSEEN'] == [b'1'], r
assert r['UIDNEXT'] == [b'3'], r
assert 'READ-WRITE' in r, r
typ, data = m.select('Tickets', readonly=True)
assert typ == 'NO', data
typ, data = m.select('INBOX', readonly=True)
assert typ == 'OK' and data == [b'3'], data
assert 'READ-ONLY' in m.untagged_responses, m.untagged_responses
typ, data = m.store('1', '+FLAGS', '(\\Seen)')
assert typ == 'NO', data
typ, data = m.select('Unrouted')
assert typ == 'OK' and data == [b'0'], data
m.logout()

# A member sees no Unrouted.
m = imaplib.IMAP4(host, int(port))
m.login(member, mtoken)
typ, lines = m.list('""', '*')
assert [l.decode().split(' ')[-1] for l in lines] == ['INBOX', 'Sent', 'Tickets', 'Tickets/T-100', 'Tickets/T-200'], lines
typ, data = m.select('Unrouted')
assert typ == 'NO', data
typ, data = m.status('Unrouted', '(MESSAGES)')
assert typ == 'NO', data
m.logout()
print('ok')
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_status_select_and_unrouted_visibility() {
    let mut s = server().await;
    let (owner, member) = seed(&s).await;
    let out = python_async(
        LIST_SCRIPT,
        vec![
            s.imap.ip().to_string(),
            s.imap.port().to_string(),
            OWNER.into(),
            owner.clone(),
            MEMBER.into(),
            member,
        ],
    )
    .await;
    assert_eq!(out.trim(), "ok");

    // A ticket id outside ASCII is listed in modified UTF-7 and selectable
    // by that name.
    seed_thread(
        &s.sql,
        "Café-7",
        "cdefghijklmn2345",
        "open",
        "open",
        &["x@y.example"],
    )
    .await;
    reply(&s, "cdefghijklmn2345", "X <x@y.example>", "Hi", "", "Hello").await;
    s.wait_ingested().await;
    let mut c = connect(&s).await;
    c.login(OWNER, &owner).await;
    let r = c.ok("LIST \"\" \"Tickets/*\"").await;
    assert!(
        r.iter()
            .any(|l| l == "* LIST (\\HasNoChildren) \"/\" Tickets/Caf&AOk--7\r\n"),
        "{r:?}"
    );
    let r = c.ok("SELECT Tickets/Caf&AOk--7").await;
    assert!(r.iter().any(|l| l == "* 1 EXISTS\r\n"), "{r:?}");
    let r = c.ok("LIST \"\" \"\"").await;
    assert_eq!(r[0], "* LIST (\\Noselect) \"/\" \"\"\r\n");
    s.shutdown().await;
}

const FETCH_SCRIPT: &str = r#"
import imaplib, sys, re, email
host, port, user, token = sys.argv[1:5]
raw2 = open(sys.argv[5], 'rb').read()
m = imaplib.IMAP4(host, int(port))
m.login(user, token)
typ, data = m.select('INBOX')
assert data == [b'3'], data

typ, data = m.fetch('2', '(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)')
assert typ == 'OK', data
line = data[0].decode()
assert line.startswith('2 (UID 2 FLAGS () INTERNALDATE "'), line
assert 'RFC822.SIZE %d ' % len(raw2) in line, (line, len(raw2))
assert 'ENVELOPE ("Tue, 1 Sep 2026 10:00:00 +0000" "Proof of delivery" (("Vera Vendor" NIL "vera" "carrier.example"))' in line, line

typ, data = m.fetch('2', '(BODYSTRUCTURE)')
line = data[0].decode().lower()
assert line.startswith('2 (bodystructure (("text" "plain" ("charset" "utf-8") nil nil "7bit" '), line
assert '("application" "pdf" ("name" "pod.pdf") nil nil "base64" ' in line, line
assert '"mixed" ("boundary" "b1")' in line, line
typ, data = m.fetch('2', '(BODY)')
line = data[0].decode().lower()
assert line.startswith('2 (body (("text" "plain" ("charset" "utf-8") nil nil "7bit" '), line

# PEEK leaves \Seen alone; the whole message is the stored bytes.
typ, data = m.fetch('2', '(BODY.PEEK[])')
assert data[0][1] == raw2, data
typ, data = m.fetch('2', '(FLAGS)')
assert data[0] == b'2 (FLAGS ())', data
typ, data = m.fetch('2', '(BODY.PEEK[HEADER])')
assert data[0][1] == raw2[:raw2.index(b'\r\n\r\n') + 4], data
typ, data = m.fetch('2', '(BODY.PEEK[TEXT])')
assert data[0][1] == raw2[raw2.index(b'\r\n\r\n') + 4:], data
typ, data = m.fetch('2', '(BODY.PEEK[1])')
assert data[0][1] == b'The pallet ships Monday.', data
typ, data = m.fetch('2', '(BODY.PEEK[1.MIME])')
assert data[0][1].startswith(b'Content-Type: text/plain'), data
typ, data = m.fetch('2', '(BODY.PEEK[2])')
assert data[0][1] == b'JVBERi0xLjQKJcfsj6IKMSAwIG9iago=', data
typ, data = m.fetch('2', '(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])')
assert data[0][0].decode().startswith('2 (BODY[HEADER.FIELDS (SUBJECT FROM)] {'), data
assert data[0][1] == b'From: Vera Vendor <vera@carrier.example>\r\nSubject: Proof of delivery\r\n\r\n', data
# Partial fetches.
typ, data = m.fetch('2', '(BODY.PEEK[]<0.10>)')
assert data[0][0].decode().startswith('2 (BODY[]<0> {10}'), data
assert data[0][1] == raw2[:10], data
typ, data = m.fetch('2', '(BODY.PEEK[1]<4.6>)')
assert data[0][0].decode().startswith('2 (BODY[1]<4> {6}'), data
assert data[0][1] == b'pallet', data
typ, data = m.fetch('2', '(BODY.PEEK[]<100000.10>)')
assert data[0][1] == b'', data
# A part the message does not have.
typ, data = m.fetch('2', '(BODY.PEEK[9])')
assert typ == 'OK' and b'BODY[9] NIL' in data[0], data

# Without PEEK the message becomes \Seen, and FLAGS say so.
typ, data = m.fetch('2', '(BODY[TEXT])')
assert b'FLAGS (\\Seen)' in data[0][0] or b'FLAGS (\\Seen)' in data[1], data
typ, data = m.fetch('1', '(RFC822.HEADER)')
typ, data = m.fetch('1', '(FLAGS)')
assert data[0] == b'1 (FLAGS ())', data
typ, data = m.fetch('1', '(RFC822)')
assert data[0][1].startswith(b'From: Vera Vendor'), data
typ, data = m.fetch('1', '(FLAGS)')
assert data[0] == b'1 (FLAGS (\\Seen))', data
typ, data = m.fetch('3', '(RFC822.TEXT)')
assert data[0][1] == b'Invoice attached soon.\r\n', data

# Macros.
typ, data = m.fetch('1:3', 'FAST')
assert len(data) == 3 and all(b'RFC822.SIZE' in d and b'INTERNALDATE' in d for d in data), data
typ, data = m.fetch('3', 'ALL')
assert b'ENVELOPE (' in data[0], data
typ, data = m.fetch('3', 'FULL')
assert b'BODY (' in data[0], data
# UID FETCH always answers with UID.
typ, data = m.uid('FETCH', '1:*', '(FLAGS)')
assert [d.decode() for d in data] == ['1 (UID 1 FLAGS (\\Seen))', '2 (UID 2 FLAGS (\\Seen))', '3 (UID 3 FLAGS (\\Seen))'], data
# EXAMINE: body fetches do not set \Seen.
m.store('1:*', '-FLAGS', '(\\Seen)')
m.select('INBOX', readonly=True)
m.fetch('1', '(BODY[])')
typ, data = m.fetch('1', '(FLAGS)')
assert data[0] == b'1 (FLAGS ())', data
m.logout()
print('ok')
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_items_on_ingested_messages() {
    let mut s = server().await;
    let (owner, _) = seed(&s).await;
    let raws = raw_of_inbox(&s).await;
    assert_eq!(raws.len(), 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let raw2 = dir.path().join("raw2.eml");
    std::fs::write(&raw2, &raws[1]).expect("write raw");
    let out = python_async(
        FETCH_SCRIPT,
        vec![
            s.imap.ip().to_string(),
            s.imap.port().to_string(),
            OWNER.into(),
            owner,
            raw2.display().to_string(),
        ],
    )
    .await;
    assert_eq!(out.trim(), "ok");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_sets_stars_and_ranges() {
    let mut s = server().await;
    let (owner, _) = seed(&s).await;
    let mut c = connect(&s).await;
    c.login(OWNER, &owner).await;

    // Empty mailbox: `*` names no message.
    c.ok("SELECT Unrouted").await;
    let r = c.cmd("FETCH * FLAGS").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    let r = c.cmd("FETCH 1:* FLAGS").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    let r = c.ok("UID FETCH 1:* FLAGS").await;
    assert_eq!(r.len(), 1, "{r:?}");
    let r = c.ok("UID SEARCH ALL").await;
    assert_eq!(r[0], "* SEARCH\r\n");
    let r = c.ok("SEARCH 1:*").await;
    assert_eq!(r[0], "* SEARCH\r\n");

    c.ok("SELECT INBOX").await;
    let numbers = |r: &[String]| -> Vec<String> {
        r.iter()
            .filter(|l| l.starts_with("* "))
            .map(|l| l.split(' ').nth(1).unwrap_or("").to_string())
            .collect()
    };
    let r = c.ok("FETCH * UID").await;
    assert_eq!(r[0], "* 3 FETCH (UID 3)\r\n");
    let r = c.ok("FETCH 3:1 UID").await;
    assert_eq!(numbers(&r), ["1", "2", "3"]);
    let r = c.ok("FETCH 2,1,2,3:3 UID").await;
    assert_eq!(numbers(&r), ["1", "2", "3"]);
    let r = c.ok("FETCH *:2 UID").await;
    assert_eq!(numbers(&r), ["2", "3"]);
    let r = c.cmd("FETCH 4 UID").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    let r = c.cmd("FETCH 2:9 UID").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    let r = c.cmd("FETCH 0 UID").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    // UIDs: missing ones are ignored, `n:*` past the end names the last.
    let r = c.ok("UID FETCH 2:99 FLAGS").await;
    assert_eq!(numbers(&r), ["2", "3"]);
    let r = c.ok("UID FETCH 99:* FLAGS").await;
    assert_eq!(numbers(&r), ["3"]);
    let r = c.ok("UID FETCH 7 FLAGS").await;
    assert_eq!(r.len(), 1, "{r:?}");
    let r = c.ok("UID FETCH 3:1 (UID FLAGS)").await;
    assert_eq!(numbers(&r), ["1", "2", "3"]);
    let r = c.ok("UID SEARCH UID 2:*").await;
    assert_eq!(r[0], "* SEARCH 2 3\r\n");
    let r = c.ok("SEARCH 2:7").await;
    assert_eq!(r[0], "* SEARCH 2 3\r\n");
    s.shutdown().await;
}

const SEARCH_SCRIPT: &str = r#"
import imaplib, sys
host, port, user, token = sys.argv[1:5]
m = imaplib.IMAP4(host, int(port))
m.login(user, token)
m.select('INBOX')
def search(*crit, charset=None):
    typ, data = m.search(charset, *crit)
    assert typ == 'OK', (crit, data)
    return data[0].decode()
assert search('ALL') == '1 2 3'
assert search('UNSEEN') == '1 2 3'
assert search('SEEN') == ''
m.store('2', '+FLAGS', '(\\Seen)')
assert search('SEEN') == '2'
assert search('UNSEEN') == '1 3'
assert search('FROM', 'vera') == '1 2'
assert search('FROM', '"supplier.example"') == '3'
assert search('FROM', 'Sam') == '3'
assert search('SUBJECT', 'invoice') == '3'
assert search('SUBJECT', '"proof of"') == '2'
assert search('SINCE', '1-Jan-2000') == '1 2 3'
assert search('SINCE', '1-Jan-2100') == ''
assert search('BEFORE', '1-Jan-2100') == '1 2 3'
assert search('BEFORE', '1-Jan-2000') == ''
assert search('SENTON', '1-Sep-2026') == '1 2 3'
assert search('UID', '2:3') == '2 3'
assert search('2:*') == '2 3'
assert search('NOT', 'SEEN') == '1 3'
assert search('OR', 'SUBJECT', 'invoice', 'SEEN') == '2 3'
assert search('FROM', 'vera', 'UNSEEN') == '1'
assert search('(OR FROM sam SEEN) NOT UID 3') == '2'
assert search('FLAGGED') == ''
assert search('UNDELETED') == '1 2 3'
assert search('DELETED') == ''
assert search('BODY', 'monday') == '1 2'
assert search('TEXT', 'invoice') == '3'
assert search('HEADER', 'Message-ID', 'carrier.example') == '1 2 3'
assert search('LARGER', '1') == '1 2 3'
assert search('SUBJECT', 'invoice', charset='UTF-8') == '3'
typ, data = m.search('KOI8-R', 'ALL')
assert typ == 'NO' and b'BADCHARSET' in data[0], data
typ, data = m.uid('SEARCH', 'SEEN')
assert data == [b'2'], data
m.logout()
print('ok')
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_criteria() {
    let mut s = server().await;
    let (owner, _) = seed(&s).await;
    let out = python_async(
        SEARCH_SCRIPT,
        vec![
            s.imap.ip().to_string(),
            s.imap.port().to_string(),
            OWNER.into(),
            owner,
        ],
    )
    .await;
    assert_eq!(out.trim(), "ok");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_keeps_flags_per_user() {
    let mut s = server().await;
    let (owner, member) = seed(&s).await;
    let mut a = connect(&s).await;
    a.login(OWNER, &owner).await;
    a.ok("SELECT INBOX").await;
    let r = a.ok("STORE 1 +FLAGS (\\Flagged \\Seen)").await;
    assert_eq!(r[0], "* 1 FETCH (FLAGS (\\Flagged \\Seen))\r\n");
    let r = a.ok("UID STORE 2 FLAGS (\\Answered)").await;
    assert_eq!(r[0], "* 2 FETCH (FLAGS (\\Answered) UID 2)\r\n");
    let r = a.ok("STORE 1 -FLAGS.SILENT (\\Seen)").await;
    assert_eq!(r.len(), 1, "silent: {r:?}");
    // Flags outside PERMANENTFLAGS are ignored; \Deleted is refused.
    let r = a.ok("STORE 3 +FLAGS (\\Draft $Forwarded)").await;
    assert_eq!(r[0], "* 3 FETCH (FLAGS ())\r\n");
    let r = a.cmd("STORE 3 +FLAGS (\\Deleted)").await;
    assert_eq!(status_of(&r), "NO", "{r:?}");
    let r = a.cmd("STORE 9 +FLAGS (\\Seen)").await;
    assert_eq!(status_of(&r), "BAD", "{r:?}");
    let r = a.ok("FETCH 1:* FLAGS").await;
    assert_eq!(
        &r[..3],
        [
            "* 1 FETCH (FLAGS (\\Flagged))\r\n",
            "* 2 FETCH (FLAGS (\\Answered))\r\n",
            "* 3 FETCH (FLAGS ())\r\n"
        ]
    );
    // The same message in its ticket mailbox carries the same flags.
    let r = a.ok("EXAMINE Tickets/T-100").await;
    assert!(r.iter().any(|l| l == "* 2 EXISTS\r\n"), "{r:?}");
    let r = a.ok("FETCH 1:2 FLAGS").await;
    assert_eq!(r[0], "* 1 FETCH (FLAGS (\\Flagged))\r\n");

    // Another user sees none of them.
    let mut b = connect(&s).await;
    b.login(MEMBER, &member).await;
    let r = b.ok("STATUS INBOX (UNSEEN)").await;
    assert_eq!(r[0], "* STATUS INBOX (UNSEEN 3)\r\n");
    b.ok("SELECT INBOX").await;
    let r = b.ok("FETCH 1:* FLAGS").await;
    assert!(
        r[..3].iter().all(|l| l.ends_with("(FLAGS ())\r\n")),
        "{r:?}"
    );
    let r = b.ok("SEARCH FLAGGED").await;
    assert_eq!(r[0], "* SEARCH\r\n");

    // A flag set in one session shows up in another on NOOP.
    a.ok("SELECT INBOX").await;
    b.ok("STORE 3 +FLAGS.SILENT (\\Seen)").await;
    let r = a.ok("NOOP").await;
    assert_eq!(r.len(), 1, "not a's flag: {r:?}");
    let mut a2 = connect(&s).await;
    a2.login(OWNER, &owner).await;
    a2.ok("SELECT INBOX").await;
    a2.ok("STORE 3 +FLAGS.SILENT (\\Seen)").await;
    let r = a.ok("NOOP").await;
    assert_eq!(r[0], "* 3 FETCH (FLAGS (\\Seen) UID 3)\r\n");
    s.shutdown().await;
}

/// Reads untagged lines until one satisfies `want`.
async fn wait_for<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Imap<S>,
    want: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let l = c.line().await;
        assert!(!l.is_empty(), "closed while waiting; saw {seen:?}");
        let done = want(&l);
        seen.push(l);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pushes_new_mail_flags_and_expunges() {
    let mut s = server().await;
    let (owner, _) = seed(&s).await;
    let mut c = connect(&s).await;
    c.login(OWNER, &owner).await;
    c.ok("SELECT INBOX").await;

    // New mail while idling: EXISTS arrives unasked.
    let tag = c.next_tag();
    c.send(format!("{tag} IDLE\r\n").as_bytes()).await;
    assert!(c.line().await.starts_with("+ "));
    reply(
        &s,
        TOKEN,
        "Vera Vendor <vera@carrier.example>",
        "Update",
        "",
        "Loaded.",
    )
    .await;
    let seen = wait_for(&mut c, |l| l == "* 4 EXISTS\r\n").await;
    assert_eq!(seen, ["* 4 EXISTS\r\n"]);
    // A flag change in another session of the same user.
    let mut other = connect(&s).await;
    other.login(OWNER, &owner).await;
    other.ok("SELECT INBOX").await;
    other.ok("STORE 4 +FLAGS (\\Flagged)").await;
    let seen = wait_for(&mut c, |l| l.starts_with("* 4 FETCH")).await;
    assert_eq!(seen, ["* 4 FETCH (FLAGS (\\Flagged) UID 4)\r\n"]);
    c.send(b"DONE\r\n").await;
    let r = c.until_tagged(&tag).await;
    assert_eq!(status_of(&r), "OK", "{r:?}");

    // An unrouted message assigned to a thread leaves Unrouted: EXPUNGE.
    let r = smtp_send(
        s.smtp,
        "stranger@elsewhere.example",
        &["reply@gw.example.com"],
        &format!(
            "From: stranger@elsewhere.example\nTo: reply@gw.example.com\nSubject: Hello?\nMessage-ID: <{}@elsewhere.example>\n\nIs this the right address?\n",
            rand_id()
        ),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    s.wait_ingested().await;
    let r = c.ok("SELECT Unrouted").await;
    assert!(r.iter().any(|l| l == "* 1 EXISTS\r\n"), "{r:?}");
    let message_id: i64 = s
        .query("SELECT message_id FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id WHERE mb.name = 'Unrouted'")
        .await;
    let sc: i64 = s
        .query("SELECT id FROM side_conversations WHERE token = 'bcdefghijklmn234'")
        .await;
    let tag = c.next_tag();
    c.send(format!("{tag} IDLE\r\n").as_bytes()).await;
    assert!(c.line().await.starts_with("+ "));
    let (status, body) = api_call(
        &s,
        "POST",
        &format!("/api/unrouted/{message_id}/assign"),
        &owner,
        Some(serde_json::json!({"side_conversation_id": sc})),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let seen = wait_for(&mut c, |l| l == "* 1 EXPUNGE\r\n").await;
    assert_eq!(seen, ["* 1 EXPUNGE\r\n"]);
    c.send(b"DONE\r\n").await;
    c.until_tagged(&tag).await;
    let r = c.ok("UID FETCH 1:* FLAGS").await;
    assert_eq!(r.len(), 1, "{r:?}");
    // The message is now in its ticket's mailbox.
    let r = c.ok("STATUS Tickets/T-200 (MESSAGES)").await;
    assert_eq!(r[0], "* STATUS Tickets/T-200 (MESSAGES 2)\r\n");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunge_waits_for_a_command_that_may_report_it() {
    let mut s = server().await;
    let owner = make_user(&s, OWNER, "Owner", Role::Owner).await;
    seed_thread(&s.sql, "T-9", TOKEN, "open", "open", &["v@x.example"]).await;
    for i in 0..2 {
        let r = smtp_send(
            s.smtp,
            "stranger@elsewhere.example",
            &["reply@gw.example.com"],
            &format!(
                "From: stranger@elsewhere.example\nSubject: Stray {i}\nMessage-ID: <{}@elsewhere.example>\n\nHi\n",
                rand_id()
            ),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    s.wait_ingested().await;
    let mut c = connect(&s).await;
    c.login(OWNER, &owner).await;
    let r = c.ok("SELECT Unrouted").await;
    assert!(r.iter().any(|l| l == "* 2 EXISTS\r\n"), "{r:?}");
    let first: i64 = s
        .query("SELECT min(message_id) FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id WHERE mb.name = 'Unrouted'")
        .await;
    let sc: i64 = s.query("SELECT id FROM side_conversations").await;
    let (status, _) = api_call(
        &s,
        "POST",
        &format!("/api/unrouted/{first}/assign"),
        &owner,
        Some(serde_json::json!({"side_conversation_id": sc})),
    )
    .await;
    assert!(status.is_success());
    // FETCH, STORE and SEARCH by number must not shift numbers under the
    // client: the message stays (and is fetchable) until NOOP.
    let r = c.ok("FETCH 1:2 (UID)").await;
    assert_eq!(&r[..2], ["* 1 FETCH (UID 1)\r\n", "* 2 FETCH (UID 2)\r\n"]);
    let r = c.ok("SEARCH ALL").await;
    assert_eq!(r[0], "* SEARCH 1 2\r\n");
    let r = c.ok("NOOP").await;
    assert_eq!(r[0], "* 1 EXPUNGE\r\n");
    let r = c.ok("FETCH 1:* (UID)").await;
    assert_eq!(r[0], "* 1 FETCH (UID 2)\r\n");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_references() {
    let mut s = server().await;
    let owner = make_user(&s, OWNER, "Owner", Role::Owner).await;
    seed_thread(&s.sql, "T-1", TOKEN, "open", "open", &["v@x.example"]).await;
    let to = format!("reply+{TOKEN}@gw.example.com");
    let msgs = [
        "Message-ID: <a@x.example>\nSubject: Pallet\nDate: Tue, 1 Sep 2026 10:00:00 +0000",
        "Message-ID: <c@x.example>\nSubject: Other topic\nDate: Tue, 1 Sep 2026 10:01:00 +0000",
        "Message-ID: <b@x.example>\nIn-Reply-To: <a@x.example>\nReferences: <a@x.example>\nSubject: Re: Pallet\nDate: Tue, 1 Sep 2026 10:02:00 +0000",
        "Message-ID: <d@x.example>\nReferences: <a@x.example> <b@x.example>\nSubject: Re: Pallet\nDate: Tue, 1 Sep 2026 10:03:00 +0000",
    ];
    for h in msgs {
        let r = smtp_send(
            s.smtp,
            "v@x.example",
            &[&to],
            &format!("From: v@x.example\nTo: {to}\n{h}\n\nbody\n"),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
        s.wait_ingested().await;
    }
    let mut c = connect(&s).await;
    c.login(OWNER, &owner).await;
    c.ok("SELECT Tickets/T-1").await;
    let r = c.ok("THREAD REFERENCES UTF-8 ALL").await;
    assert_eq!(r[0], "* THREAD (1 3 4)(2)\r\n");
    let r = c
        .ok("UID THREAD REFERENCES US-ASCII NOT SUBJECT other")
        .await;
    assert_eq!(r[0], "* THREAD (1 3 4)\r\n");
    let r = c.cmd("THREAD ORDEREDSUBJECT UTF-8 ALL").await;
    assert_eq!(status_of(&r), "NO", "{r:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_listener() {
    let certdir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = certdir.path().join("cert.pem");
    let key = certdir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let mut s = TestServer::start_with_imap(
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        NO_AUTH,
    )
    .await;
    let owner = make_user(&s, OWNER, "Owner", Role::Owner).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ck.cert.der().to_vec(),
        ))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(s.imap).await.expect("connect");
    let tls = connector
        .connect("localhost".try_into().expect("name"), tcp)
        .await
        .expect("handshake");
    let mut c = Imap {
        io: BufReader::new(tls),
        n: 0,
    };
    assert!(c.line().await.starts_with("* OK [CAPABILITY IMAP4REV1"));
    c.login(OWNER, &owner).await;
    let r = c.ok("SELECT INBOX").await;
    assert!(r.iter().any(|l| l == "* 0 EXISTS\r\n"), "{r:?}");
    c.ok("LOGOUT").await;

    // Plain text on the TLS port gets no IMAP greeting.
    let mut plain = TcpStream::connect(s.imap).await.expect("connect");
    plain.write_all(b"a1 CAPABILITY\r\n").await.expect("write");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(20), plain.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("CAPABILITY IMAP4REV1"));
    s.shutdown().await;
}

/// `imap.preauth_timeout` and `imap.tls_handshake_timeout` are config
/// keys: a client that logs in never, or never starts its TLS handshake,
/// is let go after the configured time (the defaults, 60 s and 30 s, are
/// longer than this test waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_timeouts_let_silent_clients_go() {
    let mut s = TestServer::start_with_imap("preauth_timeout = \"1s\"\n", NO_AUTH).await;
    let mut c = connect(&s).await;
    assert_eq!(c.line().await, "* BYE Autologout; idle for too long\r\n");
    assert_eq!(c.line().await, "");
    s.shutdown().await;

    let certdir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = certdir.path().join("cert.pem");
    let key = certdir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let mut s = TestServer::start_with_imap(
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_handshake_timeout = \"1s\"\n",
            cert.display(),
            key.display()
        ),
        NO_AUTH,
    )
    .await;
    let mut silent = TcpStream::connect(s.imap).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("closed before the test gave up")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_idle_timeout_and_shutdown() {
    let mut s =
        TestServer::start_with_imap("max_connections = 2\nidle_timeout = \"2s\"\n", NO_AUTH).await;
    let owner = make_user(&s, OWNER, "Owner", Role::Owner).await;
    let a = connect(&s).await;
    let mut b = connect(&s).await;
    // A third is told why and closed.
    let mut third = TcpStream::connect(s.imap).await.expect("connect");
    let mut buf = vec![0u8; 256];
    let n = third.read(&mut buf).await.expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("* BYE [UNAVAILABLE]"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(a);
    // Idle past the timeout: BYE and closed.
    assert_eq!(b.line().await, "* BYE Autologout; idle for too long\r\n");
    assert_eq!(b.line().await, "");
    // Both slots are free again; a session that keeps talking stays.
    let mut a = connect(&s).await;
    a.login(OWNER, &owner).await;
    let mut c = connect(&s).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        a.ok("NOOP").await;
        c.ok("NOOP").await;
    }
    drop(c);

    // Shutdown: a waiting session is told BYE and closed.
    a.ok("SELECT INBOX").await;
    let tag = a.next_tag();
    a.send(format!("{tag} IDLE\r\n").as_bytes()).await;
    assert!(a.line().await.starts_with("+ "));
    let running = s.running.take().expect("running");
    let stopping = tokio::spawn(async move { running.shutdown().await });
    assert_eq!(a.line().await, "* BYE Server shutting down\r\n");
    assert_eq!(a.line().await, "");
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("shutdown in time")
        .expect("join")
        .expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let mut s = server().await;
    let (owner, _) = seed(&s).await;
    let mut c = connect(&s).await;
    c.send(
        format!(
            "p1 LOGIN {OWNER} {owner}\r\np2 SELECT INBOX\r\np3 FETCH 1:* (UID)\r\np4 BOGUS\r\np5 UID FETCH * (FLAGS)\r\np6 LOGOUT\r\n"
        )
        .as_bytes(),
    )
    .await;
    let mut lines = Vec::new();
    loop {
        let l = c.line().await;
        if l.is_empty() {
            break;
        }
        lines.push(l);
    }
    let tagged: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with('p'))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        tagged,
        ["p1 OK", "p2 OK", "p3 OK", "p4 BAD", "p5 OK", "p6 OK"],
        "{lines:?}"
    );
    assert!(
        lines.contains(&"* 3 FETCH (UID 3 FLAGS ())\r\n".to_string()),
        "{lines:?}"
    );
    s.shutdown().await;
}
