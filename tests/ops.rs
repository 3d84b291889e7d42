//! Operations, through the real binary (SPEC §2): one `serve` per data dir
//! (a second is refused naming the holder; SIGKILL frees the lock),
//! `backup` while serving under write load, config syntax errors with a
//! line number for `serve` too, CLI output into a closed pipe, the DNS
//! records `sender add` prints, a DKIM key type mismatch, and the log
//! fields (named; envelope addresses at debug only).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_backchannel");

/// The binary with `--config <config>` and none of the test's own
/// `BACKCHANNEL_*` or `RUST_LOG` variables.
fn bc(config: &Path) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKCHANNEL_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.arg("--config").arg(config);
    c
}

/// A config on port 0 everywhere, the store in `<dir>/data`, and `extra`
/// appended (sections of its own).
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("backchannel.toml");
    std::fs::write(
        &path,
        format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"\"\n[imap]\nlisten = \"127.0.0.1:0\"\n[submission]\nlisten = \"127.0.0.1:0\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"200ms\"\n{extra}",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    path
}

/// A running `serve`, its stderr going to a file; killed when dropped.
struct Server {
    child: Child,
    smtp: String,
    http: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path, name: &str) -> Server {
    let dir = config.parent().expect("config dir");
    let ready = dir.join(format!("{name}.ready"));
    let log = dir.join(format!("{name}.log"));
    let child = bc(config)
        .args(["serve", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn serve");
    let mut server = Server {
        child,
        smtp: String::new(),
        http: String::new(),
        log,
    };
    let v = wait_for(
        || {
            let text = std::fs::read_to_string(&ready).ok()?;
            serde_json::from_str::<serde_json::Value>(&text).ok()
        },
        || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "serve exited early ({status}): {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
        },
    );
    server.smtp = v["smtp"].as_str().expect("smtp addr").to_string();
    server.http = v["http"].as_str().expect("http addr").to_string();
    server
}

/// Polls `probe` until it gives a value (30 s at most), calling `check`
/// between tries.
fn wait_for<T>(mut probe: impl FnMut() -> Option<T>, mut check: impl FnMut()) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        check();
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn healthz(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// An SMTP session that sends messages one after another.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(addr: &str) -> Smtp {
        let stream = TcpStream::connect(addr).expect("connect smtp");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut s = Smtp {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        };
        s.expect("220");
        s.cmd("EHLO client.example.net", "250");
        s
    }

    /// Reads a (multi-line) reply; panics unless it starts with `code`.
    fn expect(&mut self, code: &str) {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("smtp reply");
            assert!(line.starts_with(code), "wanted {code}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    fn cmd(&mut self, line: &str, code: &str) {
        write!(self.writer, "{line}\r\n").expect("smtp write");
        self.expect(code);
    }

    /// One message from `from` to `to`; returns once it is acknowledged.
    fn send(&mut self, from: &str, to: &str, n: u64) {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250");
        self.cmd(&format!("RCPT TO:<{to}>"), "250");
        self.cmd("DATA", "354");
        write!(
            self.writer,
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: load {n}\r\nMessage-ID: <load-{n}@client.example.net>\r\n\r\nmessage {n}\r\n.\r\n"
        )
        .expect("smtp data");
        self.expect("250");
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A second `serve` on the same data dir stops at once with an error naming
/// the first one (pid and host) and starts nothing; the first keeps serving
/// and other commands keep working. Once the first is SIGKILLed, the lock
/// is gone with it and a new `serve` starts.
#[test]
fn a_second_serve_on_one_data_dir_is_refused_naming_the_holder_until_it_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let mut first = serve(&config, "first");
    let pid = first.child.id();
    let host = hostname();

    let ready2 = dir.path().join("second.ready");
    let started = Instant::now();
    let out = bc(&config)
        .args(["serve", "--ready-file"])
        .arg(&ready2)
        .output()
        .expect("second serve");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once"
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "second serve must fail: {err}");
    assert!(err.contains(&format!("pid {pid} on host {host}")), "{err}");
    assert!(err.contains("backchannel.lock"), "{err}");
    assert!(err.contains("listening on"), "{err}");
    assert!(err.contains(&first.smtp), "the bound address: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "the error alone, nothing logged: {err}"
    );
    assert!(!ready2.exists(), "no ready file: nothing was started");

    // The first still serves, and the CLI still works beside it.
    assert!(healthz(&first.http));
    let add = bc(&config)
        .args(["user", "add", "--email", "ann@acme.com", "--name", "Ann"])
        .output()
        .expect("user add");
    assert!(add.status.success(), "{}", text(&add.stderr));
    let list = bc(&config).args(["user", "list"]).output().expect("list");
    assert!(text(&list.stdout).contains("ann@acme.com"));

    // SIGKILL: the kernel drops the lock with the process.
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    let third = serve(&config, "third");
    assert!(healthz(&third.http));
    drop(first);
}

fn hostname() -> String {
    let out = Command::new("hostname").output().expect("hostname");
    text(&out.stdout).trim().to_string()
}

/// `backup` while `serve` takes SMTP traffic: the copy is a standalone
/// SQLite file that passes its integrity check and holds every message
/// acknowledged before the backup started (and no more than were
/// acknowledged by its end). An existing PATH is kept unless `--force`.
#[test]
fn backup_while_serving_under_load_holds_every_acknowledged_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let server = serve(&config, "serve");
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), server.smtp.clone());
        std::thread::spawn(move || {
            let mut smtp = Smtp::connect(&addr);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 900 {
                n += 1;
                smtp.send("vendor@example.net", "postmaster@gw.example.com", n);
                acked.store(n, Ordering::SeqCst);
            }
            smtp.cmd("QUIT", "221");
        })
    };
    wait_for(|| (acked.load(Ordering::SeqCst) >= 20).then_some(()), || {});

    let copy = dir.path().join("copies").join("bc.db");
    std::fs::create_dir_all(copy.parent().expect("parent")).expect("mkdir");
    let before = acked.load(Ordering::SeqCst);
    let out = bc(&config)
        .arg("backup")
        .arg(&copy)
        .output()
        .expect("backup");
    let after = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    load.join().expect("load thread");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let bytes = std::fs::metadata(&copy).expect("copy").len();
    assert!(
        said.contains(&format!(
            "wrote {} ({bytes} bytes, user_version ",
            copy.display()
        )),
        "{said}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(copy.parent().expect("parent"))
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["bc.db"], "no temporary file, no -wal beside it");

    let db =
        rusqlite::Connection::open_with_flags(&copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the copy");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "delete", "a standalone file");
    let version: u32 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert!(said.contains(&format!("user_version {version})")), "{said}");
    let stored: u64 = db
        .query_row("SELECT COUNT(*) FROM inbound_queue", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count") as u64;
    assert!(
        stored >= before && stored <= after,
        "{stored} messages in the copy; {before} acknowledged before, {after} after"
    );
    drop(db);

    // An existing PATH is kept; --force replaces it.
    let out = bc(&config)
        .arg("backup")
        .arg(&copy)
        .output()
        .expect("backup again");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("already exists; pass --force"));
    assert_eq!(std::fs::metadata(&copy).expect("copy").len(), bytes);
    let out = bc(&config)
        .args(["backup", "--force"])
        .arg(&copy)
        .output()
        .expect("backup --force");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let db =
        rusqlite::Connection::open_with_flags(&copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the new copy");
    let now: u64 = db
        .query_row("SELECT COUNT(*) FROM inbound_queue", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count") as u64;
    assert_eq!(
        now,
        acked.load(Ordering::SeqCst),
        "every message, load over"
    );
    // Never over the live database, not even with --force.
    let live = dir.path().join("data").join("backchannel.db");
    let live_len = std::fs::metadata(&live).expect("live db").len();
    for target in [
        live.clone(),
        dir.path().join("data/../data/backchannel.db-wal"),
    ] {
        let out = bc(&config)
            .args(["backup", "--force"])
            .arg(&target)
            .output()
            .expect("backup onto the store");
        assert!(!out.status.success(), "{}", target.display());
        assert!(
            text(&out.stderr).contains("the live database"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(std::fs::metadata(&live).expect("live db").len() >= live_len);
    assert!(healthz(&server.http), "the server served on");
}

/// A TOML syntax error stops `serve` too, naming the line and column.
#[test]
fn a_toml_syntax_error_stops_serve_naming_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "domain = \"gw.example.com\"\n[http]\nlisten = 127.0.0.1:0\"\n",
    )
    .expect("write");
    let out = bc(&path).arg("serve").output().expect("serve");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("at line 3, column 15:"), "{err}");
}

/// Every printing command writes into a closed pipe (`| head -1` gone
/// already) without a panic, and exits 0.
#[test]
fn printing_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let add = bc(&config)
        .args(["user", "add", "--email", "ann@acme.com", "--name", "Ann"])
        .output()
        .expect("user add");
    assert!(add.status.success(), "{}", text(&add.stderr));
    let sender = bc(&config)
        .args([
            "sender",
            "add",
            "--email",
            "support@acme.com",
            "--dkim",
            "ed25519",
        ])
        .output()
        .expect("sender add");
    assert!(sender.status.success(), "{}", text(&sender.stderr));
    let copy = dir.path().join("copy.db");
    for args in [
        vec!["config"],
        vec!["user", "list"],
        vec!["user", "add", "--email", "bob@acme.com", "--name", "Bob"],
        vec!["sender", "list"],
        vec!["sender", "add", "--email", "sales@acme.com"],
        vec!["backup", copy.to_str().expect("utf-8 path")],
    ] {
        // The read end is closed before the command starts: its first
        // write fails with EPIPE.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = bc(&config)
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    // The work was done all the same.
    let list = bc(&config).args(["user", "list"]).output().expect("list");
    assert!(text(&list.stdout).contains("bob@acme.com"));
    assert!(copy.exists());
}

/// `sender add` prints the three records to publish (SPF, DKIM, DMARC)
/// with their status, on stdout (JSON) and stderr (for people); a DKIM key
/// type other than the domain's existing key is refused, naming it.
#[test]
fn sender_add_prints_three_records_and_refuses_a_second_key_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "[outbound]\nspf = [\"ip4:203.0.113.5\"]\n");
    let out = bc(&config)
        .args(["sender", "add", "--email", "support@acme.com"])
        .output()
        .expect("sender add");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let dns = &v["dns"];
    for (check, name, record) in [
        ("spf", "acme.com", "v=spf1 ip4:203.0.113.5 ~all"),
        (
            "dkim",
            "backchannel._domainkey.acme.com",
            "v=DKIM1; k=rsa; p=",
        ),
        ("dmarc", "_dmarc.acme.com", "v=DMARC1; p=none"),
    ] {
        assert_eq!(dns[check]["status"], "unknown", "{check}: {dns}");
        assert_eq!(dns[check]["record_name"], name, "{check}: {dns}");
        assert!(
            dns[check]["record_to_publish"]
                .as_str()
                .is_some_and(|r| r.starts_with(record)),
            "{check}: {dns}"
        );
    }
    let err = text(&out.stderr);
    assert!(
        err.contains("SPF   [unknown] TXT acme.com \"v=spf1 ip4:203.0.113.5 ~all\""),
        "{err}"
    );
    assert!(
        err.contains("DKIM  [unknown] TXT backchannel._domainkey.acme.com \"v=DKIM1; k=rsa; p="),
        "{err}"
    );
    assert!(
        err.contains("DMARC [unknown] TXT _dmarc.acme.com \"v=DMARC1; p=none\""),
        "{err}"
    );

    let out = bc(&config)
        .args([
            "sender",
            "add",
            "--email",
            "sales@acme.com",
            "--dkim",
            "ed25519",
        ])
        .output()
        .expect("sender add ed25519");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("acme.com already has an RSA-2048 DKIM key (selector backchannel)"),
        "{err}"
    );
    assert!(err.contains("leave the option out"), "{err}");
    let list = bc(&config).args(["sender", "list"]).output().expect("list");
    assert!(
        !text(&list.stdout).contains("sales@acme.com"),
        "nothing stored"
    );
    let out = bc(&config)
        .args(["sender", "add", "--email", "sales@acme.com"])
        .output()
        .expect("sender add, no type");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Log lines name every value (`queue_id=… message_id=…`), and the
/// envelope addresses appear at debug level only.
#[test]
fn log_fields_are_named_and_envelope_addresses_are_debug_only() {
    for level in ["info", "debug"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), &format!("[log]\nlevel = \"{level}\"\n"));
        let server = serve(&config, "serve");
        let mut smtp = Smtp::connect(&server.smtp);
        smtp.send("vendor@example.net", "postmaster@gw.example.com", 1);
        smtp.cmd("QUIT", "221");
        let log = wait_for(
            || {
                let log = std::fs::read_to_string(&server.log).ok()?;
                log.contains(" ingested ").then_some(log)
            },
            || {},
        );
        let line = log
            .lines()
            .find(|l| l.contains(" ingested "))
            .expect("ingested line");
        let fields: Vec<&str> = line
            .split(" ingested ")
            .nth(1)
            .expect("fields")
            .split_whitespace()
            .collect();
        assert!(!fields.is_empty(), "{line}");
        for field in &fields {
            assert!(field.contains('='), "unnamed value {field:?} in {line}");
        }
        assert!(fields.iter().any(|f| f.starts_with("queue_id=")), "{line}");
        assert!(
            fields.iter().any(|f| f.starts_with("message_id=")),
            "{line}"
        );
        let envelope = [
            "mail_from=vendor@example.net",
            "rcpt=postmaster@gw.example.com",
        ];
        for want in envelope {
            assert_eq!(
                log.contains(want),
                level == "debug",
                "{level}: {want}: {log}"
            );
        }
        if level == "info" {
            assert!(!log.contains("vendor@example.net"), "{log}");
        }
    }
}
