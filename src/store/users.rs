//! Users (agents and admins) and their API tokens.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Db, Result, StoreError};
use crate::model::{ApiToken, Role, now_ms};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    #[serde(serialize_with = "ser_role")]
    pub role: Role,
    pub notifications: String,
    pub created_at: i64,
}

fn ser_role<S: serde::Serializer>(role: &Role, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(role.as_str())
}

const COLUMNS: &str = "id, email, name, role, notifications, created_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        role: role.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?,
        notifications: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// Creates a user; returns it with its new API token (shown once).
pub fn create(db: &Db<'_>, email: &str, name: &str, role: Role) -> Result<(User, ApiToken)> {
    let conn = db.conn();
    let token = ApiToken::generate();
    let hash = ApiToken::hash(token.as_str());
    let now = now_ms();
    conn.execute(
        "INSERT INTO users (email, name, role, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![email, name, role.as_str(), &hash[..], now],
    )
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("a user with email {email} exists"))
        }
        other => other,
    })?;
    let id = conn.last_insert_rowid();
    Ok((
        User {
            id,
            email: email.to_string(),
            name: name.to_string(),
            role,
            notifications: "email".into(),
            created_at: now,
        },
        token,
    ))
}

pub fn list(db: &Db<'_>) -> Result<Vec<User>> {
    let conn = db.conn();
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM users ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn count(db: &Db<'_>) -> Result<i64> {
    let conn = db.conn();
    Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
}

/// Changes what a user sets for themself: name, notifications.
pub fn update_profile(
    db: &Db<'_>,
    id: i64,
    name: Option<&str>,
    notifications: Option<&str>,
) -> Result<()> {
    let conn = db.conn();
    if let Some(n) = notifications {
        conn.execute(
            "UPDATE users SET notifications = ?2 WHERE id = ?1",
            params![id, n],
        )?;
    }
    if let Some(n) = name {
        conn.execute("UPDATE users SET name = ?2 WHERE id = ?1", params![id, n])?;
    }
    Ok(())
}

/// Whether `email` is a user of this gateway.
pub fn exists(db: &Db<'_>, email: &str) -> Result<bool> {
    Ok(db
        .conn()
        .prepare_cached("SELECT 1 FROM users WHERE email = ?1")?
        .query_row([email], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn by_id(db: &Db<'_>, id: i64) -> Result<User> {
    Ok(db.conn().query_row(
        &format!("SELECT {COLUMNS} FROM users WHERE id = ?1"),
        [id],
        from_row,
    )?)
}

pub fn by_email(db: &Db<'_>, email: &str) -> Result<User> {
    let conn = db.conn();
    Ok(conn.query_row(
        &format!("SELECT {COLUMNS} FROM users WHERE email = ?1"),
        [email],
        from_row,
    )?)
}

/// Finds the user whose token hashes to the given value. The lookup is by
/// hash (an index probe), so the token itself is never compared byte by byte
/// against stored secrets; the final equality check is constant-time.
pub fn by_token(db: &Db<'_>, token: &str) -> Result<Option<User>> {
    let conn = db.conn();
    use subtle::ConstantTimeEq;
    let hash = ApiToken::hash(token);
    let found = conn
        .query_row(
            &format!("SELECT {COLUMNS}, token_hash FROM users WHERE token_hash = ?1"),
            [&hash[..]],
            |r| Ok((from_row(r)?, r.get::<_, Vec<u8>>(6)?)),
        )
        .optional()?;
    Ok(found.and_then(|(user, stored)| bool::from(stored.ct_eq(&hash[..])).then_some(user)))
}
