//! The outbox: one row per recipient of an outbound message, with its
//! delivery state (`queued → sending → sent | deferred | failed`, and
//! `bounced` when a bounce comes back), attempts, due time and last error.
//!
//! Composition calls [`enqueue`] inside its own write transaction, then
//! wakes the outbox worker (`Notify::notify_one` on the handle the app
//! gives it) once that write has committed. The worker owns the rest:
//! [`claim_due`] marks rows `sending` (committed before the send starts),
//! [`mark_sent`] / [`mark_deferred`] / [`mark_failed`] record the outcome,
//! [`in_flight`] and [`requeue`] reconcile rows a crash left in `sending`.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::sql::Dialect;
use super::{Db, Result};
use crate::model::{base32_lower, random_bytes};

/// Longest `last_error` kept (a remote reply can be long).
const MAX_ERROR_LEN: usize = 1000;

/// Delivery state of one recipient, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeliveryState {
    pub recipient: String,
    /// `queued`, `sending`, `sent`, `deferred`, `failed` or `bounced`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When the next attempt is due (ms); `None` once the state is final.
    pub next_attempt_at: Option<i64>,
    pub sent_at: Option<i64>,
}

/// States after which nothing more is attempted.
pub fn is_final(state: &str) -> bool {
    matches!(state, "sent" | "failed" | "bounced")
}

/// Queues delivery of outbound message row `message` to `recipient`; returns
/// the VERP key (unguessable: lowercase base32 of 80 random bits, 16
/// characters). The envelope sender becomes `bounce+<key>@<domain>`.
///
/// Queuing the same recipient of the same message again (say, in both To
/// and Cc) is not an error: the existing row and its key are kept.
pub fn enqueue(db: &Db<'_>, message: i64, recipient: &str, now: i64) -> Result<String> {
    let conn = db.conn();
    let key = base32_lower(&random_bytes::<10>());
    conn.execute(
        "INSERT INTO outbox (message_id, recipient, verp_key, state, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?4)
         ON CONFLICT DO NOTHING",
        params![message, recipient, key, now],
    )?;
    Ok(conn.query_row(
        "SELECT verp_key FROM outbox WHERE message_id = ?1 AND lower(recipient) = lower(?2)",
        params![message, recipient],
        |r| r.get(0),
    )?)
}

/// Delivery state of every recipient of a message, for the API, in the
/// order they were queued.
pub fn for_message(db: &Db<'_>, message: i64) -> Result<Vec<DeliveryState>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT recipient, state, attempts, last_error, next_attempt_at, sent_at
         FROM outbox WHERE message_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([message], |r| {
        let state: String = r.get(1)?;
        let next: i64 = r.get(4)?;
        Ok(DeliveryState {
            recipient: r.get(0)?,
            next_attempt_at: (!is_final(&state)).then_some(next),
            state,
            attempts: r.get(2)?,
            last_error: r.get(3)?,
            sent_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The delivery state of one recipient row, by VERP key (bounce handling,
/// tests).
pub fn by_verp_key(db: &Db<'_>, key: &str) -> Result<Option<DeliveryState>> {
    let conn = db.conn();
    Ok(conn
        .query_row(
            "SELECT recipient, state, attempts, last_error, next_attempt_at, sent_at
             FROM outbox WHERE verp_key = ?1",
            [key],
            |r| {
                let state: String = r.get(1)?;
                let next: i64 = r.get(4)?;
                Ok(DeliveryState {
                    recipient: r.get(0)?,
                    next_attempt_at: (!is_final(&state)).then_some(next),
                    state,
                    attempts: r.get(2)?,
                    last_error: r.get(3)?,
                    sent_at: r.get(5)?,
                })
            },
        )
        .optional()?)
}

/// One recipient row taken for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    /// The `messages` row whose `raw` is sent.
    pub message_id: i64,
    pub recipient: String,
    pub verp_key: String,
    /// Attempts including the one starting now.
    pub attempts: i64,
    /// When the row was queued (start of `max_age`).
    pub created_at: i64,
}

/// Takes up to `limit` due rows (`queued` or `deferred` with
/// `next_attempt_at <= now`, oldest due first) and marks them `sending`,
/// counting the attempt and its time, leased until `lease_until`. Run it
/// in its own write so the marks are committed before anything is sent.
/// On PostgreSQL the rows are locked as they are read and rows another
/// node is claiming at the same moment are skipped, so two nodes never
/// take one row.
pub fn claim_due(db: &Db<'_>, now: i64, limit: usize, lease_until: i64) -> Result<Vec<Claimed>> {
    let conn = db.conn();
    let mut select = conn.prepare_cached(match db.dialect() {
        Dialect::Sqlite => {
            "SELECT id, message_id, recipient, verp_key, attempts, created_at FROM outbox
             WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, id LIMIT ?2"
        }
        Dialect::Postgres => {
            "SELECT id, message_id, recipient, verp_key, attempts, created_at FROM outbox
             WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, id LIMIT ?2 FOR UPDATE SKIP LOCKED"
        }
    })?;
    let rows = select
        .query_map(
            params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(Claimed {
                    id: r.get(0)?,
                    message_id: r.get(1)?,
                    recipient: r.get(2)?,
                    verp_key: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? + 1,
                    created_at: r.get(5)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut mark = conn.prepare_cached(
        "UPDATE outbox SET state = 'sending', attempts = attempts + 1, last_attempt_at = ?2,
                lease_until = ?3
         WHERE id = ?1",
    )?;
    for row in &rows {
        mark.execute(params![row.id, now, lease_until])?;
    }
    Ok(rows)
}

fn clip(error: &str) -> &str {
    if error.len() <= MAX_ERROR_LEN {
        return error;
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// Records a delivery. Only a row in `sending` changes; returns whether it
/// did (a bounce may already have marked the row).
pub fn mark_sent(db: &Db<'_>, id: i64, now: i64) -> Result<bool> {
    let conn = db.conn();
    Ok(conn.execute(
        "UPDATE outbox SET state = 'sent', sent_at = ?2, last_error = NULL
         WHERE id = ?1 AND state = 'sending'",
        params![id, now],
    )? == 1)
}

/// Records a temporary failure: the row is due again at `next_attempt_at`.
pub fn mark_deferred(db: &Db<'_>, id: i64, next_attempt_at: i64, error: &str) -> Result<bool> {
    let conn = db.conn();
    Ok(conn.execute(
        "UPDATE outbox SET state = 'deferred', next_attempt_at = ?2, last_error = ?3
         WHERE id = ?1 AND state = 'sending'",
        params![id, next_attempt_at, clip(error)],
    )? == 1)
}

/// Records that delivery was given up (permanent failure, or too old).
pub fn mark_failed(db: &Db<'_>, id: i64, error: &str) -> Result<bool> {
    let conn = db.conn();
    Ok(conn.execute(
        "UPDATE outbox SET state = 'failed', last_error = ?2
         WHERE id = ?1 AND state = 'sending'",
        params![id, clip(error)],
    )? == 1)
}

/// A row a previous run left in `sending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub id: i64,
    pub verp_key: String,
}

/// Rows in `sending` whose send was interrupted (see [`Db::stale_before`]):
/// at start-up, and on PostgreSQL from time to time, those of a node that
/// died.
pub fn in_flight(db: &Db<'_>, now: i64) -> Result<Vec<InFlight>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT id, verp_key FROM outbox
         WHERE state = 'sending' AND COALESCE(lease_until, 0) < ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([db.stale_before(now)], |r| {
        Ok(InFlight {
            id: r.get(0)?,
            verp_key: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Puts a row left in `sending` back in the queue, due at `now`. The
/// attempt it was counted for stays counted.
pub fn requeue(db: &Db<'_>, id: i64, now: i64) -> Result<bool> {
    let conn = db.conn();
    Ok(conn.execute(
        "UPDATE outbox SET state = 'queued', next_attempt_at = ?2, lease_until = NULL,
                last_error = COALESCE(last_error, 'interrupted by a restart')
         WHERE id = ?1 AND state = 'sending' AND COALESCE(lease_until, 0) < ?3",
        params![id, now, db.stale_before(now)],
    )? == 1)
}

/// The bytes sent to outbox row `outbox_id` of message `message`: the
/// recipient's own copy when it has one (it carries their portal link),
/// else the message's raw bytes.
pub fn raw(db: &Db<'_>, outbox_id: i64, message: i64) -> Result<Vec<u8>> {
    let conn = db.conn();
    let copy: Option<Vec<u8>> = conn
        .prepare_cached("SELECT raw FROM outbox_copies WHERE outbox_id = ?1")?
        .query_row([outbox_id], |r| r.get(0))
        .optional()?;
    if let Some(raw) = copy {
        return Ok(raw);
    }
    Ok(conn.query_row(
        "SELECT raw FROM messages WHERE id = ?1 AND direction = 'out'",
        [message],
        |r| r.get(0),
    )?)
}

/// Keeps `raw` as recipient `recipient`'s own copy of message `message`.
pub fn set_copy(db: &Db<'_>, message: i64, recipient: &str, raw: &[u8]) -> Result<()> {
    let conn = db.conn();
    conn.prepare_cached(
        "INSERT INTO outbox_copies (outbox_id, raw)
         SELECT id, ?3 FROM outbox WHERE message_id = ?1 AND lower(recipient) = lower(?2)
         ON CONFLICT (outbox_id) DO UPDATE SET raw = excluded.raw",
    )?
    .execute(params![message, recipient, raw])?;
    Ok(())
}

/// When the earliest waiting row is due, if any.
pub fn next_due(db: &Db<'_>) -> Result<Option<i64>> {
    let conn = db.conn();
    Ok(conn.query_row(
        "SELECT MIN(next_attempt_at) FROM outbox WHERE state IN ('queued', 'deferred')",
        [],
        |r| r.get(0),
    )?)
}

/// Rows not yet in a final state (queued, deferred, sending).
pub fn queue_depth(db: &Db<'_>) -> Result<i64> {
    let conn = db.conn();
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'deferred', 'sending')",
        [],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> rusqlite::Connection {
        let conn = crate::store::memory_db();
        conn.execute_batch(
            "INSERT INTO messages (id, direction, kind, route, raw, raw_sha256, received_at)
             VALUES (1, 'out', 'agent', 'api', x'6869', x'00', 0);",
        )
        .expect("seed");
        conn
    }

    fn state(db: &Db<'_>, key: &str) -> DeliveryState {
        by_verp_key(db, key).expect("read").expect("row")
    }

    #[test]
    fn enqueue_gives_unguessable_keys_and_is_idempotent_per_recipient() {
        let c_conn = db();
        let c = &Db::for_test(&c_conn);
        let a = enqueue(c, 1, "bob@vendor.example", 10).expect("a");
        let b = enqueue(c, 1, "carol@vendor.example", 10).expect("b");
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|ch| ch.is_ascii_lowercase() || (b'2'..=b'7').contains(&ch))
        );
        assert_ne!(a, b);
        // the same recipient again (any case) keeps the first row
        assert_eq!(enqueue(c, 1, "Bob@Vendor.example", 11).expect("again"), a);
        let all = for_message(c, 1).expect("list");
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            DeliveryState {
                recipient: "bob@vendor.example".into(),
                state: "queued".into(),
                attempts: 0,
                last_error: None,
                next_attempt_at: Some(10),
                sent_at: None,
            }
        );
    }

    #[test]
    fn lifecycle() {
        let c_conn = db();
        let c = &Db::for_test(&c_conn);
        let a = enqueue(c, 1, "bob@vendor.example", 10).expect("a");
        let b = enqueue(c, 1, "carol@vendor.example", 20).expect("b");
        // nothing due before its time
        assert!(claim_due(c, 5, 8, 5 + 1000).expect("claim").is_empty());
        let claimed = claim_due(c, 15, 8, 15 + 1000).expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].verp_key, a);
        assert_eq!(claimed[0].attempts, 1);
        assert_eq!(state(c, &a).state, "sending");
        // a claimed row is not claimed twice
        let claimed_b = claim_due(c, 25, 8, 25 + 1000).expect("claim");
        assert_eq!(claimed_b.len(), 1);
        assert_eq!(claimed_b[0].verp_key, b);
        assert_eq!(queue_depth(c).expect("depth"), 2);

        assert!(mark_deferred(c, claimed[0].id, 100, "451 4.7.1 later").expect("defer"));
        let s = state(c, &a);
        assert_eq!(
            (s.state.as_str(), s.attempts, s.next_attempt_at),
            ("deferred", 1, Some(100))
        );
        assert_eq!(s.last_error.as_deref(), Some("451 4.7.1 later"));
        assert_eq!(next_due(c).expect("due"), Some(100));
        // only rows in `sending` move
        assert!(!mark_sent(c, claimed[0].id, 50).expect("not sending"));

        let again = claim_due(c, 100, 8, 100 + 1000).expect("claim");
        assert_eq!(again[0].attempts, 2);
        assert!(mark_sent(c, again[0].id, 120).expect("sent"));
        let s = state(c, &a);
        assert_eq!(
            (s.state.as_str(), s.attempts, s.next_attempt_at, s.sent_at),
            ("sent", 2, None, Some(120))
        );
        assert_eq!(s.last_error, None);

        assert!(mark_failed(c, claimed_b[0].id, &"x".repeat(5000)).expect("failed"));
        let s = state(c, &b);
        assert_eq!(s.state, "failed");
        assert_eq!(s.next_attempt_at, None);
        assert_eq!(s.last_error.map(|e| e.len()), Some(MAX_ERROR_LEN));
        assert_eq!(queue_depth(c).expect("depth"), 0);
        assert_eq!(next_due(c).expect("due"), None);

        // A bounce never overrides a delivery already given up...
        assert!(!mark_bounced(c, claimed_b[0].id, "5.1.1 gone").expect("bounce"));
        assert_eq!(state(c, &b).state, "failed");
        // ...marks a delivered one once, which stays delivered before.
        assert!(mark_bounced(c, again[0].id, "5.1.1 gone").expect("bounce"));
        assert!(!mark_bounced(c, again[0].id, "5.1.1 again").expect("bounce"));
        let s = state(c, &a);
        assert_eq!((s.state.as_str(), s.sent_at), ("bounced", Some(120)));
        assert_eq!(s.last_error.as_deref(), Some("5.1.1 gone"));
        assert!(delivered_before(c, 1, claimed_b[0].id).expect("delivered"));
        assert!(!delivered_before(c, 1, again[0].id).expect("delivered"));
    }

    #[test]
    fn requeue_after_a_crash() {
        let c_conn = db();
        let c = &Db::for_test(&c_conn);
        let a = enqueue(c, 1, "bob@vendor.example", 10).expect("a");
        let claimed = claim_due(c, 10, 8, 10 + 1000).expect("claim");
        assert_eq!(
            in_flight(c, 10).expect("in flight"),
            vec![InFlight {
                id: claimed[0].id,
                verp_key: a.clone()
            }]
        );
        assert!(requeue(c, claimed[0].id, 30).expect("requeue"));
        let s = state(c, &a);
        assert_eq!(
            (s.state.as_str(), s.attempts, s.next_attempt_at),
            ("queued", 1, Some(30))
        );
        assert!(in_flight(c, 10).expect("in flight").is_empty());
        assert_eq!(raw(c, 1, 1).expect("raw"), b"hi");
    }
}

/// An outbound delivery a bounce reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceTarget {
    pub outbox_id: i64,
    pub recipient: String,
    pub side_conversation: Option<i64>,
}

fn target(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<BounceTarget> {
    Ok(BounceTarget {
        outbox_id: r.get(0)?,
        recipient: r.get(1)?,
        side_conversation: r.get(2)?,
    })
}

/// The delivery a VERP key names.
pub fn target_of_verp_key(db: &Db<'_>, key: &str) -> Result<Option<BounceTarget>> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT o.id, o.recipient, m.side_conversation_id
             FROM outbox o JOIN messages m ON m.id = o.message_id WHERE o.verp_key = ?1",
        )?
        .query_row([key], target)
        .optional()?)
}

/// Every delivery of the outbound message with this Message-ID.
pub fn targets_of_message_id(db: &Db<'_>, message_id: &str) -> Result<Vec<BounceTarget>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT o.id, o.recipient, m.side_conversation_id
         FROM outbox o JOIN messages m ON m.id = o.message_id
         WHERE m.message_id = ?1 AND m.direction = 'out'",
    )?;
    let rows = stmt
        .query_map([message_id], target)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A permanent bounce came back for the delivery. A delivery already given
/// up (`failed` or `bounced`) stays as it is; returns whether the row
/// changed.
pub fn mark_bounced(db: &Db<'_>, id: i64, diagnostic: &str) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached(
            "UPDATE outbox SET state = 'bounced', last_error = ?2
             WHERE id = ?1 AND state NOT IN ('failed', 'bounced')",
        )?
        .execute(params![id, clip(diagnostic)])?
        == 1)
}

/// A delay notice came back for the delivery: noted, nothing else changes.
pub fn note_delay(db: &Db<'_>, id: i64, diagnostic: &str) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE outbox SET last_error = ?2 WHERE id = ?1")?
        .execute(params![id, format!("delayed: {diagnostic}")])?;
    Ok(())
}

/// What the events of one recipient's delivery outcome tell (SPEC §5):
/// the recipient row, its message and the side conversation it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub outbox_id: i64,
    pub recipient: String,
    pub state: String,
    pub attempts: i64,
    /// The `messages` row.
    pub message: i64,
    /// Its Message-ID header (no brackets).
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub side_conversation: i64,
    pub side_conversation_subject: String,
    pub parent_id: i64,
    /// The parent's external id.
    pub parent: String,
}

fn emails(json: &str) -> Vec<String> {
    serde_json::from_str::<Vec<crate::model::Mailbox>>(json)
        .map(|list| list.into_iter().map(|m| m.email).collect())
        .unwrap_or_default()
}

/// The outcome facts of recipient row `id`, when its message is on a side
/// conversation (a notification or a verification mail is on none:
/// `None`).
pub fn outcome(db: &Db<'_>, id: i64) -> Result<Option<Outcome>> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT o.id, o.recipient, o.state, o.attempts, m.id, m.message_id, m.from_email,
                    m.to_addrs, m.cc_addrs, m.subject, s.id, s.subject, p.id, p.external_id
             FROM outbox o JOIN messages m ON m.id = o.message_id
             JOIN side_conversations s ON s.id = m.side_conversation_id
             JOIN parents p ON p.id = s.parent_id
             WHERE o.id = ?1",
        )?
        .query_row([id], |r| {
            Ok(Outcome {
                outbox_id: r.get(0)?,
                recipient: r.get(1)?,
                state: r.get(2)?,
                attempts: r.get(3)?,
                message: r.get(4)?,
                message_id: r.get(5)?,
                from: r.get(6)?,
                to: emails(&r.get::<_, String>(7)?),
                cc: emails(&r.get::<_, String>(8)?),
                subject: r.get(9)?,
                side_conversation: r.get(10)?,
                side_conversation_subject: r.get(11)?,
                parent_id: r.get(12)?,
                parent: r.get(13)?,
            })
        })
        .optional()?)
}

/// Whether a recipient of message `message` other than row `except` was
/// ever delivered (`sent_at` is kept when a bounce comes back later).
pub fn delivered_before(db: &Db<'_>, message: i64, except: i64) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox
                            WHERE message_id = ?1 AND id != ?2 AND sent_at IS NOT NULL)",
        )?
        .query_row(params![message, except], |r| r.get(0))?)
}

/// The state of recipient row `id`, if it exists.
pub fn state_of(db: &Db<'_>, id: i64) -> Result<Option<String>> {
    Ok(db
        .conn()
        .prepare_cached("SELECT state FROM outbox WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}
