//! Whom a side conversation waits on (SPEC §15), derived from
//! `last_in_id` / `last_out_id` (kept by triggers, migration 12), its tags
//! (`side_conversation_tags`) and the API's filtered list of side
//! conversations. Lists that wait are read through the two partial indexes
//! of waiting threads, oldest first.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::{ScStatus, Waiting};

/// Whom the side conversation waits on and since when (ms, the received
/// time of the message that made it wait); `None` when it is closed or
/// nothing was said yet.
pub fn state(db: &Db<'_>, id: i64) -> Result<Option<(Waiting, i64)>> {
    let row: Option<(ScStatus, Option<i64>, Option<i64>)> = db
        .conn()
        .prepare_cached(
            "SELECT status, last_in_id, last_out_id FROM side_conversations WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((status, last_in, last_out)) = row else {
        return Ok(None);
    };
    let (last_in, last_out) = (last_in.unwrap_or(0), last_out.unwrap_or(0));
    let (who, message) = match status {
        ScStatus::Closed => return Ok(None),
        _ if last_in > last_out => (Waiting::Agent, last_in),
        _ if last_out > last_in => (Waiting::Vendor, last_out),
        _ => return Ok(None),
    };
    let since: Option<i64> = db
        .conn()
        .prepare_cached("SELECT received_at FROM messages WHERE id = ?1")?
        .query_row([message], |r| r.get(0))
        .optional()?;
    Ok(since.map(|s| (who, s)))
}

/// What the API's list of side conversations is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub parent: Option<String>,
    pub status: Option<ScStatus>,
    pub waiting: Option<Waiting>,
    /// Only those waiting since at or before this time (ms); with `waiting`.
    pub waiting_before: Option<i64>,
    pub tag: Option<String>,
}

/// A page of `(key, id)`: up to `limit` side conversations after key
/// `after`. Without `waiting` the key is the id (oldest first); with it,
/// the id of the message that made it wait, so the longest-waiting come
/// first.
pub fn list(db: &Db<'_>, f: &ListFilter, after: i64, limit: i64) -> Result<Vec<(i64, i64)>> {
    let common = "AND (CAST(?2 AS TEXT) IS NULL
              OR s.parent_id = (SELECT id FROM parents WHERE external_id = ?2))
         AND (CAST(?3 AS TEXT) IS NULL OR s.status = ?3)
         AND (CAST(?4 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM side_conversation_tags t
                                    WHERE t.side_conversation_id = s.id AND lower(t.tag) = lower(?4)))";
    let sql = match f.waiting {
        None => format!(
            "SELECT s.id, s.id FROM side_conversations s WHERE s.id > ?1 {common}
             AND CAST(?5 AS BIGINT) IS NULL ORDER BY s.id LIMIT ?6"
        ),
        Some(Waiting::Vendor) => format!(
            "SELECT s.last_out_id, s.id FROM side_conversations s
             INDEXED BY side_conversations_waiting_vendor
             JOIN messages m ON m.id = s.last_out_id
             WHERE s.status = 'open' AND s.last_out_id > coalesce(s.last_in_id, 0)
               AND s.last_out_id > ?1 {common} AND (CAST(?5 AS BIGINT) IS NULL OR m.received_at <= ?5)
             ORDER BY s.last_out_id LIMIT ?6"
        ),
        Some(Waiting::Agent) => format!(
            "SELECT s.last_in_id, s.id FROM side_conversations s
             INDEXED BY side_conversations_waiting
             JOIN messages m ON m.id = s.last_in_id
             WHERE s.status = 'open' AND s.last_in_id > coalesce(s.last_out_id, 0)
               AND s.last_in_id > ?1 {common} AND (CAST(?5 AS BIGINT) IS NULL OR m.received_at <= ?5)
             ORDER BY s.last_in_id LIMIT ?6"
        ),
    };
    let mut stmt = db.conn().prepare_cached(&sql)?;
    let rows = stmt
        .query_map(
            params![after, f.parent, f.status, f.tag, f.waiting_before, limit],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
    Ok(rows)
}

/// The side conversation's tags, in alphabetical order.
pub fn tags(db: &Db<'_>, id: i64) -> Result<Vec<String>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT tag FROM side_conversation_tags WHERE side_conversation_id = ?1
         ORDER BY lower(tag), tag",
    )?;
    let tags = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(tags)
}

/// Replaces the side conversation's tags.
pub fn set_tags(db: &Db<'_>, id: i64, tags: &[String]) -> Result<()> {
    let conn = db.conn();
    conn.prepare_cached("DELETE FROM side_conversation_tags WHERE side_conversation_id = ?1")?
        .execute([id])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO side_conversation_tags (side_conversation_id, tag) VALUES (?1, ?2)",
    )?;
    for t in tags {
        insert.execute(params![id, t])?;
    }
    Ok(())
}

/// A side conversation's reminder settings: after how long (ms) without
/// a vendor reply, and whether the vendor is nudged.
pub fn reminder_settings(db: &Db<'_>, id: i64) -> Result<Option<(Option<i64>, bool)>> {
    Ok(db
        .conn()
        .prepare_cached("SELECT remind_after, nudge_vendor FROM side_conversations WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

pub fn set_reminder(db: &Db<'_>, id: i64, remind_after: Option<i64>, nudge: bool) -> Result<()> {
    db.conn()
        .prepare_cached(
            "UPDATE side_conversations SET remind_after = ?2, nudge_vendor = ?3 WHERE id = ?1",
        )?
        .execute(params![id, remind_after, nudge])?;
    Ok(())
}

/// A side conversation whose reminder is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReminder {
    pub id: i64,
    /// The agent message it waits on since, and when that was.
    pub out_id: i64,
    pub since: i64,
    pub nudge: bool,
}

/// Open side conversations waiting on the vendor longer than their
/// `remind_after` at `now`, not yet reminded of their latest agent
/// message; at most `limit`, longest waiting first.
pub fn due_reminders(db: &Db<'_>, now: i64, limit: i64) -> Result<Vec<DueReminder>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT s.id, s.last_out_id, m.received_at, s.nudge_vendor
         FROM side_conversations s INDEXED BY side_conversations_waiting_vendor
         JOIN messages m ON m.id = s.last_out_id
         WHERE s.status = 'open' AND s.last_out_id > coalesce(s.last_in_id, 0)
           AND s.remind_after IS NOT NULL AND m.received_at + s.remind_after <= ?1
           AND s.reminded_out_id IS DISTINCT FROM s.last_out_id
         ORDER BY s.last_out_id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![now, limit], |r| {
            Ok(DueReminder {
                id: r.get(0)?,
                out_id: r.get(1)?,
                since: r.get(2)?,
                nudge: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The reminder for agent message `out_id` was given.
pub fn mark_reminded(db: &Db<'_>, id: i64, out_id: i64) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE side_conversations SET reminded_out_id = ?2 WHERE id = ?1")?
        .execute(params![id, out_id])?;
    Ok(())
}
