//! The vendor portal's rules (SPEC §8): a reply made on the page is a
//! reply like one by email (stored with the raw message it stands for,
//! with a reply's effects) and is relayed by email to the other
//! participants; links are revoked one recipient at a time or all at once.

use super::outgoing::{Outgoing, out_attachments, portal_of, thread_sender, write_message};
use super::replies::{ReplyFacts, Trust, apply_reply_effects};
use super::{
    Actor, MAX_PORTAL_ATTACHMENTS, MAX_PORTAL_TEXT, PortalReply, Sent, ServiceError, activity,
    check_attachments, invalid, load_sc,
};
use crate::config::Config;
use crate::model::{Mailbox, MessageKind, ParticipantRole, Route, ScStatus, Token, now_ms};
use crate::outbound::compose::{self, Person, clean_header};
use crate::store::view::{self, Placement};
use crate::store::{self, Db};

/// What can be checked without the store.
pub(super) fn check(req: &PortalReply) -> Result<(), ServiceError> {
    if req.text.trim().is_empty() && req.attachments.is_empty() {
        return Err(invalid("text", "write a reply or attach a file"));
    }
    if req.text.len() > MAX_PORTAL_TEXT {
        return Err(invalid(
            "text",
            format!("at most {} KiB", MAX_PORTAL_TEXT / 1024),
        ));
    }
    if req.attachments.len() > MAX_PORTAL_ATTACHMENTS {
        return Err(invalid(
            "attachments",
            format!("at most {MAX_PORTAL_ATTACHMENTS} files"),
        ));
    }
    check_attachments(&req.attachments)
}

pub(super) fn portal_reply_in(
    db: &Db<'_>,
    config: &Config,
    portal_token: &str,
    req: &PortalReply,
) -> Result<Sent, ServiceError> {
    let found =
        store::portal::by_token(db, portal_token)?.ok_or(ServiceError::NotFound("portal link"))?;
    let sc_id = found.id;
    let sc = load_sc(db, sc_id)?;
    if sc.status == ScStatus::Closed {
        return Err(ServiceError::Conflict(
            "the side conversation is closed".into(),
        ));
    }
    let now = now_ms();
    // Counted inside the writer's transaction, so concurrent posts cannot
    // both slip under the limit.
    let recent = store::side_conversations::portal_replies_since(db, sc_id, now - 3_600_000)?;
    if recent >= config.portal.replies_per_hour as i64 {
        return Err(ServiceError::RateLimited(format!(
            "at most {} replies an hour through this page",
            config.portal.replies_per_hour
        )));
    }

    // The author: a recipient's own link replies as that recipient, whatever
    // the form says; the shared link of older conversations lets the reader
    // choose among the participants (by default the first recipient).
    let people = store::participants::list(db, sc_id)?;
    let asked = req.from.as_deref().map(str::trim).filter(|e| !e.is_empty());
    let wanted = match &found.viewer {
        Some(viewer) => {
            if let Some(other) = asked.filter(|a| !a.eq_ignore_ascii_case(viewer)) {
                return Err(invalid(
                    "email",
                    format!(
                        "this link replies as {viewer} only, not as {}",
                        clean_header(other)
                    ),
                ));
            }
            Some(viewer.as_str())
        }
        None => asked,
    };
    let author = match wanted {
        Some(wanted) => people
            .iter()
            .find(|p| p.email.eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                invalid(
                    "email",
                    format!(
                        "{} is not a participant of this conversation",
                        clean_header(wanted)
                    ),
                )
            })?,
        None => people
            .iter()
            .find(|p| p.role == ParticipantRole::To)
            .or_else(|| people.first())
            .ok_or_else(|| {
                ServiceError::Conflict("the side conversation has no participants".into())
            })?,
    };
    let author = Mailbox {
        email: author.email.clone(),
        name: author.name.clone().filter(|n| !n.trim().is_empty()),
    };

    let sender = thread_sender(db, config, &sc)?;
    let token: Token = sc
        .token
        .parse()
        .map_err(|_| ServiceError::Store("stored token is malformed".into()))?;
    let reply_address = compose::reply_to(sender.reply_mode, &sender.email, &token, &config.domain)
        .unwrap_or_else(|| sender.email.clone());
    let ids = store::side_conversations::thread_ids(db, sc_id)?;
    let text = req.text.replace("\r\n", "\n").trim_end().to_string();
    let attachments = out_attachments(&req.attachments);
    let composed = compose::portal_message(&compose::PortalDraft {
        gateway_domain: &config.domain,
        from: author.clone(),
        to: Person {
            name: None,
            email: reply_address.clone(),
        },
        subject: &sc.subject,
        thread_ids: &ids,
        text: &text,
        attachments: &attachments,
        date: now,
    })
    .map_err(|e| ServiceError::Store(e.to_string()))?;
    let sha: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&composed.raw).into()
    };
    let visible = {
        let v = crate::reply_text::visible_text(&text);
        if v.trim().is_empty() { text.clone() } else { v }
    };
    let to = [Mailbox {
        name: None,
        email: reply_address,
    }];
    let message = store::messages::insert_inbound(
        db,
        &store::messages::NewInbound {
            side_conversation: Some(sc_id),
            kind: MessageKind::Reply,
            route: Route::Portal,
            inbound_id: None,
            raw: &composed.raw,
            sha256: &sha,
            message_id: Some(&composed.message_id),
            in_reply_to: composed.in_reply_to.as_deref(),
            references: &composed.references,
            from: Some(&author),
            reply_to: None,
            to: &to,
            cc: &[],
            date: Some(now),
            subject: &composed.subject,
            text: Some(&text),
            html: None,
            visible_reply: Some(&visible),
            flags: &[],
            auth: None,
            bounce: None,
            received_at: now,
        },
    )?;
    super::store_parts(db, message, &composed, &req.attachments)?;
    view::add_message(
        db,
        message,
        Placement::Thread {
            parent_id: sc.parent_id,
            external_id: &sc.parent,
            inbound: true,
        },
    )?;
    let facts = ReplyFacts {
        from: Some(author.clone()),
        to: Vec::new(),
        cc: Vec::new(),
        message_id: Some(composed.message_id.clone()),
        subject: composed.subject.clone(),
        visible_reply: Some(visible),
        received_at: now,
        // The portal author is the link's recipient (or, on an older shared
        // link, a participant chosen on the form).
        trust: Trust::Verified,
        flags: Vec::new(),
        auth: None,
    };
    apply_reply_effects(db, &config.domain, sc_id, &facts, message)?;

    // Everyone else on the thread gets the reply by email, from the side
    // conversation's sender in the vendor's name, so that their answers
    // come back here.
    let others: Vec<_> = people
        .iter()
        .filter(|p| !p.email.eq_ignore_ascii_case(&author.email))
        .collect();
    if !others.is_empty() {
        let to: Vec<String> = others
            .iter()
            .filter(|p| p.role != ParticipantRole::Cc)
            .map(|p| p.email.clone())
            .collect();
        let cc: Vec<String> = others
            .iter()
            .filter(|p| p.role == ParticipantRole::Cc)
            .map(|p| p.email.clone())
            .collect();
        write_message(
            db,
            config,
            Outgoing {
                sc: &sc,
                sender: &sender,
                actor: None,
                from_name: Some(author.name.clone().unwrap_or_else(|| author.email.clone())),
                route: Route::Portal,
                to: &to,
                cc: &cc,
                text: Some(&text).filter(|t| !t.is_empty()).map(String::as_str),
                html: None,
                context: None,
                portal: portal_of(&sc, &config.http.public_url),
                attachments: &req.attachments,
            },
        )?;
    }
    Ok(Sent {
        side_conversation: sc_id,
        message,
        token: sc.token.clone(),
    })
}

pub(super) fn revoke_in(
    db: &Db<'_>,
    actor: &Actor,
    sc_id: i64,
    email: Option<&str>,
) -> Result<(), ServiceError> {
    let sc = load_sc(db, sc_id)?;
    let now = now_ms();
    if let Some(email) = email.map(str::trim) {
        let known = store::portal::links(db, sc_id)?
            .iter()
            .any(|(e, _, _)| e.eq_ignore_ascii_case(email));
        if !known {
            return Err(ServiceError::NotFound("portal link"));
        }
        if store::portal::revoke_links(db, sc_id, Some(email), now)? == 0 {
            return Ok(());
        }
        return activity(
            db,
            sc.parent_id,
            sc_id,
            actor,
            format!("{} revoked the portal link of {email}", actor.name),
        );
    }
    let shared = sc.portal_token.is_some() && !sc.portal_revoked;
    let personal = store::portal::revoke_links(db, sc_id, None, now)?;
    if !shared && personal == 0 && !sc.portal_per_recipient {
        return Ok(());
    }
    store::side_conversations::revoke_portal(db, sc_id, now)?;
    activity(
        db,
        sc.parent_id,
        sc_id,
        actor,
        format!(
            "{} revoked the portal link of a side conversation",
            actor.name
        ),
    )
}
