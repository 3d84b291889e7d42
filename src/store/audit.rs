//! The audit log: who changed users, senders, settings and webhooks, and
//! when (SPEC §7, `GET /api/audit`). Every entry is written by the caller in
//! the same transaction as the change it records, so a change is never
//! kept without its entry nor an entry without its change.
//!
//! Actions: `user.created`, `user.role_changed`, `user.renamed`,
//! `user.deactivated`, `user.activated`, `user.token_rotated`,
//! `sender.added`, `sender.deleted`, `sender.updated`, `sender.verified`,
//! `settings.updated`, `webhook.created`, `webhook.deleted`. The detail
//! holds before/after values where they mean something, never a secret or
//! a token.

use rusqlite::params;
use serde_json::Value;

use super::{Db, Result};
use crate::model::now_ms;

/// Who made a change: a user of the API, or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The acting user; `None` for the command line.
    pub user_id: Option<i64>,
    /// The user's email at the time, or `cli`.
    pub label: String,
}

impl Actor {
    /// The command line (someone with access to the store itself).
    pub fn cli() -> Actor {
        Actor {
            user_id: None,
            label: "cli".into(),
        }
    }

    /// A user acting through the API.
    pub fn user(id: i64, email: &str) -> Actor {
        Actor {
            user_id: Some(id),
            label: email.to_string(),
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Value,
}

/// Records that `actor` did `action` to `target`; call it inside the
/// transaction that makes the change.
pub fn record(
    db: &Db<'_>,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: &Value,
) -> Result<i64> {
    let conn = db.conn();
    conn.prepare_cached(
        "INSERT INTO audit (at, actor_id, actor, action, target, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        now_ms(),
        actor.user_id,
        actor.label,
        action,
        target,
        detail.to_string()
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Up to `limit` entries, newest first, older than entry `before` when
/// given (the id of the last entry of the previous page).
pub fn list(db: &Db<'_>, before: Option<i64>, limit: i64) -> Result<Vec<Entry>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT id, at, actor_id, actor, action, target, detail FROM audit
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
        let detail: String = r.get(6)?;
        Ok(Entry {
            id: r.get(0)?,
            at: r.get(1)?,
            actor_id: r.get(2)?,
            actor: r.get(3)?,
            action: r.get(4)?,
            target: r.get(5)?,
            // Written by `record` from a JSON value; anything else is
            // shown as the text it is rather than failing the whole page.
            detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newest_first_with_paging() {
        let conn = super::super::memory_db();
        let db = Db::for_test(&conn);
        for n in 0..5 {
            record(
                &db,
                &Actor::cli(),
                "settings.updated",
                "settings",
                &json!({"n": n}),
            )
            .expect("record");
        }
        let first = list(&db, None, 2).expect("list");
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].detail, json!({"n": 4}));
        assert_eq!(first[1].detail, json!({"n": 3}));
        assert_eq!(first[0].actor, "cli");
        assert_eq!(first[0].actor_id, None);
        let rest = list(&db, Some(first[1].id), 10).expect("list");
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].detail, json!({"n": 2}));
    }
}
