//! Parents' activity logs (`activity`).

use rusqlite::params;

use super::{Db, Result};
use crate::model::Activity;

/// Writes an entry; `actor` is the acting user, `None` for a vendor.
pub fn add(
    db: &Db<'_>,
    parent: i64,
    side_conversation: Option<i64>,
    actor: Option<i64>,
    text: &str,
    now: i64,
) -> Result<()> {
    db.conn()
        .prepare_cached(
            "INSERT INTO activity (parent_id, side_conversation_id, actor_id, text, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![parent, side_conversation, actor, text, now])?;
    Ok(())
}

/// A page of a parent's log, oldest first: up to `limit` entries after id
/// `after`.
pub fn list(db: &Db<'_>, parent: i64, after: i64, limit: i64) -> Result<Vec<Activity>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT a.id, a.text, a.side_conversation_id, u.email, a.created_at FROM activity a
         LEFT JOIN users u ON u.id = a.actor_id
         WHERE a.parent_id = ?1 AND a.id > ?2 ORDER BY a.id LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![parent, after, limit], |r| {
            Ok(Activity {
                id: r.get(0)?,
                text: r.get(1)?,
                side_conversation_id: r.get(2)?,
                actor: r.get(3)?,
                created_at: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
