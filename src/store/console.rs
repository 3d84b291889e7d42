//! The web console's own rows (SPEC §11): passwords, sessions, one-time
//! sign-in links, and which side conversations each user has unread
//! vendor replies in. Secrets arrive here already hashed: a session or
//! link is found by the SHA-256 of its value, never by the value.

use rusqlite::{OptionalExtension, params};
use serde_json::json;

use super::audit::{self, Actor};
use super::users::{self, User};
use super::{Db, Result, StoreError};

/// The user with this email and their password hash (None when they have
/// not set one). Deactivated users are found too: the caller refuses them
/// after the password check, so a wrong password and a deactivated
/// account take the same time.
pub fn password_of(db: &Db<'_>, email: &str) -> Result<Option<(User, Option<String>)>> {
    let user = match users::by_email(db, email) {
        Ok(u) => u,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let hash: Option<String> = db
        .conn()
        .prepare_cached("SELECT password_hash FROM users WHERE id = ?1")?
        .query_row([user.id], |r| r.get(0))?;
    Ok(Some((user, hash)))
}

/// The ids of the users who have set a password (the admin's user list
/// says who signs in by link only).
pub fn users_with_password(db: &Db<'_>) -> Result<std::collections::HashSet<i64>> {
    let mut stmt = db
        .conn()
        .prepare_cached("SELECT id FROM users WHERE password_hash IS NOT NULL")?;
    let ids = stmt.query_map([], |r| r.get::<_, i64>(0))?;
    Ok(ids.collect::<rusqlite::Result<_>>()?)
}

/// Sets (or, with `None`, removes) a user's password and ends every
/// session of theirs except `keep` (the one that made the change, if any).
pub fn set_password(
    db: &Db<'_>,
    actor: &Actor,
    user_id: i64,
    phc: Option<&str>,
    keep: Option<&[u8]>,
) -> Result<()> {
    let conn = db.conn();
    let n = conn
        .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
        .execute(params![user_id, phc])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    conn.prepare_cached(
        "DELETE FROM console_sessions WHERE user_id = ?1 AND id_hash IS DISTINCT FROM ?2",
    )?
    .execute(params![user_id, keep])?;
    let action = if phc.is_some() {
        "user.password_set"
    } else {
        "user.password_removed"
    };
    audit::record(db, actor, action, &format!("user:{user_id}"), &json!({}))?;
    Ok(())
}

/// A session as found by its cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

pub fn create_session(
    db: &Db<'_>,
    id_hash: &[u8],
    user_id: i64,
    csrf: &str,
    method: &str,
    now: i64,
) -> Result<()> {
    db.conn()
        .prepare_cached(
            "INSERT INTO console_sessions (id_hash, user_id, csrf, created_at, last_seen_at, method)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        )?
        .execute(params![id_hash, user_id, csrf, now, method])?;
    Ok(())
}

/// The session with this hash if it is still good at `now`: its user is
/// active, it was used within `idle_ms` and opened within `max_ms`.
pub fn session(
    db: &Db<'_>,
    id_hash: &[u8],
    now: i64,
    idle_ms: i64,
    max_ms: i64,
) -> Result<Option<Session>> {
    let row = db
        .conn()
        .prepare_cached(
            "SELECT user_id, csrf, created_at, last_seen_at FROM console_sessions
             WHERE id_hash = ?1",
        )?
        .query_row([id_hash], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((user_id, csrf, created_at, last_seen_at)) = row else {
        return Ok(None);
    };
    if now.saturating_sub(last_seen_at) > idle_ms || now.saturating_sub(created_at) > max_ms {
        return Ok(None);
    }
    let user = match users::by_id(db, user_id) {
        Ok(u) if u.active => u,
        Ok(_) | Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(Session {
        user,
        csrf,
        created_at,
        last_seen_at,
    }))
}

/// Marks a session used now (the idle clock starts again).
pub fn touch_session(db: &Db<'_>, id_hash: &[u8], now: i64) -> Result<()> {
    db.conn()
        .prepare_cached("UPDATE console_sessions SET last_seen_at = ?2 WHERE id_hash = ?1")?
        .execute(params![id_hash, now])?;
    Ok(())
}

pub fn delete_session(db: &Db<'_>, id_hash: &[u8]) -> Result<()> {
    db.conn()
        .prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

/// Removes sessions and links past use at `now`; returns how many rows went.
pub fn sweep(db: &Db<'_>, now: i64, idle_ms: i64, max_ms: i64) -> Result<usize> {
    let conn = db.conn();
    let a = conn
        .prepare_cached("DELETE FROM console_sessions WHERE last_seen_at < ?1 OR created_at < ?2")?
        .execute(params![now - idle_ms, now - max_ms])?;
    let b = conn
        .prepare_cached("DELETE FROM login_links WHERE expires_at < ?1")?
        .execute([now])?;
    Ok(a + b)
}

/// Records a new sign-in link for `user_id`.
pub fn create_link(
    db: &Db<'_>,
    token_hash: &[u8],
    user_id: i64,
    now: i64,
    expires_at: i64,
) -> Result<()> {
    db.conn()
        .prepare_cached(
            "INSERT INTO login_links (token_hash, user_id, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![token_hash, user_id, now, expires_at])?;
    Ok(())
}

/// Why a sign-in link did not open a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    Unknown,
    Used,
    Expired,
    Inactive,
}

/// The user a sign-in link is for, if it can still be used (a look, not a
/// use: the confirmation page shows who is signing in).
pub fn peek_link(
    db: &Db<'_>,
    token_hash: &[u8],
    now: i64,
) -> Result<std::result::Result<User, LinkRefusal>> {
    let row = db
        .conn()
        .prepare_cached(
            "SELECT user_id, expires_at, used_at FROM login_links WHERE token_hash = ?1",
        )?
        .query_row([token_hash], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()?;
    let Some((user_id, expires_at, used_at)) = row else {
        return Ok(Err(LinkRefusal::Unknown));
    };
    if used_at.is_some() {
        return Ok(Err(LinkRefusal::Used));
    }
    if expires_at < now {
        return Ok(Err(LinkRefusal::Expired));
    }
    match users::by_id(db, user_id) {
        Ok(u) if u.active => Ok(Ok(u)),
        Ok(_) | Err(StoreError::NotFound) => Ok(Err(LinkRefusal::Inactive)),
        Err(e) => Err(e),
    }
}

/// Uses a sign-in link: once, before it expires, for an active user; in
/// the same transaction the session it opens is written.
pub fn use_link(
    db: &Db<'_>,
    token_hash: &[u8],
    session_hash: &[u8],
    csrf: &str,
    now: i64,
) -> Result<std::result::Result<User, LinkRefusal>> {
    let user = match peek_link(db, token_hash, now)? {
        Ok(u) => u,
        Err(refusal) => return Ok(Err(refusal)),
    };
    db.conn()
        .prepare_cached(
            "UPDATE login_links SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL",
        )?
        .execute(params![token_hash, now])?;
    create_session(db, session_hash, user.id, csrf, "link", now)?;
    Ok(Ok(user))
}

/// The user has seen side conversation `sc` (its vendor replies are read).
pub fn mark_read(db: &Db<'_>, user_id: i64, sc: i64) -> Result<()> {
    db.conn()
        .prepare_cached(
            "DELETE FROM console_unread WHERE user_id = ?1 AND side_conversation_id = ?2",
        )?
        .execute(params![user_id, sc])?;
    Ok(())
}

/// Whether the user has an unread vendor reply in `sc`.
pub fn is_unread(db: &Db<'_>, user_id: i64, sc: i64) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached(
            "SELECT 1 FROM console_unread WHERE user_id = ?1 AND side_conversation_id = ?2",
        )?
        .query_row(params![user_id, sc], |_| Ok(()))
        .optional()?
        .is_some())
}
