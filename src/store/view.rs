//! Agent-view bookkeeping (SPEC §9): which mailboxes a message appears in,
//! with UIDs that never change and a modification sequence that moves on
//! every change. Maintained in the same transaction as the change itself, so
//! the IMAP/JMAP view never scans all mail to compute its state.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use crate::model::now_ms;

pub const INBOX: &str = "INBOX";
pub const UNROUTED: &str = "Unrouted";

pub fn ticket_mailbox(external_id: &str) -> String {
    format!("Tickets/{external_id}")
}

/// Takes the next value of the global modification sequence.
pub fn next_modseq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'modseq' RETURNING value",
        [],
        |r| r.get(0),
    )?)
}

fn mailbox(conn: &Connection, name: &str, kind: &str, parent_id: Option<i64>) -> Result<i64> {
    if let Some(id) = conn
        .query_row("SELECT id FROM mailboxes WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
    {
        return Ok(id);
    }
    // UIDVALIDITY: seconds since the epoch at creation, as RFC 3501 suggests;
    // a mailbox is never recreated under the same name without a new value.
    let uidvalidity = (now_ms() / 1000).clamp(1, u32::MAX as i64);
    conn.execute(
        "INSERT INTO mailboxes (name, kind, parent_id, uidvalidity) VALUES (?1, ?2, ?3, ?4)",
        params![name, kind, parent_id, uidvalidity],
    )?;
    Ok(conn.last_insert_rowid())
}

fn append(conn: &Connection, mailbox_id: i64, message_id: i64, modseq: i64) -> Result<()> {
    let uid: i64 = conn.query_row(
        "UPDATE mailboxes SET uidnext = uidnext + 1, highest_modseq = ?2
         WHERE id = ?1 RETURNING uidnext - 1",
        params![mailbox_id, modseq],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT OR IGNORE INTO mailbox_messages (mailbox_id, uid, message_id, modseq)
         VALUES (?1, ?2, ?3, ?4)",
        params![mailbox_id, uid, message_id, modseq],
    )?;
    Ok(())
}

/// Where a message belongs in the agent view.
pub enum Placement<'a> {
    /// On a side conversation of this parent (id, external id).
    Thread {
        parent_id: i64,
        external_id: &'a str,
        inbound: bool,
    },
    Unrouted,
    /// Not shown (forwarding confirmations, verification mail).
    Hidden,
}

/// Adds a new message to its mailboxes.
pub fn add_message(conn: &Connection, message_id: i64, placement: Placement<'_>) -> Result<()> {
    let modseq = match placement {
        Placement::Hidden => return Ok(()),
        _ => next_modseq(conn)?,
    };
    match placement {
        Placement::Thread {
            parent_id,
            external_id,
            inbound,
        } => {
            let tickets = mailbox(
                conn,
                &ticket_mailbox(external_id),
                "ticket",
                Some(parent_id),
            )?;
            append(conn, tickets, message_id, modseq)?;
            if inbound {
                let inbox = mailbox(conn, INBOX, "inbox", None)?;
                append(conn, inbox, message_id, modseq)?;
            }
        }
        Placement::Unrouted => {
            let unrouted = mailbox(conn, UNROUTED, "unrouted", None)?;
            append(conn, unrouted, message_id, modseq)?;
        }
        Placement::Hidden => {}
    }
    Ok(())
}
