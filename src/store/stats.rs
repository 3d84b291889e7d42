//! Counts the metrics listener reads at scrape time (each an indexed count).

use super::{Db, Result};

/// Queue depths and message totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depths {
    /// Accepted messages waiting for ingest.
    pub inbound: i64,
    /// Outbound deliveries not yet final.
    pub outbox: i64,
    /// Webhook deliveries not yet final.
    pub webhooks: i64,
    pub messages_in: i64,
    pub messages_out: i64,
    /// Deliveries that failed or bounced.
    pub delivery_failures: i64,
}

pub fn depths(db: &Db<'_>) -> Result<Depths> {
    let conn = db.conn();
    let count = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(Depths {
        inbound: count("SELECT COUNT(*) FROM inbound_queue WHERE state = 'queued'")?,
        outbox: count(
            "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'deferred', 'sending')",
        )?,
        webhooks: count(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE state IN ('queued', 'deferred', 'sending')",
        )?,
        messages_in: count("SELECT COUNT(*) FROM messages WHERE direction = 'in'")?,
        messages_out: count("SELECT COUNT(*) FROM messages WHERE direction = 'out'")?,
        delivery_failures: count(
            "SELECT COUNT(*) FROM outbox WHERE state IN ('failed', 'bounced')",
        )?,
    })
}
