//! Applying one prepared inbound message to the store, inside the writer's
//! transaction: routing lookups, duplicate check, the message row with its
//! attachments, the agent-view placement, and the effects (SPEC §4) — all or
//! nothing, together with marking the queue row done. Running it twice for
//! the same queue row is a no-op, which makes the worker idempotent.

use std::cell::RefCell;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::classify::Kind;
use super::forwarding::{self, Detected, SenderInfo};
use super::parse::{Mailbox, ParsedMail};
use super::route::{self, Class, Decision, Forwarding, Known, RouteInput, Source};
use crate::ingest::auth::AuthResults;
use crate::model::{MailAddr, Token, now_ms};
use crate::store::Db;
use crate::store::inbound::Envelope;
use crate::store::view::{self, Placement};
use crate::store::{Result, StoreError, events};

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

/// Store lookups for the routing rules; the first SQL error is kept and
/// reported after routing (routing itself cannot fail).
struct DbKnown<'c> {
    conn: &'c Connection,
    error: RefCell<Option<StoreError>>,
}

impl DbKnown<'_> {
    fn note<T: Default>(&self, r: rusqlite::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e.into());
                T::default()
            }
        }
    }
}

impl Known for DbKnown<'_> {
    fn token(&self, token: &Token) -> Option<i64> {
        self.note(
            self.conn
                .prepare_cached("SELECT id FROM side_conversations WHERE token = ?1")
                .and_then(|mut stmt| stmt.query_row([token.as_str()], |r| r.get(0)).optional()),
        )
    }

    fn message_id(&self, id: &str) -> Vec<i64> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(
                "SELECT DISTINCT side_conversation_id FROM messages
                 WHERE message_id = ?1 AND side_conversation_id IS NOT NULL",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<i64>>>()
        })();
        self.note(r)
    }

    fn cited_by(&self, id: &str) -> Vec<i64> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(
                "SELECT DISTINCT m.side_conversation_id FROM message_refs r
                 JOIN messages m ON m.id = r.message_id
                 WHERE r.ref = ?1 AND m.side_conversation_id IS NOT NULL",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<i64>>>()
        })();
        self.note(r)
    }

    fn is_sender(&self, email: &str) -> bool {
        self.note(
            self.conn
                .query_row(
                    "SELECT 1 FROM senders WHERE email = ?1",
                    [email],
                    |_| Ok(()),
                )
                .optional()
                .map(|o| o.is_some()),
        )
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

fn candidate_senders(conn: &Db<'_>, domain: &str, addrs: &[String]) -> Result<Vec<SenderInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, email, forwarding_local, verification_nonce FROM senders
         WHERE verification_nonce IS NOT NULL OR forwarding_local = ?1",
    )?;
    let mut out: Vec<SenderInfo> = Vec::new();
    for a in addrs {
        let Some(m) = MailAddr::parse(a) else {
            continue;
        };
        if !m.domain.eq_ignore_ascii_case(domain) {
            continue;
        }
        let rows = stmt.query_map([m.local.to_ascii_lowercase()], |r| {
            Ok(SenderInfo {
                id: r.get(0)?,
                email: r.get(1)?,
                forwarding_local: r.get(2)?,
                verification_nonce: r.get(3)?,
            })
        })?;
        for s in rows {
            let s = s?;
            if !out.iter().any(|o| o.id == s.id) {
                out.push(s);
            }
        }
    }
    if out.is_empty() {
        // Verification mail may come back on any address: look at pending nonces.
        let rows = stmt.query_map([""], |r| {
            Ok(SenderInfo {
                id: r.get(0)?,
                email: r.get(1)?,
                forwarding_local: r.get(2)?,
                verification_nonce: r.get(3)?,
            })
        })?;
        for s in rows {
            out.push(s?);
        }
    }
    Ok(out)
}

struct ThreadInfo {
    parent_id: i64,
    external_id: String,
    sc_status: String,
    parent_status: String,
    sender_email: String,
}

fn thread_info(conn: &Db<'_>, sc: i64) -> Result<ThreadInfo> {
    Ok(conn
        .prepare_cached(
            "SELECT p.id, p.external_id, s.status, p.status, s.sender_email
         FROM side_conversations s JOIN parents p ON p.id = s.parent_id WHERE s.id = ?1",
        )?
        .query_row([sc], |r| {
            Ok(ThreadInfo {
                parent_id: r.get(0)?,
                external_id: r.get(1)?,
                sc_status: r.get(2)?,
                parent_status: r.get(3)?,
                sender_email: r.get(4)?,
            })
        })?)
}

fn is_participant(conn: &Db<'_>, sc: i64, email: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM participants WHERE side_conversation_id = ?1 AND email = ?2",
        )?
        .query_row(params![sc, email], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Addresses that are the gateway's own or its users' never become
/// participants or contacts.
fn is_internal(conn: &Db<'_>, domain: &str, email: &str, sc_sender: &str) -> Result<bool> {
    let Some(addr) = MailAddr::parse(email) else {
        return Ok(true);
    };
    if addr.domain.eq_ignore_ascii_case(domain) || email.eq_ignore_ascii_case(sc_sender) {
        return Ok(true);
    }
    if addr.token().is_some() {
        let base = addr.plus_parts().map(|(b, _)| b).unwrap_or("");
        let sender = format!("{base}@{}", addr.domain);
        if conn
            .prepare_cached("SELECT 1 FROM senders WHERE email = ?1")?
            .query_row([&sender], |_| Ok(()))
            .optional()?
            .is_some()
        {
            return Ok(true);
        }
    }
    let known = conn
        .prepare_cached(
            "SELECT 1 FROM users WHERE email = ?1 UNION ALL SELECT 1 FROM senders WHERE email = ?1",
        )?
        .query_row([email], |_| Ok(()))
        .optional()?;
    Ok(known.is_some())
}

fn add_participant(conn: &Db<'_>, sc: i64, m: &Mailbox, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO participants (side_conversation_id, email, name, role, added_at)
         VALUES (?1, ?2, ?3, 'joined', ?4)",
    )?
    .execute(params![sc, m.email, m.name, now])?;
    Ok(())
}

fn add_contact(conn: &Db<'_>, m: &Mailbox, message: i64, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO contacts (email, name, first_message_id, created_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![m.email, m.name, message, now])?;
    Ok(())
}

/// Records that a message is flagged `unverified_sender`, for the agent
/// view's `$unverified` keyword (see `view`).
fn mark_unverified(conn: &Db<'_>, message: i64) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO unverified_messages (message_id) VALUES (?1)")?
        .execute([message])?;
    Ok(())
}

fn mark_done(conn: &Db<'_>, inbound_id: i64, message: i64, note: Option<&str>) -> Result<()> {
    conn.prepare_cached(
        "UPDATE inbound_queue SET state = 'done', processed_at = ?2, message_id = ?3,
                attempts = attempts + 1, last_error = ?4
         WHERE id = ?1",
    )?
    .execute(params![inbound_id, now_ms(), message, note])?;
    Ok(())
}

const DUPLICATE_BY_MESSAGE_ID: &str = "SELECT id, raw_sha256, text_body, html_body FROM messages
     WHERE message_id = ?1 AND direction = 'in' AND +side_conversation_id IS ?2
     ORDER BY id LIMIT 1";
const DUPLICATE_BY_HASH: &str = "SELECT id, raw_sha256, text_body, html_body FROM messages
     WHERE raw_sha256 = ?1 AND message_id IS NULL AND direction = 'in' AND +side_conversation_id IS ?2
     ORDER BY id LIMIT 1";

/// (row id, raw SHA-256, text body, HTML body) of a stored message.
type StoredCopy = (i64, Vec<u8>, Option<String>, Option<String>);

/// Looks for the same message already stored in the same place.
///
/// The `+` keeps SQLite off the indexes by side conversation: on one of
/// them, every message scanned the whole thread (or all unrouted mail) row
/// by row, quadratic in the store's size.
/// The Message-ID (or hash) index finds the few candidates directly.
fn find_duplicate(conn: &Db<'_>, p: &Prepared, sc: Option<i64>) -> Result<Option<(i64, bool)>> {
    let existing: Option<StoredCopy> = match &p.parsed.message_id {
        Some(mid) => conn
            .prepare_cached(DUPLICATE_BY_MESSAGE_ID)?
            .query_row(params![mid, sc], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?,
        None => conn
            .prepare_cached(DUPLICATE_BY_HASH)?
            .query_row(params![p.sha256, sc], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?,
    };
    Ok(existing.map(|(id, sha, text, html)| {
        // The same message delivered twice (often with different trace
        // headers) has the same content; a different message reusing a
        // Message-ID does not.
        let same = sha == p.sha256 || (text == p.parsed.text && html == p.parsed.html);
        (id, same)
    }))
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

fn mailbox_json(m: &[Mailbox]) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "[]".into())
}

/// Applies a prepared message. See the module documentation.
pub fn apply(conn: &Db<'_>, domain: &str, p: &Prepared) -> Result<Applied> {
    let state: String = conn
        .prepare_cached("SELECT state FROM inbound_queue WHERE id = ?1")?
        .query_row([p.inbound_id], |r| r.get(0))?;
    if state != "queued" {
        return Ok(Applied::AlreadyDone);
    }
    let now = now_ms();
    let addrs = addresses(p);

    // Rule 3 needs the senders that could be concerned.
    let plain: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let senders = candidate_senders(conn, domain, &plain)?;
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
    let known = DbKnown {
        conn,
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
        } => bounce_targets(conn, p, verp_key.as_deref(), original_message_id.as_deref())?,
        _ => Vec::new(),
    };

    let (sc, kind, rule): (Option<i64>, &str, &'static str) = match &decision {
        Decision::Thread {
            side_conversation,
            rule,
        } => (
            Some(*side_conversation),
            if matches!(p.kind, Kind::AutoReply(_)) {
                "auto_reply"
            } else {
                "reply"
            },
            rule.as_str(),
        ),
        Decision::Bounce { .. } => (
            bounce_rows.first().and_then(|r| r.side_conversation),
            "bounce",
            "bounce",
        ),
        Decision::Forwarding(Forwarding::Verification { .. }) => {
            (None, "verification", "forwarding")
        }
        Decision::Forwarding(Forwarding::ProviderConfirmation { .. }) => {
            (None, "forwarding_confirmation", "forwarding")
        }
        Decision::Unrouted { .. } => (
            None,
            if matches!(p.kind, Kind::AutoReply(_)) {
                "auto_reply"
            } else {
                "reply"
            },
            "unrouted",
        ),
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
            "auto_reply",
            "unrouted",
            Decision::Unrouted { ambiguous: false },
        )
    } else {
        (sc, kind, rule, decision)
    };

    let mut flags: Vec<String> = Vec::new();
    let mut is_duplicate_variant = false;
    if let Some((existing, same)) = find_duplicate(conn, p, sc)? {
        if same {
            mark_done(conn, p.inbound_id, existing, Some("duplicate delivery"))?;
            return Ok(Applied::Duplicate { of: existing });
        }
        flags.push(format!("duplicate_of:{existing}"));
        is_duplicate_variant = true;
    }

    let thread = sc.map(|id| thread_info(conn, id)).transpose()?;
    let from = p.parsed.from.clone();
    if p.parsed.from_authors > 1 {
        flags.push("multiple_from".into());
    } else if from
        .as_ref()
        .is_some_and(|f| !crate::model::is_author_address(&f.email))
    {
        flags.push("malformed_from".into());
    }
    let authenticated = from
        .as_ref()
        .is_some_and(|f| sender_verified(p.auth.as_ref(), &f.email));
    let participant = match (sc, &from) {
        (Some(sc_id), Some(f)) => is_participant(conn, sc_id, &f.email)?,
        _ => false,
    };
    if sc.is_some() && matches!(kind, "reply" | "auto_reply") && !(authenticated && participant) {
        flags.push("unverified_sender".into());
    }

    conn.prepare_cached(
        "INSERT INTO messages
           (side_conversation_id, direction, kind, route, inbound_id, raw, raw_sha256,
            message_id, in_reply_to, refs, from_name, from_email, reply_to, to_addrs, cc_addrs,
            date, subject, text_body, html_body, visible_reply, flags, auth, bounce, received_at)
         VALUES (?1, 'in', ?2, ?3, ?4,
                 CASE WHEN EXISTS (SELECT 1 FROM inbound_raw WHERE id = ?4) THEN X'' ELSE ?5 END,
                 ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                 ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
    )?
    .execute(params![
        sc,
        kind,
        rule,
        p.inbound_id,
        // Empty when the queue's copy (`inbound_raw`) holds the bytes: they
        // are stored once, readers use `raw_sql!`. Rows queued before
        // schema migration 4 have no such copy and keep theirs here.
        p.raw,
        p.sha256,
        p.parsed.message_id,
        p.parsed.in_reply_to,
        serde_json::to_string(&p.parsed.references)?,
        from.as_ref().and_then(|m| m.name.clone()),
        from.as_ref().map(|m| m.email.clone()),
        p.parsed.reply_to,
        mailbox_json(&p.parsed.to),
        mailbox_json(&p.parsed.cc),
        p.parsed.date,
        p.parsed.subject,
        p.parsed.text,
        p.parsed.html,
        // Most replies quote nothing: their visible reply is the text body
        // trimmed, and storing it again doubled the text written per
        // message. NULL here means exactly that (readers go through
        // `messages::visible_reply_sql`; with no text body there is no
        // visible reply either).
        p.visible_reply.as_ref().filter(|_| !p.visible_is_plain),
        serde_json::to_string(&flags)?,
        p.auth.as_ref().map(serde_json::to_string).transpose()?,
        bounce_json(&p.kind).map(|b| b.to_string()),
        p.envelope.received_at,
    ])?;
    let message = conn.last_insert_rowid();
    if flags.iter().any(|f| f == "unverified_sender") {
        mark_unverified(conn, message)?;
    }
    if let Some(sc_id) = sc {
        // What the thread has received, for its quota (`[ingest]
        // max_thread_messages` / `max_thread_bytes`, checked at RCPT).
        conn.prepare_cached(
            "UPDATE side_conversations SET inbound_messages = inbound_messages + 1,
                    inbound_bytes = inbound_bytes + ?2 WHERE id = ?1",
        )?
        .execute(params![sc_id, p.raw.len() as i64])?;
    }
    crate::store::messages::insert_refs(
        conn,
        message,
        p.parsed.in_reply_to.as_deref(),
        &p.parsed.references,
    )?;
    crate::store::messages::insert_attachments(
        conn,
        message,
        p.parsed
            .attachments
            .iter()
            .map(|a| crate::store::messages::NewAttachment {
                filename: a.filename.as_deref(),
                content_type: &a.content_type,
                content_id: a.content_id.as_deref(),
                data: &a.data,
            }),
    )?;
    let placement = match (&thread, kind) {
        (Some(t), _) => Placement::Thread {
            parent_id: t.parent_id,
            external_id: &t.external_id,
            inbound: true,
        },
        (None, "verification" | "forwarding_confirmation") => Placement::Hidden,
        (None, _) => Placement::Unrouted,
    };
    view::add_message(conn, message, placement)?;

    match (&decision, &thread) {
        (
            Decision::Thread {
                side_conversation, ..
            },
            Some(t),
        ) if kind == "reply" && !is_duplicate_variant => {
            let mut facts = ReplyFacts::of(p);
            facts.trust = Trust::of(authenticated, participant);
            facts.flags.clone_from(&flags);
            reply_effects(conn, domain, *side_conversation, t, &facts, message, now)?;
        }
        (Decision::Bounce { .. }, _) => {
            bounce_effects(conn, p, message, sc, &bounce_rows, now)?;
        }
        (Decision::Forwarding(_), _) => {
            if let Some(d) = &detected {
                forwarding_effects(conn, d, now)?;
            }
        }
        _ => {}
    }
    mark_done(conn, p.inbound_id, message, None)?;
    Ok(Applied::Stored { message, rule })
}

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
        && crate::model::is_author_address(email)
        && auth
            .from_domain
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case(&addr.domain))
}

/// Most people one message may add.
pub const MAX_NEW_PARTICIPANTS: usize = 10;
/// Most participants one side conversation may have.
pub const MAX_PARTICIPANTS: i64 = 50;

impl ReplyFacts {
    fn of(p: &Prepared) -> ReplyFacts {
        ReplyFacts {
            from: p.parsed.from.clone(),
            to: p.parsed.to.clone(),
            cc: p.parsed.cc.clone(),
            message_id: p.parsed.message_id.clone(),
            subject: p.parsed.subject.clone(),
            visible_reply: p.visible_reply.clone(),
            received_at: p.envelope.received_at,
            trust: Trust::Unverified,
            flags: Vec::new(),
            auth: p.auth.clone(),
        }
    }

    fn unverified(&self) -> bool {
        self.flags.iter().any(|f| f == "unverified_sender")
    }
}

/// The effects of an accepted reply that did not come through this
/// pipeline (a vendor's reply in the browser portal): the same participants,
/// reopening, wake-up, activity entry and webhook events as an email reply,
/// in the caller's transaction.
pub fn apply_reply_effects(
    conn: &Db<'_>,
    domain: &str,
    sc: i64,
    facts: &ReplyFacts,
    message: i64,
) -> Result<()> {
    let t = thread_info(conn, sc)?;
    reply_effects(conn, domain, sc, &t, facts, message, now_ms())
}

/// Whether `email` shares its organisational domain with a participant of
/// the side conversation.
fn colleague_of_participant(conn: &Db<'_>, sc: i64, email: &str) -> Result<bool> {
    let Some(addr) = MailAddr::parse(email) else {
        return Ok(false);
    };
    let mut stmt =
        conn.prepare_cached("SELECT email FROM participants WHERE side_conversation_id = ?1")?;
    let emails: Vec<String> = stmt
        .query_map([sc], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(emails.iter().any(|e| {
        MailAddr::parse(e).is_some_and(|p| crate::model::aligned(&p.domain, &addr.domain))
    }))
}

fn reply_effects(
    conn: &Db<'_>,
    domain: &str,
    sc: i64,
    t: &ThreadInfo,
    f: &ReplyFacts,
    message: i64,
    now: i64,
) -> Result<()> {
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
            Some(m) if colleague_of_participant(conn, sc, &m.email)? => vec![m],
            _ => Vec::new(),
        },
        Trust::Unverified => Vec::new(),
    };
    // An authenticated sender becomes a contact (a lead).
    if let Some(m) = from
        && f.trust != Trust::Unverified
        && !is_internal(conn, domain, &m.email, &t.sender_email)?
    {
        add_contact(conn, m, message, now)?;
    }
    let mut added = 0;
    for m in candidates {
        if added >= MAX_NEW_PARTICIPANTS
            || !crate::model::is_author_address(&m.email)
            || is_internal(conn, domain, &m.email, &t.sender_email)?
        {
            continue;
        }
        if is_participant(conn, sc, &m.email)? {
            continue;
        }
        let count: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM participants WHERE side_conversation_id = ?1")?
            .query_row([sc], |r| r.get(0))?;
        if count >= MAX_PARTICIPANTS {
            break;
        }
        add_participant(conn, sc, m, now)?;
        add_contact(conn, m, message, now)?;
        added += 1;
    }
    if t.sc_status == "closed" {
        conn.prepare_cached(
            "UPDATE side_conversations SET status = 'open', closed_at = NULL, updated_at = ?2 WHERE id = ?1")?.execute(
            params![sc, now],
        )?;
        events::enqueue(
            conn,
            "side_conversation.reopened",
            json!({"side_conversation_id": sc, "parent": t.external_id, "by": "reply"}),
        )?;
    } else {
        conn.prepare_cached("UPDATE side_conversations SET updated_at = ?2 WHERE id = ?1")?
            .execute(params![sc, now])?;
    }
    if t.parent_status != "open" {
        conn.prepare_cached(
            "UPDATE parents SET status = 'open', snoozed_until = NULL, updated_at = ?2 WHERE id = ?1")?.execute(
            params![t.parent_id, now],
        )?;
        events::enqueue(
            conn,
            "parent.woken",
            json!({"parent": t.external_id, "previous_status": t.parent_status, "side_conversation_id": sc, "message_id": message}),
        )?;
    }
    crate::notifications::enqueue(conn, sc, message, now)?;
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
    conn.prepare_cached(
        "INSERT INTO activity (parent_id, side_conversation_id, actor_id, text, created_at)
         VALUES (?1, ?2, NULL, ?3, ?4)",
    )?
    .execute(params![
        t.parent_id,
        sc,
        format!("{who} replied in a side conversation{unverified}"),
        now
    ])?;
    events::enqueue_with(conn, "message.received", || {
        json!({
            "side_conversation_id": sc,
            "parent": t.external_id,
            "message": {
                "id": message,
                "message_id": f.message_id,
                "from": from,
                "subject": f.subject,
                "visible_reply": f.visible_reply,
                "received_at": f.received_at,
                "flags": f.flags,
                "auth": f.auth.as_ref().map(|a| json!({
                    "spf": a.spf, "dkim": a.dkim, "dmarc": a.dmarc, "arc": a.arc,
                })),
            },
            "flags": f.flags,
            "auth": f.auth.as_ref().map(|a| json!({
                "spf": a.spf, "dkim": a.dkim, "dmarc": a.dmarc, "arc": a.arc,
            })),
        })
    })?;
    Ok(())
}

/// An outbound delivery a bounce reports on.
struct BounceTarget {
    outbox_id: i64,
    recipient: String,
    side_conversation: Option<i64>,
}

/// The deliveries a bounce may change: the one its VERP key names (the key
/// is random and only the receiving system saw it); else, of the outbound
/// message its report cites, only the recipients it names exactly. A report
/// citing a public Message-ID with some other recipient changes nothing.
fn bounce_targets(
    conn: &Db<'_>,
    p: &Prepared,
    verp_key: Option<&str>,
    original_message_id: Option<&str>,
) -> Result<Vec<BounceTarget>> {
    let Kind::Bounce(b) = &p.kind else {
        return Ok(Vec::new());
    };
    let row = |r: &rusqlite::Row<'_>| {
        Ok(BounceTarget {
            outbox_id: r.get(0)?,
            recipient: r.get(1)?,
            side_conversation: r.get(2)?,
        })
    };
    if let Some(key) = verp_key
        && let Some(target) = conn
            .prepare_cached(
                "SELECT o.id, o.recipient, m.side_conversation_id
                 FROM outbox o JOIN messages m ON m.id = o.message_id WHERE o.verp_key = ?1",
            )?
            .query_row([key], row)
            .optional()?
    {
        return Ok(vec![target]);
    }
    let Some(mid) = original_message_id else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.recipient, m.side_conversation_id
         FROM outbox o JOIN messages m ON m.id = o.message_id
         WHERE m.message_id = ?1 AND m.direction = 'out'",
    )?;
    let all: Vec<BounceTarget> = stmt
        .query_map([mid], row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(all
        .into_iter()
        .filter(|t| {
            b.recipients
                .iter()
                .any(|r| r.recipient.trim().eq_ignore_ascii_case(&t.recipient))
        })
        .collect())
}

fn bounce_effects(
    conn: &Db<'_>,
    p: &Prepared,
    message: i64,
    sc: Option<i64>,
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
            conn.prepare_cached(
                "UPDATE outbox SET state = 'bounced', last_error = ?2 WHERE id = ?1",
            )?
            .execute(params![t.outbox_id, detail])?;
            events::enqueue(
                conn,
                "message.bounced",
                json!({"side_conversation_id": sc, "recipient": t.recipient, "bounce_message_id": message, "diagnostic": detail, "at": now}),
            )?;
        } else {
            conn.prepare_cached("UPDATE outbox SET last_error = ?2 WHERE id = ?1")?
                .execute(params![t.outbox_id, format!("delayed: {detail}")])?;
        }
    }
    Ok(())
}

fn forwarding_effects(conn: &Db<'_>, d: &Detected, now: i64) -> Result<()> {
    match d {
        Detected::Verification { sender_id } => {
            let changed = conn.prepare_cached(
                "UPDATE senders SET status = 'verified', verified_at = COALESCE(verified_at, ?2),
                        forwarding_state = 'confirmed', forwarding_confirmed_at = ?2,
                        verification_nonce = NULL, verification_code_hash = NULL
                 WHERE id = ?1")?.execute(
                params![sender_id, now],
            )?;
            if changed > 0 {
                let email: String = conn
                    .prepare_cached("SELECT email FROM senders WHERE id = ?1")?
                    .query_row([sender_id], |r| r.get(0))?;
                events::enqueue(
                    conn,
                    "sender.verified",
                    json!({"email": email, "by": "forwarding"}),
                )?;
            }
        }
        Detected::ProviderConfirmation {
            sender_id,
            confirmation,
        } => {
            conn.prepare_cached("UPDATE senders SET forwarding_confirmation = ?2 WHERE id = ?1")?
                .execute(params![sender_id, serde_json::to_string(confirmation)?])?;
        }
    }
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

impl From<rusqlite::Error> for AssignError {
    fn from(e: rusqlite::Error) -> Self {
        AssignError::Store(e.into())
    }
}

/// Moves an unrouted message onto a side conversation (triage) and applies
/// what its arrival would have: a reply's effects, a bounce's outbox update
/// is not repeated (an unmatched bounce matched nothing).
pub fn assign(
    conn: &Db<'_>,
    domain: &str,
    message: i64,
    sc: i64,
) -> std::result::Result<(), AssignError> {
    struct Stored {
        current: Option<i64>,
        direction: String,
        kind: String,
        facts: ReplyFacts,
    }
    let row: Option<Stored> = conn
        .prepare_cached(&format!(
            "SELECT side_conversation_id, direction, kind, from_name, from_email, to_addrs, cc_addrs,
                    message_id, subject, {}, received_at
             FROM messages WHERE id = ?1",
            crate::store::messages::visible_reply_sql("")
        ))?
        .query_row(
            [message],
            |r| {
                let from_name: Option<String> = r.get(3)?;
                let from_email: Option<String> = r.get(4)?;
                let to: String = r.get(5)?;
                let cc: String = r.get(6)?;
                Ok(Stored {
                    current: r.get(0)?,
                    direction: r.get(1)?,
                    kind: r.get(2)?,
                    facts: ReplyFacts {
                        from: from_email.map(|email| Mailbox { name: from_name, email }),
                        to: serde_json::from_str(&to).unwrap_or_default(),
                        cc: serde_json::from_str(&cc).unwrap_or_default(),
                        message_id: r.get(7)?,
                        subject: r.get(8)?,
                        visible_reply: r.get(9)?,
                        received_at: r.get(10)?,
                        trust: Trust::Unverified,
                        flags: Vec::new(),
                        auth: None,
                    },
                })
            },
        )
        .optional()?;
    let Some(Stored {
        current,
        direction,
        kind,
        facts,
    }) = row
    else {
        return Err(AssignError::MessageNotFound);
    };
    if current.is_some()
        || direction != "in"
        || !matches!(kind.as_str(), "reply" | "auto_reply" | "bounce")
    {
        return Err(AssignError::NotUnrouted);
    }
    let exists = conn
        .prepare_cached("SELECT 1 FROM side_conversations WHERE id = ?1")?
        .query_row([sc], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        return Err(AssignError::SideConversationNotFound);
    }
    let now = now_ms();
    let t = thread_info(conn, sc)?;
    conn.prepare_cached("UPDATE messages SET side_conversation_id = ?2 WHERE id = ?1")?
        .execute(params![message, sc])?;
    // Out of the Unrouted mailbox, into the thread's.
    view::remove_message(conn, view::UNROUTED, message)?;
    view::add_message(
        conn,
        message,
        Placement::Thread {
            parent_id: t.parent_id,
            external_id: &t.external_id,
            inbound: true,
        },
    )?;
    if kind == "reply" {
        let mut facts = facts;
        let (auth, flags): (Option<String>, String) = conn
            .prepare_cached("SELECT auth, flags FROM messages WHERE id = ?1")?
            .query_row([message], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let auth = auth.and_then(|a| serde_json::from_str::<AuthResults>(&a).ok());
        let authenticated = facts
            .from
            .as_ref()
            .is_some_and(|f| sender_verified(auth.as_ref(), &f.email));
        let participant = match &facts.from {
            Some(f) => is_participant(conn, sc, &f.email)?,
            None => false,
        };
        facts.trust = Trust::of(authenticated, participant);
        facts.auth = auth;
        let mut list: Vec<String> = serde_json::from_str(&flags).unwrap_or_default();
        // Flagged as any such reply arriving on the thread would be.
        let trusted = authenticated && participant;
        let flagged = list.iter().any(|x| x == "unverified_sender");
        if !trusted && !flagged {
            list.push("unverified_sender".into());
            conn.prepare_cached("UPDATE messages SET flags = ?2 WHERE id = ?1")?
                .execute(params![
                    message,
                    serde_json::to_string(&list).map_err(StoreError::from)?
                ])?;
            mark_unverified(conn, message)?;
        }
        facts.flags = list;
        reply_effects(conn, domain, sc, &t, &facts, message, now)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The duplicate lookups must go through the Message-ID / hash indexes:
    /// a plan on an index by side conversation reads every message of the
    /// thread (or every unrouted message) for each new one.
    #[test]
    fn duplicate_lookups_use_the_id_and_hash_indexes() {
        let conn = crate::store::memory_db();
        for (sql, index) in [
            (DUPLICATE_BY_MESSAGE_ID, "messages_message_id"),
            (DUPLICATE_BY_HASH, "messages_sha_without_id"),
        ] {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let plan: Vec<String> = stmt
                .query_map(params!["x", Some(1i64)], |r| r.get::<_, String>(3))
                .expect("plan")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            let plan = plan.join("\n");
            assert!(plan.contains(index), "{sql}:\n{plan}");
            assert!(!plan.contains("side_conversation"), "{plan}");
            assert!(!plan.contains("thread_received"), "{plan}");
        }
    }
}
