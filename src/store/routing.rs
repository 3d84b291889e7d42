//! What routing asks the store, at RCPT and when a message is threaded:
//! which side conversation holds a token or a Message-ID, and how much a
//! thread has taken in. The rules that use the answers are elsewhere
//! (`smtp::policy`, `ingest::route`).

use rusqlite::OptionalExtension;

use super::sql::Dialect;
use super::{Db, Result};
use crate::model::{Intake, Token};

/// `SELECT {columns} FROM side_conversations` by token, as each backend's
/// index on the column answers it: a [`Token`] is lowercase, SQLite's
/// column is NOCASE, PostgreSQL indexes `lower(token)`. Both spellings are
/// fixed strings (routing runs for every recipient).
fn by_token(db: &Db<'_>, sqlite: &'static str, postgres: &'static str) -> &'static str {
    match db.dialect() {
        Dialect::Sqlite => sqlite,
        Dialect::Postgres => postgres,
    }
}

/// The side conversation holding `token`.
pub fn side_conversation_of_token(db: &Db<'_>, token: &Token) -> Result<Option<i64>> {
    Ok(db
        .conn()
        .prepare_cached(by_token(
            db,
            "SELECT id FROM side_conversations WHERE token = ?1",
            "SELECT id FROM side_conversations WHERE lower(token) = ?1",
        ))?
        .query_row([token.as_str()], |r| r.get(0))
        .optional()?)
}

/// What the side conversation holding `token` has taken in, if any holds it.
pub fn intake_of_token(db: &Db<'_>, token: &Token) -> Result<Option<Intake>> {
    Ok(db
        .conn()
        .prepare_cached(by_token(
            db,
            "SELECT inbound_messages, inbound_bytes FROM side_conversations WHERE token = ?1",
            "SELECT inbound_messages, inbound_bytes FROM side_conversations WHERE lower(token) = ?1",
        ))?
        .query_row([token.as_str()], |r| {
            Ok(Intake {
                messages: r.get::<_, i64>(0)?.max(0) as u64,
                bytes: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .optional()?)
}

/// The side conversations holding a message (either direction) with this
/// Message-ID (no brackets).
pub fn side_conversations_of_message_id(db: &Db<'_>, id: &str) -> Result<Vec<i64>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT DISTINCT side_conversation_id FROM messages
         WHERE message_id = ?1 AND side_conversation_id IS NOT NULL",
    )?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
}

/// The side conversations holding a message that cites `id` in its
/// In-Reply-To or References.
pub fn side_conversations_citing(db: &Db<'_>, id: &str) -> Result<Vec<i64>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT DISTINCT m.side_conversation_id FROM message_refs r
         JOIN messages m ON m.id = r.message_id
         WHERE r.ref = ?1 AND m.side_conversation_id IS NOT NULL",
    )?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
}

/// Whether some sender has `local` as its forwarding address's local part.
pub fn is_forwarding_local(db: &Db<'_>, local: &str) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached("SELECT 1 FROM senders WHERE lower(forwarding_local) = lower(?1)")?
        .query_row([local], |_| Ok(()))
        .optional()?
        .is_some())
}
