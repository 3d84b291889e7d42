//! Messages: helpers shared by every path that stores one (ingest, outbound,
//! portal).

use rusqlite::{Connection, params};

use super::Result;

/// Records the ids a message cites, for threading (route rule 2).
pub fn insert_refs(
    conn: &Connection,
    message: i64,
    in_reply_to: Option<&str>,
    references: &[String],
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO message_refs (ref, message_id) VALUES (?1, ?2)")?;
    for id in in_reply_to
        .into_iter()
        .chain(references.iter().map(String::as_str))
    {
        stmt.execute(params![id, message])?;
    }
    Ok(())
}
