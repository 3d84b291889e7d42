//! The threads that parse and classify queued mail.
//!
//! They (and the ingest worker's own thread, see `Worker::spawn`) run at
//! the lowest CPU priority (`SCHED_IDLE`): while clients are sending,
//! answering them (a durable `250`) comes first, and threading the accepted
//! mail takes what CPU is left. Accepted mail is already committed, so
//! nothing waits on it but the thread it belongs to, and the backlog
//! (`inbound_queue_depth` in the metrics) drains as soon as the burst ends.
//! When the machine is otherwise idle the priority makes no difference; on
//! a machine kept busy by other programs the ingest still gets the small
//! share the kernel gives idle-class threads, so it slows down, never stops.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

/// The `nice` value of those threads (for a kernel that refuses
/// `SCHED_IDLE`).
const NICENESS: i32 = 19;

pub struct ParsePool {
    tx: mpsc::Sender<Job>,
}

impl ParsePool {
    /// Starts `threads` parser threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<ParsePool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("ingest-parse-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(ParsePool { tx })
    }

    /// Queues `f` for a parser thread now; the future gives its result,
    /// `None` if the pool is gone or `f` panicked.
    pub fn submit<T, F>(&self, f: F) -> impl std::future::Future<Output = Option<T>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(out) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = reply.send(out);
            }
        });
        // A job that cannot be queued drops its reply: the future says None.
        let _ = self.tx.send(job);
        async move { answer.await.ok() }
    }
}

/// Lowers the calling thread's scheduling priority (Linux: per thread):
/// `SCHED_IDLE` (it runs when no thread at normal priority wants the CPU),
/// and the lowest `nice` should that policy be refused. Threads it creates
/// later inherit both.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; a failure only
        // leaves the thread at its normal priority.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICENESS) };
        if rc != 0 {
            tracing::debug!("could not lower the ingest threads' nice value");
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration;
        // pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::debug!("could not move the ingest threads to SCHED_IDLE");
        }
    }
}
