//! Starting a side conversation (SPEC §5): on a parent (created when the
//! helpdesk has not synced it yet), to one or more recipients, from the
//! sender asked for or the last one used on the parent, with the first
//! message composed and queued.

use serde_json::json;

use super::outgoing::{Outgoing, portal_of, resolve_sender, write_message};
use super::{
    Actor, MAX_RECIPIENTS, MAX_SUBJECT, Sent, ServiceError, StartRequest, activity,
    check_attachments, check_body, check_recipients, invalid, load_sc, normalize_addresses,
};
use crate::config::Config;
use crate::model::{NewSideConversation, ParticipantRole, Route, Token, now_ms};
use crate::outbound::compose::{Context, clean_header};
use crate::store::{self, Db, events, get_setting};
use crate::templates;

/// A start request's recipients and subject, checked.
pub(super) struct Checked {
    to: Vec<String>,
    cc: Vec<String>,
    subject: String,
    tags: Vec<String>,
    /// `None`: the workspace default.
    remind_after: Option<Option<i64>>,
}

/// What can be checked without the store.
pub(super) fn check(external_id: &str, req: &StartRequest) -> Result<Checked, ServiceError> {
    if external_id.trim().is_empty()
        || external_id.len() > 200
        || external_id.chars().any(char::is_control)
    {
        return Err(invalid(
            "external_id",
            "must be 1 to 200 printable characters",
        ));
    }
    let to = normalize_addresses("to", &req.to)?;
    if to.is_empty() {
        return Err(invalid("to", "at least one recipient is needed"));
    }
    let cc: Vec<String> = normalize_addresses("cc", &req.cc)?
        .into_iter()
        .filter(|c| !to.iter().any(|t| t.eq_ignore_ascii_case(c)))
        .collect();
    if to.len() + cc.len() > MAX_RECIPIENTS {
        return Err(invalid(
            "to",
            format!("at most {MAX_RECIPIENTS} recipients"),
        ));
    }
    let subject = clean_header(&req.subject);
    if subject.is_empty() {
        return Err(invalid("subject", "must not be empty"));
    }
    if subject.len() > MAX_SUBJECT {
        return Err(invalid("subject", format!("at most {MAX_SUBJECT} bytes")));
    }
    check_body(&req.body_text, &req.body_html)?;
    check_attachments(&req.attachments)?;
    let tags = super::check_tags("tags", &req.tags)?;
    let remind_after = match &req.remind_after {
        None => None,
        Some(t) => Some(super::reminders::parse_remind_after(
            "remind_after",
            Some(t),
        )?),
    };
    Ok(Checked {
        to,
        cc,
        subject,
        tags,
        remind_after,
    })
}

pub(super) fn start_in(
    db: &Db<'_>,
    config: &Config,
    actor: &Actor,
    external_id: &str,
    req: &StartRequest,
    checked: &Checked,
) -> Result<Sent, ServiceError> {
    let Checked {
        to,
        cc,
        subject,
        tags,
        remind_after,
    } = checked;
    let enabled = get_setting(db, "side_conversations_enabled")?
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    if !enabled {
        return Err(ServiceError::Conflict(
            "side conversations are turned off in the settings".into(),
        ));
    }
    check_recipients(db, config, "to", to)?;
    check_recipients(db, config, "cc", cc)?;
    let now = now_ms();
    store::parents::create_if_missing(db, external_id, subject, now)?;
    let parent = store::parents::get(db, external_id)?.ok_or(ServiceError::NotFound("parent"))?;
    let sender = resolve_sender(
        db,
        config,
        req.from.as_deref(),
        parent.last_sender.as_deref(),
    )?;
    let token = Token::generate();
    let sc_id = store::side_conversations::insert(
        db,
        &NewSideConversation {
            parent_id: parent.id,
            token: token.as_str(),
            portal_per_recipient: req.share_portal_link,
            subject,
            sender_email: &sender.email,
            started_by: Some(actor.user_id),
            created_at: now,
        },
    )?;
    for (list, role) in [(to, ParticipantRole::To), (cc, ParticipantRole::Cc)] {
        for e in list {
            store::participants::add(db, sc_id, e, None, role, now)?;
        }
    }
    store::waiting::set_tags(db, sc_id, tags)?;
    let remind_after = match remind_after {
        Some(r) => *r,
        None => super::reminders::workspace_default(db)?,
    };
    store::waiting::set_reminder(db, sc_id, remind_after, req.nudge_vendor)?;
    let sc = load_sc(db, sc_id)?;
    let context = req.include_context.then(|| Context {
        parent: external_id.to_string(),
        requester_name: parent.requester_name.clone(),
        requester_email: parent.requester_email.clone(),
        status: parent.status.as_str().to_string(),
        excerpt: parent.subject.clone(),
    });
    let message = write_message(
        db,
        config,
        Outgoing {
            sc: &sc,
            sender: &sender,
            actor: Some(actor),
            from_name: None,
            route: Route::Api,
            to,
            cc,
            text: req.body_text.as_deref(),
            html: req.body_html.as_deref(),
            context,
            portal: portal_of(&sc, &config.http.public_url),
            attachments: &req.attachments,
        },
    )?;
    let recipients = to
        .iter()
        .chain(cc.iter())
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    activity(
        db,
        parent.id,
        sc_id,
        actor,
        format!(
            "{} started a side conversation with {recipients}",
            actor.name
        ),
    )?;
    events::enqueue(
        db,
        "side_conversation.started",
        json!({"side_conversation_id": sc_id, "parent": external_id, "token": token.as_str(), "subject": subject, "to": to, "cc": cc, "by": actor.email, "tags": tags}),
    )?;
    Ok(Sent {
        side_conversation: sc_id,
        message,
        token: token.to_string(),
    })
}

/// What a start request says before a template fills it (`None`: left
/// out, so the template's value is used).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    pub to: Option<Vec<String>>,
    pub cc: Option<Vec<String>>,
    pub subject: Option<String>,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// Fills what `draft` leaves out from template `template` (SPEC §7: "start
/// accepts `template` and fills the rest"): recipients when none are
/// given, cc when cc is left out, the subject when it is empty, the body
/// when neither body is given. Placeholders are filled for parent
/// `external_id` (empty values while the helpdesk has not synced it) and
/// the agent. `None` when there is no such template.
pub(super) fn fill_from_template(
    db: &Db<'_>,
    template: i64,
    external_id: &str,
    agent_name: &str,
    mut draft: Draft,
) -> store::Result<Option<Draft>> {
    let t = match store::templates::get(db, template) {
        Ok(t) => t,
        Err(store::StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (subject, rname, remail) = store::parents::get(db, external_id)?
        .map(|p| (p.subject, p.requester_name, p.requester_email))
        .unwrap_or_default();
    let values = templates::Values {
        parent_id: external_id.to_string(),
        parent_subject: subject,
        requester_name: rname.unwrap_or_default(),
        requester_email: remail.unwrap_or_default(),
        agent_name: agent_name.to_string(),
    };
    if draft.to.as_ref().is_none_or(Vec::is_empty) {
        draft.to = Some(t.to.clone());
    }
    if draft.cc.is_none() {
        draft.cc = Some(t.cc.clone());
    }
    if draft.subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
        draft.subject = Some(templates::fill(&t.subject, &values));
    }
    if draft.tags.is_none() {
        draft.tags = Some(t.tags.clone());
    }
    if draft.body_text.is_none() && draft.body_html.is_none() {
        draft.body_text = t.body_text.as_deref().map(|b| templates::fill(b, &values));
        draft.body_html = t
            .body_html
            .as_deref()
            .map(|b| templates::fill_html(b, &values));
    }
    Ok(Some(draft))
}
