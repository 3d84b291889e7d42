//! Parent tickets (`parents`).

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::{Parent, ParentChanges, ParentStatus};

const COLUMNS: &str = "p.id, p.external_id, p.subject, p.requester_name, p.requester_email,
     p.status, p.snoozed_until, p.assignee_id, u.email, p.last_sender, p.created_at, p.updated_at";

fn row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<Parent> {
    Ok(Parent {
        id: r.get(0)?,
        external_id: r.get(1)?,
        subject: r.get(2)?,
        requester_name: r.get(3)?,
        requester_email: r.get(4)?,
        status: r.get(5)?,
        snoozed_until: r.get(6)?,
        assignee_id: r.get(7)?,
        assignee: r.get(8)?,
        last_sender: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

/// The parent with this external id.
pub fn get(db: &Db<'_>, external_id: &str) -> Result<Option<Parent>> {
    Ok(db
        .conn()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM parents p LEFT JOIN users u ON u.id = p.assignee_id
             WHERE p.external_id = ?1"
        ))?
        .query_row([external_id], row)
        .optional()?)
}

/// The parent's row id, if it exists.
pub fn id_of(db: &Db<'_>, external_id: &str) -> Result<Option<i64>> {
    Ok(db
        .conn()
        .prepare_cached("SELECT id FROM parents WHERE external_id = ?1")?
        .query_row([external_id], |r| r.get(0))
        .optional()?)
}

/// Creates the parent unless it exists; (id, whether it was created).
pub fn create_if_missing(
    db: &Db<'_>,
    external_id: &str,
    subject: &str,
    now: i64,
) -> Result<(i64, bool)> {
    let conn = db.conn();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO parents (external_id, subject, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(external_id) DO NOTHING",
        )?
        .execute(params![external_id, subject, now])?;
    let id = id_of(db, external_id)?.ok_or(super::StoreError::NotFound)?;
    Ok((id, inserted > 0))
}

/// Applies a parent upsert's changes (a snooze ends with any status but
/// `snoozed`).
pub fn update(db: &Db<'_>, id: i64, c: &ParentChanges, now: i64) -> Result<()> {
    let conn = db.conn();
    if let Some(s) = &c.subject {
        conn.execute(
            "UPDATE parents SET subject = ?2 WHERE id = ?1",
            params![id, s],
        )?;
    }
    if let Some((name, email)) = &c.requester {
        conn.execute(
            "UPDATE parents SET requester_name = ?2, requester_email = ?3 WHERE id = ?1",
            params![id, name, email],
        )?;
    }
    if let Some(s) = c.status {
        conn.execute(
            "UPDATE parents SET status = ?2 WHERE id = ?1",
            params![id, s],
        )?;
        if s != ParentStatus::Snoozed {
            conn.execute(
                "UPDATE parents SET snoozed_until = NULL WHERE id = ?1",
                [id],
            )?;
        }
    }
    if let Some(until) = c.snoozed_until {
        conn.execute(
            "UPDATE parents SET snoozed_until = ?2 WHERE id = ?1",
            params![id, until],
        )?;
    }
    if let Some(a) = c.assignee_id {
        conn.execute(
            "UPDATE parents SET assignee_id = ?2 WHERE id = ?1",
            params![id, a],
        )?;
    }
    conn.execute(
        "UPDATE parents SET updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// Remembers the sender address last used on the parent.
pub fn set_last_sender(db: &Db<'_>, id: i64, sender: &str, now: i64) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE parents SET last_sender = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, sender, now])?;
    Ok(())
}

/// Wakes a parent (snoozed or closed → open).
pub fn wake(db: &Db<'_>, id: i64, now: i64) -> Result<()> {
    db.conn()
        .prepare_cached(
            "UPDATE parents SET status = 'open', snoozed_until = NULL, updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![id, now])?;
    Ok(())
}
