//! The ingest worker's main loop: a window of messages in flight across
//! batches.
//!
//! Three stages run side by side on the worker's thread:
//!
//! 1. *read*: takes batches of queued rows in arrival order, reserves their
//!    share of the window (so at most [`WINDOW`] messages and
//!    [`WINDOW_KIB`] KiB of mail are held at once), parses them on the
//!    parser threads and starts one authentication task (DNS) per message;
//! 2. *submit*: takes the messages in arrival order as each one's
//!    authentication ends and queues its write to the store's writer, so a
//!    message still sees every earlier one (a reply right behind the message
//!    it answers threads on it);
//! 3. *settle*: waits for the writes in order, accounts for them, and gives
//!    their share of the window back.
//!
//! So DNS lookups of many messages wait together, across batches, while the
//! writer keeps committing the messages ahead of them; a slow or dead
//! resolver holds each message at most `[dns] timeout` (the bound of
//! [`super::auth::Authenticator::authenticate`]) and costs throughput only
//! when the window is full. Every write still marks its queue row done in its
//! own transaction: a crash anywhere loses nothing acknowledged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::apply::{self, Prepared};
use super::{BATCH, BATCH_BYTES, Worker};
use crate::shutdown::Shutdown;
use crate::store::inbound::{self, InboundMessage};

/// Messages in flight at once: read, parsed, being authenticated or
/// written. With a resolver answering in 200 ms and three lookups one after
/// the other, this many keep the writer busy at thousands of messages a
/// second.
pub const WINDOW: usize = 2048;
/// Their raw size at most, in KiB (a single larger message takes the whole
/// window).
pub const WINDOW_KIB: usize = 256 * 1024;

/// The window: a semaphore of messages and one of KiB.
#[derive(Clone)]
struct Window {
    messages: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

/// One message's share of the window, given back when dropped.
struct Share {
    _message: OwnedSemaphorePermit,
    _kib: OwnedSemaphorePermit,
}

impl Window {
    fn new() -> Window {
        Window {
            messages: Arc::new(Semaphore::new(WINDOW)),
            kib: Arc::new(Semaphore::new(WINDOW_KIB)),
        }
    }

    /// Waits for room for a message of `bytes`.
    async fn reserve(&self, bytes: usize) -> Option<Share> {
        let kib = bytes.div_ceil(1024).clamp(1, WINDOW_KIB);
        let message = self.messages.clone().acquire_owned().await.ok()?;
        let kib = self
            .kib
            .clone()
            .acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
            .await
            .ok()?;
        Some(Share {
            _message: message,
            _kib: kib,
        })
    }

    /// Waits until no message is in flight.
    async fn idle(&self) {
        // The read stage is the only one that takes shares, and it is the
        // one waiting here: taking them all means every other was given back.
        let _all = self.messages.acquire_many(WINDOW as u32).await;
    }
}

/// A message being prepared (parsed, then authenticated).
struct Preparing {
    id: i64,
    attempts: i64,
    task: tokio::task::JoinHandle<std::result::Result<Prepared, String>>,
    share: Share,
}

/// A message whose write is queued.
struct Writing {
    id: i64,
    attempts: i64,
    write: super::PendingWrite,
    _share: Share,
}

impl Worker {
    /// Drains the queue until shutdown; wakes on every SMTP commit. See the
    /// module documentation.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let window = Window::new();
        let (to_submit, submitting) = mpsc::unbounded_channel();
        let (to_settle, settling) = mpsc::unbounded_channel();
        tokio::join!(
            self.read_stage(&shutdown, &window, to_submit),
            self.submit_stage(&shutdown, submitting, to_settle),
            self.settle_stage(settling),
        );
        Ok(())
    }

    /// Stage 1. `after` skips the rows already taken in this pass; once
    /// nothing newer is queued and the window is empty, the scan starts over
    /// from the oldest row still queued (a message whose attempt failed).
    async fn read_stage(
        &self,
        shutdown: &Shutdown,
        window: &Window,
        to_submit: mpsc::UnboundedSender<Preparing>,
    ) {
        let mut after = 0i64;
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let orphaned = self.orphaned_before();
            let read = self
                .store
                .read(move |c| inbound::pending_after(c, after, orphaned, BATCH, BATCH_BYTES));
            let batch = tokio::select! {
                batch = read => batch,
                _ = shutdown.wait() => return,
            };
            match batch {
                Ok(batch) if !batch.is_empty() => {
                    after = batch.last().map_or(after, |m| m.id);
                    let started = tokio::select! {
                        started = self.start_batch(window, batch, &to_submit) => started,
                        _ = shutdown.wait() => return,
                    };
                    if let Err(e) = started {
                        tracing::error!(error = %e, "ingest: cannot prepare; retrying shortly");
                        after = 0;
                        if pause(shutdown, window).await {
                            return;
                        }
                    }
                }
                Ok(_) => {
                    if window.messages.available_permits() < WINDOW {
                        // Messages are still in flight: wait for new mail or
                        // for them to be done, then look again.
                        tokio::select! {
                            _ = self.committed.notified() => {}
                            _ = window.idle() => {}
                            _ = shutdown.wait() => return,
                        }
                        continue;
                    }
                    if after != 0 {
                        // Start over: a message that failed an attempt is
                        // still queued behind `after`.
                        after = 0;
                        continue;
                    }
                    tokio::select! {
                        _ = self.committed.notified() => {}
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "ingest: store error; retrying shortly");
                    after = 0;
                    if pause(shutdown, window).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reserves the batch's share of the window, parses it and starts each
    /// message's authentication, handing them to stage 2 in order.
    async fn start_batch(
        &self,
        window: &Window,
        batch: Vec<InboundMessage>,
        to_submit: &mpsc::UnboundedSender<Preparing>,
    ) -> crate::store::Result<()> {
        let mut shares = Vec::with_capacity(batch.len());
        for m in &batch {
            match window.reserve(m.raw.len()).await {
                Some(share) => shares.push(share),
                None => return Ok(()),
            }
        }
        let ids: Vec<(i64, i64)> = batch.iter().map(|m| (m.id, m.attempts)).collect();
        let parsed = self.parse_batch(batch).await?;
        for (((id, attempts), result), share) in ids.into_iter().zip(parsed).zip(shares) {
            let task = self.authenticate_task(result);
            let preparing = Preparing {
                id,
                attempts,
                task,
                share,
            };
            if to_submit.send(preparing).is_err() {
                // Stage 2 stopped (shutdown): the message stays queued.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Stage 2: queues each message's write in arrival order, as soon as
    /// its preparation is done.
    async fn submit_stage(
        &self,
        shutdown: &Shutdown,
        mut submitting: mpsc::UnboundedReceiver<Preparing>,
        to_settle: mpsc::UnboundedSender<Writing>,
    ) {
        loop {
            let next = tokio::select! {
                next = submitting.recv() => next,
                _ = shutdown.wait() => None,
            };
            let Some(Preparing {
                id,
                attempts,
                mut task,
                share,
            }) = next
            else {
                break;
            };
            let prepared = tokio::select! {
                prepared = &mut task => prepared,
                _ = shutdown.wait() => {
                    task.abort();
                    break;
                }
            };
            let failure = match prepared {
                Ok(Ok(prepared)) => {
                    let config = self.config.clone();
                    match self
                        .store
                        .submit_write(move |c| apply::apply(c, &config, &prepared))
                    {
                        Ok(write) => {
                            let writing = Writing {
                                id,
                                attempts,
                                write: Box::pin(write),
                                _share: share,
                            };
                            if to_settle.send(writing).is_err() {
                                break;
                            }
                            continue;
                        }
                        Err(e) => {
                            // The store is closing: the message stays queued.
                            tracing::error!(queue_id = id, error = %e, "ingest: cannot queue the write");
                            continue;
                        }
                    }
                }
                Ok(Err(e)) => e,
                Err(e) => format!("prepare: {e}"),
            };
            if let Err(e) = self.failed(id, attempts, &failure).await {
                tracing::error!(queue_id = id, error = %e, "ingest: cannot record the failure");
            }
        }
        // Shutdown: what is still being prepared stays queued for the next
        // start.
        submitting.close();
        while let Ok(rest) = submitting.try_recv() {
            rest.task.abort();
        }
    }

    /// Stage 3: waits for the writes in order and accounts for them.
    async fn settle_stage(&self, mut settling: mpsc::UnboundedReceiver<Writing>) {
        while let Some(Writing {
            id,
            attempts,
            write,
            _share,
        }) = settling.recv().await
        {
            if let Err(e) = self.account(id, attempts, write.await).await {
                tracing::error!(queue_id = id, error = %e, "ingest: store error");
            }
        }
    }
}

/// After an error: waits for the window to empty (so that starting the scan
/// over cannot take a message twice), then a second. True on shutdown.
async fn pause(shutdown: &Shutdown, window: &Window) -> bool {
    tokio::select! {
        _ = async {
            window.idle().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        } => false,
        _ = shutdown.wait() => true,
    }
}
