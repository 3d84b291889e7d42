//! Several gateway nodes on one PostgreSQL store (SPEC §13): a thread
//! started on one node hears the vendor's reply that arrives at the other,
//! whose IMAP IDLE announces it; every outbound message leaves once; a node
//! killed with SIGKILL under SMTP load loses nothing it acknowledged and
//! the other node finishes its work.
//!
//! These need a PostgreSQL server (`BACKCHANNEL_TEST_POSTGRES`, which
//! `tests/pg/run.sh` and `.ci/run` provide); without one they print a
//! notice and pass.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backchannel::model::Role;
use common::{TestServer, api_call, make_user, smtp_send, wait_for, wait_until};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_backchannel");

fn needs_postgres() -> Option<String> {
    let server = common::postgres_server();
    if server.is_none() {
        eprintln!(
            "skipped: several nodes need PostgreSQL; set BACKCHANNEL_TEST_POSTGRES (tests/pg/run.sh starts one)"
        );
    }
    server
}

/// Two nodes on one new database, each with a data dir of its own.
async fn two_nodes(rest: &str) -> Option<(TestServer, TestServer)> {
    needs_postgres()?;
    let (da, db) = (tempfile::tempdir().ok()?, tempfile::tempdir().ok()?);
    let url = common::postgres_database(&da.path().join("data"))?;
    std::fs::create_dir_all(db.path().join("data")).ok()?;
    std::fs::write(db.path().join("data/postgres-url"), &url).ok()?;
    let a = TestServer::start_in(da, "", rest).await;
    let b = TestServer::start_in(db, "", rest).await;
    Some((a, b))
}

/// Messages a node's maildir sink holds: file name → text.
fn sent(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir.join("sent/new"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), text))
        })
        .collect()
}

/// The `Subject:` of a stored message.
fn subject(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A raw IMAP connection (what a mail client sends and reads).
struct Imap {
    io: BufReader<tokio::net::TcpStream>,
}

impl Imap {
    async fn connect(addr: std::net::SocketAddr) -> Imap {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("imap");
        let mut c = Imap {
            io: BufReader::new(stream),
        };
        c.line().await;
        c
    }

    async fn line(&mut self) -> String {
        let mut l = String::new();
        tokio::time::timeout(common::WAIT_DEADLINE, self.io.read_line(&mut l))
            .await
            .expect("an IMAP line in time")
            .expect("read");
        l
    }

    async fn cmd(&mut self, tag: &str, line: &str) -> Vec<String> {
        self.io
            .get_mut()
            .write_all(format!("{tag} {line}\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            assert!(!l.is_empty(), "closed: {out:?}");
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                assert!(
                    out.last()
                        .is_some_and(|l| l.starts_with(&format!("{tag} OK"))),
                    "{line}: {out:?}"
                );
                return out;
            }
        }
    }
}

fn exists(lines: &[String]) -> usize {
    lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("* ")?
                .strip_suffix(" EXISTS\r\n")?
                .parse()
                .ok()
        })
        .expect("EXISTS in SELECT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_arriving_at_one_node_wakes_the_other_nodes_idle_and_mail_leaves_once() {
    let Some((a, b)) = two_nodes("").await else {
        return;
    };
    let owner = make_user(&a, "olga@acme.com", "Olga Owner", Role::Owner).await;

    // Threads started through both nodes' APIs; both outbox workers run.
    let mut tokens = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (st, v) = api_call(
            node,
            "POST",
            &format!("/api/parents/T-{i}/side-conversations"),
            &owner,
            Some(json!({"to": ["vera@carrier.example"], "subject": format!("Pallet {i}"), "body_text": "Where is it?"})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        tokens.push(v["token"].as_str().expect("token").to_string());
    }
    wait_until("every outbox row sent", || async {
        a.query::<i64>("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
            .await
            == 12
    })
    .await;
    let mut subjects: Vec<String> = sent(&a.dir.path().join("data"))
        .into_values()
        .chain(sent(&b.dir.path().join("data")).into_values())
        .map(|t| subject(&t))
        .collect();
    subjects.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("Pallet {i}")).collect();
    want.sort();
    assert_eq!(subjects, want, "each message reaches the sink exactly once");

    // Node A's IMAP IDLE hears a reply that node B accepted.
    let mut imap = Imap::connect(a.imap).await;
    imap.cmd("a1", &format!("LOGIN olga@acme.com {owner}"))
        .await;
    let before = exists(&imap.cmd("a2", "SELECT INBOX").await);
    imap.io
        .get_mut()
        .write_all(b"a3 IDLE\r\n")
        .await
        .expect("idle");
    assert!(imap.line().await.starts_with("+ "));
    let token = &tokens[3];
    let r = smtp_send(
        b.smtp,
        "vera@carrier.example",
        &[&format!("reply+{token}@gw.example.com")],
        &format!(
            "From: Vera <vera@carrier.example>\nTo: reply+{token}@gw.example.com\nSubject: Re: Pallet 3\nMessage-ID: <reply-3@carrier.example>\n\nLoaded this morning.\n"
        ),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let want = format!("* {} EXISTS\r\n", before + 1);
    loop {
        let l = imap.line().await;
        assert!(!l.is_empty(), "IDLE closed");
        if l == want {
            break;
        }
    }
    imap.io
        .get_mut()
        .write_all(b"DONE\r\n")
        .await
        .expect("done");

    // Replies arriving at both nodes at once: every mailbox's UIDs are
    // 1..n without a gap, and in UID order the modseqs only grow (a UID
    // is taken under the same row lock that orders the commits).
    let mut sends = Vec::new();
    for n in 0..24 {
        let (smtp, token) = (
            if n % 2 == 0 { a.smtp } else { b.smtp },
            tokens[n % 4].clone(),
        );
        sends.push(tokio::spawn(async move {
            let data = format!(
                "From: Vera <vera@carrier.example>\nTo: reply+{token}@gw.example.com\nSubject: Re: burst\nMessage-ID: <burst-{n}@carrier.example>\n\nBurst {n}.\n"
            );
            smtp_send(smtp, "vera@carrier.example", &[&format!("reply+{token}@gw.example.com")], &data).await
        }));
    }
    for s in sends {
        let r = s.await.expect("send");
        assert!(r.starts_with("250"), "{r}");
    }
    a.wait_ingested().await;
    b.wait_ingested().await;
    let rows: Vec<(i64, i64, i64)> = a
        .sql
        .read(|c| {
            let mut s = c.prepare(
                "SELECT mailbox_id, uid, modseq FROM mailbox_messages ORDER BY mailbox_id, uid",
            )?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .expect("mailbox rows");
    let mut by_mailbox: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for (mailbox, uid, modseq) in rows {
        by_mailbox.entry(mailbox).or_default().push((uid, modseq));
    }
    for (mailbox, entries) in &by_mailbox {
        let uids: Vec<i64> = entries.iter().map(|e| e.0).collect();
        assert_eq!(
            uids,
            (1..=uids.len() as i64).collect::<Vec<_>>(),
            "mailbox {mailbox}"
        );
        assert!(
            entries.windows(2).all(|w| w[0].1 < w[1].1),
            "mailbox {mailbox}: {entries:?}"
        );
    }

    // Stored once, threaded to its conversation, on both nodes' view.
    for node in [&a, &b] {
        let n: i64 = node
            .query("SELECT COUNT(*) FROM messages WHERE message_id = 'reply-3@carrier.example' AND side_conversation_id IS NOT NULL")
            .await;
        assert_eq!(n, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_jobs_run_on_one_node_and_move_when_it_stops() {
    let Some((a, b)) = two_nodes("").await else {
        return;
    };
    let (la, lb) = (a.store.leader(), b.store.leader());
    wait_until("one node to lead", || async {
        *la.borrow() || *lb.borrow()
    })
    .await;
    // Never both, also after each has tried the lock again.
    for _ in 0..3 {
        tokio::time::sleep(backchannel::store::LEAD_POLL).await;
        assert!(!(*la.borrow() && *lb.borrow()), "two nodes lead at once");
    }
    let a_leads = *la.borrow();
    let (mut leader, _other, follower) = if a_leads { (a, b, lb) } else { (b, a, la) };
    // The leader stops (its database sessions end): the other takes over.
    leader.shutdown().await;
    leader.store.close();
    wait_until("the other node to lead", || async { *follower.borrow() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_a_dead_node_left_in_sending_is_taken_over_once_its_lease_ran_out() {
    let Some((a, b)) = two_nodes("[store]\ntakeover_after = \"1s\"\n").await else {
        return;
    };
    let owner = make_user(&a, "olga@acme.com", "Olga Owner", Role::Owner).await;
    let (st, v) = api_call(
        &a,
        "POST",
        "/api/parents/L-1/side-conversations",
        &owner,
        Some(json!({"to": ["vera@carrier.example"], "subject": "Leased", "body_text": "Hello"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let sent_files = || {
        sent(&a.dir.path().join("data"))
            .into_iter()
            .chain(sent(&b.dir.path().join("data")))
            .filter(|(_, t)| subject(t) == "Leased")
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    wait_until("the first send", || async { sent_files().len() == 1 }).await;
    // As a node that claimed the row and died mid-send leaves it: `sending`,
    // leased for a little longer, its copy never handed over.
    for name in sent_files() {
        let _ = std::fs::remove_file(a.dir.path().join("data/sent/new").join(&name));
        let _ = std::fs::remove_file(b.dir.path().join("data/sent/new").join(&name));
    }
    a.sql
        .write(|c| {
            let now = backchannel::model::now_ms();
            c.execute(
                "UPDATE outbox SET state = 'sending', lease_until = ?1, sent_at = NULL",
                [now + 1500],
            )?;
            Ok(())
        })
        .await
        .expect("leave the row in sending");
    wait_until("the row taken over and sent again", || async {
        a.query::<i64>("SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND sent_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    assert_eq!(sent_files().len(), 1, "sent once more, by one node");
    let attempts: i64 = a.query("SELECT attempts FROM outbox").await;
    assert_eq!(attempts, 2, "the dead node's attempt and the takeover's");
}

/// Runs one statement on the suite's PostgreSQL server (as its superuser).
fn admin(sql: &str) {
    let (server, sql) = (common::postgres_server().expect("server"), sql.to_string());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&server, postgres::NoTls).expect("admin connect");
        c.batch_execute(&sql).expect("admin statement");
    })
    .join()
    .expect("admin thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_unreachable_smtp_answers_451_and_then_accepts_again() {
    let Some((a, _b)) = two_nodes("").await else {
        return;
    };
    let url = std::fs::read_to_string(a.dir.path().join("data/postgres-url")).expect("url");
    let name = url.rsplit('/').next().expect("database name").to_string();
    let smtp = a.smtp;
    let send = move |n: usize| async move {
        let data = format!(
            "From: vera@carrier.example\nTo: reply@gw.example.com\nSubject: Down {n}\nMessage-ID: <down-{n}@carrier.example>\n\nHello.\n"
        );
        smtp_send(
            smtp,
            "vera@carrier.example",
            &["reply@gw.example.com"],
            &data,
        )
        .await
    };
    assert!(send(0).await.starts_with("250"));

    // The database stops taking connections and every session is cut.
    admin(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    let mut refused = 0;
    for n in 1..=3 {
        let r = send(n).await;
        assert!(
            r.starts_with("451"),
            "message {n} while the store is down: {r}"
        );
        refused += 1;
    }
    assert_eq!(refused, 3);

    // Back: the writer opens a new session; mail is accepted and stored.
    admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let mut n = 10;
    let accepted = wait_for("the store to accept mail again", || {
        n += 1;
        let attempt = send(n);
        async move { attempt.await.starts_with("250").then_some(n) }
    })
    .await;
    a.wait_ingested().await;
    for m in [0, accepted] {
        let stored: i64 = a
            .query(&format!(
                "SELECT COUNT(*) FROM messages WHERE message_id = 'down-{m}@carrier.example'"
            ))
            .await;
        assert_eq!(stored, 1, "message {m} stored once");
    }
    for m in 1..=3 {
        let stored: i64 = a
            .query(&format!(
                "SELECT COUNT(*) FROM messages WHERE message_id = 'down-{m}@carrier.example'"
            ))
            .await;
        assert_eq!(stored, 0, "message {m} was refused with 451, so not kept");
    }
}

// ---------------------------------------------------------------------------
// SIGKILL under load (the real binary, two processes)

struct Node {
    child: Child,
    smtp: String,
    http: String,
}

impl Drop for Node {
    /// A node outlives no test, failed ones included.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_config(dir: &Path, name: &str, url: &str, dns: std::net::SocketAddr) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    // One data dir for both: the maildir sink is shared, as one relay
    // would be, so a takeover sees what the dead node already handed over.
    std::fs::write(
        &path,
        format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\n[submission]\nlisten = \"\"\n[dns]\nnameservers = [\"{dns}\"]\ntimeout = \"1s\"\n[outbound]\nsend_timeout = \"5s\"\n[store]\nurl = \"{url}\"\ntakeover_after = \"2s\"\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    path
}

/// The binary with no `BACKCHANNEL_*` variables from the test's own
/// environment (it would read each as a config key).
fn bin() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKCHANNEL_") {
            c.env_remove(k);
        }
    }
    c
}

/// `user add` of an owner through the command line; its API token.
fn owner_by_cli(config: &Path) -> String {
    let out = bin()
        .arg("--config")
        .arg(config)
        .args([
            "user",
            "add",
            "--email",
            "olga@acme.com",
            "--name",
            "Olga",
            "--role",
            "owner",
        ])
        .output()
        .expect("user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start_node(config: &Path, ready: &Path) -> Node {
    let mut child = bin()
        .arg("--config")
        .arg(config)
        .args(["serve", "--ready-file"])
        .arg(ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let deadline = std::time::Instant::now() + common::WAIT_DEADLINE;
    let v: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Ok(v) = serde_json::from_str(&text)
        {
            break v;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("node exited early: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "node not ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    Node {
        child,
        smtp: v["smtp"].as_str().expect("smtp").to_string(),
        http: v["http"].as_str().expect("http").to_string(),
    }
}

/// One SMTP transaction; true when the message was acknowledged (`250`).
async fn deliver(addr: &str, token: &str, n: usize) -> bool {
    let Ok(addr) = addr.parse() else {
        return false;
    };
    let token = token.to_string();
    // The client's helpers panic on a dropped connection: the attempt runs
    // as a task of its own, and a panic counts as not acknowledged.
    let attempt = async move {
        let mut c = common::connect(addr).await;
        c.reply().await;
        c.cmd("EHLO load.example").await;
        c.cmd("MAIL FROM:<vera@carrier.example>").await;
        c.cmd(&format!("RCPT TO:<reply+{token}@gw.example.com>"))
            .await;
        if !c.cmd("DATA").await.starts_with("354") {
            return false;
        }
        c.send(
            format!(
                "From: vera@carrier.example\r\nTo: reply+{token}@gw.example.com\r\nSubject: Load {n}\r\nMessage-ID: <load-{n}@carrier.example>\r\n\r\nUpdate {n}.\r\n"
            )
            .as_bytes(),
        )
        .await;
        c.cmd(".").await.starts_with("250")
    };
    // A node killed mid-transaction answers nothing: not acknowledged.
    let outcome = tokio::spawn(tokio::time::timeout(Duration::from_secs(20), attempt)).await;
    matches!(outcome, Ok(Ok(true)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_node_under_smtp_load_loses_nothing_acknowledged() {
    if needs_postgres().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let url = common::postgres_database(&data).expect("database");
    let dns = common::dns::FakeDns::start(&common::verified_records()).await;
    let mut a = start_node(
        &node_config(dir.path(), "a", &url, dns.addr),
        &dir.path().join("a.json"),
    );
    let b = start_node(
        &node_config(dir.path(), "b", &url, dns.addr),
        &dir.path().join("b.json"),
    );
    let sql = common::Sql::at(data.join("backchannel.db"));

    // An owner and a thread to reply to, made through node B's command line
    // and API.
    let config_b = dir.path().join("b.toml");
    let owner = owner_by_cli(&config_b);
    let client = reqwest::Client::new();
    let start = |node: &Node, i: usize| {
        let req = client
            .post(format!("http://{}/api/parents/K-{i}/side-conversations", node.http))
            .bearer_auth(&owner)
            .json(&json!({"to": [format!("v{i}@carrier.example")], "subject": format!("Kill {i}"), "body_text": "Status?"}));
        async move {
            let r = req.send().await.expect("api");
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<serde_json::Value>().await.expect("json")
        }
    };
    let thread = start(&b, 0).await;
    let token = thread["token"].as_str().expect("token").to_string();

    // Load on both nodes; node A dies partway through.
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let sent_count = Arc::new(AtomicUsize::new(0));
    const MESSAGES: usize = 240;
    let mut senders = Vec::new();
    for w in 0..6 {
        let (acked, sent_count, token) = (acked.clone(), sent_count.clone(), token.clone());
        let (sa, sb) = (a.smtp.clone(), b.smtp.clone());
        senders.push(tokio::spawn(async move {
            let mut n = w;
            while n < MESSAGES {
                // Half to each node; after a refusal, the other node (as a
                // sending MTA's next MX would).
                let first = if n % 2 == 0 { &sa } else { &sb };
                let ok = deliver(first, &token, n).await || deliver(&sb, &token, n).await;
                if ok && let Ok(mut set) = acked.lock() {
                    set.insert(n);
                }
                sent_count.fetch_add(1, Ordering::Relaxed);
                n += 6;
            }
        }));
    }
    // Outbound mail queued through node A just before it dies.
    for i in 1..=6 {
        start(&a, i).await;
    }
    wait_until("a third of the load", || async {
        sent_count.load(Ordering::Relaxed) >= MESSAGES / 3
    })
    .await;
    a.child.kill().expect("SIGKILL node A");
    a.child.wait().expect("reap node A");
    for s in senders {
        s.await.expect("sender");
    }
    let acked: BTreeSet<usize> = acked.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        acked.len() >= MESSAGES / 2,
        "most messages acknowledged: {}",
        acked.len()
    );

    // Node B threads what A accepted and left, and finishes A's outbox.
    wait_until("the inbound queue drained", || async {
        sql.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .await
        .is_ok_and(|n| n == 0)
    })
    .await;
    let stored: BTreeMap<String, i64> = sql
        .read(|c| {
            let mut s = c.prepare(
                "SELECT message_id, COUNT(*) FROM messages WHERE message_id LIKE 'load-%' GROUP BY message_id",
            )?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .expect("stored");
    for n in &acked {
        assert_eq!(
            stored.get(&format!("load-{n}@carrier.example")),
            Some(&1),
            "acknowledged message {n} is stored exactly once"
        );
    }
    assert!(
        stored.values().all(|&c| c == 1),
        "nothing stored twice: {stored:?}"
    );

    wait_until("every outbox row sent", || async {
        sql.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .await
        .is_ok_and(|n| n == 0)
    })
    .await;
    let subjects: Vec<String> = sent(&data).into_values().map(|t| subject(&t)).collect();
    for i in 0..=6 {
        let n = subjects
            .iter()
            .filter(|s| **s == format!("Kill {i}"))
            .count();
        assert_eq!(n, 1, "Kill {i} reaches the sink once: {subjects:?}");
    }
}

// ---------------------------------------------------------------------------
// `store copy`: a SQLite store moved to PostgreSQL, then served from there

fn sigterm(node: &mut Node) {
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    let rc = unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = node.child.wait().expect("wait");
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_copied_to_postgresql_serves_on_with_everything_in_it() {
    if needs_postgres().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let dns = common::dns::FakeDns::start(&common::verified_records()).await;
    // First on SQLite (no [store] url).
    let lite_config = node_config(dir.path(), "lite", "", dns.addr);
    let owner = owner_by_cli(&lite_config);
    let mut lite = start_node(&lite_config, &dir.path().join("lite.json"));
    let client = reqwest::Client::new();
    let api =
        |node: &Node, method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
            let mut req = client
                .request(method, format!("http://{}{path}", node.http))
                .bearer_auth(&owner);
            if let Some(b) = body {
                req = req.json(&b);
            }
            async move {
                let r = req.send().await.expect("api");
                let status = r.status();
                (
                    status,
                    r.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            }
        };
    let mut tokens = Vec::new();
    for i in 0..3 {
        let (st, v) = api(
            &lite,
            reqwest::Method::POST,
            &format!("/api/parents/C-{i}/side-conversations"),
            Some(json!({"to": ["vera@carrier.example"], "subject": format!("Copy {i}"), "body_text": "Hello"})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        tokens.push(v["token"].as_str().expect("token").to_string());
    }
    for (n, token) in tokens.iter().enumerate() {
        let data = format!(
            "From: vera@carrier.example\nTo: reply+{token}@gw.example.com\nSubject: Re: Copy {n}\nMessage-ID: <copy-{n}@carrier.example>\n\nLoaded.\n"
        );
        let r = smtp_send(
            lite.smtp.parse().expect("smtp addr"),
            "vera@carrier.example",
            &[&format!("reply+{token}@gw.example.com")],
            &data,
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    let lite_sql = common::Sql::at(data.join("backchannel.db"));
    let count = |sql: &common::Sql, q: &'static str| {
        let sql = sql.clone();
        async move {
            sql.read(move |c| Ok(c.query_row(q, [], |r| r.get::<_, i64>(0))?))
                .await
                .expect("count")
        }
    };
    wait_until("the replies threaded", || async {
        count(&lite_sql, "SELECT COUNT(*) FROM messages WHERE direction = 'in' AND side_conversation_id IS NOT NULL").await == 3
    })
    .await;
    wait_until("the outbox sent", || async {
        count(
            &lite_sql,
            "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'",
        )
        .await
            == 0
    })
    .await;
    sigterm(&mut lite);
    let before = (
        count(&lite_sql, "SELECT COUNT(*) FROM messages").await,
        count(&lite_sql, "SELECT COUNT(*) FROM mailbox_messages").await,
        count(&lite_sql, "SELECT MAX(id) FROM side_conversations").await,
    );

    // Copied into an empty database, verified by counts.
    let url = common::postgres_database(&data).expect("database");
    let copy = bin()
        .arg("--config")
        .arg(&lite_config)
        .args(["store", "copy", "--to", &url])
        .output()
        .expect("store copy");
    let stdout = String::from_utf8_lossy(&copy.stdout);
    assert!(
        copy.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    assert!(stdout.contains("counts verified"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("messages ") && l.contains(&format!(" {} rows", before.0))),
        "{stdout}"
    );
    // Not twice into one database.
    let again = bin()
        .arg("--config")
        .arg(&lite_config)
        .args(["store", "copy", "--to", &url])
        .output()
        .expect("store copy again");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("in use"));

    // Served from PostgreSQL: the same threads, users and mailboxes; new
    // rows get new ids.
    let pg_config = node_config(dir.path(), "pg", &url, dns.addr);
    let pg = start_node(&pg_config, &dir.path().join("pg.json"));
    let pg_sql = common::Sql::at(data.join("backchannel.db"));
    assert_eq!(
        (
            count(&pg_sql, "SELECT COUNT(*) FROM messages").await,
            count(&pg_sql, "SELECT COUNT(*) FROM mailbox_messages").await,
            count(&pg_sql, "SELECT MAX(id) FROM side_conversations").await,
        ),
        before
    );
    let (st, v) = api(&pg, reqwest::Method::GET, "/api/side-conversations", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v.to_string().contains("Copy 2"), "{v}");
    let (st, v) = api(
        &pg,
        reqwest::Method::POST,
        "/api/parents/C-9/side-conversations",
        Some(json!({"to": ["vera@carrier.example"], "subject": "After the copy", "body_text": "Hello"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"].as_i64(), Some(before.2 + 1), "{v}");
    let mut pg = pg;
    sigterm(&mut pg);
}
