//! Messages: helpers shared by every path that stores one (ingest, outbound,
//! portal).

use rusqlite::params;

use super::{Db, Result};

/// The raw bytes of a message row aliased `$m`, as SQL. An inbound
/// message keeps its bytes once, in `inbound_raw` (the queue's copy,
/// written when the message was accepted): its `raw` column is empty.
/// Outbound mail, and inbound mail queued before schema migration 4, have
/// theirs in `raw`. (An empty message is empty either way.)
#[macro_export]
macro_rules! raw_sql {
    ($m:literal) => {
        concat!(
            "coalesce(nullif(",
            $m,
            ".raw, X''), (SELECT ir.raw FROM inbound_raw ir WHERE ir.id = ",
            $m,
            ".inbound_id), ",
            $m,
            ".raw)"
        )
    };
}

/// The size of [`raw_sql!`] in bytes, without reading the bytes (SQLite
/// answers `length()` of a blob column from the record header).
#[macro_export]
macro_rules! raw_len_sql {
    ($m:literal) => {
        concat!(
            "coalesce(nullif(length(",
            $m,
            ".raw), 0), (SELECT length(ir.raw) FROM inbound_raw ir WHERE ir.id = ",
            $m,
            ".inbound_id), 0)"
        )
    };
}

/// A message the gateway writes on its own account (a sender's
/// verification mail, a notification to an agent): stored outbound, on no
/// thread, and queued to its one recipient by the caller.
pub struct SystemMail<'a> {
    /// `verification` or `notification`.
    pub kind: &'a str,
    pub raw: &'a [u8],
    pub message_id: &'a str,
    pub from_email: &'a str,
    /// (name, email) of the recipient.
    pub to: (Option<&'a str>, &'a str),
    pub subject: &'a str,
    pub text: &'a str,
    pub at: i64,
}

/// Stores a [`SystemMail`]; returns its message id.
pub fn insert_system_mail(db: &Db<'_>, m: &SystemMail<'_>) -> Result<i64> {
    use sha2::Digest;
    let sha: [u8; 32] = sha2::Sha256::digest(m.raw).into();
    let to = serde_json::json!([{"name": m.to.0, "email": m.to.1}]).to_string();
    let conn = db.conn();
    conn.execute(
        "INSERT INTO messages (direction, kind, route, raw, raw_sha256, message_id, from_name, from_email,
                               to_addrs, subject, text_body, flags, received_at)
         VALUES ('out', ?1, 'api', ?2, ?3, ?4, 'backchannel', ?5, ?6, ?7, ?8, '[]', ?9)",
        params![m.kind, m.raw, &sha[..], m.message_id, m.from_email, to, m.subject, m.text, m.at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// One attachment to store with a message.
pub struct NewAttachment<'a> {
    pub filename: Option<&'a str>,
    pub content_type: &'a str,
    pub content_id: Option<&'a str>,
    pub data: &'a [u8],
}

/// Stores a message's attachments, numbered from 0 in the given order.
pub fn insert_attachments<'a>(
    db: &Db<'_>,
    message: i64,
    attachments: impl IntoIterator<Item = NewAttachment<'a>>,
) -> Result<()> {
    let conn = db.conn();
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
    db: &Db<'_>,
    message: i64,
    in_reply_to: Option<&str>,
    references: &[String],
) -> Result<()> {
    let conn = db.conn();
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

/// The visible reply of a stored message, as SQL over the message row
/// aliased `alias` ("" for none). Ingest stores `visible_reply` as NULL
/// when it is exactly [`plain_visible`] of the text body (most replies
/// quote nothing), so each message's text is written once.
pub fn visible_reply_sql(alias: &str) -> String {
    let a = if alias.is_empty() {
        String::new()
    } else {
        format!("{alias}.")
    };
    format!(
        "coalesce({a}visible_reply, trim(replace({a}text_body, char(13, 10), char(10)), char(32, 9, 10, 13)))"
    )
}

/// What [`visible_reply_sql`] yields from a text body alone: CRLF turned
/// into LF, then spaces, tabs and line breaks trimmed at both ends.
pub fn plain_visible(text: &str) -> String {
    text.replace("\r\n", "\n")
        .trim_matches([' ', '\t', '\n', '\r'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQL and the Rust sides of the stored-once visible reply must
    /// agree byte for byte, or a reader would show a different text than
    /// ingest computed.
    #[test]
    fn visible_reply_sql_matches_plain_visible() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        conn.execute_batch("CREATE TABLE messages (text_body TEXT, visible_reply TEXT)")
            .expect("table");
        let samples = [
            "",
            "Hello",
            "  Hello there \r\n\r\n",
            "\r\n\tline one\r\nline two\r\n",
            "bare\rcr\n and lf \n",
            "\u{a0}nbsp\u{a0}",
            "x\r\n\r\r\n",
            "Grüße\r\n— Jörg\r\n",
        ];
        for text in samples {
            conn.execute("DELETE FROM messages", []).expect("delete");
            conn.execute(
                "INSERT INTO messages (text_body, visible_reply) VALUES (?1, NULL)",
                [text],
            )
            .expect("insert");
            let from_sql: String = conn
                .query_row(
                    &format!("SELECT {} FROM messages", visible_reply_sql("")),
                    [],
                    |r| r.get(0),
                )
                .expect("select");
            assert_eq!(from_sql, plain_visible(text), "{text:?}");
        }
        let none: Option<String> = conn
            .query_row(
                &format!(
                    "SELECT {} FROM (SELECT NULL AS text_body, NULL AS visible_reply) m",
                    visible_reply_sql("m")
                ),
                [],
                |r| r.get(0),
            )
            .expect("select");
        assert_eq!(none, None);
    }
}
