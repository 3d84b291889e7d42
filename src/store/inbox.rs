//! The web console's lists of side conversations (SPEC §11): the inbox of
//! those that need attention — unread vendor replies first, then the rest
//! that wait on an agent — and the lists by assignee and status. Every
//! list is paged by a key an index gives in order, so a page costs the
//! same on a store of a million messages as on an empty one.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result};

/// Which side conversations a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Open, with a vendor reply newer than the last agent message:
    /// unread ones first (newest reply first), then the read ones.
    Attention,
    /// Open, on parents assigned to the user: unread first, then by the
    /// latest activity.
    Mine,
    /// Every open one, by the latest activity.
    Open,
    /// Every closed one, by the latest activity.
    Closed,
}

/// Where a page starts: the list's sort key of the last row shown before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Start,
    /// In the unread part, after the reply with this message id.
    Unread(i64),
    /// In the read part (Attention: by last vendor reply id; the others:
    /// by `(updated_at, id)`).
    Rest(i64, i64),
}

impl Cursor {
    pub fn encode(&self) -> String {
        match self {
            Cursor::Start => String::new(),
            Cursor::Unread(k) => format!("u{k}"),
            Cursor::Rest(a, b) => format!("r{a}.{b}"),
        }
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        if s.is_empty() {
            return Some(Cursor::Start);
        }
        if let Some(k) = s.strip_prefix('u') {
            return k.parse().ok().map(Cursor::Unread);
        }
        let rest = s.strip_prefix('r')?;
        let (a, b) = rest.split_once('.')?;
        Some(Cursor::Rest(a.parse().ok()?, b.parse().ok()?))
    }
}

/// One line of a list.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub subject: String,
    pub status: String,
    pub parent: String,
    pub parent_subject: String,
    pub sender: String,
    pub assignee: Option<String>,
    pub updated_at: i64,
    pub unread: bool,
    /// A vendor reply is newer than the last agent message.
    pub waiting_on_agent: bool,
    /// Whom it waits on and since when (SPEC §15).
    pub waiting: Option<(crate::model::Waiting, i64)>,
    pub tags: Vec<String>,
    pub participants: Vec<String>,
    /// The latest message: who, when, what it says (cut), and whether its
    /// sender is unverified.
    pub last: Option<LastMessage>,
}

#[derive(Debug, Clone)]
pub struct LastMessage {
    pub id: i64,
    pub direction: String,
    pub kind: String,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    pub received_at: i64,
    pub preview: String,
    pub unverified: bool,
}

/// A page of a list and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<Row>,
    pub next: Option<Cursor>,
}

/// The counts shown beside the filters, each counted up to [`COUNT_CAP`]
/// (a page shows "1000+" then): a count costs at most that many index
/// entries, on any store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub unread: i64,
    pub attention: i64,
    pub mine: i64,
    pub unrouted: i64,
}

/// Where counts stop.
pub const COUNT_CAP: i64 = 1000;

/// Most side conversations the "assigned to me" list orders at once.
const MINE_CAP: i64 = 5000;
/// Characters of the latest message shown in a list.
const PREVIEW_CHARS: i64 = 180;

pub fn counts(db: &Db<'_>, user_id: i64) -> Result<Counts> {
    let conn = db.conn();
    let count = |sql: &str, user: Option<i64>| -> Result<i64> {
        let sql = format!("SELECT count(*) FROM ({sql} LIMIT {COUNT_CAP}) AS capped");
        let mut stmt = conn.prepare_cached(&sql)?;
        Ok(match user {
            Some(u) => stmt.query_row([u], |r| r.get(0))?,
            None => stmt.query_row([], |r| r.get(0))?,
        })
    };
    Ok(Counts {
        unread: count(
            "SELECT 1 FROM console_unread WHERE user_id = ?1",
            Some(user_id),
        )?,
        attention: count(
            "SELECT 1 FROM side_conversations INDEXED BY side_conversations_waiting
             WHERE status = 'open' AND last_in_id > coalesce(last_out_id, 0)",
            None,
        )?,
        mine: count(
            // From the parents assigned (CROSS JOIN keeps that order):
            // what one person has, not every open side conversation.
            "SELECT 1 FROM parents p INDEXED BY parents_assignee
             CROSS JOIN side_conversations s
             WHERE p.assignee_id = ?1 AND s.parent_id = p.id AND s.status = 'open'",
            Some(user_id),
        )?,
        unrouted: count(
            "SELECT 1 FROM messages INDEXED BY messages_unrouted
             WHERE side_conversation_id IS NULL AND route = 'unrouted'",
            None,
        )?,
    })
}

/// A count as a page shows it: "1000+" at the cap.
pub fn shown(n: i64) -> String {
    if n >= COUNT_CAP {
        format!("{COUNT_CAP}+")
    } else {
        n.to_string()
    }
}

/// One page of a list for `user_id`.
pub fn page(db: &Db<'_>, user_id: i64, filter: Filter, cursor: Cursor, limit: i64) -> Result<Page> {
    let limit = limit.clamp(1, 200);
    let mut keys: Vec<(i64, Cursor)> = Vec::new();
    match filter {
        Filter::Attention => attention(db, user_id, cursor, limit + 1, &mut keys)?,
        Filter::Mine => mine(db, user_id, cursor, limit + 1, &mut keys)?,
        Filter::Open | Filter::Closed => {
            let status = if filter == Filter::Open {
                "open"
            } else {
                "closed"
            };
            by_activity(db, status, cursor, limit + 1, &mut keys)?
        }
    }
    let more = keys.len() as i64 > limit;
    keys.truncate(limit as usize);
    let next = if more {
        keys.last().map(|(_, c)| *c)
    } else {
        None
    };
    let rows = keys
        .iter()
        .map(|(id, _)| row(db, user_id, *id))
        .collect::<Result<Vec<Option<Row>>>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(Page { rows, next })
}

/// One page of the side conversations `filter` selects (waiting on the
/// vendor, a tag), in its order (see [`super::waiting::list`]): the
/// cursor is `Rest(key, 0)`.
pub fn page_filtered(
    db: &Db<'_>,
    user_id: i64,
    filter: &super::waiting::ListFilter,
    cursor: Cursor,
    limit: i64,
) -> Result<Page> {
    let limit = limit.clamp(1, 200);
    let after = match cursor {
        Cursor::Rest(k, _) => k,
        _ => 0,
    };
    let mut keys = super::waiting::list(db, filter, after, limit + 1)?;
    let more = keys.len() as i64 > limit;
    keys.truncate(limit as usize);
    let next = if more {
        keys.last().map(|(k, _)| Cursor::Rest(*k, 0))
    } else {
        None
    };
    let rows = keys
        .iter()
        .map(|(_, id)| row(db, user_id, *id))
        .collect::<Result<Vec<Option<Row>>>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(Page { rows, next })
}

fn attention(
    db: &Db<'_>,
    user_id: i64,
    cursor: Cursor,
    want: i64,
    out: &mut Vec<(i64, Cursor)>,
) -> Result<()> {
    let conn = db.conn();
    let rest_from = match cursor {
        Cursor::Start | Cursor::Unread(_) => {
            let after = match cursor {
                Cursor::Unread(k) => k,
                _ => i64::MAX,
            };
            let mut stmt = conn.prepare_cached(
                "SELECT cu.side_conversation_id, cu.message_id
                 FROM console_unread cu JOIN side_conversations s ON s.id = cu.side_conversation_id
                 WHERE cu.user_id = ?1 AND cu.message_id < ?2 AND s.status = 'open'
                 ORDER BY cu.message_id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![user_id, after, want], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for r in rows {
                let (id, key) = r?;
                out.push((id, Cursor::Unread(key)));
            }
            i64::MAX
        }
        Cursor::Rest(k, _) => k,
    };
    let want = want - out.len() as i64;
    if want <= 0 {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.last_in_id FROM side_conversations s
         INDEXED BY side_conversations_waiting
         WHERE s.status = 'open' AND s.last_in_id > coalesce(s.last_out_id, 0)
           AND s.last_in_id < ?1
           AND NOT EXISTS (SELECT 1 FROM console_unread cu
                           WHERE cu.user_id = ?2 AND cu.side_conversation_id = s.id)
         ORDER BY s.last_in_id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![rest_from, user_id, want], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for r in rows {
        let (id, key) = r?;
        out.push((id, Cursor::Rest(key, 0)));
    }
    Ok(())
}

fn mine(
    db: &Db<'_>,
    user_id: i64,
    cursor: Cursor,
    want: i64,
    out: &mut Vec<(i64, Cursor)>,
) -> Result<()> {
    // Bounded by what one person is assigned; ordered here.
    let mut stmt = db.conn().prepare_cached(
        "SELECT s.id, s.updated_at, cu.message_id
         FROM parents p INDEXED BY parents_assignee
         CROSS JOIN side_conversations s
         LEFT JOIN console_unread cu ON cu.user_id = ?1 AND cu.side_conversation_id = s.id
         WHERE p.assignee_id = ?1 AND s.parent_id = p.id AND s.status = 'open'
         ORDER BY s.updated_at DESC, s.id DESC LIMIT ?2",
    )?;
    let mut all: Vec<(i64, i64, Option<i64>)> = stmt
        .query_map(params![user_id, MINE_CAP], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Unread first (newest reply first), then by activity.
    all.sort_by(|a, b| match (a.2, b.2) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => (b.1, b.0).cmp(&(a.1, a.0)),
    });
    let start = match cursor {
        Cursor::Start => 0,
        Cursor::Unread(k) => all
            .iter()
            .position(|r| r.2.is_some_and(|m| m < k))
            .unwrap_or_else(|| all.iter().position(|r| r.2.is_none()).unwrap_or(all.len())),
        Cursor::Rest(t, id) => all
            .iter()
            .position(|r| r.2.is_none() && (r.1, r.0) < (t, id))
            .unwrap_or(all.len()),
    };
    for (id, updated, unread) in all.into_iter().skip(start).take(want as usize) {
        let c = match unread {
            Some(m) => Cursor::Unread(m),
            None => Cursor::Rest(updated, id),
        };
        out.push((id, c));
    }
    Ok(())
}

fn by_activity(
    db: &Db<'_>,
    status: &str,
    cursor: Cursor,
    want: i64,
    out: &mut Vec<(i64, Cursor)>,
) -> Result<()> {
    let (t, id) = match cursor {
        Cursor::Rest(t, id) => (t, id),
        _ => (i64::MAX, i64::MAX),
    };
    let mut stmt = db.conn().prepare_cached(
        "SELECT id, updated_at FROM side_conversations INDEXED BY side_conversations_updated
         WHERE status = ?1 AND (updated_at, id) < (?2, ?3)
         ORDER BY updated_at DESC, id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![status, t, id, want], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for r in rows {
        let (id, updated) = r?;
        out.push((id, Cursor::Rest(updated, id)));
    }
    Ok(())
}

/// One line of a list, for side conversation `id` as `user_id` sees it.
pub fn row(db: &Db<'_>, user_id: i64, id: i64) -> Result<Option<Row>> {
    let conn = db.conn();
    let base = conn
        .prepare_cached(
            "SELECT s.subject, s.status, p.external_id, p.subject, s.sender_email, u.email,
                    s.updated_at, coalesce(s.last_in_id, 0) > coalesce(s.last_out_id, 0),
                    EXISTS (SELECT 1 FROM console_unread cu
                            WHERE cu.user_id = ?2 AND cu.side_conversation_id = s.id)
             FROM side_conversations s JOIN parents p ON p.id = s.parent_id
             LEFT JOIN users u ON u.id = p.assignee_id
             WHERE s.id = ?1",
        )?
        .query_row(params![id, user_id], |r| {
            Ok(Row {
                id,
                subject: r.get(0)?,
                status: r.get(1)?,
                parent: r.get(2)?,
                parent_subject: r.get(3)?,
                sender: r.get(4)?,
                assignee: r.get(5)?,
                updated_at: r.get(6)?,
                waiting_on_agent: r.get(7)?,
                unread: r.get(8)?,
                participants: Vec::new(),
                last: None,
                waiting: None,
                tags: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut row) = base else {
        return Ok(None);
    };
    row.waiting = super::waiting::state(db, id)?;
    row.tags = super::waiting::tags(db, id)?;
    row.participants = conn
        .prepare_cached(
            "SELECT email FROM participants WHERE side_conversation_id = ?1
             ORDER BY added_at, email LIMIT 6",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let visible = super::messages::visible_reply_sql("m");
    row.last = conn
        .prepare_cached(&format!(
            "SELECT m.id, m.direction, m.kind, m.from_name, m.from_email, m.received_at,
                    substr({visible}, 1, {PREVIEW_CHARS}),
                    EXISTS (SELECT 1 FROM unverified_messages v WHERE v.message_id = m.id)
             FROM messages m WHERE m.side_conversation_id = ?1
             ORDER BY m.id DESC LIMIT 1"
        ))?
        .query_row([id], |r| {
            Ok(LastMessage {
                id: r.get(0)?,
                direction: r.get(1)?,
                kind: r.get(2)?,
                from_name: r.get(3)?,
                from_email: r.get(4)?,
                received_at: r.get(5)?,
                preview: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                unverified: r.get(7)?,
            })
        })
        .optional()?;
    Ok(Some(row))
}

/// What a live page watches for new messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Any inbound message (the inbox, the unrouted list).
    Inbound,
    /// A side conversation's messages.
    SideConversation(i64),
    /// The messages of a parent's side conversations.
    Parent(i64),
}

/// The highest message id a live page watching `w` would show (0 when
/// none): pages compare it to the one they were rendered with.
pub fn latest(db: &Db<'_>, w: &Watch) -> Result<i64> {
    let conn = db.conn();
    let v: Option<i64> = match w {
        Watch::Inbound => conn
            .prepare_cached(
                "SELECT id FROM messages WHERE direction = 'in' ORDER BY id DESC LIMIT 1",
            )?
            .query_row([], |r| r.get(0))
            .optional()?,
        Watch::SideConversation(sc) => conn
            .prepare_cached(
                "SELECT id FROM messages WHERE side_conversation_id = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([sc], |r| r.get(0))
            .optional()?,
        Watch::Parent(p) => conn
            .prepare_cached(
                "SELECT max(m.id) FROM side_conversations s
                 JOIN messages m ON m.side_conversation_id = s.id WHERE s.parent_id = ?1",
            )?
            .query_row([p], |r| r.get(0))?,
    };
    Ok(v.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A side conversation on its own parent; returns its id.
    fn sc(conn: &rusqlite::Connection, n: i64) -> i64 {
        conn.execute(
            "INSERT INTO parents (external_id, created_at, updated_at) VALUES (?1, 0, 0)",
            [format!("T-{n}")],
        )
        .expect("parent");
        let parent = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO side_conversations (parent_id, token, subject, sender_email, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'reply@gw.example', 0, ?4)",
            params![parent, format!("tok{n:013}"), format!("SC {n}"), n],
        )
        .expect("sc");
        conn.last_insert_rowid()
    }

    fn message(conn: &rusqlite::Connection, sc: i64, direction: &str, kind: &str) -> i64 {
        conn.execute(
            "INSERT INTO messages (side_conversation_id, direction, kind, route, raw, raw_sha256, received_at)
             VALUES (?1, ?2, ?3, 'token', x'00', randomblob(32), 0)",
            params![sc, direction, kind],
        )
        .expect("message");
        conn.last_insert_rowid()
    }

    fn ids(p: &Page) -> Vec<i64> {
        p.rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn attention_lists_unread_first_then_waiting_and_drops_answered_threads() {
        let conn = crate::store::memory_db();
        conn.execute(
            "INSERT INTO users (email, name, role, token_hash, created_at) VALUES ('a@x', 'A', 'member', x'01', 0)",
            [],
        )
        .expect("user");
        let user = conn.last_insert_rowid();
        let db = Db::for_test(&conn);
        let (a, b, c, d) = (sc(&conn, 1), sc(&conn, 2), sc(&conn, 3), sc(&conn, 4));
        message(&conn, a, "in", "reply");
        message(&conn, b, "in", "reply");
        message(&conn, c, "in", "reply");
        // d: only an auto-reply, which waits on nobody.
        message(&conn, d, "in", "auto_reply");
        // b was read; c was answered by an agent after the reply.
        crate::store::console::mark_read(&db, user, b).expect("read");
        crate::store::console::mark_read(&db, user, c).expect("read");
        message(&conn, c, "out", "agent");
        let p = page(&db, user, Filter::Attention, Cursor::Start, 10).expect("page");
        assert_eq!(ids(&p), vec![a, b]);
        assert!(p.rows[0].unread && !p.rows[1].unread);
        assert!(p.rows.iter().all(|r| r.waiting_on_agent));
        // A new reply in b makes it unread again and first.
        message(&conn, b, "in", "reply");
        let p = page(&db, user, Filter::Attention, Cursor::Start, 10).expect("page");
        assert_eq!(ids(&p), vec![b, a]);
        // Paging one at a time walks the same list.
        let first = page(&db, user, Filter::Attention, Cursor::Start, 1).expect("page");
        assert_eq!(ids(&first), vec![b]);
        let second =
            page(&db, user, Filter::Attention, first.next.expect("more"), 1).expect("page");
        assert_eq!(ids(&second), vec![a]);
        assert!(second.next.is_none());
        let counts = counts(&db, user).expect("counts");
        assert_eq!((counts.unread, counts.attention), (2, 2));
        // Closed ones leave the list and show under Closed.
        conn.execute(
            "UPDATE side_conversations SET status = 'closed' WHERE id = ?1",
            [a],
        )
        .expect("close");
        let p = page(&db, user, Filter::Attention, Cursor::Start, 10).expect("page");
        assert_eq!(ids(&p), vec![b]);
        let closed = page(&db, user, Filter::Closed, Cursor::Start, 10).expect("page");
        assert_eq!(ids(&closed), vec![a]);
        assert_eq!(
            Cursor::decode(&Cursor::Rest(5, 7).encode()),
            Some(Cursor::Rest(5, 7))
        );
        assert_eq!(Cursor::decode("junk"), None);
    }

    #[test]
    fn counts_stop_at_the_cap() {
        let conn = crate::store::memory_db();
        let db = Db::for_test(&conn);
        for n in 0..COUNT_CAP + 5 {
            let s = sc(&conn, n);
            message(&conn, s, "in", "reply");
        }
        let c = counts(&db, 1).expect("counts");
        assert_eq!(c.attention, COUNT_CAP);
        assert_eq!(shown(c.attention), "1000+");
        assert_eq!(shown(999), "999");
    }
}
