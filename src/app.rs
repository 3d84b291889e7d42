//! Wiring: opens the store, binds the listeners, runs every service until
//! shutdown. [`start`] runs the real server in-process for tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::http::listener::{ClientAddr, LimitedListener};
use crate::http::{self, AppState};
use crate::model::Role;
use crate::shutdown::Shutdown;
use crate::smtp;
use crate::store::{self, Store, StoreError};
use crate::{api, console, jmap, portal};

/// Addresses actually bound (ports may have been `0`); the `--ready-file`
/// JSON.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct BoundAddrs {
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    pub imap: SocketAddr,
    /// The submission listener (`submission.listen`); absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission: Option<SocketAddr>,
    /// The metrics listener (`http.metrics_listen`); absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

/// The HTTP doors on one router: the API, the vendor portal and JMAP,
/// with the layers every request goes through.
pub fn http_router(state: AppState, shutdown: Shutdown) -> axum::Router {
    let routes = api::routes()
        .merge(portal::routes(state.clone()))
        .merge(console::routes(
            shutdown.clone(),
            state.config.console.max_upload_bytes,
        ))
        .merge(jmap::routes(jmap::Shared::new(shutdown)));
    http::finish(routes, state)
}

/// The bound listeners, for [`start_with`].
pub struct Listeners {
    pub smtp: TcpListener,
    pub http: TcpListener,
    pub imap: TcpListener,
    /// `None` when `submission.listen` is empty.
    pub submission: Option<TcpListener>,
    /// `None` when `http.metrics_listen` is empty.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            smtp: TcpListener::bind(config.smtp.listen)
                .await
                .with_context(|| format!("bind SMTP on {}", config.smtp.listen))?,
            http: TcpListener::bind(config.http.listen)
                .await
                .with_context(|| format!("bind HTTP on {}", config.http.listen))?,
            imap: TcpListener::bind(config.imap.listen)
                .await
                .with_context(|| format!("bind IMAP on {}", config.imap.listen))?,
            submission: match config.submission.listen {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("bind submission on {addr}"))?,
                ),
                None => None,
            },
            metrics: match config.http.metrics_listen {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("bind metrics on {addr} (http.metrics_listen)"))?,
                ),
                None => None,
            },
        })
    }
}

/// A running gateway.
pub struct Running {
    pub addrs: BoundAddrs,
    pub store: Store,
    /// The side-conversation service the HTTP API uses.
    pub conversations: crate::conversations::Conversations,
    /// Wakes the outbox worker: whoever queues outbox rows calls
    /// `notify_one()` once that write has committed.
    pub outbound_wake: Arc<tokio::sync::Notify>,
    /// The per-address abuse limiters (SMTP, API, portal; `imap_login` for
    /// the IMAP listener).
    pub limits: Arc<crate::limits::Limits>,
    trigger: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Asks every service to stop and waits for them.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.trigger.send(true);
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "service stopped with an error");
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    tracing::error!(error = %e, "service task failed");
                    first_error.get_or_insert(e.into());
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Binds the configured addresses and starts every service.
pub async fn start(config: Config, store: Store) -> anyhow::Result<Running> {
    let listeners = Listeners::bind(&config).await?;
    start_with(config, store, listeners).await
}

/// Starts every service on already-bound listeners.
pub async fn start_with(
    config: Config,
    store: Store,
    listeners: Listeners,
) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let addrs = BoundAddrs {
        smtp: listeners.smtp.local_addr()?,
        http: listeners.http.local_addr()?,
        imap: listeners.imap.local_addr()?,
        submission: listeners
            .submission
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
        metrics: listeners
            .metrics
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
    };
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = JoinSet::new();

    crate::metrics::export_config_limits(&config);
    let limits = crate::limits::Limits::new(&config);
    let committed = Arc::new(tokio::sync::Notify::new());
    let outbound_wake = Arc::new(tokio::sync::Notify::new());
    let conversations = crate::conversations::Conversations::new(
        config.clone(),
        store.clone(),
        outbound_wake.clone(),
    );
    let smtp_server = smtp::Server::new(
        config.clone(),
        store.clone(),
        committed.clone(),
        limits.clone(),
    )?;
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { smtp_server.run(listeners.smtp, shutdown).await });
    }

    let imap_server = crate::imap::Server::new(config.clone(), store.clone(), limits.clone())?;
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { imap_server.run(listeners.imap, shutdown).await });
    }

    if let Some(listener) = listeners.submission {
        let server = smtp::submission::SubmissionServer::new(
            config.clone(),
            store.clone(),
            conversations.clone(),
            limits.clone(),
        )?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move { server.run(listener, shutdown).await });
    }

    let worker = crate::ingest::Worker::new(config.clone(), store.clone(), committed.clone())?
        .waking_outbox(outbound_wake.clone());
    {
        let stopped = worker.spawn(shutdown.clone())?;
        tasks.spawn(stopped);
    }

    let outbox = crate::outbound::worker::Worker::new(
        config.clone(),
        store.clone(),
        outbound_wake.clone(),
        Arc::new(crate::conversations::DeliveryOutcomes::new(config.clone())),
    )?;
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { outbox.run(shutdown).await });
    }

    {
        let (config, store, wake) = (config.clone(), store.clone(), outbound_wake.clone());
        tasks.spawn(while_leading(
            store.clone(),
            shutdown.clone(),
            move |shutdown| {
                crate::notifications::Worker::new(config.clone(), store.clone(), wake.clone())
                    .run(shutdown)
            },
        ));
    }

    if config.webhooks.deliver {
        let webhook_waker = Arc::new(tokio::sync::Notify::new());
        let webhooks = crate::webhooks::Worker::new(config.clone(), store.clone(), webhook_waker)?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move { webhooks.run(shutdown).await });
    } else {
        tracing::warn!("webhooks.deliver is off: events are queued, not sent");
    }

    let resolver = crate::senders::dns::Resolver::new(&config.dns)?;
    {
        let (store, config, resolver, shutdown) = (
            store.clone(),
            config.clone(),
            resolver.clone(),
            shutdown.clone(),
        );
        let interval = config.senders.recheck_interval;
        tasks.spawn(while_leading(store.clone(), shutdown, move |shutdown| {
            crate::senders::service::scheduler(
                store.clone(),
                config.clone(),
                resolver.clone(),
                interval,
                shutdown,
            )
        }));
    }

    {
        // Reminders (SPEC §15), at the system clock's time.
        let (conversations, shutdown) = (conversations.clone(), shutdown.clone());
        let clock: crate::conversations::reminders::Clock =
            std::sync::Arc::new(crate::model::now_ms);
        tasks.spawn(while_leading(store.clone(), shutdown, move |shutdown| {
            reminder_scheduler(
                conversations.clone(),
                clock.clone(),
                crate::conversations::reminders::EVERY,
                shutdown,
            )
        }));
    }

    let (http_max, http_idle) = (config.http.max_connections, config.http.idle_timeout);
    let http_per_ip = limits.http_connections.clone();
    let state = AppState {
        store: store.clone(),
        config: config.clone(),
        conversations: conversations.clone(),
        resolver,
        limits: limits.clone(),
    };
    let router = http_router(state, shutdown.clone());
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(
                LimitedListener::new(listeners.http, http_max, http_idle)
                    .with_per_ip_cap(http_per_ip),
                router.into_make_service_with_connect_info::<ClientAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .context("HTTP server")
        });
    }

    if let Some(listener) = listeners.metrics {
        let state = http::scrape::ScrapeState {
            store: store.clone(),
            limits: limits.clone(),
        };
        let shutdown = shutdown.clone();
        tasks.spawn(http::scrape::serve(listener, state, http_idle, shutdown));
    }

    let metrics_addr = addrs
        .metrics
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    let submission_addr = addrs
        .submission
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(smtp = %addrs.smtp, http = %addrs.http, imap = %addrs.imap, submission = %submission_addr, metrics = %metrics_addr, domain = %config.domain, "listening");
    Ok(Running {
        addrs,
        store,
        conversations,
        outbound_wake,
        limits,
        trigger,
        tasks,
    })
}

/// Creates the first owner (`admin@<domain>`) when the store has no users,
/// and logs its token once.
pub async fn ensure_first_owner(store: &Store, domain: &str) -> anyhow::Result<()> {
    let email = format!("admin@{domain}");
    let created = store
        .write(move |c| {
            if store::users::count(c)? > 0 {
                return Ok(None);
            }
            // Two nodes of one PostgreSQL store starting together: the
            // second finds the first's owner (a unique email) and goes on.
            match c.savepoint(|c| store::users::create(c, &email, "Owner", Role::Owner)) {
                Ok(created) => Ok(Some(created)),
                Err(StoreError::Conflict(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
    if let Some((user, token)) = created {
        tracing::warn!(
            email = %user.email,
            token = token.as_str(),
            "created the first owner; this API token is shown only once"
        );
    }
    Ok(())
}

/// `backchannel serve`: runs until SIGINT/SIGTERM, then shuts down cleanly.
///
/// Before anything else it takes the data dir's lock (one `serve` per
/// SQLite data dir, SPEC §2): a second `serve` stops here with an error
/// naming the holder, having bound nothing and started no worker.
pub async fn serve(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let configured = listen_map(
        config.smtp.listen,
        config.http.listen,
        config.imap.listen,
        config.submission.listen,
        config.http.metrics_listen,
    );
    // SQLite: one `serve` per data dir. PostgreSQL: any number of nodes
    // share the database (SPEC §13); nothing to lock here.
    let lock = if config.store.url.is_empty() {
        Some(store::lock::DataDirLock::acquire(
            &config.db_path(),
            &store::lock::Holder::this_process(configured),
        )?)
    } else {
        None
    };
    let store =
        Store::open_location(&config.db_path(), &config.store.url, true).with_context(|| {
            if config.store.url.is_empty() {
                format!("open database {}", config.db_path().display())
            } else {
                "open the PostgreSQL store ([store] url)".to_owned()
            }
        })?;
    ensure_first_owner(&store, &config.domain).await?;
    let running = start(config, store.clone()).await?;
    let a = running.addrs;
    let bound = store::lock::Holder::this_process(listen_map(
        a.smtp,
        a.http,
        a.imap,
        a.submission,
        a.metrics,
    ));
    if let Some(lock) = &lock
        && let Err(e) = lock.record(&bound)
    {
        tracing::warn!(path = %lock.path().display(), error = %e, "cannot record the bound addresses in the lock file");
    }
    if let Some(path) = ready_file {
        write_ready_file(&path, &running.addrs)?;
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    let result = running.shutdown().await;
    store.close();
    tracing::info!("stopped");
    drop(lock);
    result
}

/// Listener name → address, for the data dir lock.
fn listen_map(
    smtp: SocketAddr,
    http: SocketAddr,
    imap: SocketAddr,
    submission: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::from([
        ("smtp".to_string(), smtp.to_string()),
        ("http".to_string(), http.to_string()),
        ("imap".to_string(), imap.to_string()),
    ]);
    if let Some(s) = submission {
        map.insert("submission".to_string(), s.to_string());
    }
    if let Some(m) = metrics {
        map.insert("metrics".to_string(), m.to_string());
    }
    map
}

fn write_ready_file(path: &Path, addrs: &BoundAddrs) -> anyhow::Result<()> {
    // Written to a temporary name and renamed, so a reader never sees half.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(addrs)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a scheduled job (`job(shutdown)`) while this node is the one that
/// runs them ([`Store::leader`]; always with SQLite). When another node
/// takes over (this one lost its database session), the job is stopped
/// between its steps — each of its writes is one transaction — and started
/// again once this node leads again.
pub async fn while_leading<F, Fut>(
    store: Store,
    shutdown: crate::shutdown::Shutdown,
    job: F,
) -> anyhow::Result<()>
where
    F: Fn(crate::shutdown::Shutdown) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut leader = store.leader();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            led = leader.wait_for(|l| *l) => {
                if led.is_err() {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            done = job(shutdown.clone()) => return done,
            _ = leader.wait_for(|l| !*l) => {
                tracing::info!("scheduled job paused: another node runs scheduled jobs now");
            }
        }
    }
}

/// Gives due reminders (SPEC §15) every `every`, at `clock()`'s time,
/// until shutdown; a test moves the clock (or calls
/// `Conversations::remind_due` with its own time) instead of sleeping.
pub async fn reminder_scheduler(
    conversations: crate::conversations::Conversations,
    clock: crate::conversations::reminders::Clock,
    every: std::time::Duration,
    shutdown: crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(every) => {
                if let Err(e) = conversations.remind_due(clock()).await {
                    tracing::warn!(error = %e, "reminders: a pass failed; the next one tries again");
                }
            }
        }
    }
}
