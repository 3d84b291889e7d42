//! Reminders (SPEC §15): a side conversation with `remind_after` that has
//! waited on the vendor that long since the latest agent message reminds
//! its agent once — an entry in the activity log (`No reply from
//! {recipient} for {age}`) and a line in the agent's reply notifications
//! (same batching, same opt-out) — and, with `nudge_vendor`, sends the
//! vendor one follow-up. A vendor reply or closing stops it: only open
//! threads waiting on the vendor are read. The time is passed in, so the
//! scheduler's clock can be anyone's (a test's).

use super::follow_up::follow_up_in;
use super::{Actor, FollowUpRequest, ServiceError};
use crate::config::Config;
use crate::model::{ParticipantRole, age_text, parse_age};
use crate::store::{self, Db};

/// Most reminders one pass gives (the next pass goes on).
pub const PASS_LIMIT: i64 = 200;

/// Reads `remind_after` as the API takes it: an age (`2d`, `12h`), or
/// `None`/`off` for none.
pub fn parse_remind_after(field: &str, v: Option<&str>) -> Result<Option<i64>, ServiceError> {
    match v.map(str::trim) {
        None | Some("off") => Ok(None),
        Some(text) => parse_age(text).map(Some).ok_or_else(|| {
            super::invalid(field, "expected a delay such as 90m, 12h, 2d or 1w, or off")
        }),
    }
}

/// The workspace default (`remind_after` in the settings): ms, or none.
pub fn workspace_default(db: &Db<'_>) -> store::Result<Option<i64>> {
    Ok(store::get_setting(db, "remind_after")?.and_then(|v| v.as_str().and_then(parse_age)))
}

/// One pass at `now`: every due reminder, each in its own savepoint (one
/// that fails is logged and tried on the next pass). Returns how many
/// were given.
pub fn remind_due(db: &Db<'_>, config: &Config, now: i64) -> store::Result<usize> {
    let mut given = 0;
    for due in store::waiting::due_reminders(db, now, PASS_LIMIT)? {
        match db.savepoint(|db| {
            remind_one(db, config, &due, now).map_err(|e| match e {
                ServiceError::Store(m) => store::StoreError::Database(m),
                other => store::StoreError::Database(other.to_string()),
            })
        }) {
            Ok(()) => given += 1,
            Err(e) => {
                tracing::warn!(side_conversation = due.id, error = %e,
                    "reminders: this reminder failed; the next pass tries again");
            }
        }
    }
    Ok(given)
}

fn remind_one(
    db: &Db<'_>,
    config: &Config,
    due: &store::waiting::DueReminder,
    now: i64,
) -> Result<(), ServiceError> {
    let sc = super::load_sc(db, due.id)?;
    let people = store::participants::list(db, due.id)?;
    let recipient = people
        .iter()
        .find(|p| p.role == ParticipantRole::To)
        .or(people.first())
        .map(|p| p.email.clone())
        .unwrap_or_else(|| "the vendor".to_string());
    let text = format!(
        "No reply from {recipient} for {}",
        age_text(now - due.since)
    );
    store::activity::add(db, sc.parent_id, Some(sc.id), None, &text, now)?;
    store::notifications::enqueue_reminder(db, sc.id, due.out_id, &text, now)?;
    let mut reminded = due.out_id;
    if due.nudge {
        // In the name of whoever the reminder is for: the assignee, else
        // the agent who started it.
        let agent = match store::notifications::agent_of(db, sc.id)? {
            Some(id) => Some(store::users::by_id(db, id)?),
            None => None,
        };
        if let Some(u) = agent.filter(|u| u.active) {
            let actor = Actor {
                user_id: u.id,
                name: u.name,
                email: u.email,
            };
            let req = FollowUpRequest {
                body_text: Some(format!(
                    "Hello,\n\nFollowing up on \"{}\": could you let us know where this stands?\n\nThank you.",
                    sc.subject
                )),
                ..FollowUpRequest::default()
            };
            let sent = follow_up_in(db, config, &actor, sc.id, &req, &[])?;
            // The nudge is not itself reminded of.
            reminded = sent.message;
        }
    }
    store::waiting::mark_reminded(db, sc.id, reminded)?;
    Ok(())
}

/// Where the scheduler reads the time: the system clock in service, any
/// function in a test.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// How often the scheduler looks for due reminders.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);
