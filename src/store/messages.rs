//! Messages: helpers shared by every path that stores one (ingest, outbound,
//! portal).

use rusqlite::{Connection, params};

use super::Result;

/// One attachment to store with a message.
pub struct NewAttachment<'a> {
    pub filename: Option<&'a str>,
    pub content_type: &'a str,
    pub content_id: Option<&'a str>,
    pub data: &'a [u8],
}

/// Stores a message's attachments, numbered from 0 in the given order.
pub fn insert_attachments<'a>(
    conn: &Connection,
    message: i64,
    attachments: impl IntoIterator<Item = NewAttachment<'a>>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO attachments (message_id, idx, filename, content_type, size, content_id, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (i, a) in attachments.into_iter().enumerate() {
        stmt.execute(params![
            message,
            i as i64,
            a.filename,
            a.content_type,
            a.data.len() as i64,
            a.content_id,
            a.data
        ])?;
    }
    Ok(())
}

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
