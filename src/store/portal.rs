//! Reads for the vendor portal (SPEC §8): the side conversation behind a
//! portal token, and only what its vendor side has seen — the agents'
//! messages and the replies its participants wrote; never activity, flags,
//! authentication results, internal notes or other side conversations.

use rusqlite::{OptionalExtension, params};

use super::sql::Dialect;
use super::{Db, Result};

/// A side conversation as the portal shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalThread {
    pub id: i64,
    pub subject: String,
    /// `open` or `closed`.
    pub status: String,
    /// The sender address the side conversation is held from.
    pub sender_email: String,
    /// Its display name (empty when it has none).
    pub sender_name: String,
    /// (email, name, role) in the order they joined.
    pub participants: Vec<(String, Option<String>, String)>,
    /// Whose own link opened the page (SPEC §8): the page replies as them
    /// only and shows the others by name. `None`: a side conversation's
    /// shared link handed out before links were per recipient, which lets
    /// the reader choose among the participants as it always did.
    pub viewer: Option<String>,
}

impl PortalThread {
    pub fn is_open(&self) -> bool {
        self.status == "open"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalAttachment {
    pub index: i64,
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i64,
}

/// One message on the portal page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalMessage {
    pub id: i64,
    /// Sent by the gateway (an agent), else written by the vendor side.
    pub outbound: bool,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    /// ms since the epoch: when it was sent or received.
    pub at: i64,
    pub text: Option<String>,
    pub html: Option<String>,
    pub visible_reply: Option<String>,
    pub attachments: Vec<PortalAttachment>,
}

/// Is the token shaped like a portal token (32 base32 characters)? Lets
/// junk be refused before it reaches the database.
pub fn is_token_shaped(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// A new portal token: 32 base32 characters (160 random bits).
pub fn new_token() -> String {
    crate::model::base32_lower(&crate::model::random_bytes::<20>())
}

/// The active link of `email` on side conversation `sc`, created on first
/// use; `None` once that link was revoked (a revoked link is never handed
/// out again, and no new one replaces it).
pub fn ensure_link(db: &Db<'_>, sc: i64, email: &str, now: i64) -> Result<Option<String>> {
    let conn = db.conn();
    let row: Option<(String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT token, revoked_at FROM portal_links WHERE side_conversation_id = ?1 AND lower(email) = lower(?2)",
        )?
        .query_row(params![sc, email], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        Some((token, None)) => Ok(Some(token)),
        Some((_, Some(_))) => Ok(None),
        None => {
            let token = new_token();
            conn.prepare_cached(
                "INSERT INTO portal_links (token, side_conversation_id, email, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![token, sc, email, now])?;
            Ok(Some(token))
        }
    }
}

/// A side conversation's per-recipient links: (email, token, revoked).
pub fn links(db: &Db<'_>, sc: i64) -> Result<Vec<(String, String, bool)>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT email, token, revoked_at IS NOT NULL FROM portal_links
         WHERE side_conversation_id = ?1 ORDER BY created_at, email",
    )?;
    let rows = stmt
        .query_map([sc], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Revokes one recipient's link (`email`), or every link of the side
/// conversation (`None`); returns how many were active.
pub fn revoke_links(db: &Db<'_>, sc: i64, email: Option<&str>, now: i64) -> Result<usize> {
    let conn = db.conn();
    Ok(conn.execute(
        "UPDATE portal_links SET revoked_at = ?3
         WHERE side_conversation_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR lower(email) = lower(?2)) AND revoked_at IS NULL",
        params![sc, email, now],
    )?)
}

/// (id, subject, status, sender email, sender name) of a side conversation.
type ThreadRow = (i64, String, String, String, Option<String>);

/// The side conversation (and the participant, for a per-recipient link)
/// behind an active portal token.
pub fn by_token(db: &Db<'_>, token: &str) -> Result<Option<PortalThread>> {
    let conn = db.conn();
    if !is_token_shaped(token) {
        return Ok(None);
    }
    // A recipient's own link, while they are a participant.
    let personal: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT l.side_conversation_id, p.email FROM portal_links l
             JOIN participants p ON p.side_conversation_id = l.side_conversation_id
                                AND p.email = l.email
             WHERE l.token = ?1 AND l.revoked_at IS NULL",
        )?
        .query_row([token], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (row, viewer): (Option<ThreadRow>, _) = match personal {
        Some((sc, email)) => (
            conn.query_row(
                "SELECT s.id, s.subject, s.status, s.sender_email, d.name
                 FROM side_conversations s LEFT JOIN senders d ON d.email = s.sender_email
                 WHERE s.id = ?1",
                [sc],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?,
            Some(email),
        ),
        None => (
            conn.query_row(
                "SELECT s.id, s.subject, s.status, s.sender_email, d.name
                 FROM side_conversations s LEFT JOIN senders d ON d.email = s.sender_email
                 WHERE s.portal_token = ?1 AND s.portal_revoked = 0",
                [token],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?,
            None,
        ),
    };
    let Some((id, subject, status, sender_email, sender_name)) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT p.email, COALESCE(p.name, c.name), p.role FROM participants p
         LEFT JOIN contacts c ON c.email = p.email
         WHERE p.side_conversation_id = ?1 ORDER BY p.added_at, p.rowid",
    )?;
    let participants = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(PortalThread {
        id,
        subject,
        status,
        sender_email,
        sender_name: sender_name.unwrap_or_default(),
        participants,
        viewer,
    }))
}

/// Which messages of side conversation `?1` the vendor side has seen: what
/// the agents sent it, and the replies its participants wrote from a
/// verified address (SPEC §10: unverified mail, a forger's included, never
/// reaches the portal; auto-replies, bounces, notifications, second copies
/// of a Message-ID and the relayed copies of portal replies stay out too).
fn visible(db: &Db<'_>) -> String {
    // The DMARC verdict in the message's `auth` JSON (written by ingest).
    let dmarc = match db.dialect() {
        Dialect::Sqlite => "CASE WHEN json_valid(m.auth) THEN json_extract(m.auth, '$.dmarc') END",
        Dialect::Postgres => "CAST(m.auth AS jsonb) ->> 'dmarc'",
    };
    format!(
        "m.side_conversation_id = ?1 AND (
       (m.direction = 'out' AND m.kind = 'agent' AND m.route = 'api')
    OR (m.direction = 'in' AND m.kind = 'reply'
        AND lower(m.from_email) IN
            (SELECT lower(email) FROM participants WHERE side_conversation_id = ?1)
        AND m.flags NOT LIKE '%duplicate_of:%'
        AND NOT EXISTS (SELECT 1 FROM unverified_messages u WHERE u.message_id = m.id)
        AND COALESCE({dmarc}, '') <> 'fail'))"
    )
}

/// The messages the portal shows for side conversation `sc`, in order.
pub fn messages(db: &Db<'_>, sc: i64) -> Result<Vec<PortalMessage>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT m.id, m.direction, m.from_name, m.from_email, COALESCE(m.date, m.received_at),
                m.received_at, m.text_body, m.html_body, {}
         FROM messages m WHERE {} ORDER BY m.id",
        super::messages::visible_reply_sql("m"),
        visible(db)
    ))?;
    let mut out = stmt
        .query_map([sc], |r| {
            let direction: String = r.get(1)?;
            let date: i64 = r.get(4)?;
            let received: i64 = r.get(5)?;
            Ok(PortalMessage {
                id: r.get(0)?,
                outbound: direction == "out",
                from_name: r.get(2)?,
                from_email: r.get(3)?,
                // A sender's clock may be off by years: keep what it says
                // only when it is close to when the gateway saw the message.
                at: if (date - received).abs() <= 86_400_000 {
                    date
                } else {
                    received
                },
                text: r.get(6)?,
                html: r.get(7)?,
                visible_reply: r.get(8)?,
                attachments: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut files = conn.prepare_cached(
        "SELECT idx, filename, content_type, size FROM attachments WHERE message_id = ?1 ORDER BY idx",
    )?;
    for m in &mut out {
        m.attachments = files
            .query_map([m.id], |r| {
                Ok(PortalAttachment {
                    index: r.get(0)?,
                    filename: r.get(1)?,
                    content_type: r.get(2)?,
                    size: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(out)
}

/// An attachment's file name, content type and bytes.
pub type AttachmentData = (Option<String>, String, Vec<u8>);

/// Attachment `n` of message `message`, only when that message is shown on
/// side conversation `sc`'s portal page: (filename, content type, bytes).
pub fn attachment(db: &Db<'_>, sc: i64, message: i64, n: i64) -> Result<Option<AttachmentData>> {
    let conn = db.conn();
    Ok(conn
        .query_row(
            &format!(
                "SELECT a.filename, a.content_type, a.data FROM attachments a
                 JOIN messages m ON m.id = a.message_id
                 WHERE a.message_id = ?2 AND a.idx = ?3 AND {}",
                visible(db)
            ),
            params![sc, message, n],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}
