//! The email that tells an agent their reply to a notification was not
//! sent to the vendor, and why (SPEC §12). From the gateway, `Auto-Submitted:
//! auto-generated`; its Reply-To is the same agent-reply address, so the
//! agent can answer again once the cause is gone.

use crate::config::Config;
use crate::model::{ScStatus, rfc3339};
use crate::outbound::compose::{self, NotificationDraft};
use crate::store::users::User;
use crate::store::{self, Db, Result, StoreError};

/// A reply that was not sent.
pub struct NotSent<'a> {
    /// The agent-reply address it was sent to.
    pub address: &'a str,
    /// The agent that address names.
    pub user: &'a User,
    pub side_conversation: Option<i64>,
    /// The reply's subject.
    pub subject: &'a str,
    /// When it arrived (ms since the epoch).
    pub received_at: i64,
    /// Why it was not sent (a sentence completing "… because ").
    pub reason: &'a str,
}

/// Queues the email; returns its message id.
pub fn not_sent(db: &Db<'_>, config: &Config, n: &NotSent<'_>, now: i64) -> Result<i64> {
    let user = n.user;
    let thread = match n.side_conversation {
        Some(id) => store::side_conversations::get(db, id)?,
        None => None,
    };
    let what = match &thread {
        Some(t) => format!(
            "the side conversation \"{}\" on ticket {}",
            t.subject, t.parent
        ),
        None => "a notification".to_string(),
    };
    let subject = format!(
        "Not sent: {}",
        if n.subject.is_empty() {
            "your reply"
        } else {
            n.subject
        }
    );
    let next = match &thread {
        Some(t) if t.status == ScStatus::Closed => format!(
            "The side conversation is closed: reopen it and reply again, or answer in the \
             console ({}/app/side-conversations/{}) or through the API.",
            config.http.public_url, t.id
        ),
        Some(t) => format!(
            "Reply again from your own address once the cause is fixed, or answer in the \
             console ({}/app/side-conversations/{}) or through the API.",
            config.http.public_url, t.id
        ),
        None => "Answer in the console or through the API instead.".to_string(),
    };
    let text = format!(
        "Hello {name},\n\n\
         Your reply to {what} (\"{subj}\", received {at}) was not sent to the vendor because \
         {reason}.\n\n\
         Nothing was sent. The message is kept with the unrouted mail for the admins to \
         see.\n\n{next}\n",
        name = user.name,
        subj = n.subject,
        at = rfc3339(n.received_at),
        reason = n.reason,
    );
    to_agent(
        db,
        config,
        &AgentEmail {
            user,
            reply_to: Some(n.address),
            subject: &subject,
            text: &text,
            listed_text: &text,
        },
        now,
    )
}

/// An email from the gateway to one of its users.
pub(crate) struct AgentEmail<'a> {
    pub user: &'a User,
    /// Where answering it goes (an agent-reply address), if anywhere.
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub text: &'a str,
    /// The text lists and searches show (the email's own text unless it
    /// carries something that must not be shown again, as a sign-in link).
    pub listed_text: &'a str,
}

/// Composes an email to a user (a notification: `Auto-Submitted`, never
/// threaded if it comes back), stores it and queues it; returns its
/// message id.
pub(crate) fn to_agent(db: &Db<'_>, config: &Config, e: &AgentEmail<'_>, now: i64) -> Result<i64> {
    let mail = compose::notification(&NotificationDraft {
        gateway_domain: &config.domain,
        to: &e.user.email,
        reply_to: e.reply_to,
        subject: e.subject,
        text: e.text,
        date: now,
    })
    .map_err(|err| StoreError::Database(err.to_string()))?;
    let message = store::messages::insert_system_mail(
        db,
        &store::messages::SystemMail {
            kind: "notification",
            raw: &mail.raw,
            message_id: &mail.message_id,
            from_email: &mail.from,
            to: (Some(&e.user.name), &e.user.email),
            subject: e.subject,
            text: e.listed_text,
            at: now,
        },
    )?;
    store::outbox::enqueue(db, message, &e.user.email, now)?;
    Ok(message)
}
