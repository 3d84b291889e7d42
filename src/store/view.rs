//! Agent-view bookkeeping (SPEC §9): which mailboxes a message appears in,
//! with UIDs that never change and a modification sequence that moves on
//! every change. Maintained in the same transaction as the change itself, so
//! the IMAP/JMAP view never scans all mail to compute its state.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params};

use super::{Db, Result, StoreError};
use crate::model::now_ms;

pub const INBOX: &str = "INBOX";
pub const UNROUTED: &str = "Unrouted";
/// What every user's own Sent mailbox is called (SPEC §9).
pub const SENT: &str = "Sent";

/// The stored (unique) name of a user's Sent mailbox; clients see [`SENT`].
fn sent_mailbox(user_id: i64) -> String {
    format!("Sent:{user_id}")
}

pub fn ticket_mailbox(external_id: &str) -> String {
    format!("Tickets/{external_id}")
}

/// Takes the next value of the global modification sequence.
pub fn next_modseq(db: &Db<'_>) -> Result<i64> {
    let conn = db.conn();
    Ok(conn
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'modseq' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Where a message goes: a mailbox's stored name, kind, parent (tickets)
/// and owner (Sent).
struct Target<'a> {
    name: &'a str,
    kind: &'a str,
    parent_id: Option<i64>,
    owner: Option<i64>,
}

/// Creates a mailbox that does not exist yet.
fn create_mailbox(db: &Db<'_>, t: &Target<'_>) -> Result<()> {
    let conn = db.conn();
    // UIDVALIDITY: seconds since the epoch at creation, as RFC 3501 suggests;
    // a mailbox is never recreated under the same name without a new value.
    let uidvalidity = (now_ms() / 1000).clamp(1, u32::MAX as i64);
    conn.prepare_cached(
        "INSERT INTO mailboxes (name, kind, parent_id, owner_user_id, uidvalidity)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![t.name, t.kind, t.parent_id, t.owner, uidvalidity])?;
    Ok(())
}

/// Creates a new user's Sent mailbox (in the transaction creating the
/// user), so every client finds it from the start.
pub fn create_sent_mailbox(db: &Db<'_>, user_id: i64) -> Result<()> {
    create_mailbox(
        db,
        &Target {
            name: &sent_mailbox(user_id),
            kind: "sent",
            parent_id: None,
            owner: Some(user_id),
        },
    )
}

/// Appends a message to the mailbox named `name` (created on first use)
/// under the next UID. Finding the mailbox and taking its UID are one
/// statement: on a large store every lookup is a descent of the name
/// index, and each inbound message goes into two mailboxes.
fn append(db: &Db<'_>, target: Target<'_>, message_id: i64, modseq: i64) -> Result<()> {
    let conn = db.conn();
    let name = target.name;
    let take_uid = || -> Result<Option<(i64, i64)>> {
        Ok(conn
            .prepare_cached(
                "UPDATE mailboxes SET uidnext = uidnext + 1, highest_modseq = ?2
                 WHERE name = ?1 RETURNING id, uidnext - 1",
            )?
            .query_row(params![name, modseq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    };
    let (mailbox_id, uid) = match take_uid()? {
        Some(taken) => taken,
        None => {
            create_mailbox(db, &target)?;
            take_uid()?.ok_or(StoreError::NotFound)?
        }
    };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO mailbox_messages (mailbox_id, uid, message_id, modseq)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![mailbox_id, uid, message_id, modseq])?;
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
pub fn add_message(db: &Db<'_>, message_id: i64, placement: Placement<'_>) -> Result<()> {
    add_authored_message(db, message_id, placement, None)
}

/// Adds a new message to its mailboxes and, when a user wrote it, to that
/// user's Sent, all at one modseq (one change of the view).
pub fn add_authored_message(
    db: &Db<'_>,
    message_id: i64,
    placement: Placement<'_>,
    author: Option<i64>,
) -> Result<()> {
    let _conn = db.conn();
    let modseq = match placement {
        Placement::Hidden => return Ok(()),
        _ => next_modseq(db)?,
    };
    match placement {
        Placement::Thread {
            parent_id,
            external_id,
            inbound,
        } => {
            let tickets = ticket_mailbox(external_id);
            let ticket = Target {
                name: &tickets,
                kind: "ticket",
                parent_id: Some(parent_id),
                owner: None,
            };
            append(db, ticket, message_id, modseq)?;
            if inbound {
                append(db, fixed(INBOX, "inbox"), message_id, modseq)?;
            }
        }
        Placement::Unrouted => {
            append(db, fixed(UNROUTED, "unrouted"), message_id, modseq)?;
        }
        Placement::Hidden => {}
    }
    if let Some(user_id) = author {
        let sent = Target {
            name: &sent_mailbox(user_id),
            kind: "sent",
            parent_id: None,
            owner: Some(user_id),
        };
        append(db, sent, message_id, modseq)?;
    }
    Ok(())
}

/// INBOX or Unrouted.
fn fixed<'a>(name: &'a str, kind: &'a str) -> Target<'a> {
    Target {
        name,
        kind,
        parent_id: None,
        owner: None,
    }
}

/// Takes a message out of a mailbox (an Unrouted message assigned to a
/// thread), leaving a record so sessions and JMAP clients learn of it.
pub fn remove_message(db: &Db<'_>, mailbox_name: &str, message_id: i64) -> Result<()> {
    let conn = db.conn();
    let Some((mailbox_id, uid)) = conn
        .prepare_cached(
            "SELECT mm.mailbox_id, mm.uid FROM mailbox_messages mm
             JOIN mailboxes mb ON mb.id = mm.mailbox_id
             WHERE mb.name = ?1 AND mm.message_id = ?2",
        )?
        .query_row(params![mailbox_name, message_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?
    else {
        return Ok(());
    };
    let modseq = next_modseq(db)?;
    conn.prepare_cached("DELETE FROM mailbox_messages WHERE mailbox_id = ?1 AND uid = ?2")?
        .execute(params![mailbox_id, uid])?;
    conn.prepare_cached(
        "INSERT INTO mailbox_removed (mailbox_id, uid, message_id, modseq)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (mailbox_id, uid) DO UPDATE SET
           message_id = excluded.message_id, modseq = excluded.modseq",
    )?
    .execute(params![mailbox_id, uid, message_id, modseq])?;
    conn.prepare_cached("UPDATE mailboxes SET highest_modseq = ?2 WHERE id = ?1")?
        .execute(params![mailbox_id, modseq])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading the view (IMAP and JMAP share these)

/// The current value of the global modification sequence: JMAP state
/// strings and IMAP HIGHESTMODSEQ derive from it.
pub fn current_modseq(db: &Db<'_>) -> Result<i64> {
    let conn = db.conn();
    Ok(conn
        .prepare_cached("SELECT value FROM counters WHERE name = 'modseq'")?
        .query_row([], |r| r.get(0))?)
}

/// One mailbox of the agent view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub id: i64,
    /// `INBOX`, `Unrouted`, `Sent` or `Tickets/<external id>`.
    pub name: String,
    /// `inbox`, `ticket`, `unrouted` or `sent`.
    pub kind: String,
    pub parent_id: Option<i64>,
    /// Whose Sent mailbox it is (kind `sent` only).
    pub owner: Option<i64>,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: i64,
}

fn mailbox_row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<Mailbox> {
    let kind: String = r.get(2)?;
    Ok(Mailbox {
        id: r.get(0)?,
        // Every user's Sent is called Sent (its stored name is unique).
        name: if kind == "sent" {
            SENT.to_string()
        } else {
            r.get(1)?
        },
        kind,
        parent_id: r.get(3)?,
        owner: r.get(4)?,
        uidvalidity: r.get::<_, i64>(5)?.clamp(1, u32::MAX as i64) as u32,
        uidnext: r.get::<_, i64>(6)?.clamp(1, u32::MAX as i64) as u32,
        highest_modseq: r.get(7)?,
    })
}

const MAILBOX_COLUMNS: &str =
    "id, name, kind, parent_id, owner_user_id, uidvalidity, uidnext, highest_modseq";

/// Who is looking at the agent view: what they may see depends on their
/// role (Unrouted) and on who they are (their own Sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub role: crate::model::Role,
    pub user_id: i64,
}

impl Viewer {
    /// Whether this viewer sees the mailbox: Unrouted is for owners and
    /// admins only, a Sent mailbox for its owner only (SPEC §9).
    pub fn may_see(&self, m: &Mailbox) -> bool {
        self.sees(&m.kind, m.owner)
    }

    fn sees(&self, kind: &str, owner: Option<i64>) -> bool {
        match kind {
            "unrouted" => self.role.can_administer(),
            "sent" => owner == Some(self.user_id),
            _ => true,
        }
    }
}

/// The same rule as [`Viewer::may_see`] in SQL over a `mailboxes` row
/// aliased `mb`, for a viewer who administers (`admin`) and is user
/// `user`.
fn visible_sql(mb: &str, admin: bool, user: i64) -> String {
    let hidden = if admin {
        "'sent'"
    } else {
        "'unrouted', 'sent'"
    };
    format!("{mb}.kind NOT IN ({hidden}) OR ({mb}.kind = 'sent' AND {mb}.owner_user_id = {user})")
}

/// Every mailbox the viewer may see: INBOX first, then their Sent, then
/// Tickets/… by name, then Unrouted.
pub fn mailboxes(db: &Db<'_>, viewer: Viewer) -> Result<Vec<Mailbox>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes
         WHERE kind != 'sent' OR owner_user_id = ?1
         ORDER BY CASE kind WHEN 'inbox' THEN 0 WHEN 'sent' THEN 1 WHEN 'ticket' THEN 2 ELSE 3 END,
                  name"
    ))?;
    let all = stmt
        .query_map([viewer.user_id], mailbox_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(all.into_iter().filter(|m| viewer.may_see(m)).collect())
}

/// A mailbox by name, if the viewer may see it. `INBOX` matches in any case
/// (RFC 3501 §5.1); other names are exact. `Sent` is the viewer's own.
pub fn mailbox_by_name(db: &Db<'_>, viewer: Viewer, name: &str) -> Result<Option<Mailbox>> {
    let conn = db.conn();
    let name = if name.eq_ignore_ascii_case(INBOX) {
        INBOX.to_string()
    } else if name == SENT {
        sent_mailbox(viewer.user_id)
    } else if name.starts_with("Sent:") {
        // A stored name of some Sent mailbox is no name on the wire.
        return Ok(None);
    } else {
        name.to_string()
    };
    let found = conn
        .query_row(
            &format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name = ?1"),
            [name],
            mailbox_row,
        )
        .optional()?;
    Ok(found.filter(|m| viewer.may_see(m)))
}

/// A mailbox by id, if the viewer may see it.
pub fn mailbox_by_id(db: &Db<'_>, viewer: Viewer, id: i64) -> Result<Option<Mailbox>> {
    let conn = db.conn();
    let found = conn
        .query_row(
            &format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?1"),
            [id],
            mailbox_row,
        )
        .optional()?;
    Ok(found.filter(|m| viewer.may_see(m)))
}

/// Message counts of one mailbox for one user: (total, unseen by the user).
/// Index-only: walks the mailbox's rows, never the mail.
pub fn counts(db: &Db<'_>, mailbox_id: i64, user_id: i64) -> Result<(u32, u32)> {
    let conn = db.conn();
    let (total, seen): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), count(f.message_id) FROM mailbox_messages mm
         LEFT JOIN message_flags f
           ON f.user_id = ?2 AND f.message_id = mm.message_id AND f.seen = 1
         WHERE mm.mailbox_id = ?1",
        )?
        .query_row(params![mailbox_id, user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let total = total.clamp(0, u32::MAX as i64) as u32;
    let seen = seen.clamp(0, u32::MAX as i64) as u32;
    Ok((total, total.saturating_sub(seen)))
}

/// One message's place in a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    pub message_id: i64,
    /// When it was added to the mailbox.
    pub modseq: i64,
}

/// One row of `mailbox_messages` or `mailbox_removed` (uid, message, modseq).
fn entry(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        uid: r.get::<_, i64>(0)?.clamp(0, u32::MAX as i64) as u32,
        message_id: r.get(1)?,
        modseq: r.get(2)?,
    })
}

/// Every row of a mailbox in UID order, from `mailbox_messages` or
/// `mailbox_removed`.
fn entry_rows(db: &Db<'_>, table: &str, mailbox_id: i64) -> Result<Vec<Entry>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(&entry_sql(table))?;
    let rows = stmt
        .query_map([mailbox_id], entry)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn entry_sql(table: &str) -> String {
    format!("SELECT uid, message_id, modseq FROM {table} WHERE mailbox_id = ?1 ORDER BY uid")
}

/// The newest rows of a mailbox first (its primary key read backwards).
const ENTRIES_NEWEST_FIRST: &str = "SELECT uid, message_id, modseq FROM mailbox_messages
     WHERE mailbox_id = ?1 ORDER BY uid DESC";

/// Removals after a modseq, through the table's modseq index by name: the
/// planner would otherwise walk every removal of the mailbox in key order
/// to save the sort.
const REMOVED_SINCE: &str = "SELECT uid, message_id, modseq FROM mailbox_removed
     INDEXED BY mailbox_removed_modseq
     WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid";

/// Every message of a mailbox in UID order (the IMAP sequence).
pub fn entries(db: &Db<'_>, mailbox_id: i64) -> Result<Vec<Entry>> {
    let _conn = db.conn();
    entry_rows(db, "mailbox_messages", mailbox_id)
}

/// Messages added to a mailbox after `modseq`, in UID order.
///
/// A placement row is only ever inserted (by `append`, with the mailbox's
/// next UID and a new modseq in one transaction) and never changed, so
/// within a mailbox the modseq grows with the UID: the rows added after
/// `modseq` are the mailbox's last ones. They are read from the highest UID
/// down to the first older row; a client polling a large INBOX costs what
/// changed, with no modseq index for every inbound message to maintain
/// (schema migration 6).
pub fn added_since(db: &Db<'_>, mailbox_id: i64, modseq: i64) -> Result<Vec<Entry>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(ENTRIES_NEWEST_FIRST)?;
    let mut rows = stmt.query([mailbox_id])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let e = entry(&row)?;
        if e.modseq <= modseq {
            break;
        }
        out.push(e);
    }
    out.reverse();
    Ok(out)
}

/// Messages that left a mailbox after `modseq` (the modseq is the removal's).
pub fn removed_since(db: &Db<'_>, mailbox_id: i64, modseq: i64) -> Result<Vec<Entry>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(REMOVED_SINCE)?;
    let rows = stmt
        .query_map(params![mailbox_id, modseq], entry)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A user's flags on one message. Messages without a row have none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub seen: bool,
    pub flagged: bool,
    pub answered: bool,
    /// When they last changed (0: never set).
    pub modseq: i64,
    /// The message is flagged `unverified_sender` (shown as the keyword
    /// `$unverified`): set by the gateway, the same for every user, never
    /// changed by a client.
    pub unverified: bool,
}

impl Flags {
    fn same_bits(&self, other: &Flags) -> bool {
        self.seen == other.seen && self.flagged == other.flagged && self.answered == other.answered
    }
}

/// One user's flags on many messages; messages absent from the map have
/// none.
pub fn flags(
    db: &Db<'_>,
    user_id: i64,
    message_ids: &[i64],
) -> Result<std::collections::HashMap<i64, Flags>> {
    let conn = db.conn();
    let mut out = std::collections::HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT seen, flagged, answered, modseq FROM message_flags
         WHERE user_id = ?1 AND message_id = ?2",
    )?;
    let mut marked =
        conn.prepare_cached("SELECT 1 FROM unverified_messages WHERE message_id = ?1")?;
    for &id in message_ids {
        let unverified = marked.query_row([id], |_| Ok(())).optional()?.is_some();
        let user = stmt
            .query_row(params![user_id, id], |r| {
                Ok(Flags {
                    seen: r.get(0)?,
                    flagged: r.get(1)?,
                    answered: r.get(2)?,
                    modseq: r.get(3)?,
                    unverified,
                })
            })
            .optional()?;
        match user {
            Some(f) => {
                out.insert(id, f);
            }
            None if unverified => {
                out.insert(
                    id,
                    Flags {
                        unverified,
                        ..Flags::default()
                    },
                );
            }
            None => {}
        }
    }
    Ok(out)
}

/// Every flag row of a user that changed after `modseq`: (message id, flags).
pub fn flags_changed_since(db: &Db<'_>, user_id: i64, modseq: i64) -> Result<Vec<(i64, Flags)>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT f.message_id, f.seen, f.flagged, f.answered, f.modseq,
                u.message_id IS NOT NULL
         FROM message_flags f LEFT JOIN unverified_messages u ON u.message_id = f.message_id
         WHERE f.user_id = ?1 AND f.modseq > ?2 ORDER BY f.modseq",
    )?;
    let rows = stmt
        .query_map(params![user_id, modseq], |r| {
            Ok((
                r.get(0)?,
                Flags {
                    seen: r.get(1)?,
                    flagged: r.get(2)?,
                    answered: r.get(3)?,
                    modseq: r.get(4)?,
                    unverified: r.get(5)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// How a flag change applies (IMAP `FLAGS`, `+FLAGS`, `-FLAGS`; JMAP sets
/// whole keyword objects or patches single keywords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// Which of the three flags a change names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagSet {
    pub seen: bool,
    pub flagged: bool,
    pub answered: bool,
}

/// Changes one user's flags on one message. Returns the flags after the
/// change; the modseq moves only if a flag actually changed.
pub fn store_flags(
    db: &Db<'_>,
    user_id: i64,
    message_id: i64,
    op: FlagOp,
    set: FlagSet,
) -> Result<Flags> {
    let conn = db.conn();
    let old = flags(db, user_id, &[message_id])?
        .remove(&message_id)
        .unwrap_or_default();
    let apply = |current: bool, named: bool| match op {
        FlagOp::Replace => named,
        FlagOp::Add => current || named,
        FlagOp::Remove => current && !named,
    };
    let mut new = Flags {
        seen: apply(old.seen, set.seen),
        flagged: apply(old.flagged, set.flagged),
        answered: apply(old.answered, set.answered),
        modseq: old.modseq,
        unverified: old.unverified,
    };
    if new.same_bits(&old) {
        return Ok(old);
    }
    new.modseq = next_modseq(db)?;
    conn.prepare_cached(
        "INSERT INTO message_flags (user_id, message_id, seen, flagged, answered, modseq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (user_id, message_id) DO UPDATE SET
           seen = excluded.seen, flagged = excluded.flagged,
           answered = excluded.answered, modseq = excluded.modseq",
    )?
    .execute(params![
        user_id,
        message_id,
        new.seen,
        new.flagged,
        new.answered,
        new.modseq
    ])?;
    Ok(new)
}

/// The mailboxes a message is in (ids), for JMAP `mailboxIds`.
pub fn mailboxes_of(db: &Db<'_>, message_id: i64) -> Result<Vec<i64>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT mailbox_id FROM mailbox_messages WHERE message_id = ?1 ORDER BY mailbox_id",
    )?;
    let rows = stmt
        .query_map([message_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every message of a mailbox in UID order with one user's flags on it: the
/// IMAP session's sequence map at SELECT (one index walk, no mail read).
pub fn entries_with_flags(
    db: &Db<'_>,
    mailbox_id: i64,
    user_id: i64,
) -> Result<Vec<(Entry, Flags)>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT mm.uid, mm.message_id, mm.modseq,
                coalesce(f.seen, 0), coalesce(f.flagged, 0), coalesce(f.answered, 0),
                coalesce(f.modseq, 0), u.message_id IS NOT NULL
         FROM mailbox_messages mm
         LEFT JOIN message_flags f ON f.user_id = ?2 AND f.message_id = mm.message_id
         LEFT JOIN unverified_messages u ON u.message_id = mm.message_id
         WHERE mm.mailbox_id = ?1 ORDER BY mm.uid",
    )?;
    let rows = stmt
        .query_map(params![mailbox_id, user_id], |r| {
            Ok((
                Entry {
                    uid: r.get::<_, i64>(0)?.clamp(0, u32::MAX as i64) as u32,
                    message_id: r.get(1)?,
                    modseq: r.get(2)?,
                },
                Flags {
                    seen: r.get(3)?,
                    flagged: r.get(4)?,
                    answered: r.get(5)?,
                    modseq: r.get(6)?,
                    unverified: r.get(7)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// `?1`, a JSON array of ids (from [`id_list`]), as rows `j` (`j.key`: the
/// position) joined to their `messages m`, in each database's spelling.
fn ids_join(db: &Db<'_>) -> &'static str {
    match db.dialect() {
        super::sql::Dialect::Sqlite => "json_each(?1) j JOIN messages m ON m.id = j.value",
        super::sql::Dialect::Postgres => {
            "json_array_elements_text(CAST(?1 AS json)) WITH ORDINALITY AS j(value, key)
             JOIN messages m ON m.id = CAST(j.value AS BIGINT)"
        }
    }
}

/// A JSON array of ids: many messages are read with one statement
/// (`json_each(?)`) instead of one query each.
fn id_list(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s.push(']');
    s
}

/// What the agent view serves of one stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMessage {
    pub id: i64,
    /// When the gateway received (or created) it, ms since the epoch
    /// (IMAP INTERNALDATE, JMAP receivedAt).
    pub received_at: i64,
    /// Size of the stored raw bytes.
    pub size: u64,
    /// The stored raw bytes, when asked for.
    pub raw: Option<Vec<u8>>,
}

/// Many messages in one statement, normally in the order of `ids` (unknown
/// ids are left out). `with_raw`: also read the raw bytes (else only their size,
/// which SQLite knows without reading the blob).
pub fn messages(db: &Db<'_>, ids: &[i64], with_raw: bool) -> Result<Vec<ViewMessage>> {
    let conn = db.conn();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = if with_raw {
        format!(
            concat!(
                "SELECT m.id, m.received_at, ",
                crate::raw_len_sql!("m"),
                ", ",
                crate::raw_sql!("m"),
                " FROM {} ORDER BY j.key"
            ),
            ids_join(db)
        )
    } else {
        format!(
            concat!(
                "SELECT m.id, m.received_at, ",
                crate::raw_len_sql!("m"),
                ", NULL FROM {} ORDER BY j.key"
            ),
            ids_join(db)
        )
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map([id_list(ids)], |r| {
            Ok(ViewMessage {
                id: r.get(0)?,
                received_at: r.get(1)?,
                size: r.get::<_, i64>(2)?.max(0) as u64,
                raw: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Calls `f(id, received_at, raw)` for each of many messages (normally in
/// the order of `ids`) with the raw bytes borrowed from SQLite: no copy of
/// the mail for callers that encode it straight into a response. `f`
/// returns false to stop early.
pub fn with_raw_messages(
    db: &Db<'_>,
    ids: &[i64],
    mut f: impl FnMut(i64, i64, &[u8]) -> bool,
) -> Result<()> {
    let conn = db.conn();
    if ids.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(&format!(
        concat!(
            "SELECT m.id, m.received_at, ",
            crate::raw_sql!("m"),
            " FROM {} ORDER BY j.key"
        ),
        ids_join(db)
    ))?;
    let mut rows = stmt.query([id_list(ids)])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let received_at: i64 = r.get(1)?;
        let raw = match r.get_ref(2)? {
            rusqlite::types::ValueRef::Blob(b) => b,
            rusqlite::types::ValueRef::Text(t) => t,
            _ => &[],
        };
        if !f(id, received_at, raw) {
            break;
        }
    }
    Ok(())
}

/// The stored columns a search of the agent view matches on (IMAP SEARCH,
/// JMAP Email/query filters): never the mail reparsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFields {
    pub id: i64,
    pub received_at: i64,
    /// The Date header, ms since the epoch, when it parsed.
    pub date: Option<i64>,
    pub size: u64,
    pub from_name: String,
    pub from_email: String,
    pub subject: String,
    /// JSON arrays of {name, email}.
    pub to_addrs: String,
    pub cc_addrs: String,
    /// Only filled when asked for (body searches).
    pub text_body: Option<String>,
}

/// [`SearchFields`] of many messages in one statement (unknown ids are left
/// out).
pub fn search_fields(db: &Db<'_>, ids: &[i64], with_body: bool) -> Result<Vec<SearchFields>> {
    let conn = db.conn();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let body = if with_body {
        "coalesce(m.text_body, m.html_body, '')"
    } else {
        "NULL"
    };
    let sql = format!(
        concat!(
            "SELECT m.id, m.received_at, m.date, ",
            crate::raw_len_sql!("m"),
            ", coalesce(m.from_name, ''),
                coalesce(m.from_email, ''), m.subject, m.to_addrs, m.cc_addrs, {}
             FROM {} ORDER BY j.key"
        ),
        body,
        ids_join(db)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map([id_list(ids)], |r| {
            Ok(SearchFields {
                id: r.get(0)?,
                received_at: r.get(1)?,
                date: r.get(2)?,
                size: r.get::<_, i64>(3)?.max(0) as u64,
                from_name: r.get(4)?,
                from_email: r.get(5)?,
                subject: r.get(6)?,
                to_addrs: r.get(7)?,
                cc_addrs: r.get(8)?,
                text_body: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Changes one user's flags on many messages in one go (IMAP STORE over a
/// sequence set, a non-peek FETCH setting \Seen). Returns the flags after
/// the change, in the order of `message_ids`.
pub fn store_flags_many(
    db: &Db<'_>,
    user_id: i64,
    message_ids: &[i64],
    op: FlagOp,
    set: FlagSet,
) -> Result<Vec<Flags>> {
    let _conn = db.conn();
    message_ids
        .iter()
        .map(|&id| store_flags(db, user_id, id, op, set))
        .collect()
}

// ---------------------------------------------------------------------------
// Per-user state and change tracking (JMAP states, push)

/// The modseq values one user's view of the agent mailboxes has reached:
/// JMAP `Mailbox`, `Email` and `Thread` state strings are these numbers.
/// Each moves only on a change that user can see: a message added to or
/// removed from a mailbox they may see, or a change of their own flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserStates {
    /// Mailbox contents or this user's flags (unread counts).
    pub mailbox: i64,
    /// Same inputs as `mailbox`: an Email changes with its mailboxes or
    /// its keywords.
    pub email: i64,
    /// Mailbox contents only (flags do not change threads).
    pub thread: i64,
}

/// The current [`UserStates`] of one user: two indexed max() lookups.
pub fn user_states(db: &Db<'_>, role: crate::model::Role, user_id: i64) -> Result<UserStates> {
    let conn = db.conn();
    let contents: i64 = conn.query_row(
        "SELECT coalesce(max(highest_modseq), 0) FROM mailboxes
         WHERE (kind = 'unrouted' AND CAST(?1 AS BIGINT) <> 0)
            OR (kind = 'sent' AND owner_user_id = ?2)
            OR kind NOT IN ('unrouted', 'sent')",
        params![role.can_administer(), user_id],
        |r| r.get(0),
    )?;
    let flags: i64 = conn.query_row(
        "SELECT coalesce(max(modseq), 0) FROM message_flags WHERE user_id = ?1",
        [user_id],
        |r| r.get(0),
    )?;
    Ok(UserStates {
        mailbox: contents.max(flags),
        email: contents.max(flags),
        thread: contents,
    })
}

/// Mailboxes the viewer may see whose contents changed after `modseq`.
pub fn mailboxes_changed_since(db: &Db<'_>, viewer: Viewer, modseq: i64) -> Result<Vec<Mailbox>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE highest_modseq > ?1 ORDER BY id"
    ))?;
    let all = stmt
        .query_map([modseq], mailbox_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(all.into_iter().filter(|m| viewer.may_see(m)).collect())
}

/// The modseq at which a mailbox got its first message (0 for a mailbox
/// that has never held one: INBOX and Unrouted exist from the start).
/// Mailboxes are created by their first append, so this is when it was
/// created as far as a client can tell.
pub fn mailbox_created_modseq(db: &Db<'_>, mailbox_id: i64) -> Result<i64> {
    let conn = db.conn();
    Ok(conn.query_row(
        // The lowest UID has the lowest modseq (see `added_since`).
        "SELECT coalesce(min(m), 0) FROM (
           SELECT (SELECT modseq FROM mailbox_messages WHERE mailbox_id = ?1
                   ORDER BY uid LIMIT 1) AS m
           UNION ALL
           SELECT min(modseq) AS m FROM mailbox_removed WHERE mailbox_id = ?1) AS oldest",
        [mailbox_id],
        |r| r.get(0),
    )?)
}

/// Thread counts of one mailbox for one user: (threads, threads with a
/// message in this mailbox the user has not seen). A side conversation is
/// one thread; a message on none (Unrouted) is a thread of its own.
pub fn thread_counts(db: &Db<'_>, mailbox_id: i64, user_id: i64) -> Result<(u32, u32)> {
    let conn = db.conn();
    let (total, unread): (i64, i64) = conn.query_row(
        "SELECT count(DISTINCT t), count(DISTINCT CASE WHEN unseen THEN t END) FROM (
           SELECT coalesce(m.side_conversation_id, -m.id) AS t,
                  coalesce(f.seen, 0) = 0 AS unseen
           FROM mailbox_messages mm
           JOIN messages m ON m.id = mm.message_id
           LEFT JOIN message_flags f ON f.user_id = ?2 AND f.message_id = mm.message_id
           WHERE mm.mailbox_id = ?1) AS marked",
        params![mailbox_id, user_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((
        total.clamp(0, u32::MAX as i64) as u32,
        unread.clamp(0, u32::MAX as i64) as u32,
    ))
}

/// Where a message stands in the agent view, for one viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub message_id: i64,
    /// Its side conversation (none for unrouted mail).
    pub side_conversation_id: Option<i64>,
    /// Mailboxes the viewer may see that hold it, by id.
    pub mailbox_ids: Vec<i64>,
    /// True when one of them is Unrouted.
    pub unrouted: bool,
    /// When it entered the mailboxes it shows under now (Unrouted, or
    /// INBOX/Tickets): its JMAP Email id exists from this modseq on.
    pub added_modseq: i64,
    pub received_at: i64,
    /// Size of the stored raw message in bytes.
    pub size: i64,
}

/// A message's place in the view as the viewer sees it; `None` when it is
/// in no mailbox they may see.
pub fn placed(db: &Db<'_>, viewer: Viewer, message_id: i64) -> Result<Option<Placed>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT mb.id, mb.kind, mm.modseq, mb.owner_user_id FROM mailbox_messages mm
         JOIN mailboxes mb ON mb.id = mm.mailbox_id
         WHERE mm.message_id = ?1 ORDER BY mb.id",
    )?;
    let boxes = stmt
        .query_map([message_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let visible: Vec<(i64, String, i64)> = boxes
        .into_iter()
        .filter(|(_, kind, _, owner)| viewer.sees(kind, *owner))
        .map(|(id, kind, modseq, _)| (id, kind, modseq))
        .collect();
    if visible.is_empty() {
        return Ok(None);
    }
    let unrouted = visible.iter().any(|(_, k, _)| k == "unrouted");
    let added_modseq = visible
        .iter()
        .filter(|(_, k, _)| (k == "unrouted") == unrouted)
        .map(|(_, _, m)| *m)
        .min()
        .unwrap_or(0);
    let row = conn
        .query_row(
            concat!(
                "SELECT m.side_conversation_id, m.received_at, ",
                crate::raw_len_sql!("m"),
                " FROM messages m WHERE m.id = ?1"
            ),
            [message_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((side_conversation_id, received_at, size)) = row else {
        return Ok(None);
    };
    Ok(Some(Placed {
        message_id,
        side_conversation_id,
        unrouted,
        added_modseq,
        mailbox_ids: visible.into_iter().map(|(id, _, _)| id).collect(),
        received_at,
        size,
    }))
}

/// The stored raw bytes of a message.
pub fn raw(db: &Db<'_>, message_id: i64) -> Result<Option<Vec<u8>>> {
    let conn = db.conn();
    Ok(conn
        .query_row(
            concat!(
                "SELECT ",
                crate::raw_sql!("m"),
                " FROM messages m WHERE m.id = ?1"
            ),
            [message_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// The messages of one side conversation shown in the Tickets mailboxes,
/// oldest first (received time, then id).
pub fn thread_messages(db: &Db<'_>, side_conversation_id: i64) -> Result<Vec<i64>> {
    let conn = db.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT m.id FROM messages m INDEXED BY messages_thread_received
         WHERE m.side_conversation_id = ?1
           AND EXISTS (SELECT 1 FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id
                       WHERE mm.message_id = m.id AND mb.kind != 'unrouted')
         ORDER BY m.received_at, m.id",
    )?;
    let rows = stmt
        .query_map([side_conversation_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The modseq at which a side conversation's first message entered a
/// Tickets mailbox (`None`: none has): when its JMAP Thread appeared.
pub fn thread_first_modseq(db: &Db<'_>, side_conversation_id: i64) -> Result<Option<i64>> {
    let conn = db.conn();
    Ok(conn.query_row(
        "SELECT min(mm.modseq) FROM messages m
         JOIN mailbox_messages mm ON mm.message_id = m.id
         JOIN mailboxes mb ON mb.id = mm.mailbox_id
         WHERE m.side_conversation_id = ?1 AND mb.kind != 'unrouted'",
        [side_conversation_id],
        |r| r.get(0),
    )?)
}

/// A user's own flags, as JMAP keywords name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserFlag {
    Seen,
    Flagged,
    Answered,
}

impl UserFlag {
    fn column(self) -> &'static str {
        match self {
            UserFlag::Seen => "seen",
            UserFlag::Flagged => "flagged",
            UserFlag::Answered => "answered",
        }
    }
}

/// A filter over the agent view's mail (JMAP Email/query). An empty `And`
/// matches everything, an empty `Or` nothing; `Not` matches what none of
/// its parts does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailFilter {
    And(Vec<EmailFilter>),
    Or(Vec<EmailFilter>),
    Not(Vec<EmailFilter>),
    InMailbox(i64),
    /// In some mailbox the caller may see other than these.
    InMailboxOtherThan(Vec<i64>),
    /// Received before / at or after (ms).
    Before(i64),
    After(i64),
    /// Size of the raw message at least / below.
    MinSize(i64),
    MaxSize(i64),
    /// The caller has (or has not) set the flag.
    Keyword {
        flag: UserFlag,
        has: bool,
    },
    /// Flagged `unverified_sender` (or not).
    Unverified {
        has: bool,
    },
    /// Substrings (case-insensitive for ASCII) of the stored columns.
    From(String),
    To(String),
    Cc(String),
    Subject(String),
    Body(String),
    Text(String),
}

/// A `LIKE` pattern matching `s` anywhere (its wildcards escaped).
fn like(s: &str) -> Value {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for ch in s.chars() {
        if matches!(ch, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    Value::Text(p)
}

/// The SQL condition over `m` (a `messages` row) for `f`, its parameters
/// appended to `params`.
fn filter_sql(f: &EmailFilter, admin: bool, user: i64, params: &mut Vec<Value>) -> String {
    let join = |parts: &[EmailFilter], op: &str, params: &mut Vec<Value>| {
        parts
            .iter()
            .map(|p| filter_sql(p, admin, user, params))
            .collect::<Vec<_>>()
            .join(op)
    };
    match f {
        EmailFilter::And(parts) if parts.is_empty() => "TRUE".into(),
        EmailFilter::And(parts) => format!("({})", join(parts, " AND ", params)),
        EmailFilter::Or(parts) if parts.is_empty() => "FALSE".into(),
        EmailFilter::Or(parts) => format!("({})", join(parts, " OR ", params)),
        EmailFilter::Not(parts) if parts.is_empty() => "TRUE".into(),
        EmailFilter::Not(parts) => format!("NOT ({})", join(parts, " OR ", params)),
        EmailFilter::InMailbox(n) => {
            params.push(Value::Integer(*n));
            "EXISTS (SELECT 1 FROM mailbox_messages q WHERE q.message_id = m.id AND q.mailbox_id = ?)"
                .into()
        }
        EmailFilter::InMailboxOtherThan(excluded) => {
            let mut sql = format!(
                "EXISTS (SELECT 1 FROM mailbox_messages q JOIN mailboxes qb ON qb.id = q.mailbox_id
                 WHERE q.message_id = m.id AND ({})",
                visible_sql("qb", admin, user)
            );
            if !excluded.is_empty() {
                sql.push_str(" AND q.mailbox_id NOT IN (");
                sql.push_str(&vec!["?"; excluded.len()].join(","));
                sql.push(')');
                params.extend(excluded.iter().map(|n| Value::Integer(*n)));
            }
            sql.push(')');
            sql
        }
        EmailFilter::Before(t) => {
            params.push(Value::Integer(*t));
            "m.received_at < ?".into()
        }
        EmailFilter::After(t) => {
            params.push(Value::Integer(*t));
            "m.received_at >= ?".into()
        }
        EmailFilter::MinSize(n) => {
            params.push(Value::Integer(*n));
            concat!(crate::raw_len_sql!("m"), " >= ?").into()
        }
        EmailFilter::MaxSize(n) => {
            params.push(Value::Integer(*n));
            concat!(crate::raw_len_sql!("m"), " < ?").into()
        }
        EmailFilter::Keyword { flag, has } => {
            params.push(Value::Integer(user));
            let exists = format!(
                "EXISTS (SELECT 1 FROM message_flags f
                 WHERE f.user_id = ? AND f.message_id = m.id AND f.{} = 1)",
                flag.column()
            );
            if *has {
                exists
            } else {
                format!("NOT {exists}")
            }
        }
        EmailFilter::Unverified { has } => {
            let exists = "EXISTS (SELECT 1 FROM unverified_messages u WHERE u.message_id = m.id)";
            if *has {
                exists.into()
            } else {
                format!("NOT {exists}")
            }
        }
        EmailFilter::From(t) => {
            let p = like(t);
            params.extend([p.clone(), p]);
            "(lower(m.from_name) LIKE lower(?) ESCAPE '\\' OR lower(m.from_email) LIKE lower(?) ESCAPE '\\')".into()
        }
        EmailFilter::To(t) => {
            params.push(like(t));
            "lower(m.to_addrs) LIKE lower(?) ESCAPE '\\'".into()
        }
        EmailFilter::Cc(t) => {
            params.push(like(t));
            "lower(m.cc_addrs) LIKE lower(?) ESCAPE '\\'".into()
        }
        EmailFilter::Subject(t) => {
            params.push(like(t));
            "lower(m.subject) LIKE lower(?) ESCAPE '\\'".into()
        }
        EmailFilter::Body(t) => {
            let p = like(t);
            params.extend([p.clone(), p]);
            "(lower(m.text_body) LIKE lower(?) ESCAPE '\\' OR lower(m.html_body) LIKE lower(?) ESCAPE '\\')".into()
        }
        EmailFilter::Text(t) => {
            let p = like(t);
            params.extend(std::iter::repeat_n(p, 7));
            "(lower(m.subject) LIKE lower(?) ESCAPE '\\' OR lower(m.from_name) LIKE lower(?) ESCAPE '\\'
              OR lower(m.from_email) LIKE lower(?) ESCAPE '\\' OR lower(m.to_addrs) LIKE lower(?) ESCAPE '\\'
              OR lower(m.cc_addrs) LIKE lower(?) ESCAPE '\\' OR lower(m.text_body) LIKE lower(?) ESCAPE '\\'
              OR lower(m.html_body) LIKE lower(?) ESCAPE '\\')"
                .into()
        }
    }
}

/// One message a query found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub id: i64,
    pub side_conversation: Option<i64>,
    /// It is in the Unrouted mailbox (and the caller may see it).
    pub unrouted: bool,
}

/// The messages the caller may see (`admin`: unrouted mail too) matching
/// `filter`, by received time (then id) in the order asked, at most `cap`.
/// The listing walks the `messages_received` index in that order, so a
/// query with a cap stops once it has its page instead of reading and
/// sorting every message of the store.
pub fn query_emails(
    db: &Db<'_>,
    admin: bool,
    user: i64,
    filter: &EmailFilter,
    ascending: bool,
    cap: Option<usize>,
) -> Result<Vec<Found>> {
    let mut params = Vec::new();
    let condition = filter_sql(filter, admin, user, &mut params);
    let visible = visible_sql("vb", admin, user);
    let unrouted = if admin {
        "EXISTS (SELECT 1 FROM mailbox_messages u JOIN mailboxes ub ON ub.id = u.mailbox_id
                 WHERE u.message_id = m.id AND ub.kind = 'unrouted')"
    } else {
        "FALSE"
    };
    let dir = if ascending { "ASC" } else { "DESC" };
    let limit = cap.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let sql = format!(
        "SELECT m.id, m.side_conversation_id, {unrouted}
         FROM messages m INDEXED BY messages_received
         WHERE EXISTS (SELECT 1 FROM mailbox_messages v JOIN mailboxes vb ON vb.id = v.mailbox_id
                       WHERE v.message_id = m.id AND ({visible}))
           AND {condition}
         ORDER BY m.received_at {dir}, m.id {dir}{limit}"
    );
    let mut stmt = db.conn().prepare(&sql)?;
    let rows = stmt
        .query_map(super::sql::params_from_iter(params), |r| {
            Ok(Found {
                id: r.get(0)?,
                side_conversation: r.get(1)?,
                unrouted: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like("50%_off\\"), Value::Text("%50\\%\\_off\\\\%".into()));
    }

    fn plan(db: &Db<'_>, sql: &str) -> String {
        let conn = db.conn();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let n = stmt.parameter_count();
        let rows: Vec<String> = stmt
            .query_map(crate::store::sql::params_from_iter(vec![1i64; n]), |r| {
                r.get(3)
            })
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        rows.join("\n")
    }

    /// A whole mailbox is read in key order, "added since" backwards along
    /// the key, "removed since" through the removals' modseq index: none
    /// of them walks every row of a large INBOX or sorts it.
    #[test]
    fn entry_queries_use_the_key_and_the_modseq_index() {
        let c_conn = crate::store::memory_db();
        let c = &crate::store::Db::for_test(&c_conn);
        for table in ["mailbox_messages", "mailbox_removed"] {
            let all = plan(c, &entry_sql(table));
            assert!(!all.contains("SCAN"), "{all}");
            assert!(!all.contains("TEMP B-TREE"), "{all}");
        }
        let newest = plan(c, ENTRIES_NEWEST_FIRST);
        assert!(newest.contains("PRIMARY KEY (mailbox_id=?)"), "{newest}");
        assert!(!newest.contains("TEMP B-TREE"), "{newest}");
        let removed = plan(c, REMOVED_SINCE);
        assert!(removed.contains("mailbox_removed_modseq"), "{removed}");
        assert!(removed.contains("modseq>?"), "{removed}");
        let of = plan(
            c,
            "SELECT mailbox_id FROM mailbox_messages WHERE message_id = ?1 ORDER BY mailbox_id",
        );
        assert!(of.contains("message_id=?"), "{of}");
    }

    #[test]
    fn added_and_removed_since_a_modseq() {
        let c_conn = crate::store::memory_db();
        let c = &crate::store::Db::for_test(&c_conn);
        c.conn().execute_batch(
            "INSERT INTO parents (id, external_id, created_at, updated_at) VALUES (1, 'T-1', 0, 0);",
        )
        .expect("parent");
        let mut ids = Vec::new();
        for i in 0..6i64 {
            c.conn()
                .execute(
                    "INSERT INTO messages (direction, kind, route, raw, raw_sha256, received_at)
                 VALUES ('in', 'reply', 'token', x'41', x'00', ?1)",
                    [i],
                )
                .expect("message");
            let id = c.conn().last_insert_rowid();
            let placement = if i < 3 {
                Placement::Thread {
                    parent_id: 1,
                    external_id: "T-1",
                    inbound: true,
                }
            } else {
                Placement::Unrouted
            };
            add_message(c, id, placement).expect("add");
            ids.push(id);
        }
        let id_of = |name: &str| -> i64 {
            c.conn()
                .query_row("SELECT id FROM mailboxes WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .expect(name)
        };
        let inbox = id_of(INBOX);
        let unrouted = id_of(UNROUTED);
        // The ticket's mailbox was created by its first message.
        let ticket = id_of("Tickets/T-1");
        let (uidnext, highest): (i64, i64) = c
            .conn()
            .query_row(
                "SELECT uidnext, highest_modseq FROM mailboxes WHERE id = ?1",
                [ticket],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("ticket mailbox");
        let in_ticket = entries(c, ticket).expect("ticket entries");
        assert_eq!(
            in_ticket.iter().map(|e| e.uid).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!((uidnext, highest), (4, in_ticket[2].modseq));
        let all = entries(c, inbox).expect("entries");
        assert_eq!(
            all.iter()
                .map(|e| (e.uid, e.message_id))
                .collect::<Vec<_>>(),
            vec![(1, ids[0]), (2, ids[1]), (3, ids[2])]
        );
        let since = added_since(c, inbox, all[0].modseq).expect("since");
        assert_eq!(since, all[1..].to_vec());
        assert_eq!(added_since(c, inbox, 0).expect("all"), all);
        assert!(
            added_since(c, inbox, all[2].modseq)
                .expect("none")
                .is_empty()
        );
        // Later messages elsewhere do not show in INBOX.
        assert!(all[2].modseq < entries(c, unrouted).expect("unrouted")[0].modseq);
        assert!(
            added_since(c, inbox, all[2].modseq + 100)
                .expect("none")
                .is_empty()
        );
        assert_eq!(mailboxes_of(c, ids[0]).expect("of").len(), 2);

        let before = entries(c, unrouted).expect("unrouted")[2].modseq;
        remove_message(c, UNROUTED, ids[4]).expect("remove");
        let left = entries(c, unrouted).expect("unrouted");
        assert_eq!(
            left.iter().map(|e| e.message_id).collect::<Vec<_>>(),
            vec![ids[3], ids[5]]
        );
        // What was added before the removal and is still there.
        assert_eq!(
            added_since(c, unrouted, entries(c, unrouted).expect("u")[0].modseq)
                .expect("since")
                .iter()
                .map(|e| e.message_id)
                .collect::<Vec<_>>(),
            vec![ids[5]]
        );
        assert_eq!(
            mailbox_created_modseq(c, unrouted).expect("created"),
            left[0].modseq
        );
        let gone = removed_since(c, unrouted, before).expect("removed");
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].uid, gone[0].message_id), (2, ids[4]));
        assert!(
            removed_since(c, unrouted, gone[0].modseq)
                .expect("none")
                .is_empty()
        );
    }
}
