//! The shutdown signal every long-running task waits on: a leaf that knows
//! nothing of the tasks, so every module can take it without importing the
//! wiring in `app`.

use tokio::sync::watch;

/// A cheap-to-clone view of the shutdown signal.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A new signal: the sender triggers it (send `true`, or drop it).
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown { rx })
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has been requested (or the sender is gone).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}
