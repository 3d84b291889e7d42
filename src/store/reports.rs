//! What the side-conversation report (SPEC §15) is computed from: one row
//! of facts per side conversation opened or closed in a range, or open
//! now. Read through indexes on the creation and closing times and the
//! open ones' status, then per thread by `messages_side_conversation`, so a
//! report costs what the range holds, not what the store does.

use rusqlite::params;

use super::{Db, Result};

/// How a report groups side conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The domain of the first `to` recipient.
    VendorDomain,
    /// Each of its tags (one without tags is in the group of none).
    Tag,
    /// Who started it.
    Agent,
    /// The address it is sent from.
    Sender,
}

/// One side conversation as a report sees it (times in ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub id: i64,
    /// The groups it counts in (`None`: no value, e.g. untagged).
    pub keys: Vec<Option<String>>,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub open: bool,
    /// When the first vendor reply (not an auto-reply) arrived.
    pub first_reply_at: Option<i64>,
    /// Recipients of agent messages, and how many of them bounced.
    pub recipients: i64,
    pub bounced: i64,
    /// Vendor replies, and how many came from an unverified sender.
    pub replies: i64,
    pub unverified: i64,
}

/// The facts of every side conversation opened in `[from, to)`, closed in
/// it, or open now.
pub fn facts(db: &Db<'_>, from: i64, to: i64, group_by: GroupBy) -> Result<Vec<Facts>> {
    let conn = db.conn();
    let key = match group_by {
        GroupBy::VendorDomain => {
            "(SELECT lower(substr(pt.email, instr(pt.email, '@') + 1)) FROM participants pt
              WHERE pt.side_conversation_id = s.id AND pt.role = 'to'
              ORDER BY pt.added_at, pt.email LIMIT 1)"
        }
        GroupBy::Agent => "(SELECT u.email FROM users u WHERE u.id = s.started_by)",
        GroupBy::Sender => "lower(s.sender_email)",
        // Read below, one row per tag.
        GroupBy::Tag => "NULL",
    };
    // Only those opened in the range are read message by message; the
    // others (closed in it, open now) need just their row.
    let opened = "CASE WHEN s.created_at >= ?1 AND s.created_at < ?2";
    let sql = format!(
        "WITH ids(id) AS (
             SELECT id FROM side_conversations INDEXED BY side_conversations_created
               WHERE created_at >= ?1 AND created_at < ?2
             UNION SELECT id FROM side_conversations INDEXED BY side_conversations_closed
               WHERE closed_at >= ?1 AND closed_at < ?2
             UNION SELECT id FROM side_conversations INDEXED BY side_conversations_updated
               WHERE status = 'open')
         SELECT s.id, {key}, s.created_at, s.closed_at, s.status = 'open',
                {opened} THEN (SELECT m.received_at FROM messages m
                  WHERE m.side_conversation_id = s.id AND m.direction = 'in' AND m.kind = 'reply'
                  ORDER BY m.id LIMIT 1) END,
                {opened} THEN (SELECT count(*) FROM messages m JOIN outbox o ON o.message_id = m.id
                  WHERE m.side_conversation_id = s.id AND m.direction = 'out' AND m.kind = 'agent')
                  ELSE 0 END,
                {opened} THEN (SELECT count(*) FROM messages m JOIN outbox o ON o.message_id = m.id
                  WHERE m.side_conversation_id = s.id AND m.direction = 'out' AND m.kind = 'agent'
                    AND o.state = 'bounced') ELSE 0 END,
                {opened} THEN (SELECT count(*) FROM messages m
                  WHERE m.side_conversation_id = s.id AND m.direction = 'in' AND m.kind = 'reply')
                  ELSE 0 END,
                {opened} THEN (SELECT count(*) FROM messages m
                  JOIN unverified_messages v ON v.message_id = m.id
                  WHERE m.side_conversation_id = s.id AND m.direction = 'in' AND m.kind = 'reply')
                  ELSE 0 END
         FROM ids JOIN side_conversations s ON s.id = ids.id
         ORDER BY s.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut out = stmt
        .query_map(params![from, to], |r| {
            Ok(Facts {
                id: r.get(0)?,
                keys: vec![r.get(1)?],
                created_at: r.get(2)?,
                closed_at: r.get(3)?,
                open: r.get(4)?,
                first_reply_at: r.get(5)?,
                recipients: r.get(6)?,
                bounced: r.get(7)?,
                replies: r.get(8)?,
                unverified: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<Facts>>>()?;
    if group_by == GroupBy::Tag {
        let mut tags = conn.prepare_cached(
            "SELECT tag FROM side_conversation_tags WHERE side_conversation_id = ?1
             ORDER BY lower(tag), tag",
        )?;
        for f in &mut out {
            let list = tags
                .query_map([f.id], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            f.keys = if list.is_empty() {
                vec![None]
            } else {
                list.into_iter().map(Some).collect()
            };
        }
    }
    Ok(out)
}
