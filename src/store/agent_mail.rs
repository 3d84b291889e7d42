//! Messages agents submitted from their own mail clients
//! (`agent_submissions`), by the client's Message-ID: a retried submission
//! is recognised and sent once.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::now_ms;

/// The (side conversation, outbound message) an earlier submission of this
/// client Message-ID by this user became.
pub fn find(db: &Db<'_>, user: i64, client_message_id: &str) -> Result<Option<(i64, i64)>> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT side_conversation_id, message_id FROM agent_submissions
             WHERE user_id = ?1 AND client_message_id = ?2",
        )?
        .query_row(params![user, client_message_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// Records what a submission became.
pub fn record(
    db: &Db<'_>,
    user: i64,
    client_message_id: &str,
    side_conversation: i64,
    message: i64,
) -> Result<()> {
    db.conn()
        .prepare_cached(
            "INSERT OR IGNORE INTO agent_submissions
               (user_id, client_message_id, side_conversation_id, message_id, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            user,
            client_message_id,
            side_conversation,
            message,
            now_ms()
        ])?;
    Ok(())
}
