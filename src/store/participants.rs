//! Who takes part in a side conversation (`participants`).

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::{Participant, ParticipantRole};

/// The participants in the order they joined, each with their own name or
/// else their contact record's.
pub fn list(db: &Db<'_>, sc: i64) -> Result<Vec<Participant>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT p.email, COALESCE(p.name, c.name), p.role FROM participants p
         LEFT JOIN contacts c ON c.email = p.email
         WHERE p.side_conversation_id = ?1 ORDER BY p.added_at, p.rowid",
    )?;
    let rows = stmt
        .query_map([sc], |r| {
            Ok(Participant {
                email: r.get(0)?,
                name: r.get(1)?,
                role: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn is_participant(db: &Db<'_>, sc: i64, email: &str) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT 1 FROM participants WHERE side_conversation_id = ?1 AND lower(email) = lower(?2)",
        )?
        .query_row(params![sc, email], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn count(db: &Db<'_>, sc: i64) -> Result<i64> {
    Ok(db
        .conn()
        .prepare_cached("SELECT COUNT(*) FROM participants WHERE side_conversation_id = ?1")?
        .query_row([sc], |r| r.get(0))?)
}

/// Adds a participant unless they are one already.
pub fn add(
    db: &Db<'_>,
    sc: i64,
    email: &str,
    name: Option<&str>,
    role: ParticipantRole,
    now: i64,
) -> Result<()> {
    db.conn()
        .prepare_cached(
            "INSERT OR IGNORE INTO participants (side_conversation_id, email, name, role, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![sc, email, name, role, now])?;
    Ok(())
}

/// Removes a participant; false when there was none.
pub fn remove(db: &Db<'_>, sc: i64, email: &str) -> Result<bool> {
    Ok(db.conn().execute(
        "DELETE FROM participants WHERE side_conversation_id = ?1 AND lower(email) = lower(?2)",
        params![sc, email],
    )? > 0)
}
