//! The outbox worker: takes due recipient rows, delivers each through the
//! configured mode, records the outcome, and reconciles at start what a
//! crash interrupted.
//!
//! Each attempt is marked first — `sending`, attempts + 1, last_attempt_at,
//! committed — and only then sent, under a hard timeout; the outcome is
//! recorded afterwards: `sent`, `deferred` (next attempt from the retry
//! schedule, last error) or `failed` (permanent error, or past `max_age`).
//! At most [`MAX_SENDS`] sends run at once.
//!
//! Rows a previous run left in `sending` are settled before anything else:
//! in mode maildir a file carrying the row's VERP key in `sent/new` or
//! `sent/cur` means it was delivered (`sent`), otherwise the row is queued
//! again; in modes relay and mx the row is queued again for an immediate
//! retry. Delivery is therefore at least once: a crash between a remote
//! 250 and our commit may repeat one delivery; none is ever lost.
//!
//! Recording an outcome calls the [`Outcomes`] hook in the same write when
//! the row changed: `sent` → [`Outcomes::delivered`], `failed` →
//! [`Outcomes::failed`] (the domain's events, activity and notification,
//! SPEC §5). A row settled as `sent` at start goes through the same hook.
//!
//! Composition wakes the worker through the `Arc<Notify>` given to
//! [`Worker::new`] (`notify_one` after its write committed); without a
//! wake-up the worker still looks again when the next row is due.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::deliver::{self, Deliver, Outgoing};
use super::retry::{self, Class, DeliveryError};
use crate::config::Config;
use crate::metrics;
use crate::model::now_ms;
use crate::shutdown::Shutdown;
use crate::store::outbox::{self, Claimed};
use crate::store::{Db, Result, Store, StoreError};

/// Sends in flight at most.
pub const MAX_SENDS: usize = 8;
/// Longest sleep without a wake-up, so a missed one costs little.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// How long sends in flight may finish at shutdown before they are cut off
/// (their rows stay `sending` and are settled at the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a store error before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Attempts at recording an outcome before leaving the row to the restart.
const RECORD_TRIES: usize = 5;

/// What else recording a delivery outcome writes (in the same
/// transaction as the row's new state); the rules live with the
/// conversations, which this module may not name.
pub trait Outcomes: Send + Sync + 'static {
    /// Row `outbox_id` was just marked `sent`.
    fn delivered(&self, db: &Db<'_>, outbox_id: i64, now: i64) -> Result<()>;
    /// Row `outbox_id` was just marked `failed` with `diagnostic`.
    fn failed(&self, db: &Db<'_>, outbox_id: i64, diagnostic: &str, now: i64) -> Result<()>;
}

/// The outbox worker of one gateway.
pub struct Worker {
    config: Arc<Config>,
    store: Store,
    wake: Arc<Notify>,
    deliverer: Arc<dyn Deliver>,
    outcomes: Arc<dyn Outcomes>,
}

impl Worker {
    /// A worker for `outbound.mode`; `wake` is notified by composition when
    /// it queued rows; `outcomes` is told of every final outcome.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        wake: Arc<Notify>,
        outcomes: Arc<dyn Outcomes>,
    ) -> anyhow::Result<Worker> {
        let deliverer = deliver::from_config(&config)?;
        Ok(Self::with_deliverer(
            config, store, wake, deliverer, outcomes,
        ))
    }

    /// A worker with a given delivery mode.
    pub fn with_deliverer(
        config: Arc<Config>,
        store: Store,
        wake: Arc<Notify>,
        deliverer: Arc<dyn Deliver>,
        outcomes: Arc<dyn Outcomes>,
    ) -> Worker {
        metrics::describe(
            "outbound_deliveries_total",
            "Outbound delivery attempts, by result (sent, deferred, failed)",
        );
        metrics::describe(
            "outbox_queue_depth",
            "Outbox recipient rows not yet sent or given up",
        );
        Worker {
            config,
            store,
            wake,
            deliverer,
            outcomes,
        }
    }

    /// Runs until shutdown.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        loop {
            match self.reconcile().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "outbound: cannot settle interrupted sends; retrying");
                    tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        _ = tokio::time::sleep(STORE_RETRY) => {}
                    }
                }
            }
        }
        let mut sends: JoinSet<()> = JoinSet::new();
        // With several nodes, one that died mid-send leaves rows in
        // `sending`: once their lease ran out they are settled here.
        let mut last_takeover = std::time::Instant::now();
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if self.store.is_shared()
                && last_takeover.elapsed() >= self.config.store.takeover_scan()
            {
                last_takeover = std::time::Instant::now();
                if let Err(e) = self.reconcile().await {
                    tracing::warn!(error = %e, "outbound: cannot take over another node's sends; retrying later");
                }
            }
            let wait = match self.fill(&mut sends).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(error = %e, "outbound: store error; retrying shortly");
                    STORE_RETRY
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.wake.notified() => {}
                Some(joined) = sends.join_next(), if !sends.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "outbound: send task failed");
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let grace = SHUTDOWN_GRACE.min(self.config.outbound.send_timeout);
        let drain = async { while sends.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                in_flight = sends.len(),
                "outbound: cutting off sends at shutdown; they are settled at the next start"
            );
            sends.abort_all();
            while sends.join_next().await.is_some() {}
        }
        Ok(())
    }

    /// Settles the rows a previous run left in `sending`.
    async fn reconcile(&self) -> Result<()> {
        let now = now_ms();
        let rows = self.store.read(move |c| outbox::in_flight(c, now)).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = rows.iter().map(|r| r.verp_key.clone()).collect();
        let delivered = self
            .deliverer
            .delivered(&keys)
            .await
            .map_err(|e| StoreError::Database(format!("checking earlier deliveries: {e}")))?;
        let outcomes = self.outcomes.clone();
        let (sent, requeued) = self
            .store
            .write(move |c| {
                let (mut sent, mut requeued) = (0, 0);
                for row in rows {
                    if delivered.contains(&row.verp_key) {
                        if outbox::mark_sent(c, row.id, now)? {
                            outcomes.delivered(c, row.id, now)?;
                            sent += 1;
                        }
                    } else {
                        requeued += usize::from(outbox::requeue(c, row.id, now)?);
                    }
                }
                Ok((sent, requeued))
            })
            .await?;
        tracing::info!(
            sent,
            requeued,
            "outbound: settled sends interrupted by the last stop"
        );
        Ok(())
    }

    /// Starts sends for due rows while there is room; returns how long to
    /// wait before looking again (unless woken earlier). The outbox is only
    /// written to when a row is due.
    async fn fill(&self, sends: &mut JoinSet<()>) -> Result<Duration> {
        loop {
            let (depth, next_due) = self
                .store
                .read(|c| Ok((outbox::queue_depth(c)?, outbox::next_due(c)?)))
                .await?;
            metrics::gauge_set("outbox_queue_depth", &[], depth);
            let free = MAX_SENDS.saturating_sub(sends.len());
            if free == 0 {
                // Only a finished send makes room.
                return Ok(IDLE_POLL);
            }
            let now = now_ms();
            let Some(due) = next_due else {
                return Ok(IDLE_POLL);
            };
            if due > now {
                let ms = u64::try_from(due - now).unwrap_or(u64::MAX);
                return Ok(Duration::from_millis(ms).min(IDLE_POLL));
            }
            let lease_until = now + lease_ms(&self.config);
            let claimed = self
                .store
                .write(move |c| outbox::claim_due(c, now, free, lease_until))
                .await?;
            if claimed.is_empty() {
                // Taken meanwhile, or due by a clock that moved back.
                return Ok(Duration::from_millis(10));
            }
            for row in claimed {
                let store = self.store.clone();
                let config = self.config.clone();
                let deliverer = self.deliverer.clone();
                let outcomes = self.outcomes.clone();
                sends.spawn(attempt(store, config, deliverer, outcomes, row));
            }
        }
    }
}

/// How long a claimed row is leased: one attempt cannot take longer than
/// `send_timeout`; `[store] takeover_after` covers recording its outcome.
fn lease_ms(config: &Config) -> i64 {
    i64::try_from((config.outbound.send_timeout + config.store.takeover_after).as_millis())
        .unwrap_or(i64::MAX / 2)
}

/// One delivery attempt of one claimed row, from reading the message to
/// recording the outcome.
#[tracing::instrument(skip_all, fields(outbox_id = row.id, recipient = %row.recipient, attempt = row.attempts))]
async fn attempt(
    store: Store,
    config: Arc<Config>,
    deliverer: Arc<dyn Deliver>,
    outcomes: Arc<dyn Outcomes>,
    row: Claimed,
) {
    let (outbox_id, message_id) = (row.id, row.message_id);
    let outcome = match store
        .read(move |c| outbox::raw(c, outbox_id, message_id))
        .await
    {
        Ok(raw) => {
            let message = Outgoing {
                verp_key: row.verp_key.clone(),
                recipient: row.recipient.clone(),
                raw,
                queued_at: row.created_at,
            };
            // Each mode bounds itself; this is the safety net.
            let limit = deliverer
                .max_duration()
                .saturating_add(Duration::from_secs(1));
            match tokio::time::timeout(limit, catch_unwind(deliverer.deliver(&message))).await {
                Ok(Ok(outcome)) => outcome,
                // A bug in a library must not leave the row in `sending`.
                Ok(Err(())) => Err(DeliveryError::Local("delivery panicked".into())),
                Err(_) => Err(DeliveryError::Timeout(limit)),
            }
        }
        Err(StoreError::NotFound) => Err(DeliveryError::Unsendable(
            "the outbound message is gone".into(),
        )),
        Err(e) => Err(DeliveryError::Local(format!("reading the message: {e}"))),
    };
    let now = now_ms();
    let (result, decision) = match &outcome {
        Ok(detail) => {
            tracing::info!(detail, "outbound: delivered");
            ("sent", Decision::Sent)
        }
        Err(e) => match retry::classify(e) {
            Class::Permanent => {
                tracing::warn!(error = %e, "outbound: permanent failure");
                ("failed", Decision::Failed(e.to_string()))
            }
            Class::Temporary => {
                let o = &config.outbound;
                match retry::next_attempt(
                    row.attempts,
                    row.created_at,
                    now,
                    &o.retry_schedule,
                    o.max_age,
                ) {
                    Some(at) => {
                        tracing::info!(error = %e, retry_in_ms = at - now, "outbound: deferred");
                        ("deferred", Decision::Deferred(at, e.to_string()))
                    }
                    None => {
                        tracing::warn!(error = %e, "outbound: giving up, too old");
                        (
                            "failed",
                            Decision::Failed(format!(
                                "{e} (gave up after {} attempts)",
                                row.attempts
                            )),
                        )
                    }
                }
            }
        },
    };
    metrics::inc("outbound_deliveries_total", &[("result", result)]);
    let id = row.id;
    for tries in 1..=RECORD_TRIES {
        let decision = decision.clone();
        let outcomes = outcomes.clone();
        // The row's new state and what it sets off, in one write.
        let recorded = store
            .write(move |c| match decision {
                Decision::Sent => {
                    let changed = outbox::mark_sent(c, id, now)?;
                    if changed {
                        outcomes.delivered(c, id, now)?;
                    }
                    Ok(changed)
                }
                Decision::Deferred(at, error) => outbox::mark_deferred(c, id, at, &error),
                Decision::Failed(error) => {
                    let changed = outbox::mark_failed(c, id, &error)?;
                    if changed {
                        outcomes.failed(c, id, &error, now)?;
                    }
                    Ok(changed)
                }
            })
            .await;
        match recorded {
            Ok(_) => return,
            Err(e) if tries < RECORD_TRIES => {
                tracing::error!(error = %e, "outbound: cannot record the outcome; retrying");
                tokio::time::sleep(STORE_RETRY).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "outbound: cannot record the outcome; the row is settled at the next start");
            }
        }
    }
}

/// Runs `fut`, turning a panic while polling it into `Err(())`.
async fn catch_unwind<F: Future>(fut: F) -> std::result::Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    })
    .await
}

#[derive(Debug, Clone)]
enum Decision {
    Sent,
    Deferred(i64, String),
    Failed(String),
}
