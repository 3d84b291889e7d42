//! Applying one prepared inbound message to the store, inside the writer's
//! transaction: routing (the pure rules of `route` over what the store
//! knows), the duplicate check, the message row with its attachments, the
//! agent-view placement, and the effects (SPEC §4: the reply's through
//! `conversations::replies`, a bounce's, a verification's) — all or
//! nothing, together with marking the queue row done. Running it twice for
//! the same queue row is a no-op, which makes the worker idempotent.

use std::cell::RefCell;

use serde_json::json;

use super::classify::Kind;
use super::forwarding::{self, Detected};
use super::parse::ParsedMail;
use super::route::{self, Class, Decision, Forwarding, Known, RouteInput, Source};
use crate::config::Config;
use crate::conversations::delivery;
use crate::conversations::replies::{self, ReplyFacts, Trust};
use crate::model::{
    AuthResults, ForwardingCandidate, MailAddr, MessageKind, Route, Token, is_author_address,
    now_ms,
};
use crate::store::inbound::Envelope;
use crate::store::outbox::BounceTarget;
use crate::store::view::{self, Placement};
use crate::store::{self, Db, Result, StoreError, events};

/// Everything computed outside the transaction (parsing, classification,
/// visible reply, authentication).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub inbound_id: i64,
    pub envelope: Envelope,
    pub raw: Vec<u8>,
    pub sha256: Vec<u8>,
    pub parsed: ParsedMail,
    pub kind: Kind,
    pub visible_reply: Option<String>,
    /// `visible_reply` is exactly `messages::plain_visible` of the text
    /// body (computed while parsing, off the writer): stored as NULL.
    pub visible_is_plain: bool,
    pub auth: Option<AuthResults>,
    /// The message as agent mail, parsed when it is addressed to an
    /// agent-reply address (see `agent_reply`).
    pub agent: Option<Box<crate::conversations::agent_mail::AgentMessage>>,
}

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Stored as this message row.
    Stored { message: i64, rule: &'static str },
    /// The same message was already stored (this delivery is a duplicate).
    Duplicate { of: i64 },
    /// The queue row had already been processed.
    AlreadyDone,
}

/// What the store knows, for the routing rules; the first store error is
/// kept and reported after routing (routing itself cannot fail).
struct StoreKnown<'d, 'c> {
    db: &'d Db<'c>,
    error: RefCell<Option<StoreError>>,
}

impl StoreKnown<'_, '_> {
    fn note<T: Default>(&self, r: Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                T::default()
            }
        }
    }
}

impl Known for StoreKnown<'_, '_> {
    fn token(&self, token: &Token) -> Option<i64> {
        self.note(store::routing::side_conversation_of_token(self.db, token))
    }

    fn message_id(&self, id: &str) -> Vec<i64> {
        self.note(store::routing::side_conversations_of_message_id(
            self.db, id,
        ))
    }

    fn cited_by(&self, id: &str) -> Vec<i64> {
        self.note(store::routing::side_conversations_citing(self.db, id))
    }

    fn is_sender(&self, email: &str) -> bool {
        self.note(store::senders::exists(self.db, email))
    }
}

fn addresses(p: &Prepared) -> Vec<(Source, String)> {
    let mut out = Vec::new();
    out.extend(
        p.envelope
            .rcpts
            .iter()
            .map(|a| (Source::Envelope, a.clone())),
    );
    out.extend(
        p.parsed
            .delivered_to
            .iter()
            .map(|a| (Source::DeliveredTo, a.clone())),
    );
    out.extend(
        p.parsed
            .original_to
            .iter()
            .map(|a| (Source::OriginalTo, a.clone())),
    );
    out.extend(
        p.parsed
            .forwarded_to
            .iter()
            .map(|a| (Source::ForwardedTo, a.clone())),
    );
    out.extend(p.parsed.to.iter().map(|m| (Source::To, m.email.clone())));
    out.extend(p.parsed.cc.iter().map(|m| (Source::Cc, m.email.clone())));
    out
}

/// The senders a verification or forwarding-confirmation mail could be
/// about: those whose forwarding address it was sent to, else every one
/// with a verification mail in flight (it may come back on any address).
fn candidate_senders(
    db: &Db<'_>,
    domain: &str,
    addrs: &[String],
) -> Result<Vec<ForwardingCandidate>> {
    let mut out: Vec<ForwardingCandidate> = Vec::new();
    for a in addrs {
        let Some(m) = MailAddr::parse(a) else {
            continue;
        };
        if !m.domain.eq_ignore_ascii_case(domain) {
            continue;
        }
        for s in store::senders::forwarding_candidates(db, &m.local.to_ascii_lowercase())? {
            if !out.iter().any(|o| o.id == s.id) {
                out.push(s);
            }
        }
    }
    if out.is_empty() {
        out = store::senders::forwarding_candidates(db, "")?;
    }
    Ok(out)
}

fn bounce_json(kind: &Kind) -> Option<serde_json::Value> {
    let Kind::Bounce(b) = kind else { return None };
    let first = b.recipients.first();
    Some(json!({
        "recipient": first.map(|r| r.recipient.clone()),
        "status": first.map(|r| r.status.clone()),
        "diagnostic": first.map(|r| r.diagnostic.clone()),
        "permanent": b.permanent,
    }))
}

/// Applies a prepared message. See the module documentation.
pub fn apply(db: &Db<'_>, config: &Config, p: &Prepared) -> Result<Applied> {
    let domain = config.domain.as_str();
    if store::inbound::take(db, p.inbound_id)? != "queued" {
        return Ok(Applied::AlreadyDone);
    }
    // An agent answering a notification: decided before the auto-reply,
    // bounce and notification-loop rules below would take it.
    if let Some(addr) = super::agent_reply::address(config, p) {
        return super::agent_reply::apply(db, config, p, addr);
    }
    let now = now_ms();
    let addrs = addresses(p);

    // Rule 3 needs the senders that could be concerned.
    let plain: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let senders = candidate_senders(db, domain, &plain)?;
    let detected = forwarding::detect(
        &forwarding::Input {
            gateway_domain: domain,
            addresses: &plain,
            message_id: p.parsed.message_id.as_deref(),
            from: p.parsed.from.as_ref().map(|m| m.email.as_str()),
            subject: &p.parsed.subject,
            text: p.parsed.text.as_deref().unwrap_or(""),
        },
        &senders,
    );
    let class = match &p.kind {
        Kind::Reply => Class::Reply,
        Kind::AutoReply(_) => Class::AutoReply,
        Kind::Bounce(b) => Class::Bounce {
            verp_key: b.verp_key.clone(),
            original_message_id: b.original_message_id.clone(),
        },
    };
    let known = StoreKnown {
        db,
        error: RefCell::new(None),
    };
    let decision = route::route(
        &RouteInput {
            gateway_domain: domain,
            addresses: addrs,
            message_id: p.parsed.message_id.as_deref(),
            in_reply_to: p.parsed.in_reply_to.as_deref(),
            references: &p.parsed.references,
            class,
            forwarding: detected.as_ref().map(|d| match d {
                Detected::Verification { sender_id } => Forwarding::Verification {
                    sender_id: *sender_id,
                },
                Detected::ProviderConfirmation { sender_id, .. } => {
                    Forwarding::ProviderConfirmation {
                        sender_id: *sender_id,
                    }
                }
            }),
        },
        &known,
    );
    if let Some(e) = known.error.into_inner() {
        return Err(e);
    }
    // A bounce changes a delivery only through its VERP key or by naming
    // that exact recipient of that exact message (SPEC §10); it is filed on
    // the thread of the message it reports on, else with the unrouted mail.
    let bounce_rows = match &decision {
        Decision::Bounce {
            verp_key,
            original_message_id,
            ..
        } => bounce_targets(db, p, verp_key.as_deref(), original_message_id.as_deref())?,
        _ => Vec::new(),
    };
    let reply_kind = if matches!(p.kind, Kind::AutoReply(_)) {
        MessageKind::AutoReply
    } else {
        MessageKind::Reply
    };
    let (sc, kind, rule): (Option<i64>, MessageKind, Route) = match &decision {
        Decision::Thread {
            side_conversation,
            rule,
        } => (Some(*side_conversation), reply_kind, rule.route()),
        Decision::Bounce { .. } => (
            bounce_rows.first().and_then(|r| r.side_conversation),
            MessageKind::Bounce,
            Route::Bounce,
        ),
        Decision::Forwarding(Forwarding::Verification { .. }) => {
            (None, MessageKind::Verification, Route::Forwarding)
        }
        Decision::Forwarding(Forwarding::ProviderConfirmation { .. }) => {
            (None, MessageKind::ForwardingConfirmation, Route::Forwarding)
        }
        Decision::Unrouted { .. } => (None, reply_kind, Route::Unrouted),
    };

    // One of our own notifications coming back (an agent's auto-reply, a
    // forward): never threaded, never a reply. Its bounces are bounces.
    let looped = !matches!(p.kind, Kind::Bounce(_))
        && (p.parsed.notification_marker
            || p.parsed
                .message_id
                .iter()
                .chain(p.parsed.in_reply_to.iter())
                .chain(p.parsed.references.iter())
                .any(|id| crate::notifications::is_notification_id(id, domain)));
    let (sc, kind, rule, decision) = if looped {
        (
            None,
            MessageKind::AutoReply,
            Route::Unrouted,
            Decision::Unrouted { ambiguous: false },
        )
    } else {
        (sc, kind, rule, decision)
    };

    let mut flags: Vec<String> = Vec::new();
    let mut is_duplicate_variant = false;
    if let Some(copy) =
        store::messages::find_copy(db, p.parsed.message_id.as_deref(), &p.sha256, sc)?
    {
        // The same message delivered twice (often with different trace
        // headers) has the same content; a different message reusing a
        // Message-ID does not.
        let same =
            copy.sha256 == p.sha256 || (copy.text == p.parsed.text && copy.html == p.parsed.html);
        if same {
            store::inbound::mark_done(db, p.inbound_id, copy.id, Some("duplicate delivery"), now)?;
            return Ok(Applied::Duplicate { of: copy.id });
        }
        flags.push(format!("duplicate_of:{}", copy.id));
        is_duplicate_variant = true;
    }

    let thread = sc
        .map(|id| store::side_conversations::get(db, id)?.ok_or(StoreError::NotFound))
        .transpose()?;
    let from = p.parsed.from.clone();
    if p.parsed.from_authors > 1 {
        flags.push("multiple_from".into());
    } else if from.as_ref().is_some_and(|f| !is_author_address(&f.email)) {
        flags.push("malformed_from".into());
    }
    let authenticated = from
        .as_ref()
        .is_some_and(|f| replies::sender_verified(p.auth.as_ref(), &f.email));
    let participant = match (sc, &from) {
        (Some(sc_id), Some(f)) => replies::is_participant(db, sc_id, &f.email)?,
        _ => false,
    };
    if sc.is_some()
        && matches!(kind, MessageKind::Reply | MessageKind::AutoReply)
        && !(authenticated && participant)
    {
        flags.push("unverified_sender".into());
    }

    let bounce = bounce_json(&p.kind).map(|b| b.to_string());
    let message = store_prepared(db, p, sc, kind, rule, &flags, bounce.as_deref())?;
    if flags.iter().any(|f| f == "unverified_sender") {
        store::messages::mark_unverified(db, message)?;
    }
    if let Some(sc_id) = sc {
        // What the thread has received, for its quota (`[ingest]
        // max_thread_messages` / `max_thread_bytes`, checked at RCPT).
        store::side_conversations::count_intake(db, sc_id, p.raw.len())?;
    }
    let placement = match (&thread, kind) {
        (Some(t), _) => Placement::Thread {
            parent_id: t.parent_id,
            external_id: &t.parent,
            inbound: true,
        },
        (None, MessageKind::Verification | MessageKind::ForwardingConfirmation) => {
            Placement::Hidden
        }
        (None, _) => Placement::Unrouted,
    };
    view::add_message(db, message, placement)?;

    match (&decision, &thread) {
        (
            Decision::Thread {
                side_conversation, ..
            },
            Some(_),
        ) if kind == MessageKind::Reply && !is_duplicate_variant => {
            let facts = ReplyFacts {
                from: p.parsed.from.clone(),
                to: p.parsed.to.clone(),
                cc: p.parsed.cc.clone(),
                message_id: p.parsed.message_id.clone(),
                subject: p.parsed.subject.clone(),
                visible_reply: p.visible_reply.clone(),
                received_at: p.envelope.received_at,
                trust: Trust::of(authenticated, participant),
                flags: flags.clone(),
                auth: p.auth.clone(),
            };
            replies::apply_reply_effects(db, domain, *side_conversation, &facts, message)?;
        }
        (Decision::Bounce { .. }, _) => {
            bounce_effects(db, config, p, message, &bounce_rows, now)?;
        }
        (Decision::Forwarding(_), _) => {
            if let Some(d) = &detected {
                forwarding_effects(db, d, now)?;
            }
        }
        _ => {}
    }
    store::inbound::mark_done(db, p.inbound_id, message, None, now)?;
    Ok(Applied::Stored {
        message,
        rule: rule.as_str(),
    })
}

/// Stores a prepared message whole — raw bytes, headers, bodies, the ids it
/// cites, attachments, authentication results — with what the caller
/// decided about it (thread, kind, route, flags, bounce report).
pub(super) fn store_prepared(
    db: &Db<'_>,
    p: &Prepared,
    side_conversation: Option<i64>,
    kind: MessageKind,
    route: Route,
    flags: &[String],
    bounce: Option<&str>,
) -> Result<i64> {
    let auth = p.auth.as_ref().map(serde_json::to_string).transpose()?;
    let message = store::messages::insert_inbound(
        db,
        &store::messages::NewInbound {
            side_conversation,
            kind,
            route,
            inbound_id: Some(p.inbound_id),
            raw: &p.raw,
            sha256: &p.sha256,
            message_id: p.parsed.message_id.as_deref(),
            in_reply_to: p.parsed.in_reply_to.as_deref(),
            references: &p.parsed.references,
            from: p.parsed.from.as_ref(),
            reply_to: p.parsed.reply_to.as_deref(),
            to: &p.parsed.to,
            cc: &p.parsed.cc,
            date: p.parsed.date,
            subject: &p.parsed.subject,
            text: p.parsed.text.as_deref(),
            html: p.parsed.html.as_deref(),
            // Most replies quote nothing: their visible reply is the text
            // body trimmed, and storing it again doubled the text written
            // per message. NULL here means exactly that.
            visible_reply: p.visible_reply.as_deref().filter(|_| !p.visible_is_plain),
            flags,
            auth: auth.as_deref(),
            bounce,
            received_at: p.envelope.received_at,
        },
    )?;
    store::messages::insert_refs(
        db,
        message,
        p.parsed.in_reply_to.as_deref(),
        &p.parsed.references,
    )?;
    store::messages::insert_attachments(
        db,
        message,
        p.parsed
            .attachments
            .iter()
            .map(|a| store::messages::NewAttachment {
                filename: a.filename.as_deref(),
                content_type: &a.content_type,
                content_id: a.content_id.as_deref(),
                data: &a.data,
            }),
    )?;
    Ok(message)
}

/// The deliveries a bounce may change: the one its VERP key names (the key
/// is random and only the receiving system saw it); else, of the outbound
/// message its report cites, only the recipients it names exactly. A report
/// citing a public Message-ID with some other recipient changes nothing.
fn bounce_targets(
    db: &Db<'_>,
    p: &Prepared,
    verp_key: Option<&str>,
    original_message_id: Option<&str>,
) -> Result<Vec<BounceTarget>> {
    let Kind::Bounce(b) = &p.kind else {
        return Ok(Vec::new());
    };
    if let Some(key) = verp_key
        && let Some(target) = store::outbox::target_of_verp_key(db, key)?
    {
        return Ok(vec![target]);
    }
    let Some(mid) = original_message_id else {
        return Ok(Vec::new());
    };
    Ok(store::outbox::targets_of_message_id(db, mid)?
        .into_iter()
        .filter(|t| {
            b.recipients
                .iter()
                .any(|r| r.recipient.trim().eq_ignore_ascii_case(&t.recipient))
        })
        .collect())
}

fn bounce_effects(
    db: &Db<'_>,
    config: &Config,
    p: &Prepared,
    message: i64,
    rows: &[BounceTarget],
    now: i64,
) -> Result<()> {
    let Kind::Bounce(b) = &p.kind else {
        return Ok(());
    };
    for t in rows {
        // The report's own entry for this recipient, else (a VERP match
        // whose report names nobody usable) its first entry.
        let entry = b
            .recipients
            .iter()
            .find(|r| r.recipient.trim().eq_ignore_ascii_case(&t.recipient))
            .or_else(|| b.recipients.first());
        let detail = entry
            .map(|r| {
                format!("{} {}", r.status, r.diagnostic.as_deref().unwrap_or(""))
                    .trim()
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "bounced".to_string());
        if b.permanent {
            // The row, message.bounced, message.failed, the activity entry
            // and the agent's email (SPEC §5), unless it was given up before.
            delivery::bounced(db, config, t.outbox_id, &detail, message, now)?;
        } else {
            store::outbox::note_delay(db, t.outbox_id, &detail)?;
        }
    }
    Ok(())
}

fn forwarding_effects(db: &Db<'_>, d: &Detected, now: i64) -> Result<()> {
    match d {
        Detected::Verification { sender_id } => {
            if let Some(email) = store::senders::mark_verified_by_forwarding(db, *sender_id, now)? {
                events::enqueue(
                    db,
                    "sender.verified",
                    json!({"email": email, "by": "forwarding"}),
                )?;
            }
        }
        Detected::ProviderConfirmation {
            sender_id,
            confirmation,
        } => {
            store::senders::set_forwarding_confirmation(
                db,
                *sender_id,
                &serde_json::to_string(confirmation)?,
            )?;
        }
    }
    Ok(())
}
