//! SQLite store: opening (pragmas, migrations from `schema.sql`), one writer
//! thread with group commit, and a pool of read connections.
//!
//! Every write is a closure run on the writer thread inside a transaction
//! shared with the other writes that were waiting at the same time; each
//! closure runs in its own SAVEPOINT so one failing write does not undo its
//! neighbours. A caller is answered only after the shared COMMIT returned,
//! which with WAL and `synchronous=FULL` means the data is on disk.
//!
//! Writes someone is waiting on to answer a client (the SMTP `250`) are
//! queued as *urgent* ([`Store::write_urgent`]): each batch runs every
//! urgent write first and then only as much of the other backlog (the
//! ingest pipeline's work) as fits in a short time budget, so an accepted
//! message is never committed behind dozens of ingest jobs. Writes of one
//! class keep their order; only urgent writes may overtake the others.

pub mod activity;
pub mod agent_mail;
pub mod agent_pages;
pub mod agent_replies;
pub mod audit;
pub mod backup;
mod codec;
pub mod console;
pub mod contacts;
pub mod copy;
pub mod dkim;
pub mod events;
pub mod inbound;
pub mod inbox;
pub mod lock;
pub mod messages;
pub mod notifications;
pub mod outbox;
pub mod parents;
pub mod participants;
mod pg;
pub mod portal;
pub mod reports;
pub mod routing;
pub mod senders;
pub mod side_conversations;
pub mod sql;
pub mod stats;
pub mod templates;
pub mod users;
pub mod view;
pub mod waiting;
pub mod webhooks;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub use pg::LEAD_POLL;
use rusqlite::{Connection, OpenFlags};
use sql::{Conn, PgConn};
use tokio::sync::oneshot;

/// The schema, embedded at build time.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// How many queued writes one transaction may take at most.
const MAX_BATCH: usize = 512;
/// How long one batch may spend on non-urgent writes (threading accepted
/// mail, API writes) before it commits.
const BATCH_BUDGET: Duration = Duration::from_millis(4);
/// An urgent write (a client waiting for its `250`) ends its batch as soon
/// as it has run, once the batch has given the backlog this much time: the
/// backlog delays an answer by about one job and the commit, and still
/// moves on during a burst (bench/NOTES.md §5: 0, 100, 300 µs, 1 and 4 ms
/// were measured).
const BACKLOG_SHARE: Duration = Duration::from_micros(100);
/// Read connections kept open when idle.
const MAX_IDLE_READERS: usize = 16;
/// The checkpointer copies committed WAL frames into the database at most
/// this often (and only after commits).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
/// Once the WAL holds this many frames (4 KiB pages), the writer finishes
/// the checkpoint itself right after a commit, so that the next transaction
/// starts the WAL over instead of growing it: under continuous load the
/// background checkpoint never catches up with the writer by itself.
const WAL_RESTART_FRAMES: i64 = 8_192;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("invalid data in the database: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(code, msg)
                if code.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(msg.unwrap_or_else(|| code.to_string()))
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store's connection lent to one read or one write: every other
/// module reaches the database only through the typed functions of the
/// store's modules, which take this.
pub struct Db<'c> {
    conn: Conn<'c>,
    /// This process among the nodes sharing a PostgreSQL store ("" on
    /// SQLite, where there is one).
    node: &'c str,
}

impl<'c> Db<'c> {
    /// The connection, for the store's own modules.
    fn conn(&self) -> Conn<'c> {
        self.conn
    }

    /// Which database this is (the few statements the two spell
    /// differently choose by it).
    pub fn dialect(&self) -> sql::Dialect {
        self.conn.dialect()
    }

    /// The lease a leased row (an outbox row or webhook attempt in
    /// `sending`) must be past to count as interrupted: on SQLite (one
    /// process) every such row at start-up is; on PostgreSQL only those
    /// whose node let the lease run out (it died mid-send), never one
    /// another node is working on right now.
    pub fn stale_before(&self, now: i64) -> i64 {
        match self.dialect() {
            sql::Dialect::Sqlite => i64::MAX,
            sql::Dialect::Postgres => now,
        }
    }

    /// This node's name ("" on SQLite).
    pub fn node(&self) -> &'c str {
        self.node
    }

    /// Runs `f` in a savepoint of its own: an `Err` rolls back `f`'s work
    /// only, the rest of the transaction goes on (one agent's notification
    /// batch failing, say).
    pub fn savepoint<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T>) -> Result<T> {
        cached(self.conn, "SAVEPOINT nested")?;
        match f(self) {
            Ok(v) => {
                cached(self.conn, "RELEASE nested")?;
                Ok(v)
            }
            Err(e) => {
                cached(self.conn, "ROLLBACK TO nested")?;
                cached(self.conn, "RELEASE nested")?;
                Err(e)
            }
        }
    }

    /// A connection of a unit test (an in-memory database, `memory_db`).
    #[cfg(test)]
    pub(crate) fn for_test(conn: &'c Connection) -> Db<'c> {
        Db {
            conn: Conn::Lite(conn),
            node: "",
        }
    }
}

/// Called once the batch a job ran in is committed (`None`) or failed.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A write job: runs inside the batch transaction (given `Some`), says
/// whether it succeeded (its savepoint is kept) and how to answer its
/// caller. Given `None` it does not run and answers with the batch error.
type Job = Box<dyn FnOnce(Option<Conn<'_>>) -> (bool, Completion) + Send>;

enum WriterMsg {
    Job(Job),
    /// A write a client is waiting on: runs ahead of the backlog.
    Urgent(Job),
    /// Test hook: the next commit fails as if the disk had refused it.
    #[doc(hidden)]
    FailNextCommit,
}

/// Where the store lives.
enum Backend {
    /// A SQLite file, written by this process alone.
    Lite { path: PathBuf },
    /// A PostgreSQL database shared with other nodes.
    Pg(Box<pg::Target>),
}

/// A pooled read connection.
enum Reader {
    Lite(Connection),
    Pg(Box<PgConn>),
}

struct Inner {
    backend: Backend,
    /// See [`Db::node`].
    node: Arc<str>,
    writer: Mutex<Option<mpsc::Sender<WriterMsg>>>,
    writer_thread: Mutex<Option<thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Reader>>,
    /// PostgreSQL sessions open for reads, idle or lent (at most
    /// [`pg::MAX_READERS`]); a reader waits here for one to come back.
    pg_readers: (Mutex<usize>, std::sync::Condvar),
    /// Moves after every successful COMMIT (see [`Store::commits`]).
    commits: tokio::sync::watch::Sender<u64>,
    checkpointer: Mutex<Option<thread::JoinHandle<()>>>,
    /// PostgreSQL: the thread that hears other nodes' commits.
    listener: Mutex<Option<pg::Listener>>,
    /// Opened by the serving process (see [`Store::open_serving`]).
    serving: bool,
    /// The 'credentials' counter as last read (see [`Store::credentials`]);
    /// its poller starts with the first subscriber.
    credentials: std::sync::OnceLock<tokio::sync::watch::Sender<i64>>,
    /// Whether this node runs the scheduled jobs (see [`Store::leader`]).
    leader: std::sync::OnceLock<tokio::sync::watch::Sender<bool>>,
}

/// Cheap to clone; all clones share the writer and the read pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner.backend {
            Backend::Lite { path } => f.debug_struct("Store").field("path", path).finish(),
            Backend::Pg(t) => f.debug_struct("Store").field("postgres", t).finish(),
        }
    }
}

/// How long a connection waits for a lock another one holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The writer runs a few dozen distinct statements per ingested message;
    // all of them stay prepared.
    conn.set_prepared_statement_cache_capacity(128);
    // Without the query planner stability guarantee SQLite re-prepares a
    // cached statement whenever a new value is bound to a parameter the
    // planner looked at (most of the writer's lookups): a tenth of the
    // writer's time went to parsing the same SQL again.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(())
}

/// The numbered migrations of `schema.sql`, in order.
pub fn migrations() -> Vec<(u32, &'static str)> {
    numbered(SCHEMA)
}

/// The `-- migration: N` blocks of a schema file, in order.
fn numbered(schema: &'static str) -> Vec<(u32, &'static str)> {
    let mut out: Vec<(u32, &'static str)> = Vec::new();
    let mut rest = schema;
    const MARK: &str = "-- migration: ";
    while let Some(pos) = rest.find(MARK) {
        let after = &rest[pos + MARK.len()..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let Ok(version) = after[..line_end].trim().parse::<u32>() else {
            rest = &after[line_end..];
            continue;
        };
        let body_start = &after[line_end..];
        let body_len = body_start.find(MARK).unwrap_or(body_start.len());
        out.push((version, &body_start[..body_len]));
        rest = &body_start[body_len..];
    }
    out
}

/// An in-memory database with every migration applied (unit tests).
#[cfg(test)]
pub(crate) fn memory_db() -> Connection {
    let conn = Connection::open_in_memory().expect("memory db");
    for (_, sql) in migrations() {
        conn.execute_batch(sql).expect("migration");
    }
    conn
}

/// Applies every migration above the file's `user_version`, each in its own
/// transaction together with the version bump. Running it again is a no-op.
fn migrate(conn: &mut Connection) -> Result<u32> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut version = current;
    for (n, sql) in migrations() {
        if n <= version {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Database(format!("migration {n}: {e}")))?;
        tx.execute_batch(&format!("PRAGMA user_version = {n}"))?;
        tx.commit()?;
        tracing::info!(migration = n, "applied schema migration");
        version = n;
    }
    Ok(version)
}

impl Store {
    /// Opens (creating if needed) the database at `path`: WAL, full sync,
    /// foreign keys, busy timeout; applies pending migrations; starts the
    /// writer thread.
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_with(path, false)
    }

    /// [`Store::open`] for the serving process, which also owns the WAL
    /// file: it is copied into the database and cut to zero bytes at open
    /// (what a crash left behind) and at [`Store::close`], without waiting
    /// for anyone (a command-line tool using the database meanwhile keeps
    /// it as it is). A WAL file left from an earlier run is otherwise
    /// written over in place, and writing frames into it cost the writer
    /// about a quarter more CPU per message for the whole next run than
    /// into a new file (bench/NOTES.md §6).
    pub fn open_serving(path: &Path) -> Result<Store> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, serving: bool) -> Result<Store> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        migrate(&mut conn)?;
        if serving {
            truncate_wal(&conn);
        }
        // Checkpoints run on their own thread and connection (see
        // `checkpoint_loop`), not inside the writer's commits.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let checkpoint_conn = Connection::open(path)?;
        configure(&checkpoint_conn)?;

        let frames = Arc::new(AtomicI64::new(0));
        let (wake, wake_rx) = mpsc::sync_channel::<()>(1);
        let wal_seen = frames.clone();
        let checkpointer = thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, wake_rx, wal_seen))
            .map_err(|e| StoreError::Database(format!("spawn checkpointer: {e}")))?;

        Self::start(
            Backend::Lite {
                path: path.to_path_buf(),
            },
            WriterConn::Lite(conn, Wal { wake, frames }),
            Some(checkpointer),
            serving,
        )
    }

    /// Opens the PostgreSQL database at `url` (`postgres://…`; TLS when
    /// the URL's `sslmode` asks for it), applies pending migrations (one
    /// node at a time) and starts the writer and the thread that hears
    /// other nodes' commits.
    pub fn open_postgres(url: &str) -> Result<Store> {
        // The blocking client runs a runtime of its own, which cannot start
        // on a thread of the caller's (`serve` opens the store there).
        let url = url.to_owned();
        thread::Builder::new()
            .name("store-open".into())
            .spawn(move || Self::open_postgres_here(&url))
            .map_err(|e| StoreError::Database(format!("spawn: {e}")))?
            .join()
            .map_err(|_| StoreError::Database("opening the store failed (internal error)".into()))?
    }

    fn open_postgres_here(url: &str) -> Result<Store> {
        let target = pg::Target::parse(url)?;
        let mut first = target.connect()?;
        pg::migrate(&mut first)?;
        let writer = PgConn::new(first);
        let store = Self::start(
            Backend::Pg(Box::new(target.clone())),
            WriterConn::Pg(Box::new((writer, target.clone()))),
            None,
            false,
        )?;
        let listener = pg::Listener::start(target, store.inner.commits.clone())?;
        if let Ok(mut l) = store.inner.listener.lock() {
            *l = Some(listener);
        }
        Ok(store)
    }

    /// Opens the store a config names: PostgreSQL when `url` is set, else
    /// the SQLite file at `path` ([`Store::open_serving`] when `serving`).
    pub fn open_location(path: &Path, url: &str, serving: bool) -> Result<Store> {
        if !url.is_empty() {
            Self::open_postgres(url)
        } else if serving {
            Self::open_serving(path)
        } else {
            Self::open(path)
        }
    }

    fn start(
        backend: Backend,
        conn: WriterConn,
        checkpointer: Option<thread::JoinHandle<()>>,
        serving: bool,
    ) -> Result<Store> {
        let (tx, rx) = mpsc::channel::<WriterMsg>();
        let (commits, _) = tokio::sync::watch::channel(0u64);
        let committed = commits.clone();
        let handle = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, committed))
            .map_err(|e| StoreError::Database(format!("spawn writer: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                node: match &backend {
                    Backend::Lite { .. } => Arc::from(""),
                    Backend::Pg(t) => Arc::from(t.node.as_str()),
                },
                backend,
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                readers: Mutex::new(Vec::new()),
                pg_readers: (Mutex::new(0), std::sync::Condvar::new()),
                commits,
                checkpointer: Mutex::new(checkpointer),
                listener: Mutex::new(None),
                serving,
                credentials: std::sync::OnceLock::new(),
                leader: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Whether this store is PostgreSQL's (shared with other nodes).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.backend, Backend::Pg(_))
    }

    /// The SQLite file, or `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::Lite { path } => Some(path),
            Backend::Pg(_) => None,
        }
    }

    /// A counter that moves after every committed write batch. Whoever
    /// pushes changes to clients (IMAP IDLE, JMAP EventSource) waits on it
    /// and then reads what changed, instead of polling the database.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    /// The 'credentials' counter (`users::credentials_counter`), which
    /// moves whenever a user is deactivated, changes role or gets a new
    /// token, in this process or another (the command line). Whoever holds
    /// a session open for a long time (IMAP IDLE, JMAP push) waits on it
    /// and then checks its user (`users::standing`). One thread reads the
    /// counter every [`CREDENTIALS_POLL`] once anyone asked for it, until
    /// the store closes.
    pub fn credentials(&self) -> tokio::sync::watch::Receiver<i64> {
        let sender = self.inner.credentials.get_or_init(|| {
            let (tx, _) = tokio::sync::watch::channel(0);
            let weak = Arc::downgrade(&self.inner);
            let spawned = thread::Builder::new()
                .name("store-credentials".into())
                .spawn(move || credentials_loop(weak));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "store: cannot start the credentials poller");
            }
            tx
        });
        sender.subscribe()
    }

    /// Whether this node runs the scheduled jobs (DNS re-checks,
    /// notification batches, reminders): always with SQLite; with
    /// PostgreSQL the one node holding the scheduler's advisory lock. When
    /// that node dies its session ends, the lock goes, and another node
    /// takes it within [`pg::LEAD_POLL`]. The first call starts the
    /// thread that keeps trying.
    pub fn leader(&self) -> tokio::sync::watch::Receiver<bool> {
        let sender = self.inner.leader.get_or_init(|| {
            let Backend::Pg(target) = &self.inner.backend else {
                return tokio::sync::watch::channel(true).0;
            };
            let (tx, _) = tokio::sync::watch::channel(false);
            let (target, weak, leading) = (target.clone(), Arc::downgrade(&self.inner), tx.clone());
            let open = move || {
                weak.upgrade()
                    .is_some_and(|inner| inner.writer.lock().map(|w| w.is_some()).unwrap_or(false))
            };
            let spawned = thread::Builder::new()
                .name("store-lead".into())
                .spawn(move || pg::lead_loop(&target, &leading, open));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "store: cannot start the scheduler lock holder");
            }
            tx
        });
        sender.subscribe()
    }

    fn submit(&self, msg: WriterMsg) -> Result<()> {
        let guard = self.inner.writer.lock().map_err(|_| StoreError::Closed)?;
        match guard.as_ref() {
            Some(sender) => sender.send(msg).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    fn enqueue<T, E, F>(&self, f: F) -> Result<oneshot::Receiver<std::result::Result<T, E>>>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Db<'_>) -> std::result::Result<T, E> + Send + 'static,
    {
        self.enqueue_as(f, false)
    }

    fn enqueue_as<T, E, F>(
        &self,
        f: F,
        urgent: bool,
    ) -> Result<oneshot::Receiver<std::result::Result<T, E>>>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Db<'_>) -> std::result::Result<T, E> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let node = self.inner.node.clone();
        let job: Job = Box::new(move |conn: Option<Conn<'_>>| {
            let outcome = match conn {
                Some(conn) => f(&Db { conn, node: &node }),
                None => Err(StoreError::Database("transaction could not start".into()).into()),
            };
            let ok = outcome.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                let answer = match commit_error {
                    None => outcome,
                    Some(e) => Err(e.clone().into()),
                };
                let _ = reply.send(answer);
            });
            (ok, completion)
        });
        self.submit(if urgent {
            WriterMsg::Urgent(job)
        } else {
            WriterMsg::Job(job)
        })?;
        Ok(rx)
    }

    /// Runs `f` on the writer thread; resolves once the transaction it ran
    /// in is durably committed. An `Err` from `f` rolls back only `f`'s work.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        let rx = self.enqueue(f)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for a write a client is waiting on (the SMTP
    /// commit before `250`): it runs ahead of queued non-urgent writes.
    pub async fn write_urgent<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        let rx = self.enqueue_as(f, true)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for closures with their own error type (which must
    /// take in a `StoreError`, for the commit's failure).
    pub async fn write_with<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Db<'_>) -> std::result::Result<T, E> + Send + 'static,
    {
        let rx = self.enqueue(f)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` now and returns a future for its answer: writes submitted
    /// one after another run in that order (in the same or later batches).
    pub fn submit_write<T, F>(
        &self,
        f: F,
    ) -> Result<impl std::future::Future<Output = Result<T>> + Send + 'static>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        let rx = self.enqueue(f)?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }

    /// Blocking form of [`Store::write`], for threads outside the runtime.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        let rx = self.enqueue(f)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// An idle pooled read connection, if there is one.
    fn pop_idle(&self) -> Result<Option<Reader>> {
        Ok(self
            .inner
            .readers
            .lock()
            .map_err(|_| StoreError::Closed)?
            .pop())
    }

    fn take_reader(&self) -> Result<Reader> {
        if let Some(conn) = self.pop_idle()? {
            return Ok(conn);
        }
        match &self.inner.backend {
            Backend::Lite { path } => {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&conn)?;
                Ok(Reader::Lite(conn))
            }
            Backend::Pg(target) => {
                // At most MAX_READERS sessions: wait for one to come back
                // rather than open more than the server allows.
                let (open, freed) = &self.inner.pg_readers;
                let mut n = open.lock().map_err(|_| StoreError::Closed)?;
                loop {
                    if let Some(conn) = self.pop_idle()? {
                        return Ok(conn);
                    }
                    if *n < pg::MAX_READERS {
                        break;
                    }
                    n = freed.wait(n).map_err(|_| StoreError::Closed)?;
                }
                *n += 1;
                drop(n);
                match target.connect() {
                    Ok(client) => Ok(Reader::Pg(Box::new(PgConn::new(client)))),
                    Err(e) => {
                        self.pg_reader_gone();
                        Err(e)
                    }
                }
            }
        }
    }

    /// A PostgreSQL read session was closed: another may open.
    fn pg_reader_gone(&self) {
        let (open, freed) = &self.inner.pg_readers;
        if let Ok(mut n) = open.lock() {
            *n = n.saturating_sub(1);
        }
        freed.notify_one();
    }

    fn return_reader(&self, conn: Reader) {
        if matches!(conn, Reader::Pg(_)) {
            // Under the count's lock, so a reader between finding the pool
            // empty and waiting cannot miss this one.
            let (open, freed) = &self.inner.pg_readers;
            let _count = open.lock();
            if let Ok(mut pool) = self.inner.readers.lock() {
                pool.push(conn);
            }
            freed.notify_one();
            return;
        }
        if let Ok(mut pool) = self.inner.readers.lock()
            && pool.len() < MAX_IDLE_READERS
        {
            pool.push(conn);
        }
    }

    /// Runs `f` on a pooled read-only connection, in one read transaction
    /// (blocking).
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Db<'_>) -> Result<T>,
    {
        let reader = self.take_reader()?;
        // One read transaction: everything `f` reads is one snapshot, even
        // while the writer commits (an IMAP session's new mail, its flags
        // and its expunges agree with each other).
        let (conn, begin) = match &reader {
            Reader::Lite(c) => (Conn::Lite(c), "BEGIN"),
            Reader::Pg(c) => (
                Conn::Pg(c),
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            ),
        };
        let out = cached(conn, begin)
            .map_err(StoreError::from)
            .and_then(|()| {
                f(&Db {
                    conn,
                    node: &self.inner.node,
                })
            });
        let ended = cached(conn, "COMMIT").map_err(StoreError::from);
        let out = out.and_then(|v| ended.map(|()| v));
        // A connection that saw an I/O error is dropped rather than reused.
        let healthy = !matches!(out, Err(StoreError::Database(_))) && conn.is_autocommit();
        if healthy {
            self.return_reader(reader);
        } else if matches!(reader, Reader::Pg(_)) {
            drop(reader);
            self.pg_reader_gone();
        }
        out
    }

    /// Runs `f` on a pooled read-only connection without blocking the
    /// async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }

    /// Makes the next commit fail (tests of the 451 path).
    #[doc(hidden)]
    pub fn fail_next_commit(&self) {
        let _ = self.submit(WriterMsg::FailNextCommit);
    }

    /// Stops the writer after it has finished every queued job.
    pub fn close(&self) {
        if let Ok(mut w) = self.inner.writer.lock() {
            w.take();
        }
        let handle = self
            .inner
            .writer_thread
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        // The writer's end of the wake channel is gone with it: the
        // checkpointer finishes its last pass and stops.
        let checkpointer = self
            .inner
            .checkpointer
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(handle) = checkpointer {
            let _ = handle.join();
        }
        if let Some(listener) = self.inner.listener.lock().ok().and_then(|mut l| l.take()) {
            listener.stop();
        }
        if let Ok(mut pool) = self.inner.readers.lock() {
            pool.clear();
        }
        // The pooled readers are read-only and cannot remove the WAL when
        // the last of them closes; a read-write connection opened for it
        // can.
        if let (true, Backend::Lite { path }) = (self.inner.serving, &self.inner.backend) {
            match Connection::open(path) {
                Ok(conn) => truncate_wal(&conn),
                Err(e) => {
                    tracing::warn!(error = %e, "store: cannot open the database to truncate the WAL")
                }
            }
        }
    }
}

/// How often a process holding sessions open reads the 'credentials'
/// counter: the longest an IMAP IDLE or a JMAP push stream of a deactivated
/// user lives on.
pub const CREDENTIALS_POLL: Duration = Duration::from_millis(200);

/// Reads the 'credentials' counter into [`Inner::credentials`] until the
/// store is closed or dropped.
fn credentials_loop(inner: std::sync::Weak<Inner>) {
    loop {
        thread::sleep(CREDENTIALS_POLL);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let open = inner.writer.lock().map(|w| w.is_some()).unwrap_or(false);
        if !open {
            return;
        }
        let store = Store { inner };
        match store.read_blocking(users::credentials_counter) {
            Ok(n) => {
                if let Some(tx) = store.inner.credentials.get() {
                    tx.send_if_modified(|v| {
                        let moved = *v != n;
                        *v = n;
                        moved
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "store: cannot read the credentials counter"),
        }
    }
}

/// The writer's waiting jobs.
#[derive(Default)]
struct Queues {
    urgent: Vec<Job>,
    backlog: VecDeque<Job>,
    fail_next: bool,
}

impl Queues {
    fn take(&mut self, msg: WriterMsg) {
        match msg {
            WriterMsg::Job(j) => self.backlog.push_back(j),
            WriterMsg::Urgent(j) => self.urgent.push(j),
            WriterMsg::FailNextCommit => self.fail_next = true,
        }
    }

    fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.backlog.is_empty()
    }
}

/// The writer's side of the checkpointer.
struct Wal {
    /// Wakes the checkpointer after a commit (a full channel means it is
    /// already due to run).
    wake: mpsc::SyncSender<()>,
    /// Frames in the WAL at the checkpointer's last pass.
    frames: Arc<AtomicI64>,
}

impl Wal {
    fn committed(&self, conn: &Connection) {
        let _ = self.wake.try_send(());
        if self.frames.load(Ordering::Relaxed) < WAL_RESTART_FRAMES {
            return;
        }
        // The background checkpoint has copied nearly everything: copy the
        // rest now, between transactions, so the next one restarts the WAL.
        match passive_checkpoint(conn) {
            Ok((false, log, done)) if log == done => {
                self.frames.store(0, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "store: checkpoint failed"),
        }
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` without waiting on any lock: copies
/// the whole WAL into the database and cuts the file to zero bytes, unless
/// another connection is using it (then it copies what it can and leaves
/// the file).
fn truncate_wal(conn: &Connection) {
    if let Err(e) = conn.busy_timeout(Duration::ZERO) {
        tracing::warn!(error = %e, "store: cannot truncate the WAL");
        return;
    }
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?))
    }) {
        Ok((false, _)) => tracing::debug!("store: WAL checkpointed and truncated"),
        Ok((true, frames)) => {
            tracing::info!(frames, "store: the WAL is in use elsewhere; left as it is")
        }
        Err(e) => tracing::warn!(error = %e, "store: cannot truncate the WAL"),
    }
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "store: cannot restore the busy timeout");
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: (could not finish, frames in the WAL,
/// frames copied).
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(bool, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?))
    })
}

/// Copies committed WAL frames into the database file in the background, so
/// that commits only append to the WAL: SQLite's automatic checkpoint runs
/// inside the commit that crosses its threshold, and every caller of that
/// batch waited for it. A passive checkpoint never blocks the writer.
fn checkpoint_loop(conn: Connection, wake: mpsc::Receiver<()>, frames: Arc<AtomicI64>) {
    while wake.recv().is_ok() {
        let started = std::time::Instant::now();
        match passive_checkpoint(&conn) {
            Ok((_, log, _)) => frames.store(log, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "store: background checkpoint failed"),
        }
        if let Some(rest) = CHECKPOINT_INTERVAL.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
    }
    // Stopping: whatever the last commits left in the WAL.
    if let Err(e) = passive_checkpoint(&conn) {
        tracing::warn!(error = %e, "store: final checkpoint failed");
    }
}

/// The writer's connection: SQLite's with its checkpointer, or a
/// PostgreSQL session with where to open a new one.
enum WriterConn {
    Lite(Connection, Wal),
    Pg(Box<(PgConn, pg::Target)>),
}

impl WriterConn {
    /// A PostgreSQL session that is gone (the server restarted, the
    /// network failed) is replaced before the next batch; while the
    /// server cannot be reached every write fails (SMTP answers `451`)
    /// and the next batch tries again.
    fn reconnect_if_lost(&mut self) {
        if let WriterConn::Pg(session) = self
            && session.0.is_closed()
        {
            let (conn, target) = &mut **session;
            match target.connect() {
                Ok(client) => {
                    tracing::info!("store: the writer's PostgreSQL session is back");
                    *conn = PgConn::new(client);
                }
                Err(e) => {
                    tracing::error!(error = %e, "store: PostgreSQL is unreachable; writes fail until it is back")
                }
            }
        }
    }
}

fn writer_loop(
    mut writer: WriterConn,
    rx: mpsc::Receiver<WriterMsg>,
    commits: tokio::sync::watch::Sender<u64>,
) {
    // Other nodes wake their IMAP IDLE, JMAP push and live pages on this,
    // sent with every commit (see `pg::Listener`).
    let notify = match &writer {
        WriterConn::Lite(..) => None,
        WriterConn::Pg(session) => Some(pg::notify_sql(&session.1.node)),
    };
    let mut q = Queues::default();
    let mut open = true;
    loop {
        if q.is_empty() {
            if !open {
                break;
            }
            match rx.recv() {
                Ok(msg) => q.take(msg),
                Err(_) => break,
            }
        }
        // Everything already waiting.
        loop {
            match rx.try_recv() {
                Ok(msg) => q.take(msg),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if q.is_empty() {
            continue;
        }
        writer.reconnect_if_lost();
        let conn = match &writer {
            WriterConn::Lite(c, _) => Conn::Lite(c),
            WriterConn::Pg(session) => Conn::Pg(&session.0),
        };
        let mut batch = Batch::begin(conn);
        // Urgent writes first, then the backlog in order while the budget
        // lasts. An urgent write arriving meanwhile joins this batch and
        // ends it once the backlog has had its share (so neither side
        // starves during a burst).
        let started = std::time::Instant::now();
        loop {
            let urgent = !q.urgent.is_empty();
            for job in q.urgent.drain(..) {
                batch.run(job);
            }
            let elapsed = started.elapsed();
            if batch.len() >= MAX_BATCH
                || elapsed >= BATCH_BUDGET
                || (urgent && elapsed >= BACKLOG_SHARE)
            {
                break;
            }
            let Some(job) = q.backlog.pop_front() else {
                break;
            };
            batch.run(job);
            while let Ok(msg) = rx.try_recv() {
                q.take(msg);
            }
        }
        let committed = batch.finish(
            std::mem::take(&mut q.fail_next),
            notify.as_deref(),
            &commits,
        );
        if let (true, WriterConn::Lite(c, wal)) = (committed, &writer) {
            wal.committed(c);
        }
    }
    tracing::debug!("store writer stopped");
}

/// One transaction of the writer: jobs run one by one, each in its own
/// savepoint; `finish` commits and answers them all.
struct Batch<'c> {
    conn: Conn<'c>,
    /// Set when the transaction could not start or was lost: later jobs do
    /// not run and every job is answered with this error.
    broken: Option<StoreError>,
    completions: Vec<Completion>,
}

impl<'c> Batch<'c> {
    fn begin(conn: Conn<'c>) -> Batch<'c> {
        let broken = match cached(conn, "BEGIN IMMEDIATE") {
            Ok(()) => None,
            Err(e) => {
                let err = StoreError::from(e);
                tracing::error!(error = %err, "store: cannot begin a transaction");
                Some(err)
            }
        };
        Batch {
            conn,
            broken,
            completions: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.completions.len()
    }

    fn run(&mut self, job: Job) {
        let conn = self.conn;
        if self.broken.is_some() {
            // The batch transaction is gone: the rest do not run.
            let (_, completion) = job(None);
            self.completions.push(completion);
            return;
        }
        if let Err(e) = cached(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "store: cannot open a savepoint");
            let (_, completion) = job(None);
            self.completions.push(completion);
            return;
        }
        // A job that panics (a bug) must not take the writer thread, and
        // with it every later write, down: its work is rolled back and its
        // caller answered with an error.
        let (ok, completion) =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Some(conn)))) {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::error!("store: a write job panicked; its work is rolled back");
                    let err = StoreError::Database("the write failed (internal error)".into());
                    let answer: Completion = Box::new(move |_| drop(err));
                    (false, answer)
                }
            };
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back by itself (a full
            // disk, an I/O error): nothing of this batch is kept.
            self.broken = Some(StoreError::Database(
                "the transaction was rolled back by the database (disk full or I/O error)".into(),
            ));
            self.completions.push(completion);
            return;
        }
        let end = if ok {
            cached(conn, "RELEASE job")
        } else {
            cached(conn, "ROLLBACK TO job").and_then(|()| cached(conn, "RELEASE job"))
        };
        if let Err(e) = end {
            tracing::error!(error = %e, "store: savepoint failed");
        }
        self.completions.push(completion);
    }

    /// Commits; true when it did.
    /// Commits and answers every job. On success the commit signal moves
    /// *before* the callers are answered, so whoever learns of a write (an
    /// IMAP NOOP after another session's STORE, a JMAP push) always sees
    /// the counter moved.
    fn finish(
        self,
        fail_commit: bool,
        notify: Option<&str>,
        commits: &tokio::sync::watch::Sender<u64>,
    ) -> bool {
        let Batch {
            conn,
            broken,
            completions,
        } = self;
        if let Some(e) = broken {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            tracing::error!(error = %e, "store: batch lost");
            completions.into_iter().for_each(|c| c(Some(&e)));
            return false;
        }
        let commit = if fail_commit {
            let _ = conn.execute_batch("ROLLBACK");
            Err(StoreError::Database(
                "commit refused (injected fault)".into(),
            ))
        } else {
            notify
                .map_or(Ok(()), |sql| cached(conn, sql))
                .and_then(|()| cached(conn, "COMMIT"))
                .map_err(StoreError::from)
        };
        match commit {
            Ok(()) => {
                commits.send_modify(|n| *n = n.wrapping_add(1));
                completions.into_iter().for_each(|c| c(None));
                true
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                tracing::error!(error = %e, "store: commit failed; batch rolled back");
                completions.into_iter().for_each(|c| c(Some(&e)));
                false
            }
        }
    }
}

/// Runs a statement without result rows through the statement cache: the
/// writer runs BEGIN/SAVEPOINT/RELEASE/COMMIT for every job, and parsing
/// them each time was a visible share of its time.
fn cached(conn: Conn<'_>, sql: &str) -> rusqlite::Result<()> {
    match conn {
        Conn::Lite(c) => c.prepare_cached(sql)?.execute([]).map(|_| ()),
        // Transaction control goes by the simple protocol, which keeps
        // track of the transaction it opens or ends.
        Conn::Pg(_) => conn.execute_batch(sql),
    }
}

/// Reads an optional row: `Ok(None)` instead of `NotFound`.
pub fn optional<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a setting (JSON value) by key.
pub fn get_setting(db: &Db<'_>, key: &str) -> Result<Option<serde_json::Value>> {
    let text: Option<String> = optional(
        db.conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .map_err(StoreError::from),
    )?;
    text.map(|t| serde_json::from_str(&t).map_err(StoreError::from))
        .transpose()
}

/// Writes a setting (a JSON text) unless it is set.
pub fn put_setting_if_absent(db: &Db<'_>, key: &str, json: &str) -> Result<()> {
    db.conn().execute(
        "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
        [key, json],
    )?;
    Ok(())
}

/// Writes a setting (JSON value).
pub fn put_setting(db: &Db<'_>, key: &str, value: &serde_json::Value) -> Result<()> {
    db.conn().execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        rusqlite::params![key, value.to_string()],
    )?;
    Ok(())
}
