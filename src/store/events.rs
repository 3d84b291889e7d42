//! Events for webhooks (SPEC §7): queued in the same transaction as the
//! change they report, one delivery row per subscribed endpoint, so an event
//! is never lost nor sent for a change that was rolled back.

use rusqlite::params;

use super::{Db, Result};
use crate::model::now_ms;

pub const EVENTS: &[&str] = &[
    "side_conversation.started",
    "side_conversation.closed",
    "side_conversation.reopened",
    "message.sent",
    "message.received",
    "message.bounced",
    "message.failed",
    "parent.woken",
    "sender.verified",
];

/// Queues `event` for every active webhook subscribed to it (an empty
/// event list subscribes to all). Returns how many deliveries were queued.
pub fn enqueue(db: &Db<'_>, event: &str, data: serde_json::Value) -> Result<usize> {
    let _conn = db.conn();
    enqueue_with(db, event, || data)
}

/// [`enqueue`] with the event's data built only when some webhook wants it
/// (most messages on a gateway without webhooks: no JSON at all).
pub fn enqueue_with(
    db: &Db<'_>,
    event: &str,
    data: impl FnOnce() -> serde_json::Value,
) -> Result<usize> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached("SELECT id, events FROM webhooks WHERE active = 1")?;
    let hooks: Vec<i64> = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .filter_map(|row| match row {
            Ok((id, events)) => {
                let list: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
                (list.is_empty() || list.iter().any(|e| e == event)).then_some(Ok(id))
            }
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<_>>()?;
    if hooks.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let payload = serde_json::json!({
        "event": event,
        "created_at": crate::model::rfc3339(now),
        "data": data(),
    })
    .to_string();
    let mut insert = conn.prepare_cached(
        "INSERT INTO webhook_deliveries (webhook_id, event, payload, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?;
    for id in &hooks {
        insert.execute(params![id, event, payload, now])?;
    }
    Ok(hooks.len())
}
