//! Parent tickets as the helpdesk syncs them (SPEC §7 `PUT
//! /api/parents/{external_id}`): created or updated; closing a parent
//! closes its side conversations.

use super::{Actor, ServiceError, invalid, set_status_in};
use crate::model::{ParentChanges, ParentStatus, is_valid_email, now_ms};
use crate::store::{self, Db, StoreError};

/// A parent's fields to set; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct ParentUpsert {
    pub subject: Option<String>,
    /// (name, email) of the requester.
    pub requester: Option<(Option<String>, Option<String>)>,
    pub status: Option<ParentStatus>,
    /// `Some(None)` clears it.
    pub snoozed_until: Option<Option<i64>>,
    /// The assignee's address; `Some(None)` unassigns.
    pub assignee: Option<Option<String>>,
}

/// What can be checked without the store.
pub(super) fn check(external_id: &str, u: &ParentUpsert) -> Result<(), ServiceError> {
    if external_id.is_empty()
        || external_id.len() > 200
        || external_id.chars().any(char::is_control)
    {
        return Err(invalid(
            "external_id",
            "must be 1 to 200 printable characters",
        ));
    }
    if let Some((_, Some(e))) = &u.requester
        && !is_valid_email(e)
    {
        return Err(invalid("requester.email", "not a valid email address"));
    }
    if u.subject.as_deref().is_some_and(|s| s.len() > 998) {
        return Err(invalid("subject", "at most 998 bytes"));
    }
    Ok(())
}

/// Creates or updates the parent; `true` when it was created. Closing it
/// closes its open side conversations (each logged and announced).
pub fn upsert_parent_in(
    db: &Db<'_>,
    actor: &Actor,
    external_id: &str,
    u: &ParentUpsert,
) -> Result<bool, ServiceError> {
    let now = now_ms();
    let assignee_id = match &u.assignee {
        Some(Some(email)) => match store::users::by_email(db, email) {
            Ok(user) => Some(Some(user.id)),
            Err(StoreError::NotFound) => {
                return Err(invalid(
                    "assignee",
                    format!("{email} is not a user of this gateway"),
                ));
            }
            Err(e) => return Err(e.into()),
        },
        Some(None) => Some(None),
        None => None,
    };
    let before = store::parents::get(db, external_id)?;
    let (id, created) = match &before {
        Some(p) => (p.id, false),
        None => store::parents::create_if_missing(db, external_id, "", now)?,
    };
    store::parents::update(
        db,
        id,
        &ParentChanges {
            subject: u.subject.as_ref().map(|s| s.trim().to_string()),
            requester: u.requester.clone(),
            status: u.status,
            snoozed_until: u.snoozed_until,
            assignee_id,
        },
        now,
    )?;
    let was_closed = before.is_some_and(|p| p.status == ParentStatus::Closed);
    if u.status == Some(ParentStatus::Closed) && !was_closed {
        for sc in store::side_conversations::ids_of_parent(db, id, true)? {
            set_status_in(db, actor, sc, false)?;
        }
    }
    Ok(created)
}
