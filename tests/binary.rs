//! The real binary: `serve` on port 0 with `--ready-file`, `/healthz`,
//! `/metrics` on the metrics listener only, SIGTERM → exit 0; `user
//! add/list`; `config`; config errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_backchannel");

/// The binary with no `BACKCHANNEL_*` variables from the test's own
/// environment (each would be read as a config key).
fn backchannel() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKCHANNEL_") {
            c.env_remove(k);
        }
    }
    c
}

/// The binary with `--config <config>`.
fn bc(config: &Path) -> Command {
    let mut c = backchannel();
    c.arg("--config").arg(config);
    c
}

/// `user add` with these arguments (`--role` when given).
fn user_add(config: &Path, email: &str, name: &str, role: Option<&str>) -> std::process::Output {
    let mut c = bc(config);
    c.args(["user", "add", "--email", email, "--name", name]);
    if let Some(role) = role {
        c.args(["--role", role]);
    }
    c.output().expect("run user add")
}

/// `serve` with a ready file, stdout discarded.
fn serve(config: &Path, ready: &Path) -> Command {
    let mut c = bc(config);
    c.args(["serve", "--ready-file"])
        .arg(ready)
        .stdout(Stdio::null());
    c
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("backchannel.toml");
    std::fs::write(
        &path,
        format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\n[submission]\nlisten = \"127.0.0.1:0\"\n[outbound]\nrelay_url = \"smtp://u:topsecret@127.0.0.1:1\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    path
}

fn wait_ready(child: &mut Child, ready: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            return v;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        assert!(Instant::now() < deadline, "server not ready in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_reports_addresses_answers_health_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let ready = dir.path().join("ready.json");
    let mut child = serve(&config, &ready)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let addrs = wait_ready(&mut child, &ready);
    let http = addrs["http"].as_str().expect("http addr").to_string();
    let smtp = addrs["smtp"].as_str().expect("smtp addr").to_string();
    let imap = addrs["imap"].as_str().expect("imap addr").to_string();
    let metrics = addrs["metrics"].as_str().expect("metrics addr").to_string();
    let submission = addrs["submission"]
        .as_str()
        .expect("submission addr")
        .to_string();
    assert!(
        [&http, &smtp, &imap, &metrics, &submission]
            .iter()
            .all(|a| !a.ends_with(":0")),
        "{addrs}"
    );

    let health = http_get(&http, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#"{"status":"ok"}"#), "{health}");

    // Prometheus text on the metrics listener; nothing of it on the public one.
    let scrape = http_get(&metrics, "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(scrape.contains("# TYPE"), "{scrape}");
    let public = http_get(&http, "/metrics");
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    assert!(!public.contains("# TYPE"), "{public}");

    // The SMTP port greets.
    let mut s = TcpStream::connect(&smtp).expect("connect smtp");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("greeting");
    assert!(
        buf[..n].starts_with(b"220 gw.example.com"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(s);

    // So does the IMAP port.
    let mut s = TcpStream::connect(&imap).expect("connect imap");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let n = s.read(&mut buf).expect("imap greeting");
    assert!(
        buf[..n].starts_with(b"* OK [CAPABILITY IMAP4REV1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(s);

    sigterm(&child);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "exit status {status}");
    // A clean stop leaves no WAL behind (the next start writes a new one).
    assert_eq!(wal_len(dir.path()), 0, "WAL left after a clean stop");

    // JSON logs on stderr; the first owner was created and its token logged once.
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("logs");
    let owner_lines: Vec<&str> = logs.lines().filter(|l| l.contains("first owner")).collect();
    assert_eq!(owner_lines.len(), 1, "{logs}");
    let line: serde_json::Value = serde_json::from_str(owner_lines[0]).expect("json log line");
    assert!(
        line["token"].as_str().is_some_and(|t| t.starts_with("bc_")),
        "{line}"
    );
    assert_eq!(line["email"], "admin@gw.example.com");

    // A second start does not create another owner. (And an empty
    // http.metrics_listen turns the metrics listener off.)
    let ready2 = dir.path().join("ready2.json");
    let mut child = serve(&config, &ready2)
        .env("BACKCHANNEL_HTTP_METRICS_LISTEN", "")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn again");
    let addrs = wait_ready(&mut child, &ready2);
    assert!(addrs.get("metrics").is_none(), "{addrs}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("logs");
    assert!(!logs.contains("first owner"), "{logs}");
}

/// Length of the database's WAL file (0 when there is none).
fn wal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("data").join("backchannel.db-wal")).map_or(0, |m| m.len())
}

/// A WAL file left behind with frames in it (a killed server, or a tool
/// whose last connection was read-only) is copied into the database and
/// cut to zero bytes when the server starts, not written over in place.
#[test]
fn a_wal_left_behind_is_checkpointed_and_truncated_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = user_add(&config, "agent@gw.example.com", "Agent", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // About 800 KB of committed frames that no checkpoint has copied: the
    // writing connection closes while a read-only one is still open, and
    // the read-only one cannot checkpoint or remove the WAL after it.
    let db = dir.path().join("data").join("backchannel.db");
    let writer = rusqlite::Connection::open(&db).expect("open");
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE filler (x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
             INSERT INTO filler SELECT randomblob(4000) FROM n;",
        )
        .expect("fill");
    let reader =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
    let _: i64 = reader
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("read");
    drop(writer);
    drop(reader);
    let left = wal_len(dir.path());
    assert!(left > 512 * 1024, "WAL of {left} bytes");

    let ready = dir.path().join("ready.json");
    let mut child = serve(&config, &ready)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_ready(&mut child, &ready);
    let after = wal_len(dir.path());
    assert!(
        after < left / 4,
        "WAL {left} bytes before the start, {after} after"
    );
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    assert_eq!(wal_len(dir.path()), 0, "WAL left after a clean stop");

    // Nothing of it was lost.
    let c = rusqlite::Connection::open(&db).expect("open");
    let rows: i64 = c
        .query_row(
            "SELECT count(*) FROM filler WHERE length(x) = 4000",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(rows, 200);
    let users: i64 = c
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("users");
    assert_eq!(users, 1, "the agent (so the server created no first owner)");
}

#[test]
fn user_add_prints_only_the_token_and_user_list_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = user_add(&config, "agent@acme.com", "Ann Agent", Some("member"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout:?}");
    assert!(
        lines[0].starts_with("bc_") && lines[0].len() == 55,
        "{stdout:?}"
    );

    // Same email again: refused with a message, non-zero exit.
    let again = user_add(&config, "AGENT@acme.com", "X", Some("member"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let bad_role = user_add(&config, "b@acme.com", "B", Some("emperor"));
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));

    let list = bc(&config).args(["user", "list"]).output().expect("run");
    assert!(list.status.success());
    let text = String::from_utf8(list.stdout).expect("utf8");
    assert!(text.contains("agent@acme.com\tmember\tAnn Agent"), "{text}");
    assert!(!text.contains("bc_"), "tokens are never listed: {text}");
}

#[test]
fn config_prints_effective_values_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = bc(&config)
        .arg("config")
        .env("BACKCHANNEL_SMTP_MAX_RECIPIENTS", "250")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("domain = \"gw.example.com\""), "{text}");
    assert!(text.contains("max_recipients = 250"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
    assert!(text.contains("u:***@127.0.0.1:1"), "{text}");

    // BACKCHANNEL_CONFIG works like --config.
    let out = backchannel()
        .arg("config")
        .env("BACKCHANNEL_CONFIG", &config)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("gw.example.com"));
}

#[test]
fn bad_config_is_a_startup_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[smtp]\nmax_conections = 5\n").expect("write");
    let out = backchannel()
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smtp.max_conections"), "{err}");

    let out = backchannel()
        .arg("config")
        .env("BACKCHANNEL_HTTP_LISTEN", "not-an-address")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));
}

/// What `backchannel config` prints is pinned: every key, in one order
/// whatever the file's order, the relay password redacted — for the
/// embedded defaults and for a file that sets every key
/// (`fixtures/config/`).
#[test]
fn config_output_is_pinned() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/config");
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).expect("fixture");
    for (config, want) in [
        (None, "defaults.printed.toml"),
        (Some("every-key.toml"), "every-key.printed.toml"),
    ] {
        let mut cmd = backchannel();
        if let Some(config) = config {
            cmd.arg("--config").arg(fixtures.join(config));
        }
        let out = cmd.arg("config").output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).expect("utf8"), read(want));
    }
}

/// A TOML syntax error names the file, the line and the column.
#[test]
fn a_toml_syntax_error_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "domain = \"gw.example.com\"\n\n[smtp\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let out = backchannel()
        .arg("--config")
        .arg(&path)
        .arg("config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("at line 3, column 6:"), "{err}");
}

/// The IMAP and JMAP limits are config keys: `backchannel config` shows
/// them (environment overrides included), and a bad value stops startup
/// with an error naming the key.
#[test]
fn imap_and_jmap_limits_are_shown_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = bc(&config)
        .arg("config")
        .env("BACKCHANNEL_JMAP_MAX_CALLS_IN_REQUEST", "2")
        .env("BACKCHANNEL_IMAP_MAX_LITERAL_BYTES", "4096")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    for want in [
        "[jmap]",
        "max_calls_in_request = 2",
        "max_objects_in_get = 500",
        "max_changes = 5000",
        "max_literal_bytes = 4096",
        "max_line_bytes = 262144",
        "shutdown_grace = \"10s\"",
    ] {
        assert!(text.contains(want), "{want} missing: {text}");
    }

    for (file_extra, env, key) in [
        ("[imap]\nmax_line_bytes = 0\n", None, "imap.max_line_bytes"),
        (
            "",
            Some(("BACKCHANNEL_JMAP_MAX_CALLS_IN_REQUEST", "lots")),
            "jmap.max_calls_in_request",
        ),
        (
            "[jmap]\nmax_objects_in_get = 0\n",
            None,
            "jmap.max_objects_in_get",
        ),
        (
            "",
            Some(("BACKCHANNEL_IMAP_SHUTDOWN_GRACE", "later")),
            "imap.shutdown_grace",
        ),
    ] {
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = \"{}\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n{file_extra}",
                dir.path().join("data").display()
            ),
        )
        .expect("write");
        // `serve` for the first (a real startup), `config` for the rest:
        // the same loading, and a wrongly accepted value cannot leave a
        // server running.
        let sub = if key == "imap.max_line_bytes" {
            "serve"
        } else {
            "config"
        };
        let mut cmd = backchannel();
        cmd.arg("--config").arg(&path).arg(sub);
        if let Some((var, value)) = env {
            cmd.env(var, value);
        }
        let out = cmd.output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn sender_commands_add_list_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let run = |args: &[&str]| bc(&config).args(args).output().expect("run");
    let out = run(&[
        "sender",
        "add",
        "--email",
        "support@acme.com",
        "--name",
        "Acme",
        "--dkim",
        "ed25519",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["status"], "pending");
    assert!(
        v["forwarding_address"]
            .as_str()
            .is_some_and(|f| f.starts_with("fwd-") && f.ends_with("@gw.example.com"))
    );
    assert!(
        v["instructions"]["records"][0]["value"]
            .as_str()
            .is_some_and(|r| r.contains("k=ed25519"))
    );
    let list = run(&["sender", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("support@acme.com\tpending\tforwarding=unknown"),
        "{text}"
    );
    let bad = run(&[
        "sender",
        "verify",
        "--email",
        "support@acme.com",
        "--code",
        "12",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("code"));
    let dup = run(&["sender", "add", "--email", "support@acme.com"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already a sender"));
}
