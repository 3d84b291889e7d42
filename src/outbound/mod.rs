//! Outbound mail: composition, outbox worker, delivery by maildir/relay/MX, retry policy.

pub mod compose;
pub mod deliver;
pub mod retry;
pub mod worker;
