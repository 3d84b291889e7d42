//! The inbound queue: messages accepted over SMTP, committed before the
//! `250` reply, waiting for the ingest pipeline.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Db, Result};

/// The SMTP envelope of one accepted message.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub peer_ip: String,
    pub helo: String,
    /// Reverse-path; empty for the null sender `<>`.
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub tls: bool,
    /// MAIL/RCPT parameters kept for the record (SIZE, BODY, SMTPUTF8, RET,
    /// ENVID, NOTIFY, ORCPT), as `name=value` strings.
    pub params: Vec<String>,
    pub received_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub id: i64,
    pub envelope: Envelope,
    pub raw: Vec<u8>,
    pub sha256: Vec<u8>,
    pub state: String,
    pub attempts: i64,
}

/// Stores one accepted message; returns its queue id.
pub fn enqueue(db: &Db<'_>, envelope: &Envelope, raw: &[u8]) -> Result<i64> {
    let conn = db.conn();
    let sha: [u8; 32] = Sha256::digest(raw).into();
    // The bytes go to `inbound_raw` (schema migration 4): the queue row
    // stays small, so marking it done never rewrites the mail.
    conn.prepare_cached(
        "INSERT INTO inbound_queue
           (received_at, peer_ip, helo, mail_from, rcpts, tls, params, size, sha256, raw)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        envelope.received_at,
        envelope.peer_ip,
        envelope.helo,
        envelope.mail_from,
        serde_json::to_string(&envelope.rcpts)?,
        envelope.tls,
        serde_json::to_string(&envelope.params)?,
        raw.len() as i64,
        &sha[..],
        &[][..] as &[u8],
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("INSERT INTO inbound_raw (id, raw) VALUES (?1, ?2)")?
        .execute(params![id, raw])?;
    Ok(id)
}

fn from_row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<(InboundMessage, String, String)> {
    Ok((
        InboundMessage {
            id: r.get(0)?,
            envelope: Envelope {
                received_at: r.get(1)?,
                peer_ip: r.get(2)?,
                helo: r.get(3)?,
                mail_from: r.get(4)?,
                rcpts: Vec::new(),
                tls: r.get(6)?,
                params: Vec::new(),
            },
            raw: r.get(8)?,
            sha256: r.get(9)?,
            state: r.get(10)?,
            attempts: r.get(11)?,
        },
        r.get(5)?,
        r.get::<_, Option<String>>(7)?
            .unwrap_or_else(|| "[]".into()),
    ))
}

/// The columns `from_row` reads, from `inbound_queue q LEFT JOIN
/// inbound_raw r` (rows queued before migration 4 keep their bytes in the
/// queue row).
const COLUMNS: &str =
    "q.id, q.received_at, q.peer_ip, q.helo, q.mail_from, q.rcpts, q.tls, q.params,
     coalesce(r.raw, q.raw), q.sha256, q.state, q.attempts";
const FROM: &str = "inbound_queue q LEFT JOIN inbound_raw r ON r.id = q.id";

fn finish(row: (InboundMessage, String, String)) -> Result<InboundMessage> {
    let (mut m, rcpts, params) = row;
    m.envelope.rcpts = serde_json::from_str(&rcpts)?;
    m.envelope.params = serde_json::from_str(&params)?;
    Ok(m)
}

pub fn get(db: &Db<'_>, id: i64) -> Result<InboundMessage> {
    let conn = db.conn();
    finish(conn.query_row(
        &format!("SELECT {COLUMNS} FROM {FROM} WHERE q.id = ?1"),
        [id],
        from_row,
    )?)
}

/// The oldest queued messages, in arrival order: at most `limit`, and no
/// more than `max_bytes` of raw mail (but always at least one message).
pub fn pending(db: &Db<'_>, limit: usize, max_bytes: usize) -> Result<Vec<InboundMessage>> {
    let _conn = db.conn();
    pending_after(db, 0, limit, max_bytes)
}

/// [`pending`] among the messages queued after queue id `after`.
pub fn pending_after(
    db: &Db<'_>,
    after: i64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<InboundMessage>> {
    let conn = db.conn();
    let mut sizes = conn.prepare_cached(
        "SELECT id, size FROM inbound_queue WHERE state = 'queued' AND id > ?2 ORDER BY id LIMIT ?1",
    )?;
    let mut total = 0usize;
    let mut last_id = None;
    for row in sizes.query_map(params![limit as i64, after], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (id, size) = row?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if last_id.is_some() && total.saturating_add(size) > max_bytes {
            break;
        }
        total = total.saturating_add(size);
        last_id = Some(id);
    }
    let Some(last_id) = last_id else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {FROM}
         WHERE q.state = 'queued' AND q.id > ?3 AND q.id <= ?1 ORDER BY q.id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![last_id, limit as i64, after], from_row)?;
    rows.map(|r| finish(r?)).collect()
}

/// Every stored message id with its bytes' length and hash, in order
/// (used by the byte-identity checks).
/// The queue row became message `message` (or duplicated it: `note`).
pub fn mark_done(db: &Db<'_>, id: i64, message: i64, note: Option<&str>, now: i64) -> Result<()> {
    db.conn()
        .prepare_cached(
            "UPDATE inbound_queue SET state = 'done', processed_at = ?2, message_id = ?3,
                    attempts = attempts + 1, last_error = ?4
             WHERE id = ?1",
        )?
        .execute(params![id, now, message, note])?;
    Ok(())
}

/// An attempt at the queue row failed; it stays queued for a retry.
pub fn count_failure(db: &Db<'_>, id: i64, error: &str) -> Result<()> {
    db.conn().execute(
        "UPDATE inbound_queue SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
        params![id, error],
    )?;
    Ok(())
}

/// The pipeline gave up on the queue row: it is stored whole with the
/// unrouted mail, flagged `ingest_error`, so an admin sees it. Returns the
/// message id, or `None` when the row was done meanwhile.
pub fn give_up(db: &Db<'_>, id: i64, error: &str, now: i64) -> Result<Option<i64>> {
    let m = get(db, id)?;
    if m.state != "queued" {
        return Ok(None);
    }
    let conn = db.conn();
    conn.execute(
        "INSERT INTO messages (direction, kind, route, inbound_id, raw, raw_sha256, flags, received_at)
         VALUES ('in', 'reply', 'unrouted', ?1, ?2, ?3, '[\"ingest_error\"]', ?4)",
        params![id, m.raw, m.sha256, m.envelope.received_at],
    )?;
    let message = conn.last_insert_rowid();
    conn.execute(
        "UPDATE inbound_queue SET state = 'failed', attempts = attempts + 1, last_error = ?2,
                processed_at = ?3, message_id = ?4 WHERE id = ?1",
        params![id, error, now, message],
    )?;
    Ok(Some(message))
}

/// The queue row's state: `queued`, `done` or `failed`.
pub fn state(db: &Db<'_>, id: i64) -> Result<String> {
    Ok(db
        .conn()
        .prepare_cached("SELECT state FROM inbound_queue WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?)
}

pub fn count(db: &Db<'_>) -> Result<i64> {
    let conn = db.conn();
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM inbound_queue")?
        .query_row([], |r| r.get(0))?)
}
