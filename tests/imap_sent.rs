//! Each user's `Sent` (SPEC §9, §12) from outside: two agents write on
//! side conversations through the API; over raw IMAP and over JMAP each sees
//! their own outbound mail in `Sent` and never the other's. `APPEND` to Sent
//! (a client saving its copy of what it sent) answers OK and stores nothing;
//! APPEND anywhere else is refused with NO; an oversized literal is refused
//! and the session goes on. Python's imaplib saves a sent copy too.

mod common;

use std::time::Duration;

use backchannel::model::Role;
use common::{TestServer, api_call, imap_cmd, make_user};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CORE: &str = "urn:ietf:params:jmap:core";
const MAIL: &str = "urn:ietf:params:jmap:mail";

type Conn = BufReader<TcpStream>;

async fn imap_login(s: &TestServer, email: &str, token: &str) -> Conn {
    let tcp = TcpStream::connect(s.imap).await.expect("connect imap");
    let mut io = BufReader::new(tcp);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let r = imap_cmd(&mut io, "l", &format!("LOGIN {email} {token}")).await;
    assert!(tagged_ok(&r), "{r:?}");
    io
}

fn tagged_ok(lines: &[String]) -> bool {
    lines
        .last()
        .is_some_and(|l| l.split(' ').nth(1) == Some("OK"))
}

fn tagged(lines: &[String]) -> String {
    lines.last().cloned().unwrap_or_default()
}

async fn line(io: &mut Conn) -> String {
    let mut l = String::new();
    let n = tokio::time::timeout(Duration::from_secs(30), io.read_line(&mut l))
        .await
        .expect("IMAP line in time")
        .expect("read");
    assert!(n > 0, "IMAP connection closed");
    l.trim_end().to_string()
}

/// Reads lines up to and including the one tagged `tag`.
async fn until_tagged(io: &mut Conn, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let l = line(io).await;
        let done = l.starts_with(&format!("{tag} "));
        out.push(l);
        if done {
            return out;
        }
    }
}

/// `STATUS Sent (MESSAGES)` → the count.
async fn sent_count(io: &mut Conn) -> u32 {
    let r = imap_cmd(io, "st", "STATUS Sent (MESSAGES UIDNEXT)").await;
    assert!(tagged_ok(&r), "{r:?}");
    let status = r
        .iter()
        .find(|l| l.starts_with("* STATUS"))
        .expect("STATUS data");
    let after = status.split("MESSAGES ").nth(1).expect("MESSAGES");
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count")
}

/// The subjects of Sent, in UID order, and the message's flags.
async fn sent_subjects(io: &mut Conn) -> Vec<(String, String)> {
    let r = imap_cmd(io, "ex", "EXAMINE Sent").await;
    assert!(tagged_ok(&r), "{r:?}");
    let r = imap_cmd(
        io,
        "f",
        "UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
    )
    .await;
    assert!(tagged_ok(&r), "{r:?}");
    let mut out = Vec::new();
    let mut flags = String::new();
    for l in &r {
        if l.starts_with("* ") && l.contains("FETCH") {
            flags = l
                .split("FLAGS (")
                .nth(1)
                .and_then(|f| f.split(')').next())
                .unwrap_or("")
                .to_string();
        }
        if let Some(subject) = l.strip_prefix("Subject: ") {
            out.push((subject.to_string(), flags.clone()));
        }
    }
    out
}

async fn start(s: &TestServer, token: &str, parent: &str, subject: &str) -> i64 {
    let (st, sc) = api_call(
        s,
        "POST",
        &format!("/api/parents/{parent}/side-conversations"),
        token,
        Some(json!({"to": ["vera@carrier.example"], "subject": subject, "body_text": "Where is it?"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sc}");
    sc["id"].as_i64().expect("id")
}

async fn follow_up(s: &TestServer, token: &str, sc: i64, text: &str) -> i64 {
    let (st, m) = api_call(
        s,
        "POST",
        &format!("/api/side-conversations/{sc}/messages"),
        token,
        Some(json!({ "body_text": text })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    m["id"].as_i64().expect("message id")
}

/// One JMAP method call as `token`; its arguments.
async fn jmap(s: &TestServer, token: &str, account: &str, name: &str, mut args: Value) -> Value {
    args["accountId"] = json!(account);
    let resp: Value = reqwest::Client::new()
        .post(format!("http://{}/jmap", s.http))
        .bearer_auth(token)
        .json(&json!({"using": [CORE, MAIL], "methodCalls": [[name, args, "c"]]}))
        .send()
        .await
        .expect("jmap")
        .json()
        .await
        .expect("jmap json");
    let r = &resp["methodResponses"][0];
    assert_eq!(r[0], name, "{resp}");
    r[1].clone()
}

async fn account(s: &TestServer, token: &str) -> String {
    let session: Value = reqwest::Client::new()
        .get(format!("http://{}/.well-known/jmap", s.http))
        .bearer_auth(token)
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("session json");
    session["primaryAccounts"][MAIL]
        .as_str()
        .expect("account")
        .to_string()
}

/// The caller's mailboxes with role `sent`: (id, name).
async fn jmap_sent(s: &TestServer, token: &str, account: &str) -> Vec<(String, String)> {
    let v = jmap(s, token, account, "Mailbox/get", json!({"ids": null})).await;
    v["list"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|m| m["role"] == "sent")
        .map(|m| {
            (
                m["id"].as_str().expect("id").to_string(),
                m["name"].as_str().expect("name").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sees_their_own_sent_over_imap_and_jmap() {
    let mut s = TestServer::start_with("", "").await;
    let ann = make_user(&s, "ann@acme.com", "Ann", Role::Member).await;
    let bob = make_user(&s, "bob@acme.com", "Bob", Role::Member).await;
    let olga = make_user(&s, "olga@acme.com", "Olga", Role::Owner).await;

    let sc_ann = start(&s, &ann, "T-1", "Pallet 7 from Ann").await;
    follow_up(&s, &ann, sc_ann, "Any news, from Ann?").await;
    start(&s, &bob, "T-2", "Crate 9 from Bob").await;

    // IMAP: LIST marks each user's one Sent `\Sent`; SPECIAL-USE is said.
    let mut a = imap_login(&s, "ann@acme.com", &ann).await;
    let caps = imap_cmd(&mut a, "c", "CAPABILITY").await;
    assert!(caps[0].contains("SPECIAL-USE"), "{caps:?}");
    let list = imap_cmd(&mut a, "li", "LIST \"\" \"*\"").await;
    assert!(tagged_ok(&list), "{list:?}");
    let sent: Vec<&String> = list.iter().filter(|l| l.ends_with(" Sent")).collect();
    assert_eq!(sent.len(), 1, "{list:?}");
    assert!(sent[0].contains("\\Sent"), "{list:?}");
    assert!(
        !list.iter().any(|l| l.contains("Sent:")),
        "stored names never show: {list:?}"
    );
    let lsub = imap_cmd(&mut a, "ls", "LSUB \"\" \"S*\"").await;
    assert!(
        lsub.iter()
            .any(|l| l.contains("\\Sent") && l.ends_with(" Sent")),
        "{lsub:?}"
    );

    // Ann's Sent: her start and her follow-up, \Seen (she wrote them).
    assert_eq!(sent_count(&mut a).await, 2);
    let subjects = sent_subjects(&mut a).await;
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert_eq!(subjects[0].0, "Pallet 7 from Ann");
    assert_eq!(subjects[1].0, "Re: Pallet 7 from Ann");
    assert!(
        subjects.iter().all(|(_, f)| f.contains("\\Seen")),
        "{subjects:?}"
    );

    // The bytes are the stored message that left.
    let stored: Vec<u8> = s
        .sql
        .read(move |c| {
            Ok(c.query_row(
                "SELECT raw FROM messages WHERE direction = 'out' AND side_conversation_id = ?1
                 ORDER BY id LIMIT 1",
                [sc_ann],
                |r| r.get(0),
            )?)
        })
        .await
        .expect("raw");
    a.get_mut()
        .write_all(b"b1 UID FETCH 1 (BODY.PEEK[])\r\n")
        .await
        .expect("write");
    let head = line(&mut a).await;
    let len: usize = head
        .rsplit('{')
        .next()
        .and_then(|t| t.trim_end_matches('}').parse().ok())
        .unwrap_or_else(|| panic!("literal in {head}"));
    let mut body = vec![0u8; len];
    tokio::io::AsyncReadExt::read_exact(&mut a, &mut body)
        .await
        .expect("body");
    assert_eq!(body, stored);
    let rest = until_tagged(&mut a, "b1").await;
    assert!(tagged_ok(&rest), "{rest:?}");

    // SELECT, SEARCH and STORE work on it like on any mailbox.
    assert!(tagged_ok(&imap_cmd(&mut a, "s", "SELECT Sent").await));
    let search = imap_cmd(&mut a, "se", "SEARCH SUBJECT \"Re:\"").await;
    assert!(search.iter().any(|l| l == "* SEARCH 2"), "{search:?}");
    let store = imap_cmd(&mut a, "sf", "STORE 1 +FLAGS (\\Flagged)").await;
    assert!(store.iter().any(|l| l.contains("\\Flagged")), "{store:?}");

    // Bob sees his own one message; Olga (an owner) an empty Sent.
    let mut b = imap_login(&s, "bob@acme.com", &bob).await;
    let subjects = sent_subjects(&mut b).await;
    assert_eq!(
        subjects.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        vec!["Crate 9 from Bob"]
    );
    let mut o = imap_login(&s, "olga@acme.com", &olga).await;
    assert_eq!(sent_count(&mut o).await, 0);
    let list = imap_cmd(&mut o, "li", "LIST \"\" \"*\"").await;
    assert_eq!(list.iter().filter(|l| l.ends_with(" Sent")).count(), 1);
    // Another user's Sent by its stored name is no mailbox.
    let bob_id: i64 = s
        .query("SELECT id FROM users WHERE email = 'bob@acme.com'")
        .await;
    let r = imap_cmd(&mut o, "x", &format!("SELECT \"Sent:{bob_id}\"")).await;
    assert!(tagged(&r).starts_with("x NO"), "{r:?}");

    // IDLE on Sent: a new message Ann writes shows up.
    imap_cmd(&mut a, "s2", "SELECT Sent").await;
    a.get_mut().write_all(b"i IDLE\r\n").await.expect("idle");
    assert!(line(&mut a).await.starts_with("+ "));
    follow_up(&s, &ann, sc_ann, "Third from Ann").await;
    loop {
        let l = line(&mut a).await;
        if l == "* 3 EXISTS" {
            break;
        }
    }
    a.get_mut().write_all(b"DONE\r\n").await.expect("done");
    assert!(tagged_ok(&until_tagged(&mut a, "i").await));
    // Bob's Sent did not move.
    assert_eq!(sent_count(&mut b).await, 1);

    // JMAP: each caller lists one Sent, role "sent", their own.
    let (acc_ann, acc_bob) = (account(&s, &ann).await, account(&s, &bob).await);
    let ann_sent = jmap_sent(&s, &ann, &acc_ann).await;
    let bob_sent = jmap_sent(&s, &bob, &acc_bob).await;
    assert_eq!(ann_sent.len(), 1, "{ann_sent:?}");
    assert_eq!(bob_sent.len(), 1, "{bob_sent:?}");
    assert_eq!(ann_sent[0].1, "Sent");
    assert_ne!(ann_sent[0].0, bob_sent[0].0);
    let q = jmap(
        &s,
        &ann,
        &acc_ann,
        "Email/query",
        json!({"filter": {"inMailbox": ann_sent[0].0}}),
    )
    .await;
    let ann_emails = q["ids"].as_array().expect("ids").clone();
    assert_eq!(ann_emails.len(), 3, "{q}");
    // Bob's Sent is no mailbox of Ann's.
    let g = jmap(
        &s,
        &ann,
        &acc_ann,
        "Mailbox/get",
        json!({"ids": [bob_sent[0].0]}),
    )
    .await;
    assert_eq!(g["notFound"], json!([bob_sent[0].0]), "{g}");
    let q = jmap(
        &s,
        &ann,
        &acc_ann,
        "Email/query",
        json!({"filter": {"inMailbox": bob_sent[0].0}}),
    )
    .await;
    assert_eq!(q["ids"], json!([]), "{q}");
    // Ann's message as Ann sees it is in her Sent; as Bob sees it, in the
    // ticket's mailbox only.
    let args = json!({"ids": [ann_emails[0]], "properties": ["mailboxIds"]});
    let mine = jmap(&s, &ann, &acc_ann, "Email/get", args.clone()).await;
    let theirs = jmap(&s, &bob, &acc_bob, "Email/get", args).await;
    assert_eq!(
        mine["list"][0]["mailboxIds"][&ann_sent[0].0], true,
        "{mine}"
    );
    let boxes = theirs["list"][0]["mailboxIds"]
        .as_object()
        .expect("mailboxIds");
    assert_eq!(boxes.len(), 1, "{theirs}");
    assert!(!boxes.contains_key(&ann_sent[0].0), "{theirs}");
    // Mailbox/changes: Bob writing moves Bob's Sent, which Ann never hears of.
    let before = jmap(&s, &ann, &acc_ann, "Mailbox/get", json!({"ids": []})).await["state"]
        .as_str()
        .expect("state")
        .to_string();
    start(&s, &bob, "T-3", "Bin 4 from Bob").await;
    let ch = jmap(
        &s,
        &ann,
        &acc_ann,
        "Mailbox/changes",
        json!({ "sinceState": before }),
    )
    .await;
    let touched: Vec<Value> = ["created", "updated", "destroyed"]
        .iter()
        .flat_map(|k| ch[*k].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(!touched.contains(&json!(bob_sent[0].0)), "{ch}");
    assert!(!touched.contains(&json!(ann_sent[0].0)), "{ch}");
    let ch = jmap(
        &s,
        &bob,
        &acc_bob,
        "Mailbox/changes",
        json!({ "sinceState": before }),
    )
    .await;
    assert!(
        ch["updated"]
            .as_array()
            .expect("updated")
            .contains(&json!(bob_sent[0].0)),
        "{ch}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_to_sent_is_ok_and_stores_nothing() {
    let mut s = TestServer::start_with("", "").await;
    let ann = make_user(&s, "ann@acme.com", "Ann", Role::Member).await;
    let sc = start(&s, &ann, "T-1", "Pallet 7").await;
    let mut a = imap_login(&s, "ann@acme.com", &ann).await;
    let messages = || s.query::<i64>("SELECT count(*) FROM messages");
    let before = messages().await;
    assert_eq!(sent_count(&mut a).await, 1);

    let copy = "From: Ann <support@acme.com>\r\nTo: vera@carrier.example\r\nSubject: Re: Pallet 7\r\n\r\nSaved by the client.\r\n";
    // A synchronizing literal: `+` first, then OK.
    a.get_mut()
        .write_all(
            format!(
                "a1 APPEND Sent (\\Seen) \"01-Sep-2026 10:00:00 +0000\" {{{}}}\r\n",
                copy.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let cont = line(&mut a).await;
    assert!(cont.starts_with("+ "), "{cont}");
    a.get_mut()
        .write_all(format!("{copy}\r\n").as_bytes())
        .await
        .expect("literal");
    let r = until_tagged(&mut a, "a1").await;
    let last = tagged(&r);
    assert!(last.starts_with("a1 OK"), "{r:?}");
    assert!(last.contains("keeps its own copy"), "{last}");
    // A non-synchronizing literal (LITERAL+), no flags, no date.
    a.get_mut()
        .write_all(format!("a2 APPEND Sent {{{}+}}\r\n{copy}\r\n", copy.len()).as_bytes())
        .await
        .expect("write");
    let r = until_tagged(&mut a, "a2").await;
    assert!(tagged(&r).starts_with("a2 OK"), "{r:?}");
    // Nothing was added anywhere.
    assert_eq!(sent_count(&mut a).await, 1);
    assert_eq!(messages().await, before);

    // Every other mailbox is read-only; a missing one says TRYCREATE.
    let append_to = |mailbox: &str| format!("{mailbox} {{{}+}}\r\n{copy}", copy.len());
    let r = imap_cmd(&mut a, "a3", &format!("APPEND {}", append_to("INBOX"))).await;
    assert!(tagged(&r).starts_with("a3 NO [CANNOT]"), "{r:?}");
    let r = imap_cmd(
        &mut a,
        "a4",
        &format!("APPEND {}", append_to("Tickets/T-1")),
    )
    .await;
    assert!(tagged(&r).starts_with("a4 NO [CANNOT]"), "{r:?}");
    let r = imap_cmd(&mut a, "a5", &format!("APPEND {}", append_to("Drafts"))).await;
    assert!(tagged(&r).starts_with("a5 NO [TRYCREATE]"), "{r:?}");

    // Over `imap.max_append_bytes` (25 MiB): refused before a byte of it
    // is read, and the session goes on.
    let r = imap_cmd(&mut a, "a6", "APPEND Sent {30000000}").await;
    assert!(tagged(&r).starts_with("a6 BAD"), "{r:?}");
    assert!(!r.iter().any(|l| l.starts_with('+')), "{r:?}");
    assert!(tagged_ok(&imap_cmd(&mut a, "n1", "NOOP").await));
    // A sent copy with an attachment (far over `imap.max_literal_bytes`,
    // 64 KiB, the limit before login), both literal kinds: read, dropped, OK.
    let big = "x".repeat(300_000);
    a.get_mut()
        .write_all(format!("a7 APPEND Sent {{{}+}}\r\n{big}\r\n", big.len()).as_bytes())
        .await
        .expect("write");
    let r = until_tagged(&mut a, "a7").await;
    assert!(tagged(&r).starts_with("a7 OK"), "{r:?}");
    a.get_mut()
        .write_all(format!("a8 APPEND Sent (\\Seen) {{{}}}\r\n", big.len()).as_bytes())
        .await
        .expect("write");
    let cont = line(&mut a).await;
    assert!(cont.starts_with('+'), "{cont}");
    a.get_mut()
        .write_all(format!("{big}\r\n").as_bytes())
        .await
        .expect("write");
    let r = until_tagged(&mut a, "a8").await;
    assert!(tagged(&r).starts_with("a8 OK"), "{r:?}");
    assert!(tagged_ok(&imap_cmd(&mut a, "n2", "NOOP").await));
    assert_eq!(sent_count(&mut a).await, 1);
    assert_eq!(messages().await, before);
    let _ = sc;

    // Python's imaplib saving a sent copy, as mail clients do.
    let script = r#"
import imaplib, sys, time
host, port, user, token = sys.argv[1:5]
m = imaplib.IMAP4(host, int(port))
m.login(user, token)
typ, boxes = m.list()
assert typ == 'OK', boxes
sent = [b for b in boxes if b.endswith(b' Sent')]
assert len(sent) == 1 and b'\\Sent' in sent[0], boxes
msg = b"From: ann@acme.com\r\nSubject: copy\r\n\r\nhello\r\n"
typ, data = m.append('Sent', '(\\Seen)', imaplib.Time2Internaldate(time.time()), msg)
print(typ, data[0].decode())
typ, data = m.append('INBOX', None, None, msg)
print(typ)
m.logout()
"#;
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("python3 is not installed: skipping the imaplib APPEND check");
    } else {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("append.py");
        std::fs::write(&path, script).expect("script");
        let (host, port) = (s.imap.ip().to_string(), s.imap.port().to_string());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .arg(&path)
                .args([host, port, "ann@acme.com".to_string(), ann.clone()])
                .output()
                .expect("python3 runs")
        })
        .await
        .expect("python task");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        let first = lines.next().unwrap_or("");
        assert!(first.starts_with("OK APPEND done"), "{stdout}");
        assert_eq!(lines.next(), Some("NO"), "{stdout}");
    }
    assert_eq!(messages().await, before);
    assert_eq!(sent_count(&mut a).await, 1);
    s.shutdown().await;
}

/// Before login only the small limits apply (`imap.max_literal_bytes`,
/// `imap.max_line_bytes`): a literal the size of a sent copy, or an endless
/// line, is refused `BAD` without being held, and the session goes on to
/// log in (with a literal password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_literals_and_lines_before_login_are_refused_and_the_session_goes_on() {
    let s = TestServer::start_with_imap("", "").await;
    let token = make_user(&s, "ann@acme.com", "Ann", Role::Member).await;
    let tcp = TcpStream::connect(s.imap).await.expect("connect imap");
    let mut io = BufReader::new(tcp);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    let r = imap_cmd(&mut io, "a1", "LOGIN {100000}").await;
    assert!(tagged(&r).starts_with("a1 BAD"), "{r:?}");
    assert!(tagged(&r).contains("Literal too large"), "{r:?}");
    assert!(!r.iter().any(|l| l.starts_with('+')), "{r:?}");
    // A non-synchronizing one the client sends anyway is read and dropped.
    let big = "x".repeat(100_000);
    io.get_mut()
        .write_all(format!("a2 LOGIN {{{}+}}\r\n{big} x\r\n", big.len()).as_bytes())
        .await
        .expect("write");
    let r = until_tagged(&mut io, "a2").await;
    assert!(tagged(&r).starts_with("a2 BAD"), "{r:?}");
    let r = imap_cmd(&mut io, "a3", &format!("NOOP {}", "x".repeat(300_000))).await;
    assert!(tagged(&r).starts_with("a3 BAD"), "{r:?}");
    assert!(tagged(&r).contains("too long"), "{r:?}");
    assert!(tagged_ok(&imap_cmd(&mut io, "a4", "NOOP").await));
    io.get_mut()
        .write_all(format!("a5 LOGIN ann@acme.com {{{}}}\r\n", token.len()).as_bytes())
        .await
        .expect("write");
    assert!(line(&mut io).await.starts_with('+'));
    io.get_mut()
        .write_all(format!("{token}\r\n").as_bytes())
        .await
        .expect("write");
    let r = until_tagged(&mut io, "a5").await;
    assert!(tagged_ok(&r), "{r:?}");
}
