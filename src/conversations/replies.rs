//! The effects of an accepted vendor reply (SPEC §4) and the trust
//! boundary of a thread (SPEC §10): who a reply may bring in, the thread
//! reopened, the parent woken, the activity entry, the notification, the
//! webhook event. Email replies (ingest), portal replies and unrouted mail
//! an agent assigns all come through here.

use serde_json::json;

use super::{MAX_NEW_PARTICIPANTS, MAX_PARTICIPANTS};
use crate::model::AuthResults;
use crate::model::{
    MailAddr, Mailbox, MessageKind, ParentStatus, ParticipantRole, ScStatus, SideConversation,
    aligned, is_author_address, now_ms,
};
use crate::store::view::{self, Placement};
use crate::store::{self, Db, StoreError, events};

/// What the effects of a reply need to know about it.
pub struct ReplyFacts {
    pub from: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub message_id: Option<String>,
    pub subject: String,
    pub visible_reply: Option<String>,
    pub received_at: i64,
    /// How far the sender is trusted: who the reply may bring in.
    pub trust: Trust,
    /// The message's flags (`unverified_sender` …), shown with its events.
    pub flags: Vec<String>,
    /// Its authentication results (webhook payloads carry them).
    pub auth: Option<AuthResults>,
}

impl ReplyFacts {
    fn unverified(&self) -> bool {
        self.flags.iter().any(|f| f == "unverified_sender")
    }
}

/// Who a reply may add to the side conversation (SPEC §10: only a verified
/// sender joins; unverified mail is stored, flagged and shown, and its
/// sender joins only when an agent admits them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// An authenticated participant: the people they copy in join too.
    Verified,
    /// Authenticated, not a participant yet: joins alone, when of the same
    /// organisation as a participant (a colleague the thread was forwarded
    /// to); otherwise an agent admits them.
    Newcomer,
    /// Not authenticated (DMARC fail, no aligned pass, a DNS error, several
    /// or malformed From authors): nobody is added, not even as a contact.
    Unverified,
}

impl Trust {
    pub fn of(authenticated: bool, participant: bool) -> Trust {
        match (authenticated, participant) {
            (true, true) => Trust::Verified,
            (true, false) => Trust::Newcomer,
            (false, _) => Trust::Unverified,
        }
    }
}

/// Whether the author `email` is authenticated by `auth` (SPEC §10): an
/// aligned pass for a well-formed single author whose domain is the one
/// the checks were about.
pub fn sender_verified(auth: Option<&AuthResults>, email: &str) -> bool {
    let Some(auth) = auth else {
        return false;
    };
    let Some(addr) = MailAddr::parse(email) else {
        return false;
    };
    auth.verified()
        && is_author_address(email)
        && auth
            .from_domain
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case(&addr.domain))
}

/// Whether `email` is a participant of side conversation `sc`.
pub fn is_participant(db: &Db<'_>, sc: i64, email: &str) -> Result<bool, StoreError> {
    store::participants::is_participant(db, sc, email)
}

/// Addresses that are the gateway's own or its users' never become
/// participants or contacts.
fn is_internal(
    db: &Db<'_>,
    domain: &str,
    email: &str,
    sc_sender: &str,
) -> Result<bool, StoreError> {
    let Some(addr) = MailAddr::parse(email) else {
        return Ok(true);
    };
    if addr.domain.eq_ignore_ascii_case(domain) || email.eq_ignore_ascii_case(sc_sender) {
        return Ok(true);
    }
    if addr.token().is_some() {
        let base = addr.plus_parts().map(|(b, _)| b).unwrap_or("");
        if store::senders::exists(db, &format!("{base}@{}", addr.domain))? {
            return Ok(true);
        }
    }
    Ok(store::users::exists(db, email)? || store::senders::exists(db, email)?)
}

/// Whether `email` shares its organisational domain with a participant of
/// the side conversation.
fn colleague_of_participant(db: &Db<'_>, sc: i64, email: &str) -> Result<bool, StoreError> {
    let Some(addr) = MailAddr::parse(email) else {
        return Ok(false);
    };
    Ok(store::participants::list(db, sc)?
        .iter()
        .any(|p| MailAddr::parse(&p.email).is_some_and(|p| aligned(&p.domain, &addr.domain))))
}

/// The effects of an accepted reply that is already stored as `message`
/// on side conversation `sc`, in the caller's transaction.
pub fn apply_reply_effects(
    db: &Db<'_>,
    domain: &str,
    sc: i64,
    f: &ReplyFacts,
    message: i64,
) -> Result<(), StoreError> {
    let t = store::side_conversations::get(db, sc)?.ok_or(StoreError::NotFound)?;
    reply_effects(db, domain, &t, f, message, now_ms())
}

fn reply_effects(
    db: &Db<'_>,
    domain: &str,
    t: &SideConversation,
    f: &ReplyFacts,
    message: i64,
    now: i64,
) -> Result<(), StoreError> {
    let sc = t.id;
    let from = f.from.as_ref();
    // New people: an authenticated participant's copies; an authenticated
    // colleague of a participant, alone; never anyone through unverified
    // mail; never more than the caps, so a reply cannot fan the thread out.
    let candidates: Vec<&Mailbox> = match f.trust {
        Trust::Verified => from
            .into_iter()
            .chain(f.cc.iter())
            .chain(f.to.iter())
            .collect(),
        Trust::Newcomer => match from {
            Some(m) if colleague_of_participant(db, sc, &m.email)? => vec![m],
            _ => Vec::new(),
        },
        Trust::Unverified => Vec::new(),
    };
    // An authenticated sender becomes a contact (a lead).
    if let Some(m) = from
        && f.trust != Trust::Unverified
        && !is_internal(db, domain, &m.email, &t.sender_email)?
    {
        store::contacts::add(db, &m.email, m.name.as_deref(), Some(message), now)?;
    }
    let mut added = 0;
    for m in candidates {
        if added >= MAX_NEW_PARTICIPANTS
            || !is_author_address(&m.email)
            || is_internal(db, domain, &m.email, &t.sender_email)?
        {
            continue;
        }
        if store::participants::is_participant(db, sc, &m.email)? {
            continue;
        }
        if store::participants::count(db, sc)? >= MAX_PARTICIPANTS {
            break;
        }
        store::participants::add(
            db,
            sc,
            &m.email,
            m.name.as_deref(),
            ParticipantRole::Joined,
            now,
        )?;
        store::contacts::add(db, &m.email, m.name.as_deref(), Some(message), now)?;
        added += 1;
    }
    if t.status == ScStatus::Closed {
        store::side_conversations::set_status(db, sc, ScStatus::Open, now)?;
        events::enqueue(
            db,
            "side_conversation.reopened",
            json!({"side_conversation_id": sc, "parent": t.parent, "by": "reply",
                   "tags": store::waiting::tags(db, sc)?}),
        )?;
    } else {
        store::side_conversations::touch(db, sc, now)?;
    }
    if t.parent_status != ParentStatus::Open {
        store::parents::wake(db, t.parent_id, now)?;
        events::enqueue(
            db,
            "parent.woken",
            json!({"parent": t.parent, "previous_status": t.parent_status.as_str(), "side_conversation_id": sc, "message_id": message}),
        )?;
    }
    store::notifications::enqueue(db, sc, message, now)?;
    let who = from
        .map(|m| {
            m.name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| m.email.clone())
        })
        .unwrap_or_else(|| "Someone".to_string());
    let unverified = if f.unverified() {
        " (unverified sender)"
    } else {
        ""
    };
    store::activity::add(
        db,
        t.parent_id,
        Some(sc),
        None,
        &format!("{who} replied in a side conversation{unverified}"),
        now,
    )?;
    let auth = f.auth.as_ref().map(|a| {
        json!({
            "spf": a.spf, "dkim": a.dkim, "dmarc": a.dmarc, "arc": a.arc,
        })
    });
    let tags = store::waiting::tags(db, sc)?;
    events::enqueue_with(db, "message.received", || {
        json!({
            "side_conversation_id": sc,
            "parent": t.parent,
            "tags": tags,
            "message": {
                "id": message,
                "message_id": f.message_id,
                "from": from,
                "subject": f.subject,
                "visible_reply": f.visible_reply,
                "received_at": crate::model::rfc3339(f.received_at),
                "flags": f.flags,
                "auth": auth,
            },
            "flags": f.flags,
            "auth": auth,
        })
    })?;
    Ok(())
}

/// Why an unrouted message could not be assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignError {
    MessageNotFound,
    SideConversationNotFound,
    /// It is not unrouted (already on a thread, or not inbound).
    NotUnrouted,
    Store(StoreError),
}

impl From<StoreError> for AssignError {
    fn from(e: StoreError) -> Self {
        AssignError::Store(e)
    }
}

/// Moves an unrouted message onto a side conversation (triage) and applies
/// what its arrival would have: a reply's effects (its sender judged as on
/// the thread: flagged unless an authenticated participant); a bounce's
/// outbox update is not repeated (an unmatched bounce matched nothing).
pub fn assign_unrouted(
    db: &Db<'_>,
    domain: &str,
    message: i64,
    sc: i64,
) -> Result<(), AssignError> {
    let Some(m) = store::messages::unrouted_candidate(db, message)? else {
        return Err(AssignError::MessageNotFound);
    };
    if m.side_conversation.is_some()
        || m.direction != crate::model::Direction::In
        || !matches!(
            m.kind,
            MessageKind::Reply | MessageKind::AutoReply | MessageKind::Bounce
        )
    {
        return Err(AssignError::NotUnrouted);
    }
    let Some(t) = store::side_conversations::get(db, sc)? else {
        return Err(AssignError::SideConversationNotFound);
    };
    let now = now_ms();
    store::messages::set_side_conversation(db, message, sc)?;
    // Out of the Unrouted mailbox, into the thread's.
    view::remove_message(db, view::UNROUTED, message)?;
    view::add_message(
        db,
        message,
        Placement::Thread {
            parent_id: t.parent_id,
            external_id: &t.parent,
            inbound: true,
        },
    )?;
    if m.kind == MessageKind::Reply {
        let auth = store::messages::auth(db, message)?
            .and_then(|a| serde_json::from_str::<AuthResults>(&a).ok());
        let authenticated = m
            .from
            .as_ref()
            .is_some_and(|f| sender_verified(auth.as_ref(), &f.email));
        let participant = match &m.from {
            Some(f) => store::participants::is_participant(db, sc, &f.email)?,
            None => false,
        };
        let mut flags = store::messages::flags(db, message)?;
        // Flagged as any such reply arriving on the thread would be.
        let trusted = authenticated && participant;
        if !trusted && !flags.iter().any(|x| x == "unverified_sender") {
            flags.push("unverified_sender".into());
            store::messages::set_flags(db, message, &flags)?;
            store::messages::mark_unverified(db, message)?;
        }
        let facts = ReplyFacts {
            from: m.from,
            to: m.to,
            cc: m.cc,
            message_id: m.message_id,
            subject: m.subject,
            visible_reply: m.visible_reply,
            received_at: m.received_at,
            trust: Trust::of(authenticated, participant),
            flags,
            auth,
        };
        reply_effects(db, domain, &t, &facts, message, now)?;
    }
    Ok(())
}
