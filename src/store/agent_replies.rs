//! What an agent's reply to a notification email became (`agent_replies`,
//! schema migration 10): the outbound message it was sent as, or why it was
//! not sent.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};

/// One agent reply's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReply {
    /// The inbound message (kind `agent_reply` or `agent_reply_unverified`).
    pub message: i64,
    /// The agent the address named, when it named one that exists.
    pub user: Option<i64>,
    pub side_conversation: Option<i64>,
    /// The follow-up it became.
    pub sent_message: Option<i64>,
    /// Why it was not sent.
    pub reason: Option<String>,
    /// The email that told the agent so.
    pub notice_message: Option<i64>,
}

/// Records what the reply `r.message` became.
pub fn record(db: &Db<'_>, r: &AgentReply) -> Result<()> {
    db.conn()
        .prepare_cached(
            "INSERT INTO agent_replies
               (message_id, user_id, side_conversation_id, sent_message_id, reason,
                notice_message_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (message_id) DO UPDATE SET
               user_id = excluded.user_id, side_conversation_id = excluded.side_conversation_id,
               sent_message_id = excluded.sent_message_id, reason = excluded.reason,
               notice_message_id = excluded.notice_message_id",
        )?
        .execute(params![
            r.message,
            r.user,
            r.side_conversation,
            r.sent_message,
            r.reason,
            r.notice_message
        ])?;
    Ok(())
}

/// What the inbound message `message` became, if it is an agent reply.
pub fn get(db: &Db<'_>, message: i64) -> Result<Option<AgentReply>> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT message_id, user_id, side_conversation_id, sent_message_id, reason,
                    notice_message_id
             FROM agent_replies WHERE message_id = ?1",
        )?
        .query_row([message], |r| {
            Ok(AgentReply {
                message: r.get(0)?,
                user: r.get(1)?,
                side_conversation: r.get(2)?,
                sent_message: r.get(3)?,
                reason: r.get(4)?,
                notice_message: r.get(5)?,
            })
        })
        .optional()?)
}

/// Whether `message_id` (an RFC 5322 Message-ID, no brackets) is one of
/// the emails that told an agent their reply was not sent.
pub fn is_notice(db: &Db<'_>, message_id: &str) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT 1 FROM messages m JOIN agent_replies a ON a.notice_message_id = m.id
             WHERE m.message_id = ?1 AND m.direction = 'out' LIMIT 1",
        )?
        .query_row([message_id], |_| Ok(()))
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// Migration 10 edits the CHECK of `messages.kind` in place: the
    /// database stays sound, rows stored before keep reading, the new kinds
    /// are accepted and any other kind is still refused — on the migrating
    /// connection and on one opened afterwards.
    #[test]
    fn migration_10_widens_the_kind_check_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let conn = Connection::open(&path).expect("open");
        let migrations = super::super::migrations();
        for (n, sql) in &migrations {
            if *n < 10 {
                conn.execute_batch(sql).expect("migration");
            }
        }
        let insert = |c: &Connection, kind: &str| {
            c.execute(
                "INSERT INTO messages (direction, kind, route, raw, raw_sha256, received_at)
                 VALUES ('in', ?1, 'unrouted', x'00', x'00', 1)",
                [kind],
            )
        };
        insert(&conn, "reply").expect("an old kind");
        assert!(insert(&conn, "agent_reply_unverified").is_err());
        let (_, ten) = migrations
            .iter()
            .find(|(n, _)| *n == 10)
            .expect("migration 10");
        conn.execute_batch(&format!("BEGIN; {ten}; COMMIT;"))
            .expect("migration 10 in one transaction");
        for kind in ["agent_reply", "agent_reply_unverified"] {
            insert(&conn, kind).expect("a new kind on the migrating connection");
        }
        assert!(insert(&conn, "nonsense").is_err(), "the CHECK still holds");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
        let other = Connection::open(&path).expect("reopen");
        insert(&other, "agent_reply_unverified").expect("a new kind on another connection");
        assert!(insert(&other, "nonsense").is_err());
        let kinds: Vec<String> = other
            .prepare("SELECT kind FROM messages ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            kinds,
            [
                "reply",
                "agent_reply",
                "agent_reply_unverified",
                "agent_reply_unverified"
            ]
        );
    }
}
