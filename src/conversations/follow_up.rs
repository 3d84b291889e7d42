//! An agent's follow-up (SPEC §5): to every participant (the `cc` of the
//! request join as participants), refused while the side conversation is
//! closed.

use super::outgoing::{Outgoing, portal_of, thread_sender, write_message};
use super::{
    Actor, FollowUpRequest, MAX_PARTICIPANTS, Sent, ServiceError, activity, check_recipients,
    invalid, load_sc,
};
use crate::config::Config;
use crate::model::{ParticipantRole, Route, ScStatus, now_ms};
use crate::store::{self, Db};

/// The recipients of the thread's next message: (to, cc).
pub(super) fn recipients(db: &Db<'_>, sc: i64) -> Result<(Vec<String>, Vec<String>), ServiceError> {
    let people = store::participants::list(db, sc)?;
    let to = people
        .iter()
        .filter(|p| p.role != ParticipantRole::Cc)
        .map(|p| p.email.clone())
        .collect();
    let cc = people
        .iter()
        .filter(|p| p.role == ParticipantRole::Cc)
        .map(|p| p.email.clone())
        .collect();
    Ok((to, cc))
}

pub(super) fn follow_up_in(
    db: &Db<'_>,
    config: &Config,
    actor: &Actor,
    sc_id: i64,
    req: &FollowUpRequest,
    extra_cc: &[String],
) -> Result<Sent, ServiceError> {
    let sc = load_sc(db, sc_id)?;
    if sc.status == ScStatus::Closed {
        return Err(ServiceError::Conflict(
            "the side conversation is closed; reopen it to reply".into(),
        ));
    }
    check_recipients(db, config, "cc", extra_cc)?;
    let now = now_ms();
    let count = store::participants::count(db, sc_id)?;
    if count + extra_cc.len() as i64 > MAX_PARTICIPANTS {
        return Err(invalid(
            "cc",
            format!("a side conversation has at most {MAX_PARTICIPANTS} participants"),
        ));
    }
    for e in extra_cc {
        store::participants::add(db, sc_id, e, None, ParticipantRole::Cc, now)?;
    }
    let (to, cc) = recipients(db, sc_id)?;
    if to.is_empty() && cc.is_empty() {
        return Err(ServiceError::Conflict(
            "the side conversation has no participants left".into(),
        ));
    }
    let sender = thread_sender(db, config, &sc)?;
    let message = write_message(
        db,
        config,
        Outgoing {
            sc: &sc,
            sender: &sender,
            actor: Some(actor),
            from_name: None,
            route: Route::Api,
            to: &to,
            cc: &cc,
            text: req.body_text.as_deref(),
            html: req.body_html.as_deref(),
            context: None,
            portal: portal_of(&sc, &config.http.public_url),
            attachments: &req.attachments,
        },
    )?;
    activity(
        db,
        sc.parent_id,
        sc_id,
        actor,
        format!("{} replied in a side conversation", actor.name),
    )?;
    Ok(Sent {
        side_conversation: sc_id,
        message,
        token: sc.token.clone(),
    })
}
