//! Mail to an agent-reply address (SPEC §12): an agent answering a
//! notification email from their own mailbox. Decided here, before the
//! auto-reply, bounce and notification-loop rules would take it (it answers
//! a notification, so the loop rule would file it as an auto-reply).
//!
//! - From that user's own address, authenticated for it (DMARC pass, or
//!   where the domain publishes no DMARC an aligned SPF/DKIM pass: the
//!   `Trust::Verified` of vendors; with `[ingest] authenticate = false`
//!   nobody is), the user active and not a viewer, the address naming one
//!   side conversation, and `conversations::agent_mail` taking it: a
//!   follow-up exactly as through the API. The inbound message is kept
//!   apart, kind `agent_reply`, off the thread and out of the agent view,
//!   with a note of the follow-up it became (`agent_replies`).
//! - Anything else: kept with the unrouted mail, kind
//!   `agent_reply_unverified`, with the reason, and the agent the address
//!   names (if active) gets an email saying why it was not sent. Never for
//!   an automatic reply (out of office, RFC 3834), nor in answer to such an
//!   email itself: at most one such email per message a person wrote, no
//!   loop.

use super::apply::{Applied, Prepared};
use super::classify::Kind;
use crate::config::Config;
use crate::conversations::agent_mail::{
    self, AgentMailError, AgentReplyTarget, Via, agent_mail_in, looks_like_agent_reply_address,
};
use crate::conversations::{Actor, agent_notice, replies};
use crate::model::{MessageKind, Route, now_ms};
use crate::store::agent_replies::{self, AgentReply};
use crate::store::users::User;
use crate::store::view::{self, Placement};
use crate::store::{self, Db, Result, StoreError};

/// The agent-reply address among the envelope recipients, if any: such a
/// message is handled here. A bounce is not (its own rules take it).
pub fn address<'p>(config: &Config, p: &'p Prepared) -> Option<&'p str> {
    if matches!(p.kind, Kind::Bounce(_)) {
        return None;
    }
    p.envelope
        .rcpts
        .iter()
        .find(|r| looks_like_agent_reply_address(config, r))
        .map(String::as_str)
}

/// Whether the envelope may hold an agent-reply address (cheap, on the
/// parser threads: only then is the agent's message parsed for
/// `agent_mail`).
pub fn may_be_for_agent(rcpts: &[String], domain: &str) -> bool {
    rcpts.iter().any(|r| {
        r.rsplit_once('@').is_some_and(|(local, d)| {
            d.eq_ignore_ascii_case(domain)
                && local.len() > 6
                && local.is_char_boundary(6)
                && local[..6].eq_ignore_ascii_case("agent+")
        })
    })
}

/// What became of the reply.
enum Outcome {
    Sent {
        side_conversation: i64,
        message: i64,
    },
    NotSent {
        reason: String,
        tell: bool,
    },
}

/// Applies a message to the agent-reply address `addr`. See the module
/// documentation.
pub fn apply(db: &Db<'_>, config: &Config, p: &Prepared, addr: &str) -> Result<Applied> {
    let now = now_ms();
    if let Some(copy) =
        store::messages::find_copy(db, p.parsed.message_id.as_deref(), &p.sha256, None)?
        && copy.sha256 == p.sha256
    {
        store::inbound::mark_done(db, p.inbound_id, copy.id, Some("duplicate delivery"), now)?;
        return Ok(Applied::Duplicate { of: copy.id });
    }
    let target = agent_mail::parse_agent_reply_address(db, config, addr)?;
    let user = match &target {
        Some(t) => match store::users::by_id(db, t.user) {
            Ok(u) => Some(u),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let sc = match target.as_ref().and_then(|t| t.token.as_ref()) {
        Some(token) => store::routing::side_conversation_of_token(db, token)?,
        None => None,
    };
    let outcome = decide(db, config, p, target.as_ref(), user.as_ref(), sc)?;

    let (kind, placement) = match outcome {
        Outcome::Sent { .. } => (MessageKind::AgentReply, Placement::Hidden),
        Outcome::NotSent { .. } => (MessageKind::AgentReplyUnverified, Placement::Unrouted),
    };
    let message = store_inbound(db, p, kind)?;
    view::add_message(db, message, placement)?;
    let mut record = AgentReply {
        message,
        user: user.as_ref().map(|u| u.id),
        side_conversation: sc,
        sent_message: None,
        reason: None,
        notice_message: None,
    };
    match outcome {
        Outcome::Sent {
            side_conversation,
            message: sent,
        } => {
            record.side_conversation = Some(side_conversation);
            record.sent_message = Some(sent);
        }
        Outcome::NotSent { reason, tell } => {
            if tell && let Some(u) = user.as_ref().filter(|u| u.active) {
                record.notice_message = Some(agent_notice::not_sent(
                    db,
                    config,
                    &agent_notice::NotSent {
                        address: addr,
                        user: u,
                        side_conversation: sc,
                        subject: &p.parsed.subject,
                        received_at: p.envelope.received_at,
                        reason: &reason,
                    },
                    now,
                )?);
            }
            record.reason = Some(reason);
        }
    }
    agent_replies::record(db, &record)?;
    store::inbound::mark_done(db, p.inbound_id, message, None, now)?;
    Ok(Applied::Stored {
        message,
        rule: "agent_reply",
    })
}

/// Sends the reply as a follow-up if every rule allows it, else says why
/// not (and whether to tell the agent).
fn decide(
    db: &Db<'_>,
    config: &Config,
    p: &Prepared,
    target: Option<&AgentReplyTarget>,
    user: Option<&User>,
    sc: Option<i64>,
) -> Result<Outcome> {
    // Automatic mail (an out-of-office answer, a copy of our own
    // notification coming back) is kept and tells nobody: it was not
    // written by the agent, and telling them could start a loop.
    if matches!(p.kind, Kind::AutoReply(_)) || p.parsed.notification_marker {
        return Ok(Outcome::NotSent {
            reason: "it is an automatic reply (an out-of-office answer or similar), \
                     not a message you wrote"
                .into(),
            tell: false,
        });
    }
    // An answer to one of the emails below: kept, nobody told again.
    let answers_notice = {
        let mut found = false;
        for id in p
            .parsed
            .in_reply_to
            .iter()
            .chain(p.parsed.references.iter())
        {
            if agent_replies::is_notice(db, id)? {
                found = true;
                break;
            }
        }
        found
    };
    let not_sent = |reason: String| Outcome::NotSent {
        reason,
        tell: !answers_notice,
    };
    let (Some(target), Some(user)) = (target, user) else {
        return Ok(not_sent(
            "the address it was sent to is not a valid agent-reply address".into(),
        ));
    };
    if !user.active {
        return Ok(not_sent(format!(
            "the user <{}> is deactivated",
            user.email
        )));
    }
    if !user.role.can_write() {
        return Ok(not_sent(format!(
            "<{}> is a viewer, and viewers do not write in side conversations",
            user.email
        )));
    }
    let from = p.parsed.from.as_ref().map(|f| f.email.as_str());
    if p.parsed.from_authors > 1 {
        return Ok(not_sent("it names more than one author in From".into()));
    }
    match from {
        None => return Ok(not_sent("it has no From address".into())),
        Some(f) if !f.trim().eq_ignore_ascii_case(&user.email) => {
            return Ok(not_sent(format!(
                "it came from <{f}>, not from your address <{}>",
                user.email
            )));
        }
        Some(_) => {}
    }
    if !replies::sender_verified(p.auth.as_ref(), &user.email) {
        let why = match &p.auth {
            None => format!(
                "the gateway does not check sender authentication, so mail from <{}> \
                 cannot be verified",
                user.email
            ),
            Some(a) => format!(
                "DMARC failed for <{}> (dmarc={}, spf={}, dkim={}): the message may not \
                 be from you",
                user.email, a.dmarc, a.spf, a.dkim
            ),
        };
        return Ok(not_sent(why));
    }
    if target.token.is_none() {
        return Ok(not_sent(
            "the notification it answers covered several side conversations, so it does \
             not say which one you meant: write to the \"Reply to this conversation\" \
             address given under the reply you want to answer"
                .into(),
        ));
    }
    let Some(side_conversation) = sc else {
        return Ok(not_sent(
            "the side conversation it answers no longer exists".into(),
        ));
    };
    let m = match &p.agent {
        Some(m) => m.as_ref().clone(),
        None => agent_mail::parse(&p.raw),
    };
    let actor = Actor {
        user_id: user.id,
        name: user.name.clone(),
        email: user.email.clone(),
    };
    // A refusal leaves nothing behind: its own savepoint is rolled back.
    let mut refusal = None;
    let sent = db.savepoint(|db| {
        match agent_mail_in(
            db,
            config,
            &actor,
            &m,
            &[],
            Via::NotificationReply { side_conversation },
        ) {
            Ok(s) => Ok(s),
            Err(AgentMailError::Refused(reason)) => {
                refusal = Some(reason);
                Err(StoreError::Database("refused".into()))
            }
            Err(AgentMailError::Store(e)) => Err(StoreError::Database(e)),
        }
    });
    match (sent, refusal) {
        (_, Some(reason)) => Ok(not_sent(reason)),
        (Ok(s), None) => Ok(Outcome::Sent {
            side_conversation: s.side_conversation,
            message: s.message,
        }),
        (Err(e), None) => Err(e),
    }
}

/// Stores the agent's message whole (raw bytes, headers, text,
/// attachments, authentication results), off any thread.
fn store_inbound(db: &Db<'_>, p: &Prepared, kind: MessageKind) -> Result<i64> {
    super::apply::store_prepared(db, p, None, kind, Route::Unrouted, &[], None)
}
