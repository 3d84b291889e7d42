//! What a recipient's delivery outcome sets off (SPEC §5 "Events follow
//! delivery, not queueing"). Each runs inside the write that records the
//! outcome on the outbox row, so the row, the events, the activity entry and
//! the agent's notification commit together or not at all: a crash can
//! neither lose nor double them.
//!
//! - Delivered: `message.sent`, once per message, when its first recipient
//!   is delivered (`recipient` names that one, `delivery` lists every
//!   recipient's state at that moment). A later recipient's delivery adds
//!   no event; a repeated delivery after a restart neither.
//! - Failed for good (a permanent 5xx, or out of retries past `max_age`):
//!   `message.failed` with `reason` `delivery`, the activity entry
//!   `{recipient} could not be reached: {diagnostic}` on the parent, and an
//!   email to the agent (the parent's assignee, else who started the side
//!   conversation, unless they turned notifications off).
//! - Bounced (a permanent DSN for a delivery that was not given up yet,
//!   even one `sent` before): `message.bounced`, and the same as a failure
//!   with `reason` `bounce`: `message.failed`, the activity entry and the
//!   email. A bounce for a delivery already `failed` or `bounced` changes
//!   nothing and tells nobody again.
//!
//! Only side-conversation mail has these effects: a notification or
//! verification mail that fails tells nobody (no loop of notices).

use serde_json::{Value, json};

use crate::config::Config;
use crate::model::rfc3339;
use crate::outbound::worker::Outcomes;
use crate::store::outbox::{self, DeliveryState, Outcome};
use crate::store::{self, Db, Result, events};

use std::sync::Arc;

/// The outbox worker's hook: the rules below, with the gateway's config.
pub struct DeliveryOutcomes {
    config: Arc<Config>,
}

impl DeliveryOutcomes {
    pub fn new(config: Arc<Config>) -> DeliveryOutcomes {
        DeliveryOutcomes { config }
    }
}

impl Outcomes for DeliveryOutcomes {
    fn delivered(&self, db: &Db<'_>, outbox_id: i64, now: i64) -> Result<()> {
        delivered(db, outbox_id, now)
    }

    fn failed(&self, db: &Db<'_>, outbox_id: i64, diagnostic: &str, now: i64) -> Result<()> {
        failed(db, &self.config, outbox_id, diagnostic, now)
    }
}

fn delivery_json(list: &[DeliveryState]) -> Value {
    Value::Array(
        list.iter()
            .map(|d| {
                json!({
                    "recipient": d.recipient,
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "next_attempt_at": d.next_attempt_at.map(rfc3339),
                    "sent_at": d.sent_at.map(rfc3339),
                })
            })
            .collect(),
    )
}

fn message_json(o: &Outcome) -> Value {
    json!({
        "id": o.message,
        "message_id": o.message_id,
        "from": o.from,
        "to": o.to,
        "cc": o.cc,
        "subject": o.subject,
    })
}

/// Recipient row `outbox_id` was just marked `sent` (in this write):
/// `message.sent` when it is the message's first delivered recipient.
pub fn delivered(db: &Db<'_>, outbox_id: i64, now: i64) -> Result<()> {
    let Some(o) = outbox::outcome(db, outbox_id)? else {
        return Ok(());
    };
    if outbox::delivered_before(db, o.message, outbox_id)? {
        return Ok(());
    }
    let delivery = delivery_json(&outbox::for_message(db, o.message)?);
    events::enqueue_with(db, "message.sent", || {
        json!({
            "side_conversation_id": o.side_conversation,
            "parent": o.parent,
            "message": message_json(&o),
            "recipient": o.recipient,
            "sent_at": rfc3339(now),
            "delivery": delivery,
        })
    })?;
    Ok(())
}

/// Why a recipient was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// The gateway's own delivery failed for good.
    Delivery,
    /// A bounce came back.
    Bounce,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Delivery => "delivery",
            Reason::Bounce => "bounce",
        }
    }
}

/// Recipient row `outbox_id` was just marked `failed` (in this write).
pub fn failed(
    db: &Db<'_>,
    config: &Config,
    outbox_id: i64,
    diagnostic: &str,
    now: i64,
) -> Result<()> {
    let Some(o) = outbox::outcome(db, outbox_id)? else {
        return Ok(());
    };
    given_up(db, config, &o, Reason::Delivery, diagnostic, now)
}

/// A permanent bounce `bounce_message` reports on recipient row
/// `outbox_id`: marks it `bounced` unless it was given up already, and
/// then tells (see the module documentation). Returns whether the row
/// changed.
pub fn bounced(
    db: &Db<'_>,
    config: &Config,
    outbox_id: i64,
    diagnostic: &str,
    bounce_message: i64,
    now: i64,
) -> Result<bool> {
    if !outbox::mark_bounced(db, outbox_id, diagnostic)? {
        return Ok(false);
    }
    let Some(o) = outbox::outcome(db, outbox_id)? else {
        return Ok(true);
    };
    events::enqueue_with(db, "message.bounced", || {
        json!({
            "side_conversation_id": o.side_conversation,
            "parent": o.parent,
            "message": message_json(&o),
            "recipient": o.recipient,
            "bounce_message_id": bounce_message,
            "diagnostic": diagnostic,
            "at": rfc3339(now),
        })
    })?;
    given_up(db, config, &o, Reason::Bounce, diagnostic, now)?;
    Ok(true)
}

/// The activity entry `{recipient} could not be reached: {diagnostic}`.
pub fn activity_text(recipient: &str, diagnostic: &str) -> String {
    format!("{recipient} could not be reached: {diagnostic}")
}

/// `message.failed`, the activity entry and the agent's email.
fn given_up(
    db: &Db<'_>,
    config: &Config,
    o: &Outcome,
    reason: Reason,
    diagnostic: &str,
    now: i64,
) -> Result<()> {
    store::activity::add(
        db,
        o.parent_id,
        Some(o.side_conversation),
        None,
        &activity_text(&o.recipient, diagnostic),
        now,
    )?;
    let delivery = delivery_json(&outbox::for_message(db, o.message)?);
    events::enqueue_with(db, "message.failed", || {
        json!({
            "side_conversation_id": o.side_conversation,
            "parent": o.parent,
            "message": message_json(o),
            "recipient": o.recipient,
            "reason": reason.as_str(),
            "diagnostic": diagnostic,
            "attempts": o.attempts,
            "failed_at": rfc3339(now),
            "delivery": delivery,
        })
    })?;
    notify(db, config, o, reason, diagnostic, now)
}

/// Queues the email that tells the agent a recipient was not reached.
fn notify(
    db: &Db<'_>,
    config: &Config,
    o: &Outcome,
    reason: Reason,
    diagnostic: &str,
    now: i64,
) -> Result<()> {
    let Some(user) = store::notifications::recipient(db, o.side_conversation)? else {
        return Ok(());
    };
    let agent = store::users::by_id(db, user)?;
    let subject = format!(
        "[{}] Could not reach {}: {}",
        o.parent, o.recipient, o.side_conversation_subject
    );
    let how = match reason {
        Reason::Delivery => "Delivery was given up",
        Reason::Bounce => "Their mail system sent the message back",
    };
    let text = format!(
        "Hello {name},\n\n\
         {recipient} could not be reached in the side conversation \"{subject}\" on ticket {parent}.\n\
         {how}: {diagnostic}\n\n\
         Thread: {url}/app/side-conversations/{sc}\n\n\
         Reply to this email to write in the side conversation: your own new text (and \
         attachments) is sent to its other recipients from the side conversation's address, \
         never this notification or anything quoted from it.\n\n\
         You get this because you are the ticket's assignee or started the side conversation.\n\
         Turn it off in the console ({url}/app/me) or with PUT /api/me {{\"notifications\": \"off\"}}.\n",
        name = agent.name,
        recipient = o.recipient,
        subject = o.side_conversation_subject,
        parent = o.parent,
        url = config.http.public_url,
        sc = o.side_conversation,
    );
    // Answering the email answers in the side conversation (SPEC §12).
    let token = store::side_conversations::get(db, o.side_conversation)?.map(|t| t.token);
    let reply_to = super::agent_mail::agent_reply_address(db, config, user, token.as_deref())?;
    super::agent_notice::to_agent(
        db,
        config,
        &super::agent_notice::AgentEmail {
            user: &agent,
            reply_to: Some(&reply_to),
            subject: &subject,
            text: &text,
            listed_text: &text,
        },
        now,
    )?;
    Ok(())
}
