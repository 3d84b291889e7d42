//! Closing and reopening a side conversation (SPEC §5), logged and
//! announced; the same state twice is a 409, to make mistakes visible.

use serde_json::json;

use super::{Actor, ServiceError, activity, load_sc};
use crate::model::{ScStatus, now_ms};
use crate::store::{self, Db, events};

/// Closes or reopens inside a transaction (also used when a parent closes).
pub fn set_status_in(
    db: &Db<'_>,
    actor: &Actor,
    sc_id: i64,
    open: bool,
) -> Result<(), ServiceError> {
    let sc = load_sc(db, sc_id)?;
    let now = now_ms();
    let (want, verb, event) = if open {
        (ScStatus::Open, "reopened", "side_conversation.reopened")
    } else {
        (ScStatus::Closed, "closed", "side_conversation.closed")
    };
    if sc.status == want {
        return Err(ServiceError::Conflict(format!(
            "the side conversation is already {want}"
        )));
    }
    store::side_conversations::set_status(db, sc_id, want, now)?;
    activity(
        db,
        sc.parent_id,
        sc_id,
        actor,
        format!("{} {verb} a side conversation", actor.name),
    )?;
    events::enqueue(
        db,
        event,
        json!({"side_conversation_id": sc_id, "parent": sc.parent, "by": actor.email,
               "tags": store::waiting::tags(db, sc_id)?}),
    )?;
    Ok(())
}
