//! PostgreSQL's side of the store (SPEC §13): connecting (TLS when the URL
//! asks), numbered migrations from `schema_pg.sql` applied by one node at a
//! time, the thread that hears other nodes' commits (LISTEN/NOTIFY), and
//! the advisory lock that lets one node at a time run scheduled jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::sql::describe;
use super::{Result, StoreError};

/// The PostgreSQL schema, embedded at build time. Its first migration is
/// numbered 13: it builds what SQLite's 1 to 13 build; later migrations
/// carry the same numbers in both files.
pub const SCHEMA_PG: &str = include_str!("../../schema_pg.sql");

/// Read sessions one node keeps open at most (the writer, the listener
/// and the scheduler's lock holder take one each besides).
pub const MAX_READERS: usize = 24;

/// The channel every node's writer notifies on commit.
const CHANNEL: &str = "backchannel_commits";

/// Advisory lock keys (one namespace of 64-bit keys per database).
const LOCK_MIGRATE: i64 = 0x6263_6d69_6772_0001;
pub const LOCK_SCHEDULER: i64 = 0x6263_7363_6864_0001;

/// How long connecting may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database to connect to.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// This process among the nodes (random; in NOTIFY payloads).
    pub node: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config's Debug redacts the password.
        f.debug_struct("Target")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("node", &self.node)
            .finish()
    }
}

impl Target {
    /// Reads a `postgres://user:pass@host:port/db?sslmode=…` URL. Besides
    /// what the client understands, `sslrootcert=PATH` names a PEM file of
    /// certificate authorities to trust for the server's certificate (as
    /// libpq's does), in addition to the system's. Unlike libpq, a
    /// certificate is always verified when TLS is used.
    pub fn parse(url: &str) -> Result<Target> {
        let bad = |why: String| StoreError::Database(format!("[store] url: {why}"));
        let mut parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!(
                "scheme `{}` is not postgres://",
                parsed.scheme()
            )));
        }
        let mut root_file = None;
        let mut asks_tls = false;
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| {
                if k == "sslrootcert" {
                    root_file = Some(v.into_owned());
                    None
                } else {
                    asks_tls |= k == "sslmode" && v != "disable";
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        let mut config: postgres::Config = parsed
            .as_str()
            .parse()
            .map_err(|e: postgres::Error| bad(e.to_string()))?;
        // TLS when the URL asks for it (`sslmode=require` or `prefer`),
        // and then the server's certificate is always verified (system
        // CAs and `sslrootcert`); without `sslmode` the session is plain,
        // as on a private network or loopback.
        if !asks_tls {
            config.ssl_mode(postgres::config::SslMode::Disable);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("backchannel");
        let tls = tls_connector(root_file.as_deref()).map_err(bad)?;
        let node = hex::encode(rand::random::<[u8; 8]>());
        Ok(Target { config, tls, node })
    }

    /// A new session.
    pub fn connect(&self) -> Result<postgres::Client> {
        self.config
            .connect(self.tls.clone())
            .map_err(|e| StoreError::Database(format!("connect to PostgreSQL: {}", describe(&e))))
    }
}

fn tls_connector(
    root_file: Option<&str>,
) -> std::result::Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = root_file {
        let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
        let mut added = 0;
        for cert in rustls_pemfile_certs(&pem) {
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("sslrootcert {path}: no certificate in it"));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(|c| c.ok())
        .collect()
}

/// Applies every migration of [`SCHEMA_PG`] the database has not had, each
/// in its own transaction with its record in `schema_migrations`. Nodes
/// starting together take turns (an advisory lock); running it again is
/// a no-op.
pub fn migrate(client: &mut postgres::Client) -> Result<u32> {
    let db =
        |e: postgres::Error| StoreError::Database(format!("migrate PostgreSQL: {}", describe(&e)));
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_MIGRATE])
        .map_err(db)?;
    let outcome = apply(client);
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_MIGRATE])
        .map_err(db);
    let version = outcome?;
    unlocked?;
    Ok(version)
}

fn apply(client: &mut postgres::Client) -> Result<u32> {
    let db =
        |e: postgres::Error| StoreError::Database(format!("migrate PostgreSQL: {}", describe(&e)));
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL
             )",
        )
        .map_err(db)?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(db)?
        .get(0);
    let mut version = u32::try_from(current).unwrap_or(0);
    for (n, sql) in super::numbered(SCHEMA_PG) {
        if i64::from(n) <= current {
            continue;
        }
        let mut tx = client.transaction().map_err(db)?;
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Database(format!("PostgreSQL migration {n}: {}", describe(&e)))
        })?;
        let now = chrono::Utc::now().timestamp();
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&i64::from(n), &now],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        tracing::info!(migration = n, "applied PostgreSQL schema migration");
        version = n;
    }
    Ok(version)
}

/// The statement the writer runs before each commit: other nodes hear it
/// once the transaction is committed (never for one rolled back).
pub fn notify_sql(node: &str) -> String {
    format!("NOTIFY {CHANNEL}, '{node}'")
}

/// The thread that hears other nodes' commits and moves this node's
/// commit counter, so IMAP IDLE, JMAP push and the console's live pages
/// wake for mail another node accepted.
pub struct Listener {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<()>,
}

impl Listener {
    pub fn start(target: Target, commits: tokio::sync::watch::Sender<u64>) -> Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = thread::Builder::new()
            .name("store-listen".into())
            .spawn(move || listen_loop(&target, &commits, &stopping))
            .map_err(|e| StoreError::Database(format!("spawn listener: {e}")))?;
        Ok(Listener { stop, handle })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// How long the listener waits for a notification before it looks whether
/// it should stop.
const LISTEN_POLL: Duration = Duration::from_millis(200);

fn listen_loop(target: &Target, commits: &tokio::sync::watch::Sender<u64>, stop: &AtomicBool) {
    let bump = || commits.send_modify(|n| *n = n.wrapping_add(1));
    while !stop.load(Ordering::Relaxed) {
        let mut client = match target.connect().and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {CHANNEL}"))
                .map(|()| c)
                .map_err(|e| StoreError::Database(describe(&e)))
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "store: cannot listen for other nodes' commits; retrying");
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // Whatever was committed while no one listened.
        bump();
        while !stop.load(Ordering::Relaxed) {
            let mut notes = client.notifications();
            let mut iter = notes.timeout_iter(LISTEN_POLL);
            let mut failed = false;
            loop {
                match iter.next() {
                    Ok(Some(note)) => {
                        if note.payload() != target.node {
                            bump();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %describe(&e), "store: lost the PostgreSQL listener; reconnecting");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
        }
    }
}

/// How often a node that does not run the scheduled jobs tries to take
/// the scheduler's lock, and the one that does checks its session.
pub const LEAD_POLL: Duration = Duration::from_secs(1);

/// Holds (or keeps trying to take) the scheduler's advisory lock on a
/// session of its own while `open()`; `leading` says whether this node
/// has it. A session that fails loses the lock (the server frees it):
/// `leading` turns false until a new session takes it again.
pub fn lead_loop(
    target: &Target,
    leading: &tokio::sync::watch::Sender<bool>,
    open: impl Fn() -> bool,
) {
    let set = |v: bool| {
        leading.send_if_modified(|l| std::mem::replace(l, v) != v);
    };
    let mut session: Option<postgres::Client> = None;
    while open() {
        let held = *leading.borrow();
        let step = match session.as_mut() {
            None => target.connect().map(|c| {
                session = Some(c);
            }),
            Some(client) if !held => client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_SCHEDULER])
                .map(|row| {
                    if row.get::<_, bool>(0) {
                        tracing::info!("store: this node runs the scheduled jobs");
                        set(true);
                    }
                })
                .map_err(|e| StoreError::Database(describe(&e))),
            Some(client) => client
                .simple_query("SELECT 1")
                .map(|_| ())
                .map_err(|e| StoreError::Database(describe(&e))),
        };
        if let Err(e) = step {
            if held {
                tracing::warn!(error = %e, "store: lost the scheduler lock; another node may take it");
            }
            set(false);
            session = None;
        }
        thread::sleep(LEAD_POLL);
    }
    set(false);
}
