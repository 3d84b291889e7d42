//! Test harness: an in-process gateway on 127.0.0.1 port 0, and a raw SMTP
//! client that reads replies line by line.
#![allow(dead_code)]

pub mod console;
pub mod dns;

use std::path::{Path, PathBuf};
use std::time::Duration;

use backchannel::app::{self, Running};
use backchannel::config::Config;
use backchannel::store::Store;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Vendor domains the default test DNS vouches for: each publishes
/// `v=spf1 ip4:127.0.0.0/8 -all` and no DMARC, so mail from them sent over
/// loopback with a matching MAIL FROM is a verified sender (SPEC §10: an
/// aligned SPF pass where the domain publishes no DMARC). Any other domain
/// answers NXDOMAIN: its mail is unverified.
pub const VERIFIED_DOMAINS: &[&str] = &[
    "carrier.example",
    "vendor.example",
    "supplier.example",
    "acme.com",
];

/// The records of the default test DNS.
pub fn verified_records() -> Vec<(&'static str, dns::RecordKind)> {
    VERIFIED_DOMAINS
        .iter()
        .map(|d| {
            (
                *d,
                dns::RecordKind::Txt("v=spf1 ip4:127.0.0.0/8 -all".into()),
            )
        })
        .collect()
}

/// The PostgreSQL server the suite runs on instead of SQLite files, when
/// `BACKCHANNEL_TEST_POSTGRES` names one (`postgres://…/postgres`; set by
/// `tests/pg/run.sh`, which starts a throwaway server). Every gateway then
/// gets a database of its own on it.
pub fn postgres_server() -> Option<String> {
    std::env::var("BACKCHANNEL_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Skips a test that is about SQLite itself (its file, WAL, lock, backup)
/// when the suite runs on PostgreSQL; true when it should return.
pub fn sqlite_only(what: &str) -> bool {
    if postgres_server().is_some() {
        eprintln!("skipped on PostgreSQL: {what} is about the SQLite store");
        return true;
    }
    false
}

/// The database of the gateway whose data dir is `dir` on the suite's
/// PostgreSQL server: created on first use and named in
/// `<dir>/postgres-url`, so a restart on the same dir finds it again.
pub fn postgres_database(dir: &Path) -> Option<String> {
    let server = postgres_server()?;
    let file = dir.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    let name = format!("t_{}", hex::encode(rand::random::<[u8; 8]>()));
    let create = format!("CREATE DATABASE {name}");
    let admin = server.clone();
    // The blocking client cannot run on a thread of the test's runtime.
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .expect("connect to the test PostgreSQL");
        c.batch_execute(&create).expect("create a test database");
    })
    .join()
    .expect("create database");
    let mut url = url::Url::parse(&server).expect("BACKCHANNEL_TEST_POSTGRES is a URL");
    url.set_path(&name);
    let url = url.to_string();
    std::fs::create_dir_all(dir).expect("data dir");
    std::fs::write(&file, &url).expect("write postgres-url");
    Some(url)
}

/// The store at `db` (`<data_dir>/backchannel.db`) opened as a gateway on
/// that data dir opens it: the SQLite file, or, when the suite runs on
/// PostgreSQL, the data dir's database there (what a restart finds again).
pub fn open_store(db: &Path) -> Store {
    let url = db.parent().and_then(postgres_database).unwrap_or_default();
    Store::open_location(db, &url, false).expect("open the store")
}

/// Direct SQL on a gateway's database, for tests to seed and inspect what
/// is stored, the way an operator with `sqlite3` or `psql` would: the
/// gateway's own code reaches the database only through the store's typed
/// functions. Each call opens its own connection (WAL lets it work beside
/// the running gateway; a write waits for the gateway's writer, and
/// commits at once). Statements are written once, in SQL both databases
/// take (`?N` placeholders), through the store's SQL surface.
#[derive(Debug, Clone)]
pub struct Sql {
    path: PathBuf,
    postgres: Option<String>,
}

pub type SqlResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub use backchannel::store::sql::Conn;

impl Sql {
    /// The SQLite file at `path`, or, when the suite runs on PostgreSQL,
    /// the database of the data dir holding it (`<data_dir>/backchannel.db`).
    pub fn at(path: impl Into<PathBuf>) -> Sql {
        let path: PathBuf = path.into();
        let postgres = postgres_server().and_then(|_| {
            let dir = path.parent()?;
            std::fs::read_to_string(dir.join("postgres-url")).ok()
        });
        Sql { path, postgres }
    }

    fn open(&self) -> SqlResult<rusqlite::Connection> {
        let c = rusqlite::Connection::open(&self.path)?;
        c.busy_timeout(Duration::from_secs(30))?;
        c.execute_batch("PRAGMA foreign_keys = ON;")?;
        Ok(c)
    }

    /// Runs `f` on a connection of its own, in one read transaction.
    pub async fn read<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> SqlResult<T> + Send + 'static,
    {
        self.run(f, "BEGIN").await
    }

    /// Runs `f` in one write transaction, committed before this returns.
    pub async fn write<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> SqlResult<T> + Send + 'static,
    {
        self.run(f, "BEGIN IMMEDIATE").await
    }

    async fn run<T, F>(&self, f: F, begin: &'static str) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> SqlResult<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> SqlResult<T> {
            let in_transaction = |c: &Conn<'_>| -> SqlResult<T> {
                c.execute_batch(begin)?;
                match f(c) {
                    Ok(v) => {
                        c.execute_batch("COMMIT")?;
                        Ok(v)
                    }
                    Err(e) => {
                        let _ = c.execute_batch("ROLLBACK");
                        Err(e)
                    }
                }
            };
            match &this.postgres {
                Some(url) => {
                    let client = postgres::Client::connect(url, postgres::NoTls)?;
                    let pg = backchannel::store::sql::PgConn::new(client);
                    in_transaction(&Conn::Pg(&pg))
                }
                None => {
                    let c = this.open()?;
                    in_transaction(&Conn::Lite(&c))
                }
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

pub struct TestServer {
    pub running: Option<Running>,
    /// SQL on its database file (see [`Sql`]).
    pub sql: Sql,
    /// The default fake DNS (see [`VERIFIED_DOMAINS`]), when the test
    /// brought no `[dns]` of its own.
    pub dns: Option<dns::FakeDns>,
    pub dir: tempfile::TempDir,
    pub smtp: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub imap: std::net::SocketAddr,
    /// The submission listener (agents' mail clients); on `127.0.0.1:0`
    /// unless a test turns it off.
    pub submission: Option<std::net::SocketAddr>,
    /// The metrics listener (`GET /metrics`); on `127.0.0.1:0` unless a
    /// test sets `http.metrics_listen` itself.
    pub metrics: Option<std::net::SocketAddr>,
    pub store: Store,
    pub conversations: backchannel::conversations::Conversations,
}

impl TestServer {
    /// Starts a gateway for `gw.example.com` with `extra` TOML appended
    /// (sections must not repeat `[smtp]`/`[http]` keys given here: pass
    /// them through `smtp_extra`).
    pub async fn start(smtp_extra: &str) -> TestServer {
        Self::start_with(smtp_extra, "").await
    }

    pub async fn start_with(smtp_extra: &str, rest: &str) -> TestServer {
        Self::start_in(tempfile::tempdir().expect("tempdir"), smtp_extra, rest).await
    }

    /// With extra keys for the `[http]` section too.
    pub async fn start_with_http(smtp_extra: &str, http_extra: &str, rest: &str) -> TestServer {
        Self::start_full(
            tempfile::tempdir().expect("tempdir"),
            smtp_extra,
            http_extra,
            rest,
        )
        .await
    }

    /// Starts on an existing directory (its `data/` holds the store and the
    /// Maildir), as a restart would.
    pub async fn start_in(dir: tempfile::TempDir, smtp_extra: &str, rest: &str) -> TestServer {
        Self::start_full(dir, smtp_extra, "", rest).await
    }

    /// With extra keys for the `[imap]` section.
    pub async fn start_with_imap(imap_extra: &str, rest: &str) -> TestServer {
        Self::start_all(
            tempfile::tempdir().expect("tempdir"),
            "",
            "",
            imap_extra,
            rest,
        )
        .await
    }

    /// With extra keys for the `[smtp]`, `[http]` and `[imap]` sections.
    pub async fn start_with_all(
        smtp_extra: &str,
        http_extra: &str,
        imap_extra: &str,
        rest: &str,
    ) -> TestServer {
        Self::start_all(
            tempfile::tempdir().expect("tempdir"),
            smtp_extra,
            http_extra,
            imap_extra,
            rest,
        )
        .await
    }

    /// With extra keys for the `[submission]` section.
    pub async fn start_with_submission(submission_extra: &str, rest: &str) -> TestServer {
        Self::start_sections(
            tempfile::tempdir().expect("tempdir"),
            ["", "", "", submission_extra],
            rest,
        )
        .await
    }

    async fn start_full(
        dir: tempfile::TempDir,
        smtp_extra: &str,
        http_extra: &str,
        rest: &str,
    ) -> TestServer {
        Self::start_all(dir, smtp_extra, http_extra, "", rest).await
    }

    async fn start_all(
        dir: tempfile::TempDir,
        smtp_extra: &str,
        http_extra: &str,
        imap_extra: &str,
        rest: &str,
    ) -> TestServer {
        Self::start_sections(dir, [smtp_extra, http_extra, imap_extra, ""], rest).await
    }

    /// Extra keys for `[smtp]`, `[http]`, `[imap]` and `[submission]`.
    async fn start_sections(
        dir: tempfile::TempDir,
        [smtp_extra, http_extra, imap_extra, submission_extra]: [&str; 4],
        rest: &str,
    ) -> TestServer {
        // Tests never reach a resolver off this machine: unless a test
        // brings its own [dns], lookups go to a fake DNS on loopback that
        // vouches for VERIFIED_DOMAINS and knows no other name.
        let (fake_dns, dns) = if rest.contains("[dns]") {
            (None, String::new())
        } else {
            let fake = dns::FakeDns::start(&verified_records()).await;
            let section = format!(
                "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n",
                fake.addr
            );
            (Some(fake), section)
        };
        // Never the default port 9090: tests run in parallel.
        let metrics = if http_extra.contains("metrics_listen") {
            ""
        } else {
            "metrics_listen = \"127.0.0.1:0\"\n"
        };
        // Never the default port 1587 either.
        let submission = if submission_extra.contains("listen") {
            format!("[submission]\n{submission_extra}\n")
        } else {
            format!("[submission]\nlisten = \"127.0.0.1:0\"\n{submission_extra}\n")
        };
        let text = format!(
            "domain = \"gw.example.com\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{smtp_extra}\n[http]\nlisten = \"127.0.0.1:0\"\n{metrics}{http_extra}\n[imap]\nlisten = \"127.0.0.1:0\"\n{imap_extra}\n{submission}{dns}{rest}\n",
            dir.path().join("data").display()
        );
        // RUST_LOG=… shows the gateway's log in a test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let data = dir.path().join("data");
        let text = match postgres_database(&data) {
            Some(url) => format!("{text}\n[store]\nurl = \"{url}\"\n"),
            None => text,
        };
        let config = Config::from_toml_str(&text, Vec::new()).expect("config");
        let store =
            Store::open_location(&config.db_path(), &config.store.url, false).expect("store");
        let running = app::start(config, store.clone()).await.expect("start");
        TestServer {
            sql: Sql::at(dir.path().join("data/backchannel.db")),
            dns: fake_dns,
            smtp: running.addrs.smtp,
            http: running.addrs.http,
            imap: running.addrs.imap,
            submission: running.addrs.submission,
            metrics: running.addrs.metrics,
            conversations: running.conversations.clone(),
            running: Some(running),
            dir,
            store,
        }
    }

    /// `GET /metrics` on the metrics listener: the Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let addr = self.metrics.expect("the metrics listener is on");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/backchannel.db")
    }

    pub async fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// Every stored inbound message: (mail_from, rcpts JSON, tls, raw).
    pub async fn inbound(&self) -> Vec<(String, String, bool, Vec<u8>)> {
        self.sql
            .read(|c| {
                let mut s = c.prepare(
                    "SELECT q.mail_from, q.rcpts, q.tls, coalesce(r.raw, q.raw)
                     FROM inbound_queue q LEFT JOIN inbound_raw r ON r.id = q.id ORDER BY q.id",
                )?;
                let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .expect("read inbound")
    }

    /// Creates a parent with one side conversation carrying `token`.
    pub async fn add_side_conversation(&self, token: &str) {
        let token = token.to_string();
        self.sql
            .write(move |c| {
                c.execute(
                    "INSERT INTO parents (external_id, created_at, updated_at) VALUES (?1, 0, 0)",
                    [format!("T-{token}")],
                )?;
                let parent = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO side_conversations
                       (parent_id, token, subject, sender_email, created_at, updated_at)
                     VALUES (?2, ?1, 'Subject', 'reply@gw.example.com', 0, 0)",
                    rusqlite::params![&token, parent],
                )?;
                Ok(())
            })
            .await
            .expect("insert side conversation");
    }

    pub async fn add_sender(&self, email: &str, forwarding_local: &str) {
        let (email, fwd) = (email.to_string(), forwarding_local.to_string());
        self.sql
            .write(move |c| {
                c.execute(
                    "INSERT INTO senders (email, forwarding_local, created_at) VALUES (?1, ?2, 0)",
                    [&email, &fwd],
                )?;
                Ok(())
            })
            .await
            .expect("insert sender");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.store.close();
    }
}

/// A raw SMTP client over any stream.
pub struct Client<S> {
    pub io: BufReader<S>,
}

pub async fn connect(addr: std::net::SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).await.expect("connect");
    Client {
        io: BufReader::new(s),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads one (possibly multi-line) reply; returns its lines joined by
    /// `\n`, or "" at end of stream.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.io.read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read");
            if n == 0 {
                return all;
            }
            let done = line.len() < 4 || line.as_bytes()[3] != b'-';
            all.push_str(line.trim_end_matches(['\r', '\n']));
            if done {
                return all;
            }
            all.push('\n');
        }
    }

    pub async fn send(&mut self, data: &[u8]) {
        self.io.get_mut().write_all(data).await.expect("write");
    }

    /// Sends a command line and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

pub fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or("")
}

pub const TOKEN: &str = "abcdefghijklmn23";

/// An agent acting through the service layer (the user row is created).
pub async fn agent(store: &Store, email: &str, name: &str) -> backchannel::conversations::Actor {
    let (e, n) = (email.to_string(), name.to_string());
    let user = store
        .write(move |c| {
            backchannel::store::users::create(c, &e, &n, backchannel::model::Role::Member)
                .map(|(u, _)| u)
        })
        .await
        .expect("create agent");
    backchannel::conversations::Actor {
        user_id: user.id,
        name: user.name,
        email: user.email,
    }
}

/// Seeds a parent `external_id` in `parent_status` with one side
/// conversation (`token`, `sc_status`) whose participants are `vendors`.
/// Returns (parent id, side conversation id).
pub async fn seed_thread(
    sql: &Sql,
    external_id: &str,
    token: &str,
    parent_status: &str,
    sc_status: &str,
    vendors: &[&str],
) -> (i64, i64) {
    let (ext, token, ps, ss) = (
        external_id.to_string(),
        token.to_string(),
        parent_status.to_string(),
        sc_status.to_string(),
    );
    let vendors: Vec<String> = vendors.iter().map(|v| v.to_string()).collect();
    sql.write(move |c| {
        c.execute(
            "INSERT INTO parents (external_id, subject, status, created_at, updated_at)
                 VALUES (?1, 'Order 1001', ?2, 0, 0)",
            rusqlite::params![ext, ps],
        )?;
        let parent = c.last_insert_rowid();
        c.execute(
            "INSERT INTO side_conversations
                   (parent_id, token, status, subject, sender_email, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'Pallet 7 delayed', 'support@acme.com', 0, 0)",
            rusqlite::params![parent, token, ss],
        )?;
        let sc = c.last_insert_rowid();
        for v in &vendors {
            c.execute(
                "INSERT INTO participants (side_conversation_id, email, role, added_at)
                     VALUES (?1, ?2, 'to', 0)",
                rusqlite::params![sc, v],
            )?;
        }
        Ok((parent, sc))
    })
    .await
    .expect("seed thread")
}

/// Sends one message over SMTP; returns the final reply to DATA.
pub async fn smtp_send(
    addr: std::net::SocketAddr,
    mail_from: &str,
    rcpts: &[&str],
    data: &str,
) -> String {
    let mut c = connect(addr).await;
    c.reply().await;
    c.cmd("EHLO test.example").await;
    let r = c.cmd(&format!("MAIL FROM:<{mail_from}>")).await;
    assert!(r.starts_with("250"), "MAIL: {r}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.starts_with("250"), "RCPT {rcpt}: {r}");
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut body = data.replace("\r\n", "\n").replace('\n', "\r\n");
    if !body.ends_with("\r\n") {
        body.push_str("\r\n");
    }
    // dot-stuffing
    let stuffed = body
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    c.send(stuffed.as_bytes()).await;
    let r = c.cmd(".").await;
    c.cmd("QUIT").await;
    r
}

impl TestServer {
    /// Waits until the ingest worker has processed every queued message.
    pub async fn wait_ingested(&self) {
        wait_until("the ingest queue to drain", || async {
            self.query::<i64>("SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'")
                .await
                == 0
        })
        .await;
    }

    /// One value from a query with no parameters.
    pub async fn query<T: rusqlite::types::FromSql + Send + 'static>(&self, sql: &str) -> T {
        let sql = sql.to_string();
        self.sql
            .read(move |c| Ok(c.query_row(&sql, [], |r| r.get(0))?))
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}"))
    }
}

/// One HTTP call to the server's API as `token`; the status and the body
/// (JSON, or the text as a JSON string).
pub async fn api_call(
    s: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new()
        .request(m, format!("http://{}{path}", s.http))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Creates a user in the store; returns its API token.
pub async fn make_user(
    s: &TestServer,
    email: &str,
    name: &str,
    role: backchannel::model::Role,
) -> String {
    let (e, n) = (email.to_string(), name.to_string());
    s.store
        .write(move |db| backchannel::store::users::create(db, &e, &n, role))
        .await
        .expect("user")
        .1
        .as_str()
        .to_string()
}

/// How long a test waits for a state before it fails: generous, since it
/// only matters when something is wrong (a busy 2-core CI machine).
pub const WAIT_DEADLINE: Duration = Duration::from_secs(120);

/// Polls `check` (every 20 ms) until it yields a value, and returns it;
/// fails the test after [`WAIT_DEADLINE`]. Waiting on a state, not on a
/// guess of how long it takes.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it holds; see [`wait_for`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// A minimal IMAP exchange on a raw connection: sends one tagged command,
/// returns every line (trimmed) up to and including its tagged reply.
pub async fn imap_cmd<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    tag: &str,
    cmd: &str,
) -> Vec<String> {
    io.get_mut()
        .write_all(format!("{tag} {cmd}\r\n").as_bytes())
        .await
        .expect("write");
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), io.read_line(&mut line))
            .await
            .expect("IMAP reply in time")
            .expect("read");
        assert!(n > 0, "IMAP connection closed: {lines:?}");
        let done = line.starts_with(&format!("{tag} "));
        lines.push(line.trim_end().to_string());
        if done {
            return lines;
        }
    }
}
