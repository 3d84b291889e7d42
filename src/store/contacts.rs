//! Leads: addresses first seen on inbound mail (`contacts`).

use rusqlite::params;

use super::{Db, Result};
use crate::model::Contact;

/// Records a lead unless the address is known; `message` is where it was
/// first seen.
pub fn add(
    db: &Db<'_>,
    email: &str,
    name: Option<&str>,
    message: Option<i64>,
    now: i64,
) -> Result<()> {
    db.conn()
        .prepare_cached(
            "INSERT OR IGNORE INTO contacts (email, name, first_message_id, created_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![email, name, message, now])?;
    Ok(())
}

/// A page of leads: up to `limit` after id `after`.
pub fn list(db: &Db<'_>, after: i64, limit: i64) -> Result<Vec<Contact>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT id, email, name, first_message_id, created_at FROM contacts
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![after, limit], |r| {
            Ok(Contact {
                id: r.get(0)?,
                email: r.get(1)?,
                name: r.get(2)?,
                first_message_id: r.get(3)?,
                created_at: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
