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
