//! Sender addresses (`senders`): the rows, their verification state, their
//! DNS health as last checked.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};
use crate::model::{ForwardingCandidate, NewSenderRow, PendingCode, Sender};

const COLUMNS: &str = "id, email, name, reply_mode, status, forwarding_local, forwarding_state,
     forwarding_confirmed_at, forwarding_confirmation, dns, dns_checked_at, signature_text,
     signature_html, verified_at, created_at";

fn row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<Sender> {
    Ok(Sender {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        reply_mode: r.get(3)?,
        status: r.get(4)?,
        forwarding_local: r.get(5)?,
        forwarding_state: r.get(6)?,
        forwarding_confirmed_at: r.get(7)?,
        forwarding_confirmation: r.get(8)?,
        dns: r.get(9)?,
        dns_checked_at: r.get(10)?,
        signature_text: r.get(11)?,
        signature_html: r.get(12)?,
        verified_at: r.get(13)?,
        created_at: r.get(14)?,
    })
}

/// Whether `email` is a sender address (any status).
pub fn exists(db: &Db<'_>, email: &str) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached("SELECT 1 FROM senders WHERE lower(email) = lower(?1)")?
        .query_row([email], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether `email` is a verified sender address.
pub fn is_verified(db: &Db<'_>, email: &str) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT 1 FROM senders WHERE lower(email) = lower(?1) AND status = 'verified'",
        )?
        .query_row([email], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn get(db: &Db<'_>, email: &str) -> Result<Option<Sender>> {
    Ok(db
        .conn()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM senders WHERE lower(email) = lower(?1)"
        ))?
        .query_row([email], row)
        .optional()?)
}

/// Every sender's address, oldest first.
pub fn emails(db: &Db<'_>) -> Result<Vec<String>> {
    let mut stmt = db
        .conn()
        .prepare_cached("SELECT email FROM senders ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

pub fn insert(db: &Db<'_>, s: &NewSenderRow) -> Result<()> {
    db.conn().execute(
        "INSERT INTO senders (email, name, reply_mode, forwarding_local, signature_text, signature_html, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            s.email,
            s.name,
            s.reply_mode,
            s.forwarding_local,
            s.signature_text,
            s.signature_html,
            s.created_at
        ],
    )?;
    Ok(())
}

/// A sender's editable settings as they are after an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSettings {
    pub name: String,
    pub reply_mode: String,
    pub signature_text: Option<String>,
    pub signature_html: Option<String>,
}

/// Replaces a sender's name, reply mode and signature; false when there is
/// no such sender.
pub fn update(db: &Db<'_>, email: &str, s: &SenderSettings) -> Result<bool> {
    Ok(db.conn().execute(
        "UPDATE senders SET name = ?2, reply_mode = ?3, signature_text = ?4, signature_html = ?5
         WHERE lower(email) = lower(?1)",
        params![
            email,
            s.name,
            s.reply_mode,
            s.signature_text,
            s.signature_html
        ],
    )? > 0)
}

/// Removes a sender; false when there was none.
pub fn delete(db: &Db<'_>, email: &str) -> Result<bool> {
    Ok(db.conn().execute(
        "DELETE FROM senders WHERE lower(email) = lower(?1)",
        [email],
    )? > 0)
}

/// A new verification code is in flight (its hash, expiry; attempts reset).
pub fn set_code(
    db: &Db<'_>,
    email: &str,
    nonce: &str,
    code_hash: &[u8],
    expires_at: i64,
) -> Result<()> {
    db.conn().execute(
        "UPDATE senders SET verification_nonce = ?2, verification_code_hash = ?3,
                verification_expires_at = ?4, verification_attempts = 0 WHERE lower(email) = lower(?1)",
        params![email, nonce, code_hash, expires_at],
    )?;
    Ok(())
}

/// A forwarding probe is in flight: forwarding is unknown until it returns.
pub fn set_probe(db: &Db<'_>, email: &str, nonce: &str) -> Result<()> {
    db.conn().execute(
        "UPDATE senders SET verification_nonce = ?2, forwarding_state = 'unknown' WHERE lower(email) = lower(?1)",
        params![email, nonce],
    )?;
    Ok(())
}

pub fn pending_code(db: &Db<'_>, email: &str) -> Result<Option<PendingCode>> {
    Ok(db
        .conn()
        .query_row(
            "SELECT status, verification_code_hash, verification_expires_at, verification_attempts
             FROM senders WHERE lower(email) = lower(?1)",
            [email],
            |r| {
                Ok(PendingCode {
                    status: r.get(0)?,
                    code_hash: r.get(1)?,
                    expires_at: r.get(2)?,
                    attempts: r.get(3)?,
                })
            },
        )
        .optional()?)
}

/// Counts a wrong code.
pub fn count_wrong_code(db: &Db<'_>, email: &str) -> Result<()> {
    db.conn().execute(
        "UPDATE senders SET verification_attempts = verification_attempts + 1 WHERE lower(email) = lower(?1)",
        [email],
    )?;
    Ok(())
}

/// Verified by its code.
pub fn mark_verified_by_code(db: &Db<'_>, email: &str, now: i64) -> Result<()> {
    db.conn().execute(
        "UPDATE senders SET status = 'verified', verified_at = ?2, verification_code_hash = NULL,
                verification_expires_at = NULL WHERE lower(email) = lower(?1)",
        params![email, now],
    )?;
    Ok(())
}

/// Verified by its own verification mail coming back through forwarding,
/// which also confirms forwarding. Returns the address when it changed.
pub fn mark_verified_by_forwarding(db: &Db<'_>, id: i64, now: i64) -> Result<Option<String>> {
    let conn = db.conn();
    let changed = conn
        .prepare_cached(
            "UPDATE senders SET status = 'verified', verified_at = COALESCE(verified_at, ?2),
                    forwarding_state = 'confirmed', forwarding_confirmed_at = ?2,
                    verification_nonce = NULL, verification_code_hash = NULL
             WHERE id = ?1",
        )?
        .execute(params![id, now])?;
    if changed == 0 {
        return Ok(None);
    }
    Ok(Some(
        conn.prepare_cached("SELECT email FROM senders WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?,
    ))
}

/// Keeps a mail provider's forwarding confirmation (JSON) on the sender.
pub fn set_forwarding_confirmation(db: &Db<'_>, id: i64, confirmation: &str) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE senders SET forwarding_confirmation = ?2 WHERE id = ?1")?
        .execute(params![id, confirmation])?;
    Ok(())
}

/// Stores the result of a DNS check (JSON).
pub fn record_dns(db: &Db<'_>, email: &str, dns: &str, now: i64) -> Result<()> {
    db.conn().execute(
        "UPDATE senders SET dns = ?2, dns_checked_at = ?3 WHERE lower(email) = lower(?1)",
        params![email, dns, now],
    )?;
    Ok(())
}

/// `unknown` or `confirmed`; `None` for an unknown sender.
pub fn forwarding_state(db: &Db<'_>, email: &str) -> Result<Option<String>> {
    Ok(db
        .conn()
        .query_row(
            "SELECT forwarding_state FROM senders WHERE lower(email) = lower(?1)",
            [email],
            |r| r.get(0),
        )
        .optional()?)
}

/// The senders whose forwarding address has local part `local`, or that
/// have a verification mail in flight (for `local == ""`: only those).
pub fn forwarding_candidates(db: &Db<'_>, local: &str) -> Result<Vec<ForwardingCandidate>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT id, email, forwarding_local, verification_nonce FROM senders
         WHERE verification_nonce IS NOT NULL OR lower(forwarding_local) = lower(?1)",
    )?;
    let rows = stmt
        .query_map([local], |r| {
            Ok(ForwardingCandidate {
                id: r.get(0)?,
                email: r.get(1)?,
                forwarding_local: r.get(2)?,
                verification_nonce: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The DNS checks (JSON) of the senders of `domain` that have one.
pub fn dns_checks_of_domain(db: &Db<'_>, domain: &str) -> Result<Vec<String>> {
    let mut stmt = db.conn().prepare_cached(
        "SELECT dns FROM senders WHERE lower(email) LIKE '%@' || lower(?1) AND dns IS NOT NULL",
    )?;
    let rows = stmt
        .query_map([domain], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}
