//! TLS to PostgreSQL when the store's URL asks for it (SPEC §13): a server
//! of its own with a certificate made here, the store opened with
//! `sslmode=require&sslrootcert=…` talks TLS (the server says so in
//! `pg_stat_ssl`), a certificate nobody vouches for is refused, and a URL
//! without `sslmode` stays plain.
//!
//! Needs PostgreSQL (`BACKCHANNEL_TEST_POSTGRES` set, as `tests/pg/run.sh`
//! does); starts its own server with `tests/pg/pg.sh`, since turning TLS on
//! would change the suite's shared one.

mod common;

use std::path::Path;
use std::process::Command;

use backchannel::store::Store;

fn pg_sh(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg/pg.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run tests/pg/pg.sh");
    assert!(
        out.status.success(),
        "pg.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Statements one by one on a plain session (ALTER SYSTEM may not run in
/// a transaction); returns the first column of the last one's first row.
fn admin(url: &str, statements: &[&str]) -> String {
    let (url, statements): (String, Vec<String>) = (
        url.to_string(),
        statements.iter().map(|s| s.to_string()).collect(),
    );
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("admin connect");
        let mut last = String::new();
        for s in &statements {
            for m in c.simple_query(s).expect("admin statement") {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    last = r.get(0).unwrap_or_default().to_string();
                }
            }
        }
        last
    })
    .join()
    .expect("admin thread")
}

/// Opens the store at `url` off the test's runtime; the error's text when it cannot.
fn open(url: &str) -> Result<Store, String> {
    let url = url.to_string();
    std::thread::spawn(move || Store::open_postgres(&url).map_err(|e| e.to_string()))
        .join()
        .expect("open thread")
}

/// Sessions of the store (application_name backchannel) with and without TLS.
fn sessions(url: &str, db: &str) -> (i64, i64) {
    let count = |ssl: bool| {
        admin(
            url,
            &[&format!(
                "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
                 WHERE a.datname = '{db}' AND a.application_name = 'backchannel' AND s.ssl = {ssl}"
            )],
        )
        .parse::<i64>()
        .expect("count")
    };
    (count(true), count(false))
}

#[test]
fn the_store_talks_tls_to_postgresql_when_the_url_asks_and_verifies_the_server() {
    if common::postgres_server().is_none() {
        eprintln!("skipped: needs BACKCHANNEL_TEST_POSTGRES (tests/pg/run.sh)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pgdir = dir.path().join("pg");
    let base = pg_sh(&["start", pgdir.to_str().expect("path")]);
    let stop = Stop(pgdir.clone());

    // A certificate for 127.0.0.1, owned by the server's user.
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("cert");
    let (cert, key, other) = (
        pgdir.join("server.crt"),
        pgdir.join("server.key"),
        dir.path().join("other-ca.pem"),
    );
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    let unrelated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    std::fs::write(&other, unrelated.cert.pem()).expect("other");
    for (path, mode) in [(&cert, "644"), (&key, "600")] {
        let ok = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .status()
            .expect("chown");
        assert!(ok.success());
        let ok = Command::new("chmod")
            .arg(mode)
            .arg(path)
            .status()
            .expect("chmod");
        assert!(ok.success());
    }
    admin(
        &base,
        &[
            &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
            &format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ],
    );
    let deadline = std::time::Instant::now() + common::WAIT_DEADLINE;
    while admin(&base, &["SHOW ssl"]) != "on" {
        assert!(std::time::Instant::now() < deadline, "ssl never came on");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    admin(
        &base,
        &["CREATE DATABASE tls_store", "CREATE DATABASE plain_store"],
    );
    let db_url = format!("{}/tls_store", base.trim_end_matches("/postgres"));

    // Asked for, and vouched for by sslrootcert: every session is TLS.
    let store = open(&format!(
        "{db_url}?sslmode=require&sslrootcert={}",
        cert.display()
    ))
    .expect("open over TLS");
    let (tls, plain) = sessions(&base, "tls_store");
    assert!(tls >= 1 && plain == 0, "tls {tls}, plain {plain}");
    store.close();

    // A server certificate no trusted authority vouches for: refused.
    let err = open(&format!(
        "{db_url}?sslmode=require&sslrootcert={}",
        other.display()
    ))
    .expect_err("an unknown certificate is refused");
    assert!(err.contains("connect to PostgreSQL"), "{err}");
    let err = open(&format!("{db_url}?sslmode=require")).expect_err("refused without sslrootcert");
    assert!(err.contains("connect to PostgreSQL"), "{err}");

    // Not asked for: plain.
    let plain_url = format!("{}/plain_store", base.trim_end_matches("/postgres"));
    let store = open(&plain_url).expect("open plain");
    let (tls, plain) = sessions(&base, "plain_store");
    assert!(tls == 0 && plain >= 1, "tls {tls}, plain {plain}");
    store.close();
    drop(stop);
}

/// Stops the test's own server when the test ends, passed or not.
struct Stop(std::path::PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.to_str() {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg/pg.sh");
            let _ = Command::new("bash")
                .arg(script)
                .args(["stop", dir])
                .output();
        }
    }
}
