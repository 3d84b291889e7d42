//! What the console's agent pages read and write beyond the shared lists
//! (SPEC §11): the sender addresses a start form offers, and opening a
//! thread (read in the console, `\Seen` in the agent view).

use rusqlite::params;

use super::view::{self, FlagOp, FlagSet};
use super::{Db, Result, console};

/// The verified sender addresses, oldest first (a start form's choices
/// besides the gateway's own address).
pub fn verified_senders(db: &Db<'_>) -> Result<Vec<String>> {
    let mut stmt = db
        .conn()
        .prepare_cached("SELECT email FROM senders WHERE status = 'verified' ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

/// The user opened side conversation `sc` in the console: its vendor
/// replies are read there, and its inbound messages are `\Seen` for them
/// in the agent view, so IMAP and JMAP agree. One transaction.
pub fn open_thread(db: &Db<'_>, user_id: i64, sc: i64) -> Result<()> {
    console::mark_read(db, user_id, sc)?;
    let ids: Vec<i64> = db
        .conn()
        .prepare_cached(
            "SELECT id FROM messages WHERE side_conversation_id = ?1 AND direction = 'in'
             ORDER BY id",
        )?
        .query_map(params![sc], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    view::store_flags_many(
        db,
        user_id,
        &ids,
        FlagOp::Add,
        FlagSet {
            seen: true,
            ..FlagSet::default()
        },
    )?;
    Ok(())
}
