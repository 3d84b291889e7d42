//! The user lifecycle an owner or admin drives (SPEC §2, §7): adding a
//! user, changing their role, name or standing, rotating their API token
//! and sending them a sign-in link. The API and the web console call these,
//! so the rules hold whichever way a change arrives: owners may change
//! anyone; an admin may change admins, members and viewers but not an
//! owner, and may not make anyone an owner. Each change is one write with
//! its audit entry.

use serde_json::json;

use crate::config::Config;
use crate::model::{ApiToken, Role, is_valid_email, now_ms};
use crate::store::audit::{self, Actor};
use crate::store::users::{self, Change, User};
use crate::store::{Db, StoreError};

/// Why a change to a user was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A field is not acceptable (HTTP 422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The caller's role does not allow it (HTTP 403).
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("user not found")]
    NotFound,
    /// The state forbids it: the last active owner, a taken address (409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => UserError::NotFound,
            StoreError::Conflict(m) => UserError::Conflict(m),
            other => UserError::Store(other),
        }
    }
}

/// A user's display name: 1 to 200 printable characters, trimmed.
pub fn check_name(name: &str) -> Result<String, UserError> {
    let n = name.trim();
    if n.is_empty() || n.len() > 200 || n.chars().any(char::is_control) {
        return Err(UserError::Invalid {
            field: "name",
            message: "must be 1 to 200 printable characters".into(),
        });
    }
    Ok(n.to_string())
}

/// A role by name.
pub fn parse_role(role: &str) -> Result<Role, UserError> {
    role.parse::<Role>().map_err(|message| UserError::Invalid {
        field: "role",
        message,
    })
}

/// Checks a new user (`role` absent: member) against the caller's role.
pub fn check_new(
    caller: Role,
    email: &str,
    name: &str,
    role: Option<&str>,
) -> Result<(String, String, Role), UserError> {
    let email = email.trim().to_string();
    if !is_valid_email(&email) {
        return Err(UserError::Invalid {
            field: "email",
            message: "not a valid email address".into(),
        });
    }
    let name = check_name(name)?;
    let role = parse_role(role.unwrap_or("member"))?;
    if role == Role::Owner && caller != Role::Owner {
        return Err(UserError::Forbidden("only an owner can add an owner"));
    }
    Ok((email, name, role))
}

/// Adds a checked user ([`check_new`]), audited; returns it with its API
/// token (shown once).
pub fn add(
    db: &Db<'_>,
    actor: &Actor,
    email: &str,
    name: &str,
    role: Role,
) -> Result<(User, ApiToken), UserError> {
    Ok(users::create_audited(db, actor, email, name, role)?)
}

/// The rule between the caller and the user they change (see the module
/// text). Members and viewers change no one (refused before this).
pub fn may_manage(caller: Role, target: &User, new_role: Option<Role>) -> Result<(), UserError> {
    if caller == Role::Owner {
        return Ok(());
    }
    if target.role == Role::Owner {
        return Err(UserError::Forbidden("only an owner can change an owner"));
    }
    if new_role == Some(Role::Owner) {
        return Err(UserError::Forbidden("only an owner can make a user owner"));
    }
    Ok(())
}

/// Applies `change` to user `id` when the caller may; returns the user
/// before and after. The last active owner stays (409).
pub fn update(
    db: &Db<'_>,
    actor: &Actor,
    caller: Role,
    id: i64,
    change: &Change,
) -> Result<(User, User), UserError> {
    let target = users::by_id(db, id)?;
    may_manage(caller, &target, change.role)?;
    Ok(users::change(db, actor, id, change)?)
}

/// A new API token for user `id` (the old one stops at once, their
/// sessions end); returns the user and the token, shown once.
pub fn rotate_token(
    db: &Db<'_>,
    actor: &Actor,
    caller: Role,
    id: i64,
) -> Result<(User, ApiToken), UserError> {
    let target = users::by_id(db, id)?;
    may_manage(caller, &target, None)?;
    Ok(users::rotate_token(db, actor, id)?)
}

/// Emails user `id` a one-time sign-in link, audited as
/// `user.login_link_sent`. A deactivated user gets none (409).
pub fn send_login_link(
    db: &Db<'_>,
    config: &Config,
    actor: &Actor,
    caller: Role,
    id: i64,
) -> Result<User, UserError> {
    let target = users::by_id(db, id)?;
    may_manage(caller, &target, None)?;
    if !target.active {
        return Err(UserError::Conflict(format!(
            "{} is deactivated: activate the user first",
            target.email
        )));
    }
    super::sign_in::email_link(db, config, &target, now_ms())?;
    audit::record(db, actor, "user.login_link_sent", &target.email, &json!({}))?;
    Ok(target)
}
