//! The queue of reply notifications (`notification_queue`): replies waiting
//! for their agent's batch, and the email each batch became.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::PendingReply;

/// Who is told of what happens on side conversation `sc` (SPEC §4): the
/// parent's assignee, else the agent who started it; `None` when there is
/// no such user or they turned notifications off.
pub fn recipient(db: &Db<'_>, sc: i64) -> Result<Option<i64>> {
    let user: Option<(i64, String)> = db
        .conn()
        .prepare_cached(
            "SELECT u.id, u.notifications FROM side_conversations s JOIN parents p ON p.id = s.parent_id
             JOIN users u ON u.id = COALESCE(p.assignee_id, s.started_by)
             WHERE s.id = ?1",
        )?
        .query_row([sc], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(user.and_then(|(id, setting)| (setting == "email").then_some(id)))
}

/// The agent a side conversation's news is for (the parent's assignee,
/// else who started it), whatever their notification setting.
pub fn agent_of(db: &Db<'_>, sc: i64) -> Result<Option<i64>> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT COALESCE(p.assignee_id, s.started_by) FROM side_conversations s
             JOIN parents p ON p.id = s.parent_id WHERE s.id = ?1",
        )?
        .query_row([sc], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Queues reply `message` of side conversation `sc` for its agent
/// ([`recipient`]).
pub fn enqueue(db: &Db<'_>, sc: i64, message: i64, now: i64) -> Result<()> {
    let Some(user) = recipient(db, sc)? else {
        return Ok(());
    };
    db.conn()
        .prepare_cached(
            "INSERT OR IGNORE INTO notification_queue (user_id, message_id, due_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![user, message, now])?;
    Ok(())
}

/// Queues a reminder (`text`, SPEC §15) about agent message `message` of
/// side conversation `sc` for its agent, in the same batches as replies.
pub fn enqueue_reminder(db: &Db<'_>, sc: i64, message: i64, text: &str, now: i64) -> Result<()> {
    let Some(user) = recipient(db, sc)? else {
        return Ok(());
    };
    db.conn()
        .prepare_cached(
            "INSERT OR IGNORE INTO notification_queue (user_id, message_id, due_at, reminder)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![user, message, now, text])?;
    Ok(())
}

/// The agents whose batch is due: its first reply queued `window` ms ago.
pub fn due_users(db: &Db<'_>, now: i64, window: i64) -> Result<Vec<i64>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT user_id FROM notification_queue WHERE sent_message_id IS NULL
         GROUP BY user_id HAVING MIN(due_at) + ?2 <= ?1",
    )?;
    let rows = stmt
        .query_map(params![now, window], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(rows)
}

/// Drops an agent's waiting replies (notifications turned off meanwhile).
pub fn drop_pending(db: &Db<'_>, user: i64) -> Result<()> {
    db.conn().execute(
        "DELETE FROM notification_queue WHERE user_id = ?1 AND sent_message_id IS NULL",
        [user],
    )?;
    Ok(())
}

/// The first `limit` waiting replies of an agent, in arrival order, each
/// with at most `chars` characters of its visible reply (only that prefix
/// is read).
pub fn pending(db: &Db<'_>, user: i64, limit: usize, chars: usize) -> Result<Vec<PendingReply>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT p.external_id, s.subject, s.id,
                COALESCE(NULLIF(m.from_name, ''), m.from_email, 'Someone'),
                COALESCE(substr(COALESCE(m.visible_reply, m.text_body), 1, ?3), ''),
                EXISTS (SELECT 1 FROM unverified_messages u WHERE u.message_id = m.id),
                q.reminder
         FROM notification_queue q JOIN messages m ON m.id = q.message_id
         JOIN side_conversations s ON s.id = m.side_conversation_id
         JOIN parents p ON p.id = s.parent_id
         WHERE q.user_id = ?1 AND q.sent_message_id IS NULL ORDER BY q.message_id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(
            params![
                user,
                i64::try_from(limit).unwrap_or(i64::MAX),
                i64::try_from(chars).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(PendingReply {
                    parent: r.get(0)?,
                    subject: r.get(1)?,
                    side_conversation: r.get(2)?,
                    vendor: r.get(3)?,
                    text: r.get(4)?,
                    unverified: r.get(5)?,
                    reminder: r.get(6)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// How many replies of an agent wait.
pub fn pending_count(db: &Db<'_>, user: i64) -> Result<usize> {
    let n: i64 = db.conn().query_row(
        "SELECT count(*) FROM notification_queue WHERE user_id = ?1 AND sent_message_id IS NULL",
        [user],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Every waiting reply of the agent was told of by `message`.
pub fn mark_sent(db: &Db<'_>, user: i64, message: i64) -> Result<()> {
    db.conn().execute(
        "UPDATE notification_queue SET sent_message_id = ?2
         WHERE user_id = ?1 AND sent_message_id IS NULL",
        params![user, message],
    )?;
    Ok(())
}

/// The agent's batch is due again one window after `now`.
pub fn postpone(db: &Db<'_>, user: i64, now: i64) -> Result<()> {
    db.conn().execute(
        "UPDATE notification_queue SET due_at = ?2 WHERE user_id = ?1 AND sent_message_id IS NULL",
        params![user, now],
    )?;
    Ok(())
}
