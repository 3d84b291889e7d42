//! Users (agents and admins) and their API tokens.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use serde_json::json;

use super::audit::{self, Actor};
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
    /// False once deactivated: no token, session or login of theirs works.
    pub active: bool,
    /// When the user was deactivated (while inactive).
    pub deactivated_at: Option<i64>,
    /// Moves whenever a session this user opened must end (see
    /// [`standing`]).
    #[serde(skip)]
    pub credential_epoch: i64,
}

fn ser_role<S: serde::Serializer>(role: &Role, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(role.as_str())
}

const COLUMNS: &str =
    "id, email, name, role, notifications, created_at, active, deactivated_at, credential_epoch";
/// How many columns [`COLUMNS`] names.
const NCOLS: usize = 9;

fn from_row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<User> {
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
        active: r.get(6)?,
        deactivated_at: r.get(7)?,
        credential_epoch: r.get(8)?,
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
    super::view::create_sent_mailbox(db, id)?;
    Ok((
        User {
            id,
            email: email.to_string(),
            name: name.to_string(),
            role,
            notifications: "email".into(),
            created_at: now,
            active: true,
            deactivated_at: None,
            credential_epoch: 0,
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
        .prepare_cached("SELECT 1 FROM users WHERE lower(email) = lower(?1)")?
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
        &format!("SELECT {COLUMNS} FROM users WHERE lower(email) = lower(?1)"),
        [email],
        from_row,
    )?)
}

/// Finds the active user whose token hashes to the given value (a
/// deactivated user's token finds no one). The lookup is by hash (an index
/// probe), so the token itself is never compared byte by byte against
/// stored secrets; the final equality check is constant-time.
pub fn by_token(db: &Db<'_>, token: &str) -> Result<Option<User>> {
    let conn = db.conn();
    use subtle::ConstantTimeEq;
    let hash = ApiToken::hash(token);
    let found = conn
        .query_row(
            &format!(
                "SELECT {COLUMNS}, token_hash FROM users WHERE token_hash = ?1 AND active = 1"
            ),
            [&hash[..]],
            |r| Ok((from_row(r)?, r.get::<_, Vec<u8>>(NCOLS)?)),
        )
        .optional()?;
    Ok(found.and_then(|(user, stored)| bool::from(stored.ct_eq(&hash[..])).then_some(user)))
}

/// Whether a session a user opened may go on (see [`standing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Still valid: the user as they are now.
    Valid(User),
    /// Deactivated, token rotated, role changed or the user is gone: the
    /// session ends.
    Revoked,
}

/// Whether a session user `id` opened at `epoch` (their
/// [`User::credential_epoch`] then) may go on: one primary-key read, cheap
/// enough for every IMAP command.
pub fn standing(db: &Db<'_>, id: i64, epoch: i64) -> Result<Standing> {
    let user = db
        .conn()
        .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?;
    Ok(match user {
        Some(u) if u.active && u.credential_epoch == epoch => Standing::Valid(u),
        _ => Standing::Revoked,
    })
}

/// The value of the 'credentials' counter: it moves with every change that
/// ends sessions (in any process), so whoever holds sessions open re-checks
/// them only when it moved.
pub fn credentials_counter(db: &Db<'_>) -> Result<i64> {
    Ok(db
        .conn()
        .prepare_cached("SELECT value FROM counters WHERE name = 'credentials'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Ends every session of user `id` opened before now: their epoch and the
/// global counter move.
fn end_sessions(db: &Db<'_>, id: i64) -> Result<()> {
    let conn = db.conn();
    conn.execute(
        "UPDATE users SET credential_epoch = credential_epoch + 1 WHERE id = ?1",
        [id],
    )?;
    conn.execute(
        "INSERT INTO counters (name, value) VALUES ('credentials', 1)
         ON CONFLICT(name) DO UPDATE SET value = counters.value + 1",
        [],
    )?;
    Ok(())
}

/// A change to a user by an owner/admin (or the command line); `None`
/// leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub role: Option<Role>,
    pub name: Option<String>,
    pub active: Option<bool>,
}

/// How many active owners there are besides user `id`.
fn other_active_owners(db: &Db<'_>, id: i64) -> Result<i64> {
    Ok(db.conn().query_row(
        "SELECT COUNT(*) FROM users WHERE role = 'owner' AND active = 1 AND id != ?1",
        [id],
        |r| r.get(0),
    )?)
}

/// Applies `change` to user `id` and records each part of it in the audit
/// log, all in the caller's transaction. The gateway always keeps one
/// active owner: demoting or deactivating the last one is a
/// [`StoreError::Conflict`] and changes nothing. A role change or a
/// deactivation ends the user's open sessions (they log in again, with
/// their new role; a deactivated user cannot). Returns the user before and
/// after.
pub fn change(db: &Db<'_>, actor: &Actor, id: i64, change: &Change) -> Result<(User, User)> {
    let before = by_id(db, id)?;
    let role = change.role.unwrap_or(before.role);
    let active = change.active.unwrap_or(before.active);
    let was_owner = before.active && before.role == Role::Owner;
    let stays_owner = active && role == Role::Owner;
    if was_owner && !stays_owner && other_active_owners(db, id)? == 0 {
        return Err(StoreError::Conflict(format!(
            "{} is the last active owner: make another user owner first",
            before.email
        )));
    }
    let conn = db.conn();
    let target = before.email.clone();
    if let Some(name) = &change.name
        && *name != before.name
    {
        conn.execute(
            "UPDATE users SET name = ?2 WHERE id = ?1",
            params![id, name],
        )?;
        audit::record(
            db,
            actor,
            "user.renamed",
            &target,
            &json!({"before": before.name, "after": name}),
        )?;
    }
    if role != before.role {
        conn.execute(
            "UPDATE users SET role = ?2 WHERE id = ?1",
            params![id, role.as_str()],
        )?;
        end_sessions(db, id)?;
        audit::record(
            db,
            actor,
            "user.role_changed",
            &target,
            &json!({"before": before.role.as_str(), "after": role.as_str()}),
        )?;
    }
    if active != before.active {
        if active {
            conn.execute(
                "UPDATE users SET active = 1, deactivated_at = NULL WHERE id = ?1",
                [id],
            )?;
        } else {
            conn.execute(
                "UPDATE users SET active = 0, deactivated_at = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )?;
        }
        end_sessions(db, id)?;
        let action = if active {
            "user.activated"
        } else {
            "user.deactivated"
        };
        audit::record(db, actor, action, &target, &json!({}))?;
    }
    let after = by_id(db, id)?;
    Ok((before, after))
}

/// Gives user `id` a new API token (returned, shown once); the old one
/// stops working and the user's open sessions end. Recorded in the audit
/// log (without either token).
pub fn rotate_token(db: &Db<'_>, actor: &Actor, id: i64) -> Result<(User, ApiToken)> {
    let user = by_id(db, id)?;
    let token = ApiToken::generate();
    let hash = ApiToken::hash(token.as_str());
    db.conn().execute(
        "UPDATE users SET token_hash = ?2 WHERE id = ?1",
        params![id, &hash[..]],
    )?;
    end_sessions(db, id)?;
    audit::record(db, actor, "user.token_rotated", &user.email, &json!({}))?;
    Ok((by_id(db, id)?, token))
}

/// [`create`], recorded in the audit log.
pub fn create_audited(
    db: &Db<'_>,
    actor: &Actor,
    email: &str,
    name: &str,
    role: Role,
) -> Result<(User, ApiToken)> {
    let (user, token) = create(db, email, name, role)?;
    audit::record(
        db,
        actor,
        "user.created",
        &user.email,
        &json!({"name": user.name, "role": user.role.as_str()}),
    )?;
    Ok((user, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_owner_guard_and_sessions() {
        let conn = super::super::memory_db();
        let db = Db::for_test(&conn);
        let cli = Actor::cli();
        let (owner, token) = create(&db, "o@example.com", "O", Role::Owner).expect("owner");
        let (member, _) = create(&db, "m@example.com", "M", Role::Member).expect("member");
        for c in [
            Change {
                role: Some(Role::Admin),
                ..Change::default()
            },
            Change {
                active: Some(false),
                ..Change::default()
            },
        ] {
            let err = change(&db, &cli, owner.id, &c).expect_err("last owner");
            assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        }
        assert_eq!(by_id(&db, owner.id).expect("owner"), owner);
        assert_eq!(
            standing(&db, owner.id, 0).expect("standing"),
            Standing::Valid(owner.clone())
        );
        let promote = Change {
            role: Some(Role::Owner),
            ..Change::default()
        };
        change(&db, &cli, member.id, &promote).expect("promote");
        let off = Change {
            active: Some(false),
            ..Change::default()
        };
        let counter = credentials_counter(&db).expect("counter");
        let (_, after) = change(&db, &cli, owner.id, &off).expect("deactivate");
        assert!(!after.active && after.deactivated_at.is_some());
        assert!(credentials_counter(&db).expect("counter") > counter);
        assert_eq!(
            standing(&db, owner.id, 0).expect("standing"),
            Standing::Revoked
        );
        assert_eq!(by_token(&db, token.as_str()).expect("lookup"), None);
        let actions: Vec<String> = audit::list(&db, None, 10)
            .expect("audit")
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["user.deactivated", "user.role_changed"]);
    }
}
