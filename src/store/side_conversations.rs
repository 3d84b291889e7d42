//! Side conversations (`side_conversations`): the rows, their state and
//! the bookkeeping of their outbound mail (next Message-ID number,
//! Thread-Index, intake counters).

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::{NewSideConversation, ScStatus, SideConversation};

const COLUMNS: &str =
    "s.id, s.parent_id, p.external_id, p.status, s.token, s.portal_token, s.portal_revoked,
     s.portal_per_recipient, s.status, s.subject, s.sender_email, s.started_by, u.email,
     s.thread_index, s.next_seq, s.created_at, s.updated_at";

const FROM: &str = "side_conversations s JOIN parents p ON p.id = s.parent_id
     LEFT JOIN users u ON u.id = p.assignee_id";

fn row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<SideConversation> {
    Ok(SideConversation {
        id: r.get(0)?,
        parent_id: r.get(1)?,
        parent: r.get(2)?,
        parent_status: r.get(3)?,
        token: r.get(4)?,
        portal_token: r.get(5)?,
        portal_revoked: r.get(6)?,
        portal_per_recipient: r.get(7)?,
        status: r.get(8)?,
        subject: r.get(9)?,
        sender_email: r.get(10)?,
        started_by: r.get(11)?,
        assignee: r.get(12)?,
        thread_index: r.get(13)?,
        next_seq: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
    })
}

pub fn get(db: &Db<'_>, id: i64) -> Result<Option<SideConversation>> {
    Ok(db
        .conn()
        .prepare_cached(&format!("SELECT {COLUMNS} FROM {FROM} WHERE s.id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// Whether a side conversation with this id exists.
pub fn exists(db: &Db<'_>, id: i64) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached("SELECT 1 FROM side_conversations WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn insert(db: &Db<'_>, s: &NewSideConversation<'_>) -> Result<i64> {
    let conn = db.conn();
    conn.execute(
        "INSERT INTO side_conversations (parent_id, token, portal_per_recipient, status, subject, sender_email,
                                         started_by, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7, ?7)",
        params![
            s.parent_id,
            s.token,
            s.portal_per_recipient,
            s.subject,
            s.sender_email,
            s.started_by,
            s.created_at
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Opens or closes (the closing time is kept while closed).
pub fn set_status(db: &Db<'_>, id: i64, status: ScStatus, now: i64) -> Result<()> {
    db.conn().execute(
        "UPDATE side_conversations SET status = ?2,
                closed_at = CASE WHEN ?2 = 'closed' THEN CAST(?3 AS BIGINT) ELSE NULL END, updated_at = ?3
         WHERE id = ?1",
        params![id, status, now],
    )?;
    Ok(())
}

/// Marks activity on the side conversation.
pub fn touch(db: &Db<'_>, id: i64, now: i64) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE side_conversations SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

/// An outbound message went out: the next Message-ID number and the new
/// Thread-Index.
pub fn advance(db: &Db<'_>, id: i64, thread_index: &[u8], now: i64) -> Result<()> {
    db.conn()
        .prepare_cached(
            "UPDATE side_conversations SET next_seq = next_seq + 1, thread_index = ?2, updated_at = ?3
             WHERE id = ?1",
        )?
        .execute(params![id, thread_index, now])?;
    Ok(())
}

/// Counts an inbound message of `bytes` against the thread's quota.
pub fn count_intake(db: &Db<'_>, id: i64, bytes: usize) -> Result<()> {
    db.conn()
        .prepare_cached(
            "UPDATE side_conversations SET inbound_messages = inbound_messages + 1,
                    inbound_bytes = inbound_bytes + ?2 WHERE id = ?1",
        )?
        .execute(params![id, i64::try_from(bytes).unwrap_or(i64::MAX)])?;
    Ok(())
}

/// Every portal link of the side conversation is off for good.
pub fn revoke_portal(db: &Db<'_>, id: i64, now: i64) -> Result<()> {
    db.conn().execute(
        "UPDATE side_conversations SET portal_revoked = 1, portal_per_recipient = 0,
                updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// The Message-IDs of the thread's messages (agents' and replies), oldest
/// first: what a new message cites.
pub fn thread_ids(db: &Db<'_>, id: i64) -> Result<Vec<String>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT message_id FROM messages WHERE side_conversation_id = ?1 AND message_id IS NOT NULL
         AND kind IN ('agent', 'reply') ORDER BY id",
    )?;
    let ids = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Replies through the portal since `since` (ms).
pub fn portal_replies_since(db: &Db<'_>, id: i64, since: i64) -> Result<i64> {
    Ok(db.conn().query_row(
        "SELECT COUNT(*) FROM messages WHERE side_conversation_id = ?1 AND direction = 'in'
         AND route = 'portal' AND received_at > ?2",
        params![id, since],
        |r| r.get(0),
    )?)
}

/// The ids of a parent's side conversations, oldest first; only the open
/// ones with `open_only`.
pub fn ids_of_parent(db: &Db<'_>, parent: i64, open_only: bool) -> Result<Vec<i64>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT id FROM side_conversations WHERE parent_id = ?1 AND (?2 = 0 OR status = 'open')
         ORDER BY id",
    )?;
    let ids = stmt
        .query_map(params![parent, open_only], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(ids)
}
