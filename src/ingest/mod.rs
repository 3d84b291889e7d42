//! Ingest pipeline: parse (mail-parser) → classify (auto-reply, bounce) →
//! visible reply → authenticate (SPF/DKIM/DMARC/ARC) → route (pure) →
//! persist with effects, in one transaction per message.
//!
//! The worker drains `inbound_queue` in arrival order. Preparation (parsing,
//! DNS) runs concurrently for a window of messages across batches (see
//! [`pipeline`]); the writes are queued to the store's writer in order, so a
//! message sees every earlier one (a reply arriving right behind the message
//! it answers threads on it). Each write marks its queue row done in the
//! same transaction, and skips rows already done: a crash at any point and a
//! restart give the same final state.

pub mod agent_reply;
pub mod apply;
pub mod auth;
pub mod classify;
pub mod forwarding;
pub mod parse;
pub mod pipeline;
pub mod pool;
pub mod route;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics;
use crate::model::now_ms;
use crate::reply_text;
use crate::shutdown::Shutdown;
use crate::store::inbound::{self, InboundMessage};
use crate::store::view::{self, Placement};
use crate::store::{Result, Store};
use apply::{Applied, Prepared};
use auth::Authenticator;

/// Messages prepared together, and their raw size at most (a single larger
/// message still goes alone).
pub(crate) const BATCH: usize = 64;
pub(crate) const BATCH_BYTES: usize = 64 * 1024 * 1024;
/// After this many failed attempts a message is stored whole as unrouted
/// (flag `ingest_error`) rather than retried forever: nothing is dropped.
const MAX_ATTEMPTS: i64 = 3;

/// Prepares one queued message: everything that needs no transaction.
/// Fails only if parsing panicked (a library bug); the message then stays
/// queued for a retry and, past the limit, is kept unparsed.
pub async fn prepare(
    m: InboundMessage,
    authenticator: Option<Authenticator>,
    domain: String,
) -> std::result::Result<Prepared, String> {
    let gateway = domain.clone();
    let parsed = tokio::task::spawn_blocking(move || parse_one(m, &gateway))
        .await
        .map_err(|e| format!("parsing failed: {e}"))??;
    Ok(authenticate(parsed, authenticator.as_ref(), &domain).await)
}

/// The CPU part of preparing a message (parse, classify, visible reply);
/// runs on the blocking pool. A panic inside (a library bug) fails this
/// message only.
fn parse_one(m: InboundMessage, domain: &str) -> std::result::Result<Prepared, String> {
    let InboundMessage {
        id,
        envelope,
        raw,
        sha256,
        ..
    } = m;
    let work = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let parsed = parse::parse(&raw);
        let kind = classify::classify(&raw, &envelope.mail_from, &envelope.rcpts, domain);
        let visible = match (&parsed.text, &parsed.html) {
            (Some(text), _) if !text.trim().is_empty() => Some(reply_text::visible_text(text)),
            (_, Some(html)) => Some(reply_text::visible_html(html)),
            (Some(text), None) => Some(text.trim().to_string()),
            (None, None) => None,
        };
        // Whether the visible reply can be stored as NULL (see
        // `Prepared::visible_is_plain`): decided here, on a parser thread.
        let plain = match (&visible, &parsed.text) {
            (Some(v), Some(t)) => crate::store::messages::plain_visible(t) == *v,
            _ => false,
        };
        let agent = agent_reply::may_be_for_agent(&envelope.rcpts, domain)
            .then(|| Box::new(crate::conversations::agent_mail::parse(&raw)));
        (parsed, kind, visible, plain, agent)
    }));
    let (parsed, kind, visible, visible_is_plain, agent) =
        work.map_err(|_| "parsing failed: the parser panicked".to_string())?;
    Ok(Prepared {
        inbound_id: id,
        envelope,
        raw,
        sha256,
        parsed,
        kind,
        visible_reply: visible,
        visible_is_plain,
        auth: None,
        agent,
    })
}

/// The network part of preparing a message: SPF, DKIM, DMARC and ARC.
async fn authenticate(
    mut p: Prepared,
    authenticator: Option<&Authenticator>,
    domain: &str,
) -> Prepared {
    if let Some(a) = authenticator {
        let ip = p
            .envelope
            .peer_ip
            .parse()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        p.auth = Some(
            a.authenticate(&p.raw, ip, &p.envelope.helo, &p.envelope.mail_from, domain)
                .await,
        );
    }
    p
}

/// A queued write: the answer of the store's writer.
type PendingWrite = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied>> + Send>>;

/// The queued writes of a prepared batch: (queue id, attempts so far,
/// the answer of its write).
type InFlight = Vec<(i64, i64, PendingWrite)>;

/// The ingest worker of one gateway.
pub struct Worker {
    config: Arc<Config>,
    store: Store,
    authenticator: Option<Authenticator>,
    committed: Arc<Notify>,
    /// Woken when a stored bounce may have queued an agent's notification.
    outbox: Option<Arc<Notify>>,
    parsers: pool::ParsePool,
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        committed: Arc<Notify>,
    ) -> anyhow::Result<Worker> {
        let authenticator = if config.ingest_authenticate {
            Some(Authenticator::new(&config.dns)?)
        } else {
            None
        };
        metrics::describe(
            "ingest_messages_total",
            "Inbound messages ingested, by route rule",
        );
        metrics::describe("ingest_failures_total", "Failed ingest attempts");
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Worker {
            config,
            store,
            authenticator,
            committed,
            outbox: None,
            parsers: pool::ParsePool::new(threads)?,
        })
    }

    /// Wakes `outbox` (the outbox worker) after storing a bounce: telling
    /// the agent of it queues mail.
    pub fn waking_outbox(mut self, outbox: Arc<Notify>) -> Worker {
        self.outbox = Some(outbox);
        self
    }

    /// Runs [`Worker::run`] on a thread of its own, with its own (single
    /// thread) runtime, below the priority of the listeners (see [`pool`]):
    /// preparing accepted mail (reading it back, DNS for SPF/DKIM/DMARC,
    /// parsing) takes what CPU answering clients leaves. The future
    /// resolves when the worker has stopped.
    pub fn spawn(
        self,
        shutdown: Shutdown,
    ) -> std::io::Result<impl std::future::Future<Output = anyhow::Result<()>> + Send + use<>> {
        let (done, stopped) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                pool::lower_priority();
                let outcome = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("ingest-io")
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| rt.block_on(self.run(shutdown)));
                let _ = done.send(outcome);
            })?;
        Ok(async move {
            stopped
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the ingest thread stopped abnormally")))
        })
    }

    /// Mail another node accepted before this time (ms) and left queued
    /// is threaded here too (that node stopped; `[store] takeover_after`).
    fn orphaned_before(&self) -> i64 {
        let after = i64::try_from(self.config.store.takeover_after.as_millis()).unwrap_or(i64::MAX);
        crate::model::now_ms().saturating_sub(after)
    }

    /// Processes one batch of queued messages; returns how many it took.
    pub async fn drain_once(&self) -> Result<usize> {
        let orphaned = self.orphaned_before();
        let batch = self
            .store
            .read(move |c| inbound::pending(c, orphaned, BATCH, BATCH_BYTES))
            .await?;
        let n = batch.len();
        if n == 0 {
            return Ok(0);
        }
        let in_flight = self.start(batch).await?;
        self.settle(in_flight).await?;
        Ok(n)
    }

    /// Prepares a batch and queues its writes; [`Worker::settle`] then
    /// waits for them.
    async fn start(&self, batch: Vec<InboundMessage>) -> Result<InFlight> {
        let n = batch.len();
        let ids: Vec<(i64, i64)> = batch.iter().map(|m| (m.id, m.attempts)).collect();
        let parsed = self.parse_batch(batch).await?;
        let preparing: Vec<_> = ids
            .into_iter()
            .zip(parsed)
            .map(|((id, attempts), result)| (id, attempts, self.authenticate_task(result)))
            .collect();
        let mut pending: InFlight = Vec::with_capacity(n);
        for (id, attempts, task) in preparing {
            match task.await {
                Ok(Ok(prepared)) => {
                    let config = self.config.clone();
                    let fut = self
                        .store
                        .submit_write(move |c| apply::apply(c, &config, &prepared))?;
                    pending.push((id, attempts, Box::pin(fut)));
                }
                Ok(Err(e)) => self.failed(id, attempts, &e).await?,
                Err(e) => self.failed(id, attempts, &format!("prepare: {e}")).await?,
            }
        }
        Ok(pending)
    }

    /// Parses and classifies a batch on the parser threads (see `pool`:
    /// below the SMTP listener's priority) in two chunks rather than one
    /// task per message: fewer thread hand-offs. One result per message, in
    /// order.
    async fn parse_batch(
        &self,
        batch: Vec<InboundMessage>,
    ) -> Result<Vec<std::result::Result<Prepared, String>>> {
        let n = batch.len();
        let half = n.div_ceil(2);
        let mut chunks = Vec::new();
        let mut rest = batch;
        while !rest.is_empty() {
            let tail = rest.split_off(half.min(rest.len()));
            let chunk = std::mem::replace(&mut rest, tail);
            let domain = self.config.domain.clone();
            chunks.push(self.parsers.submit(move || {
                chunk
                    .into_iter()
                    .map(|m| parse_one(m, &domain))
                    .collect::<Vec<_>>()
            }));
        }
        let mut parsed = Vec::with_capacity(n);
        for chunk in chunks {
            match chunk.await {
                Some(results) => parsed.extend(results),
                // parse_one catches panics; a chunk fails only if the
                // worker is going away. Its messages stay queued.
                None => {
                    return Err(crate::store::StoreError::Database(
                        "prepare: the parser threads are gone".into(),
                    ));
                }
            }
        }
        Ok(parsed)
    }

    /// Starts the network part of preparing a parsed message (SPF, DKIM,
    /// DMARC, ARC) as a task of its own, bounded by the authenticator's
    /// timeout.
    fn authenticate_task(
        &self,
        parsed: std::result::Result<Prepared, String>,
    ) -> tokio::task::JoinHandle<std::result::Result<Prepared, String>> {
        let authenticator = self.authenticator.clone();
        let domain = self.config.domain.clone();
        tokio::spawn(async move {
            match parsed {
                Ok(p) => Ok(authenticate(p, authenticator.as_ref(), &domain).await),
                Err(e) => Err(e),
            }
        })
    }

    /// Waits for the writes of a batch and accounts for them.
    async fn settle(&self, pending: InFlight) -> Result<()> {
        for (id, attempts, fut) in pending {
            self.account(id, attempts, fut.await).await?;
        }
        Ok(())
    }

    /// Accounts for the answer of one message's write.
    async fn account(&self, id: i64, attempts: i64, applied: Result<Applied>) -> Result<()> {
        match applied {
            Ok(Applied::Stored { message, rule }) => {
                metrics::inc("ingest_messages_total", &[("rule", rule)]);
                tracing::info!(queue_id = id, message_id = message, rule, "ingested");
                // A bounce may tell an agent; an agent's reply is sent
                // on, or they are told why not.
                if (rule == "bounce" || rule == "agent_reply")
                    && let Some(outbox) = &self.outbox
                {
                    outbox.notify_one();
                }
            }
            Ok(Applied::Duplicate { of }) => {
                metrics::inc("ingest_messages_total", &[("rule", "duplicate")]);
                tracing::info!(
                    queue_id = id,
                    duplicate_of = of,
                    "duplicate delivery stored once"
                );
            }
            Ok(Applied::AlreadyDone) => {}
            Err(e) => self.failed(id, attempts, &e.to_string()).await?,
        }
        Ok(())
    }

    async fn failed(&self, id: i64, attempts: i64, error: &str) -> Result<()> {
        metrics::inc("ingest_failures_total", &[]);
        tracing::error!(
            queue_id = id,
            attempts = attempts + 1,
            error,
            "ingest failed"
        );
        let error = error.to_string();
        if attempts + 1 >= MAX_ATTEMPTS {
            // Last resort for a message the pipeline keeps failing on: keep
            // it whole with the unrouted mail, flagged, so an admin sees it.
            self.store
                .write(move |db| {
                    if let Some(message) = inbound::give_up(db, id, &error, now_ms())? {
                        view::add_message(db, message, Placement::Unrouted)?;
                    }
                    Ok(())
                })
                .await
        } else {
            self.store
                .write(move |db| inbound::count_failure(db, id, &error))
                .await
        }
    }
}
