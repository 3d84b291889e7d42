//! Events for webhooks (SPEC §7): queued in the same transaction as the
//! change they report, one delivery row per subscribed endpoint, so an event
//! is never lost nor sent for a change that was rolled back.

use rusqlite::{Connection, params};

use super::Result;
use crate::model::now_ms;

pub const EVENTS: &[&str] = &[
    "side_conversation.started",
    "side_conversation.closed",
    "side_conversation.reopened",
    "message.sent",
    "message.received",
    "message.bounced",
    "parent.woken",
    "sender.verified",
];

/// Queues `event` for every active webhook subscribed to it (an empty
/// event list subscribes to all). Returns how many deliveries were queued.
pub fn enqueue(conn: &Connection, event: &str, data: serde_json::Value) -> Result<usize> {
    let now = now_ms();
    let payload = serde_json::json!({
        "event": event,
        "created_at": now,
        "data": data,
    })
    .to_string();
    let mut stmt = conn.prepare_cached("SELECT id, events FROM webhooks WHERE active = 1")?;
    let hooks: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut queued = 0;
    for (id, events) in hooks {
        let list: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
        if list.is_empty() || list.iter().any(|e| e == event) {
            conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, event, payload, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![id, event, payload, now],
            )?;
            queued += 1;
        }
    }
    Ok(queued)
}
