//! Admitting and removing participants by hand (SPEC §10): the one way a
//! sender of unverified mail joins, and the way to drop someone from the
//! thread (their portal link stops working).

use super::{Actor, MAX_PARTICIPANTS, ServiceError, activity, check_recipients, invalid, load_sc};
use crate::config::Config;
use crate::model::{ParticipantRole, is_author_address, now_ms};
use crate::outbound::compose::clean_header;
use crate::store::{self, Db};

/// The address (trimmed, well formed) and the name (cleaned, ≤ 200
/// characters) of a participant to admit.
pub(super) fn check(
    email: &str,
    name: Option<String>,
) -> Result<(String, Option<String>), ServiceError> {
    let email = email.trim().to_string();
    if !is_author_address(&email) {
        return Err(invalid(
            "email",
            format!("`{}` is not a valid email address", clean_header(&email)),
        ));
    }
    let name = name
        .map(|n| clean_header(&n))
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(200).collect::<String>());
    Ok((email, name))
}

pub(super) fn admit_in(
    db: &Db<'_>,
    config: &Config,
    actor: &Actor,
    sc_id: i64,
    email: &str,
    name: Option<&str>,
) -> Result<(), ServiceError> {
    let sc = load_sc(db, sc_id)?;
    check_recipients(db, config, "email", &[email.to_string()])?;
    if store::participants::is_participant(db, sc_id, email)? {
        return Err(ServiceError::Conflict(format!(
            "{email} is already a participant"
        )));
    }
    if store::participants::count(db, sc_id)? >= MAX_PARTICIPANTS {
        return Err(invalid(
            "email",
            format!("a side conversation has at most {MAX_PARTICIPANTS} participants"),
        ));
    }
    let now = now_ms();
    store::participants::add(db, sc_id, email, name, ParticipantRole::Admitted, now)?;
    store::contacts::add(db, email, name, None, now)?;
    activity(
        db,
        sc.parent_id,
        sc_id,
        actor,
        format!("{} admitted {email} to a side conversation", actor.name),
    )
}

pub(super) fn remove_in(
    db: &Db<'_>,
    actor: &Actor,
    sc_id: i64,
    email: &str,
) -> Result<(), ServiceError> {
    let sc = load_sc(db, sc_id)?;
    if !store::participants::remove(db, sc_id, email)? {
        return Err(ServiceError::NotFound("participant"));
    }
    store::portal::revoke_links(db, sc_id, Some(email), now_ms())?;
    activity(
        db,
        sc.parent_id,
        sc_id,
        actor,
        format!("{} removed {email} from a side conversation", actor.name),
    )
}
