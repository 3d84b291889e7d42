//! The outbox: one row per recipient of an outbound message.

use rusqlite::{Connection, params};

use super::Result;
use crate::model::{base32_lower, random_bytes};

/// Queues delivery of outbound message row `message` to `recipient`;
/// returns the VERP key (the envelope sender is `bounce+<key>@<domain>`).
pub fn enqueue(conn: &Connection, message: i64, recipient: &str, now: i64) -> Result<String> {
    let key = base32_lower(&random_bytes::<10>());
    conn.execute(
        "INSERT INTO outbox (message_id, recipient, verp_key, state, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
        params![message, recipient, key, now],
    )?;
    Ok(key)
}

/// Delivery state of one recipient, for the API.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct DeliveryState {
    pub recipient: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// ms; `None` once the row is final.
    pub next_attempt_at: Option<i64>,
    pub sent_at: Option<i64>,
}

/// Delivery state of every recipient of a message.
pub fn for_message(conn: &Connection, message: i64) -> Result<Vec<DeliveryState>> {
    let mut stmt = conn.prepare_cached(
        "SELECT recipient, state, attempts, last_error, next_attempt_at, sent_at
         FROM outbox WHERE message_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([message], |r| {
        let state: String = r.get(1)?;
        let next: i64 = r.get(4)?;
        Ok(DeliveryState {
            recipient: r.get(0)?,
            next_attempt_at: matches!(state.as_str(), "queued" | "deferred" | "sending")
                .then_some(next),
            state,
            attempts: r.get(2)?,
            last_error: r.get(3)?,
            sent_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
