//! Messages: helpers shared by every path that stores one (ingest, outbound,
//! portal).

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::{AttachmentInfo, Mailbox, MessageKind, MessageRecord, Route, StoredReply};

/// The raw bytes of a message row aliased `$m`, as SQL. An inbound
/// message keeps its bytes once, in `inbound_raw` (the queue's copy,
/// written when the message was accepted): its `raw` column is empty.
/// Outbound mail, and inbound mail queued before schema migration 4, have
/// theirs in `raw`. (An empty message is empty either way.)
#[macro_export]
macro_rules! raw_sql {
    ($m:literal) => {
        concat!(
            "CASE WHEN length(",
            $m,
            ".raw) > 0 THEN ",
            $m,
            ".raw ELSE coalesce((SELECT ir.raw FROM inbound_raw ir WHERE ir.id = ",
            $m,
            ".inbound_id), ",
            $m,
            ".raw) END"
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

/// An inbound message to store (from SMTP, or a vendor's portal reply).
pub struct NewInbound<'a> {
    pub side_conversation: Option<i64>,
    pub kind: MessageKind,
    pub route: Route,
    /// The queue row it came from (its bytes are kept there, `inbound_raw`);
    /// `None` for a portal reply, whose bytes are stored with the message.
    pub inbound_id: Option<i64>,
    pub raw: &'a [u8],
    pub sha256: &'a [u8],
    pub message_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub references: &'a [String],
    pub from: Option<&'a Mailbox>,
    pub reply_to: Option<&'a str>,
    pub to: &'a [Mailbox],
    pub cc: &'a [Mailbox],
    pub date: Option<i64>,
    pub subject: &'a str,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    /// `None`: the visible reply is [`plain_visible`] of the text body
    /// (most replies quote nothing; see [`visible_reply_sql`]).
    pub visible_reply: Option<&'a str>,
    pub flags: &'a [String],
    /// Authentication results, JSON.
    pub auth: Option<&'a str>,
    /// The bounce report, JSON.
    pub bounce: Option<&'a str>,
    pub received_at: i64,
}

/// Stores an inbound message; returns its id.
pub fn insert_inbound(db: &Db<'_>, m: &NewInbound<'_>) -> Result<i64> {
    let conn = db.conn();
    // Empty when the queue's copy (`inbound_raw`) holds the bytes: they
    // are stored once, readers use `raw_sql!`. Rows queued before schema
    // migration 4 have no such copy and keep theirs here.
    let queued = match m.inbound_id {
        Some(id) => conn
            .prepare_cached("SELECT 1 FROM inbound_raw WHERE id = ?1")?
            .exists([id])?,
        None => false,
    };
    let raw: &[u8] = if queued { &[] } else { m.raw };
    conn.prepare_cached(
        "INSERT INTO messages
           (side_conversation_id, direction, kind, route, inbound_id, raw, raw_sha256,
            message_id, in_reply_to, refs, from_name, from_email, reply_to, to_addrs, cc_addrs,
            date, subject, text_body, html_body, visible_reply, flags, auth, bounce, received_at)
         VALUES (?1, 'in', ?2, ?3, ?4,
                 ?5,
                 ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                 ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
    )?
    .execute(params![
        m.side_conversation,
        m.kind,
        m.route,
        m.inbound_id,
        raw,
        m.sha256,
        m.message_id,
        m.in_reply_to,
        serde_json::to_string(m.references)?,
        m.from.and_then(|f| f.name.as_deref()),
        m.from.map(|f| f.email.as_str()),
        m.reply_to,
        serde_json::to_string(m.to)?,
        serde_json::to_string(m.cc)?,
        m.date,
        m.subject,
        m.text,
        m.html,
        m.visible_reply,
        serde_json::to_string(m.flags)?,
        m.auth,
        m.bounce,
        m.received_at,
    ])?;
    Ok(conn.last_insert_rowid())
}

/// An agent's message (start, follow-up), or a vendor's portal reply
/// relayed to the other participants.
pub struct NewOutbound<'a> {
    pub side_conversation: i64,
    /// `api` for agents' messages, `portal` for relayed portal replies.
    pub route: Route,
    pub raw: &'a [u8],
    pub message_id: &'a str,
    pub in_reply_to: Option<&'a str>,
    pub references: &'a [String],
    pub from_name: &'a str,
    pub from_email: &'a str,
    pub reply_to: Option<&'a str>,
    pub to: &'a [String],
    pub cc: &'a [String],
    pub subject: &'a str,
    pub text: &'a str,
    pub html: &'a str,
    pub visible_reply: &'a str,
    /// The agent who wrote it; `None` for a relayed portal reply.
    pub author: Option<i64>,
    pub at: i64,
}

/// Stores an outbound message; returns its id.
pub fn insert_outbound(db: &Db<'_>, m: &NewOutbound<'_>) -> Result<i64> {
    use sha2::Digest;
    let sha: [u8; 32] = sha2::Sha256::digest(m.raw).into();
    let people = |list: &[String]| {
        serde_json::to_string(
            &list
                .iter()
                .map(|e| Mailbox {
                    name: None,
                    email: e.clone(),
                })
                .collect::<Vec<_>>(),
        )
    };
    let conn = db.conn();
    conn.prepare_cached(
        "INSERT INTO messages
           (side_conversation_id, direction, kind, route, raw, raw_sha256, message_id, in_reply_to, refs,
            from_name, from_email, reply_to, to_addrs, cc_addrs, date, subject, text_body, html_body,
            visible_reply, flags, author_id, received_at)
         VALUES (?1, 'out', 'agent', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 '[]', ?18, ?13)",
    )?
    .execute(params![
        m.side_conversation,
        m.route,
        m.raw,
        &sha[..],
        m.message_id,
        m.in_reply_to,
        serde_json::to_string(m.references)?,
        m.from_name,
        m.from_email,
        m.reply_to,
        people(m.to)?,
        people(m.cc)?,
        m.at,
        m.subject,
        m.text,
        m.html,
        m.visible_reply,
        m.author,
    ])?;
    Ok(conn.last_insert_rowid())
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
        // The control characters are in the literals themselves: SQLite's
        // char() and PostgreSQL's chr() have no common spelling.
        "coalesce({a}visible_reply, trim(replace({a}text_body, '\r\n', '\n'), ' \t\n\r'))"
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

/// A message's flags.
pub fn flags(db: &Db<'_>, id: i64) -> Result<Vec<String>> {
    let text: String = db
        .conn()
        .prepare_cached("SELECT flags FROM messages WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    Ok(serde_json::from_str(&text)?)
}

/// Replaces a message's flags.
pub fn set_flags(db: &Db<'_>, id: i64, flags: &[String]) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE messages SET flags = ?2 WHERE id = ?1")?
        .execute(params![id, serde_json::to_string(flags)?])?;
    Ok(())
}

/// Records that a message is flagged `unverified_sender`, for the agent
/// view's `$unverified` keyword (see `view`).
pub fn mark_unverified(db: &Db<'_>, id: i64) -> Result<()> {
    db.conn()
        .prepare_cached("INSERT OR IGNORE INTO unverified_messages (message_id) VALUES (?1)")?
        .execute([id])?;
    Ok(())
}

/// The `Reply-To` of `email`'s last verified email reply on a thread:
/// `Some(None)` when that reply set none, `None` when they sent no verified
/// email reply (portal replies, auto-replies and unverified mail say
/// nothing about where a vendor wants answers).
pub fn last_verified_reply_to(db: &Db<'_>, sc: i64, email: &str) -> Result<Option<Option<String>>> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT m.reply_to FROM messages m
             WHERE m.side_conversation_id = ?1 AND m.direction = 'in' AND m.kind = 'reply'
               AND m.route <> 'portal' AND lower(m.from_email) = lower(?2)
               AND NOT EXISTS (SELECT 1 FROM unverified_messages u WHERE u.message_id = m.id)
             ORDER BY m.received_at DESC, m.id DESC LIMIT 1",
        )?
        .query_row(params![sc, email], |r| r.get(0))
        .optional()?)
}

/// The subject of a thread's last verified email reply, if any.
pub fn last_verified_subject(db: &Db<'_>, sc: i64) -> Result<Option<String>> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT m.subject FROM messages m
             WHERE m.side_conversation_id = ?1 AND m.direction = 'in' AND m.kind = 'reply'
               AND m.route <> 'portal'
               AND NOT EXISTS (SELECT 1 FROM unverified_messages u WHERE u.message_id = m.id)
             ORDER BY m.received_at DESC, m.id DESC LIMIT 1",
        )?
        .query_row([sc], |r| r.get(0))
        .optional()?)
}

/// A message's authentication results (JSON), if it has any.
pub fn auth(db: &Db<'_>, id: i64) -> Result<Option<String>> {
    Ok(db
        .conn()
        .prepare_cached("SELECT auth FROM messages WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Puts a message on a side conversation (an unrouted message assigned).
pub fn set_side_conversation(db: &Db<'_>, id: i64, sc: i64) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE messages SET side_conversation_id = ?2 WHERE id = ?1")?
        .execute(params![id, sc])?;
    Ok(())
}

/// One stored attachment with its bytes.
#[derive(Debug, Clone)]
pub struct StoredAttachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Attachment `n` of a message.
pub fn attachment(db: &Db<'_>, message: i64, n: i64) -> Result<Option<StoredAttachment>> {
    Ok(db
        .conn()
        .query_row(
            "SELECT filename, content_type, data FROM attachments WHERE message_id = ?1 AND idx = ?2",
            params![message, n],
            |r| {
                Ok(StoredAttachment {
                    filename: r.get(0)?,
                    content_type: r.get(1)?,
                    data: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Which side conversation a message is on: `None` when there is no such
/// message, `Some(None)` when it is unrouted (or the gateway's own).
pub fn side_conversation_of(db: &Db<'_>, id: i64) -> Result<Option<Option<i64>>> {
    Ok(db
        .conn()
        .prepare_cached("SELECT side_conversation_id FROM messages WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// A page of unrouted inbound mail: up to `limit` ids after `after`.
pub fn unrouted_ids(db: &Db<'_>, after: i64, limit: i64) -> Result<Vec<i64>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT id FROM messages WHERE side_conversation_id IS NULL AND direction = 'in'
         AND kind IN ('reply', 'auto_reply', 'bounce', 'agent_reply_unverified')
         AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let ids = stmt
        .query_map(params![after, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(ids)
}

/// A page of a thread's message ids: up to `limit` after `after`.
pub fn thread_page(db: &Db<'_>, sc: i64, after: i64, limit: i64) -> Result<Vec<i64>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT id FROM messages WHERE side_conversation_id = ?1 AND id > ?2
         ORDER BY id LIMIT ?3",
    )?;
    let ids = stmt
        .query_map(params![sc, after, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(ids)
}

/// An inbound message as the assignment of unrouted mail needs it.
pub fn unrouted_candidate(db: &Db<'_>, id: i64) -> Result<Option<StoredReply>> {
    Ok(db
        .conn()
        .prepare_cached(&format!(
            "SELECT side_conversation_id, direction, kind, from_name, from_email, to_addrs, cc_addrs,
                    message_id, subject, {}, received_at
             FROM messages WHERE id = ?1",
            visible_reply_sql("")
        ))?
        .query_row([id], |r| {
            let from_name: Option<String> = r.get(3)?;
            let from_email: Option<String> = r.get(4)?;
            let to: String = r.get(5)?;
            let cc: String = r.get(6)?;
            Ok(StoredReply {
                side_conversation: r.get(0)?,
                direction: r.get(1)?,
                kind: r.get(2)?,
                from: from_email.map(|email| Mailbox {
                    name: from_name,
                    email,
                }),
                to: serde_json::from_str(&to).unwrap_or_default(),
                cc: serde_json::from_str(&cc).unwrap_or_default(),
                message_id: r.get(7)?,
                subject: r.get(8)?,
                visible_reply: r.get(9)?,
                received_at: r.get(10)?,
            })
        })
        .optional()?)
}

const DUPLICATE_BY_MESSAGE_ID: &str = "SELECT id, raw_sha256, text_body, html_body FROM messages
     WHERE message_id = ?1 AND direction = 'in' AND +side_conversation_id IS NOT DISTINCT FROM ?2
     ORDER BY id LIMIT 1";
const DUPLICATE_BY_HASH: &str = "SELECT id, raw_sha256, text_body, html_body FROM messages
     WHERE raw_sha256 = ?1 AND message_id IS NULL AND direction = 'in' AND +side_conversation_id IS NOT DISTINCT FROM ?2
     ORDER BY id LIMIT 1";

/// An inbound message stored before that a new one may repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCopy {
    pub id: i64,
    pub sha256: Vec<u8>,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// The inbound message in the same place (side conversation `sc`, or the
/// unrouted mail for `None`) with this Message-ID, or without one, these
/// bytes.
///
/// The `+` keeps SQLite off the indexes by side conversation: on one of
/// them, every message scanned the whole thread (or all unrouted mail) row
/// by row, quadratic in the store's size. The Message-ID (or hash) index
/// finds the few candidates directly.
pub fn find_copy(
    db: &Db<'_>,
    message_id: Option<&str>,
    sha256: &[u8],
    sc: Option<i64>,
) -> Result<Option<StoredCopy>> {
    let row = |r: &super::sql::Row<'_, '_>| {
        Ok(StoredCopy {
            id: r.get(0)?,
            sha256: r.get(1)?,
            text: r.get(2)?,
            html: r.get(3)?,
        })
    };
    let conn = db.conn();
    Ok(match message_id {
        Some(mid) => conn
            .prepare_cached(DUPLICATE_BY_MESSAGE_ID)?
            .query_row(params![mid, sc], row)
            .optional()?,
        None => conn
            .prepare_cached(DUPLICATE_BY_HASH)?
            .query_row(params![sha256, sc], row)
            .optional()?,
    })
}

#[cfg(test)]
mod duplicate_tests {
    use super::*;

    /// The duplicate lookups must go through the Message-ID / hash indexes:
    /// a plan on an index by side conversation reads every message of the
    /// thread (or every unrouted message) for each new one.
    #[test]
    fn duplicate_lookups_use_the_id_and_hash_indexes() {
        let conn = crate::store::memory_db();
        for (sql, index) in [
            (DUPLICATE_BY_MESSAGE_ID, "messages_message_id"),
            (DUPLICATE_BY_HASH, "messages_sha_without_id"),
        ] {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let plan: Vec<String> = stmt
                .query_map(params!["x", Some(1i64)], |r| r.get::<_, String>(3))
                .expect("plan")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            let plan = plan.join("\n");
            assert!(plan.contains(index), "{sql}:\n{plan}");
            assert!(!plan.contains("side_conversation"), "{plan}");
            assert!(!plan.contains("thread_received"), "{plan}");
        }
    }
}

/// `body` cut at `cap` characters (it was read with one more, to tell).
fn capped(body: Option<String>, cap: usize, truncated: &mut bool) -> Option<String> {
    let mut text = body?;
    if let Some((end, _)) = text.char_indices().nth(cap) {
        text.truncate(end);
        *truncated = true;
    }
    Some(text)
}

/// A message; with `cap`, each body (text, HTML, visible reply) is cut at
/// that many characters and only that much of it is read.
pub fn get(db: &Db<'_>, id: i64, cap: Option<usize>) -> Result<Option<MessageRecord>> {
    let body = |col: &str| match cap {
        Some(n) => format!("substr({col}, 1, {})", n + 1),
        None => col.to_string(),
    };
    let visible = match cap {
        Some(n) => format!("substr(coalesce(visible_reply, text_body), 1, {})", n + 1),
        None => visible_reply_sql(""),
    };
    let sql = format!(
        "SELECT id, side_conversation_id, direction, message_id, in_reply_to, refs, from_name, from_email,
                reply_to, to_addrs, cc_addrs, subject, date, received_at, {}, {}, {visible},
                kind, flags, route, auth, bounce
         FROM messages WHERE id = ?1",
        body("text_body"),
        body("html_body"),
    );
    let row = db
        .conn()
        .prepare_cached(&sql)?
        .query_row([id], |r| {
            let from_name: Option<String> = r.get(6)?;
            let from_email: Option<String> = r.get(7)?;
            Ok(MessageRecord {
                id: r.get(0)?,
                side_conversation_id: r.get(1)?,
                direction: r.get(2)?,
                message_id: r.get(3)?,
                in_reply_to: r.get(4)?,
                references: r.get(5)?,
                from: from_email.map(|email| Mailbox {
                    name: from_name,
                    email,
                }),
                reply_to: r.get(8)?,
                to: r.get(9)?,
                cc: r.get(10)?,
                subject: r.get(11)?,
                date: r.get(12)?,
                received_at: r.get(13)?,
                text: r.get(14)?,
                html: r.get(15)?,
                visible_reply: r.get(16)?,
                kind: r.get(17)?,
                flags: r.get(18)?,
                route: r.get(19)?,
                auth: r.get(20)?,
                bounce: r.get(21)?,
                truncated: false,
            })
        })
        .optional()?;
    let Some(mut m) = row else {
        return Ok(None);
    };
    if let Some(cap) = cap {
        let mut truncated = false;
        m.text = capped(m.text.take(), cap, &mut truncated);
        m.html = capped(m.html.take(), cap, &mut truncated);
        // Read raw here (no SQL trimming of a long body): trimmed now.
        m.visible_reply =
            capped(m.visible_reply.take(), cap, &mut truncated).map(|v| plain_visible(&v));
        m.truncated = truncated;
    }
    Ok(Some(m))
}

/// A message's attachments, in order.
pub fn attachments(db: &Db<'_>, id: i64) -> Result<Vec<AttachmentInfo>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT idx, filename, content_type, size, content_id FROM attachments
         WHERE message_id = ?1 ORDER BY idx",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(AttachmentInfo {
                index: r.get(0)?,
                filename: r.get(1)?,
                content_type: r.get(2)?,
                size: r.get(3)?,
                content_id: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
