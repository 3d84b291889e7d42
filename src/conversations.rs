//! Side-conversation lifecycle (SPEC §4–§5): start, follow-up, close,
//! reopen. Every door (HTTP API, portal, CLI, tests) goes through here, so
//! the rules hold whichever way an action arrives. Each action is one
//! transaction on the store's writer: the side conversation, the composed
//! message, its outbox rows, the activity entry, the agent-view placement
//! and the webhook events commit together or not at all.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::json;

use crate::config::Config;
use crate::model::{MailAddr, Token, is_valid_email, now_ms};
use crate::outbound::compose::{
    self, Context, DkimKey, Draft, OutAttachment, Person, ReplyMode, clean_header,
};
use crate::store::Db;
use crate::store::view::{self, Placement};
use crate::store::{self, Store, StoreError, events, get_setting, outbox};

/// Why an action was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A rule refused valid input (HTTP 422), naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The state forbids it (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// Too many actions in a time window (HTTP 429).
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::NotFound("resource"),
            other => ServiceError::Store(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for ServiceError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::from(e).into()
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The agent acting.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: i64,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub from: Option<String>,
    pub include_context: bool,
    pub share_portal_link: bool,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Default)]
pub struct FollowUpRequest {
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub cc: Vec<String>,
    pub attachments: Vec<Attachment>,
}

/// A vendor's reply through the portal (SPEC §8).
#[derive(Debug, Clone, Default)]
pub struct PortalReply {
    /// The participant replying; `None`: the first `to` participant.
    pub from: Option<String>,
    pub text: String,
    pub attachments: Vec<Attachment>,
}

/// Longest portal reply text accepted, in bytes.
pub const MAX_PORTAL_TEXT: usize = 256 * 1024;
/// Most attachments on one portal reply.
pub const MAX_PORTAL_ATTACHMENTS: usize = 20;

/// What an action produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub side_conversation: i64,
    pub message: i64,
    pub token: String,
}

/// Longest subject accepted.
const MAX_SUBJECT: usize = 998;
/// Most recipients (to + cc) on one side conversation message.
const MAX_RECIPIENTS: usize = 50;

/// The service: cheap to clone.
#[derive(Clone)]
pub struct Conversations {
    pub config: Arc<Config>,
    pub store: Store,
    /// Woken when outbox rows are queued.
    pub outbox_waker: Arc<tokio::sync::Notify>,
}

struct SenderInfo {
    email: String,
    name: String,
    reply_mode: ReplyMode,
    signature_text: Option<String>,
    signature_html: Option<String>,
}

fn normalize_addresses(field: &str, list: &[String]) -> Result<Vec<String>, ServiceError> {
    let mut out: Vec<String> = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let a = a.trim();
        if MailAddr::parse(a).is_some_and(|m| m.is_address_literal()) {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!(
                    "`{}` names an IP address instead of a mail domain; \
                     address literals are not accepted",
                    clean_header(a)
                ),
            ));
        }
        if !is_valid_email(a) {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!("`{}` is not a valid email address", clean_header(a)),
            ));
        }
        if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
            out.push(a.to_string());
        }
    }
    Ok(out)
}

fn check_recipients(
    conn: &Db<'_>,
    config: &Config,
    field: &str,
    list: &[String],
) -> Result<(), ServiceError> {
    for (i, a) in list.iter().enumerate() {
        let is_user = conn
            .query_row("SELECT 1 FROM users WHERE email = ?1", [a], |_| Ok(()))
            .optional()?
            .is_some();
        if is_user {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!("{a} is a user of this gateway: mention them in a note instead"),
            ));
        }
        if MailAddr::parse(a).is_some_and(|m| m.domain == config.domain) {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!("{a} is an address of this gateway"),
            ));
        }
    }
    Ok(())
}

fn check_attachments(list: &[Attachment]) -> Result<(), ServiceError> {
    for (i, a) in list.iter().enumerate() {
        if a.filename.trim().is_empty() {
            return Err(invalid(
                &format!("attachments[{i}].filename"),
                "must not be empty",
            ));
        }
        if !a.content_type.contains('/') {
            return Err(invalid(
                &format!("attachments[{i}].content_type"),
                "must be a MIME type such as application/pdf",
            ));
        }
    }
    Ok(())
}

fn check_body(text: &Option<String>, html: &Option<String>) -> Result<(), ServiceError> {
    let empty = |s: &Option<String>| s.as_deref().is_none_or(|t| t.trim().is_empty());
    if empty(text) && empty(html) {
        return Err(invalid(
            "body_text",
            "a message needs body_text or body_html",
        ));
    }
    Ok(())
}

/// Resolves the sender: the one asked for, else the last used on this
/// parent, else the workspace default, else `reply@<domain>`.
fn resolve_sender(
    conn: &Db<'_>,
    config: &Config,
    requested: Option<&str>,
    parent_last: Option<&str>,
) -> Result<SenderInfo, ServiceError> {
    let gateway = format!("reply@{}", config.domain);
    let default: Option<String> = get_setting(conn, "default_sender")?
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|s| !s.is_empty());
    let chosen = requested
        .map(str::to_string)
        .or_else(|| parent_last.map(str::to_string))
        .or(default)
        .unwrap_or_else(|| gateway.clone());
    if chosen.eq_ignore_ascii_case(&gateway) {
        return Ok(SenderInfo {
            email: gateway,
            name: String::new(),
            reply_mode: ReplyMode::Gateway,
            signature_text: None,
            signature_html: None,
        });
    }
    let row: Option<(SenderInfo, String)> = conn
        .query_row(
            "SELECT email, name, reply_mode, status, signature_text, signature_html FROM senders WHERE email = ?1",
            [&chosen],
            |r| {
                let mode: String = r.get(2)?;
                Ok((
                    SenderInfo {
                        email: r.get(0)?,
                        name: r.get(1)?,
                        reply_mode: ReplyMode::parse(&mode).unwrap_or(ReplyMode::Gateway),
                        signature_text: r.get(4)?,
                        signature_html: r.get(5)?,
                    },
                    r.get(3)?,
                ))
            },
        )
        .optional()?;
    let gateway_again = || {
        resolve_sender(
            conn,
            config,
            Some(&format!("reply@{}", config.domain)),
            None,
        )
    };
    match row {
        None if requested.is_some() => Err(invalid(
            "from",
            format!("{chosen} is not a sender address of this workspace"),
        )),
        // A remembered sender that was since removed: fall back to the gateway.
        None => gateway_again(),
        Some((_, status)) if status != "verified" => {
            if requested.is_some() {
                Err(invalid("from", format!("{chosen} is not verified yet")))
            } else {
                gateway_again()
            }
        }
        Some((sender, _)) => Ok(sender),
    }
}

/// Fills `{{agent.name}}`, `{{sender.name}}`, `{{sender.email}}`.
pub fn fill_signature(
    template: &str,
    agent: &str,
    sender_name: &str,
    sender_email: &str,
) -> String {
    template
        .replace("{{agent.name}}", agent)
        .replace("{{sender.name}}", sender_name)
        .replace("{{sender.email}}", sender_email)
}

fn signature(
    conn: &Db<'_>,
    sender: &SenderInfo,
    actor: &Actor,
) -> Result<(Option<String>, Option<String>), ServiceError> {
    let workspace = get_setting(conn, "signature")?.unwrap_or(serde_json::Value::Null);
    let text = sender
        .signature_text
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            workspace
                .get("text")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    let html = sender
        .signature_html
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            workspace
                .get("html")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    let display = if sender.name.is_empty() {
        &actor.name
    } else {
        &sender.name
    };
    let fill = |t: String| fill_signature(&t, &actor.name, display, &sender.email);
    Ok((text.map(fill), html.map(fill)))
}

/// The DKIM key to sign with: the From domain's key, when that domain's
/// DKIM record was checked and matches (or it is the gateway domain).
fn dkim_key(conn: &Db<'_>, config: &Config, from: &str) -> Result<Option<DkimKey>, ServiceError> {
    let Some(addr) = MailAddr::parse(from) else {
        return Ok(None);
    };
    let key: Option<(String, String, Vec<u8>)> = conn
        .query_row(
            "SELECT selector, algorithm, private_key FROM dkim_keys WHERE domain = ?1",
            [&addr.domain],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((selector, algorithm, private_key)) = key else {
        return Ok(None);
    };
    let verified = addr.domain == config.domain || {
        let mut stmt = conn
            .prepare("SELECT dns FROM senders WHERE email LIKE '%@' || ?1 AND dns IS NOT NULL")?;
        let rows: Vec<String> = stmt
            .query_map([&addr.domain], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        rows.iter().any(|d| {
            serde_json::from_str::<serde_json::Value>(d)
                .ok()
                .and_then(|v| {
                    v.pointer("/dkim/status")
                        .and_then(|s| s.as_str())
                        .map(|s| s == "pass")
                })
                .unwrap_or(false)
        })
    };
    Ok(verified.then_some(DkimKey {
        domain: addr.domain,
        selector,
        algorithm,
        private_key,
    }))
}

fn people(list: &[String]) -> Vec<Person> {
    list.iter()
        .map(|e| Person {
            name: None,
            email: e.clone(),
        })
        .collect()
}

fn out_attachments(list: &[Attachment]) -> Vec<OutAttachment> {
    list.iter()
        .map(|a| OutAttachment {
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            data: a.data.clone(),
        })
        .collect()
}

struct ScRow {
    id: i64,
    parent_id: i64,
    external_id: String,
    token: String,
    portal_token: Option<String>,
    portal_revoked: bool,
    portal_per_recipient: bool,
    status: String,
    subject: String,
    sender_email: String,
    thread_index: Option<Vec<u8>>,
    next_seq: i64,
}

fn load_sc(conn: &Db<'_>, id: i64) -> Result<ScRow, ServiceError> {
    conn.query_row(
        "SELECT s.id, s.parent_id, p.external_id, s.token, s.portal_token, s.portal_revoked, s.status,
                s.subject, s.sender_email, s.thread_index, s.next_seq, s.portal_per_recipient
         FROM side_conversations s JOIN parents p ON p.id = s.parent_id WHERE s.id = ?1",
        [id],
        |r| {
            Ok(ScRow {
                id: r.get(0)?,
                parent_id: r.get(1)?,
                external_id: r.get(2)?,
                token: r.get(3)?,
                portal_token: r.get(4)?,
                portal_revoked: r.get(5)?,
                status: r.get(6)?,
                subject: r.get(7)?,
                sender_email: r.get(8)?,
                thread_index: r.get(9)?,
                next_seq: r.get(10)?,
                portal_per_recipient: r.get(11)?,
            })
        },
    )
    .optional()?
    .ok_or(ServiceError::NotFound("side conversation"))
}

/// Message-IDs of the thread, oldest first.
fn thread_ids(conn: &Db<'_>, sc: i64) -> Result<Vec<String>, ServiceError> {
    let mut stmt = conn.prepare(
        "SELECT message_id FROM messages WHERE side_conversation_id = ?1 AND message_id IS NOT NULL
         AND kind IN ('agent', 'reply') ORDER BY id",
    )?;
    let ids = stmt
        .query_map([sc], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

/// Everyone a follow-up goes to: the participants (recipients and those who
/// joined).
fn participants(conn: &Db<'_>, sc: i64) -> Result<(Vec<String>, Vec<String>), ServiceError> {
    let mut stmt = conn.prepare(
        "SELECT email, role FROM participants WHERE side_conversation_id = ?1 ORDER BY added_at, rowid",
    )?;
    let rows: Vec<(String, String)> = stmt
        .query_map([sc], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let to = rows
        .iter()
        .filter(|(_, r)| r != "cc")
        .map(|(e, _)| e.clone())
        .collect();
    let cc = rows
        .iter()
        .filter(|(_, r)| r == "cc")
        .map(|(e, _)| e.clone())
        .collect();
    Ok((to, cc))
}

/// Inputs for writing one outbound message.
struct Outgoing<'a> {
    sc: &'a ScRow,
    sender: &'a SenderInfo,
    /// The agent writing; `None` when a vendor's portal reply is relayed to
    /// the other participants (no signature, no author).
    actor: Option<&'a Actor>,
    /// From's display name instead of the sender's (or the agent's).
    from_name: Option<String>,
    /// `api` for agents' messages, `portal` for relayed portal replies.
    route: &'static str,
    to: &'a [String],
    cc: &'a [String],
    text: Option<&'a str>,
    html: Option<&'a str>,
    context: Option<Context>,
    portal: Portal,
    attachments: &'a [Attachment],
}

/// Which "View conversation" link a message carries (SPEC §8).
enum Portal {
    None,
    /// The side conversation's one shared link (handed out before links
    /// were per recipient): the same in every copy.
    Shared(String),
    /// Each recipient's own link: one copy of the message per recipient.
    PerRecipient,
}

impl ScRow {
    fn portal(&self, public_url: &str) -> Portal {
        if self.portal_per_recipient {
            return Portal::PerRecipient;
        }
        match (&self.portal_token, self.portal_revoked) {
            (Some(t), false) => Portal::Shared(format!("{public_url}/p/{t}")),
            _ => Portal::None,
        }
    }
}

/// Composes and stores one outbound message with its outbox rows.
fn write_message(conn: &Db<'_>, config: &Config, o: Outgoing<'_>) -> Result<i64, ServiceError> {
    let now = now_ms();
    let ids = thread_ids(conn, o.sc.id)?;
    let token: Token =
        o.sc.token
            .parse()
            .map_err(|_| ServiceError::Store("stored token is malformed".into()))?;
    let (sig_text, sig_html) = match o.actor {
        Some(actor) => signature(conn, o.sender, actor)?,
        None => (None, None),
    };
    let dkim = dkim_key(conn, config, &o.sender.email)?;
    let recipients: Vec<&String> = o.to.iter().chain(o.cc.iter()).collect();
    let links: Vec<Option<String>> = match &o.portal {
        Portal::None => vec![None; recipients.len()],
        Portal::Shared(url) => vec![Some(url.clone()); recipients.len()],
        Portal::PerRecipient => recipients
            .iter()
            .map(|r| {
                Ok(store::portal::ensure_link(conn, o.sc.id, r, now)?
                    .map(|t| format!("{}/p/{t}", config.http.public_url)))
            })
            .collect::<Result<_, ServiceError>>()?,
    };
    let to_people = people(o.to);
    let cc_people = people(o.cc);
    let attachments = out_attachments(o.attachments);
    let from_name = match (&o.from_name, o.actor) {
        (Some(name), _) => name.clone(),
        (None, _) if !o.sender.name.is_empty() => o.sender.name.clone(),
        (None, Some(actor)) => actor.name.clone(),
        (None, None) => String::new(),
    };
    let draft = Draft {
        gateway_domain: &config.domain,
        token: &token,
        seq: o.sc.next_seq,
        from: Person {
            name: Some(from_name.clone()),
            email: o.sender.email.clone(),
        },
        reply_mode: o.sender.reply_mode,
        to: &to_people,
        cc: &cc_people,
        subject: &o.sc.subject,
        thread_ids: &ids,
        thread_index: o.sc.thread_index.as_deref(),
        text: o.text,
        html: o.html,
        signature_text: sig_text.as_deref(),
        signature_html: sig_html.as_deref(),
        context: o.context.as_ref(),
        portal_url: links.first().and_then(|l| l.as_deref()),
        attachments: &attachments,
        date: now,
        dkim: dkim.as_ref(),
    };
    let message_id = compose::message_id(&token, o.sc.next_seq, &config.domain);
    let composed = compose::compose_as(&draft, message_id.clone())
        .map_err(|e| ServiceError::Store(e.to_string()))?;
    let sha: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&composed.raw).into()
    };
    let mbox = |list: &[String]| {
        serde_json::to_string(
            &list
                .iter()
                .map(|e| json!({"name": null, "email": e}))
                .collect::<Vec<_>>(),
        )
    };
    conn.execute(
        "INSERT INTO messages
           (side_conversation_id, direction, kind, route, raw, raw_sha256, message_id, in_reply_to, refs,
            from_name, from_email, reply_to, to_addrs, cc_addrs, date, subject, text_body, html_body,
            visible_reply, flags, author_id, received_at)
         VALUES (?1, 'out', 'agent', ?18, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, '[]', ?17, ?12)",
        params![
            o.sc.id,
            composed.raw,
            &sha[..],
            composed.message_id,
            composed.in_reply_to,
            serde_json::to_string(&composed.references).map_err(StoreError::from)?,
            from_name,
            o.sender.email,
            compose::reply_to(o.sender.reply_mode, &o.sender.email, &token, &config.domain),
            mbox(o.to).map_err(StoreError::from)?,
            mbox(o.cc).map_err(StoreError::from)?,
            now,
            composed.subject,
            composed.text,
            composed.html,
            o.text.map(str::to_string).unwrap_or_else(|| composed.text.clone()),
            o.actor.map(|a| a.user_id),
            o.route,
        ],
    )?;
    let message = conn.last_insert_rowid();
    store::messages::insert_refs(
        conn,
        message,
        composed.in_reply_to.as_deref(),
        &composed.references,
    )?;
    store::messages::insert_attachments(
        conn,
        message,
        o.attachments
            .iter()
            .map(|a| store::messages::NewAttachment {
                filename: Some(&a.filename),
                content_type: &a.content_type,
                content_id: None,
                data: &a.data,
            }),
    )?;
    for rcpt in o.to.iter().chain(o.cc.iter()) {
        outbox::enqueue(conn, message, rcpt, now)?;
    }
    // The stored message is the first recipient's copy; every other
    // recipient whose link differs gets their own, under the same
    // Message-ID.
    for (rcpt, link) in recipients.iter().zip(&links).skip(1) {
        if link == &links[0] {
            continue;
        }
        let copy = Draft {
            portal_url: link.as_deref(),
            ..draft.clone()
        };
        let composed = compose::compose_as(&copy, message_id.clone())
            .map_err(|e| ServiceError::Store(e.to_string()))?;
        outbox::set_copy(conn, message, rcpt, &composed.raw)?;
    }
    conn.execute(
        "UPDATE side_conversations SET next_seq = next_seq + 1, thread_index = ?2, updated_at = ?3 WHERE id = ?1",
        params![o.sc.id, composed.thread_index, now],
    )?;
    conn.execute(
        "UPDATE parents SET last_sender = ?2, updated_at = ?3 WHERE id = ?1",
        params![o.sc.parent_id, o.sender.email, now],
    )?;
    view::add_message(
        conn,
        message,
        Placement::Thread {
            parent_id: o.sc.parent_id,
            external_id: &o.sc.external_id,
            inbound: false,
        },
    )?;
    events::enqueue(
        conn,
        "message.sent",
        json!({"side_conversation_id": o.sc.id, "parent": o.sc.external_id, "message": {
            "id": message, "message_id": composed.message_id, "from": o.sender.email,
            "to": o.to, "cc": o.cc, "subject": composed.subject }}),
    )?;
    Ok(message)
}

fn activity(
    conn: &Db<'_>,
    parent: i64,
    sc: i64,
    actor: &Actor,
    text: String,
) -> Result<(), ServiceError> {
    conn.execute(
        "INSERT INTO activity (parent_id, side_conversation_id, actor_id, text, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![parent, sc, actor.user_id, text, now_ms()],
    )?;
    Ok(())
}

impl Conversations {
    pub fn new(config: Arc<Config>, store: Store, outbox_waker: Arc<tokio::sync::Notify>) -> Self {
        Conversations {
            config,
            store,
            outbox_waker,
        }
    }

    /// Starts a side conversation on parent `external_id` (created if the
    /// helpdesk has not synced it yet) and queues the first message.
    pub async fn start(
        &self,
        actor: Actor,
        external_id: String,
        req: StartRequest,
    ) -> Result<Sent, ServiceError> {
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
        let config = self.config.clone();
        let this = self.clone();
        let sent = self
            .store
            .write_with(move |conn| {
                this.start_in(
                    conn,
                    &config,
                    &actor,
                    &external_id,
                    &req,
                    &to,
                    &cc,
                    &subject,
                )
            })
            .await?;
        self.outbox_waker.notify_one();
        Ok(sent)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_in(
        &self,
        conn: &Db<'_>,
        config: &Config,
        actor: &Actor,
        external_id: &str,
        req: &StartRequest,
        to: &[String],
        cc: &[String],
        subject: &str,
    ) -> Result<Sent, ServiceError> {
        let enabled = get_setting(conn, "side_conversations_enabled")?
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if !enabled {
            return Err(ServiceError::Conflict(
                "side conversations are turned off in the settings".into(),
            ));
        }
        check_recipients(conn, config, "to", to)?;
        check_recipients(conn, config, "cc", cc)?;
        let now = now_ms();
        conn.execute(
            "INSERT INTO parents (external_id, subject, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(external_id) DO NOTHING",
            params![external_id, subject, now],
        )?;
        let (parent_id, last_sender, p_subject, r_name, r_email, p_status): (
            i64,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
            String,
        ) = conn.query_row(
            "SELECT id, last_sender, subject, requester_name, requester_email, status FROM parents WHERE external_id = ?1",
            [external_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )?;
        let sender = resolve_sender(conn, config, req.from.as_deref(), last_sender.as_deref())?;
        let token = Token::generate();
        conn.execute(
            "INSERT INTO side_conversations (parent_id, token, portal_per_recipient, status, subject, sender_email, started_by, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7, ?7)",
            params![parent_id, token.as_str(), req.share_portal_link, subject, sender.email, actor.user_id, now],
        )?;
        let sc_id = conn.last_insert_rowid();
        for (list, role) in [(to, "to"), (cc, "cc")] {
            for e in list {
                conn.execute(
                    "INSERT OR IGNORE INTO participants (side_conversation_id, email, role, added_at) VALUES (?1, ?2, ?3, ?4)",
                    params![sc_id, e, role, now],
                )?;
            }
        }
        let sc = load_sc(conn, sc_id)?;
        let context = req.include_context.then(|| Context {
            parent: external_id.to_string(),
            requester_name: r_name.clone(),
            requester_email: r_email.clone(),
            status: p_status.clone(),
            excerpt: p_subject.clone(),
        });
        let message = write_message(
            conn,
            config,
            Outgoing {
                sc: &sc,
                sender: &sender,
                actor: Some(actor),
                from_name: None,
                route: "api",
                to,
                cc,
                text: req.body_text.as_deref(),
                html: req.body_html.as_deref(),
                context,
                portal: sc.portal(&config.http.public_url),
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
            conn,
            parent_id,
            sc_id,
            actor,
            format!(
                "{} started a side conversation with {recipients}",
                actor.name
            ),
        )?;
        events::enqueue(
            conn,
            "side_conversation.started",
            json!({"side_conversation_id": sc_id, "parent": external_id, "token": token.as_str(), "subject": subject, "to": to, "cc": cc, "by": actor.email}),
        )?;
        Ok(Sent {
            side_conversation: sc_id,
            message,
            token: token.to_string(),
        })
    }

    /// An agent's follow-up: to every participant; 409 when closed.
    pub async fn follow_up(
        &self,
        actor: Actor,
        sc_id: i64,
        req: FollowUpRequest,
    ) -> Result<Sent, ServiceError> {
        check_body(&req.body_text, &req.body_html)?;
        check_attachments(&req.attachments)?;
        let extra_cc = normalize_addresses("cc", &req.cc)?;
        let config = self.config.clone();
        let this = self.clone();
        let sent = self
            .store
            .write_with(move |conn| {
                this.follow_up_in(conn, &config, &actor, sc_id, &req, &extra_cc)
            })
            .await?;
        self.outbox_waker.notify_one();
        Ok(sent)
    }

    fn follow_up_in(
        &self,
        conn: &Db<'_>,
        config: &Config,
        actor: &Actor,
        sc_id: i64,
        req: &FollowUpRequest,
        extra_cc: &[String],
    ) -> Result<Sent, ServiceError> {
        let sc = load_sc(conn, sc_id)?;
        if sc.status == "closed" {
            return Err(ServiceError::Conflict(
                "the side conversation is closed; reopen it to reply".into(),
            ));
        }
        check_recipients(conn, config, "cc", extra_cc)?;
        let now = now_ms();
        let count: i64 = conn.query_row(
            "SELECT COUNT(*) FROM participants WHERE side_conversation_id = ?1",
            [sc_id],
            |r| r.get(0),
        )?;
        if count + extra_cc.len() as i64 > crate::ingest::apply::MAX_PARTICIPANTS {
            return Err(invalid(
                "cc",
                format!(
                    "a side conversation has at most {} participants",
                    crate::ingest::apply::MAX_PARTICIPANTS
                ),
            ));
        }
        for e in extra_cc {
            conn.execute(
                "INSERT OR IGNORE INTO participants (side_conversation_id, email, role, added_at) VALUES (?1, ?2, 'cc', ?3)",
                params![sc_id, e, now],
            )?;
        }
        let (to, cc) = participants(conn, sc_id)?;
        if to.is_empty() && cc.is_empty() {
            return Err(ServiceError::Conflict(
                "the side conversation has no participants left".into(),
            ));
        }
        let sender = resolve_sender(conn, config, Some(&sc.sender_email), None)
            .or_else(|_| resolve_sender(conn, config, None, None))?;
        let message = write_message(
            conn,
            config,
            Outgoing {
                sc: &sc,
                sender: &sender,
                actor: Some(actor),
                from_name: None,
                route: "api",
                to: &to,
                cc: &cc,
                text: req.body_text.as_deref(),
                html: req.body_html.as_deref(),
                context: None,
                portal: sc.portal(&config.http.public_url),
                attachments: &req.attachments,
            },
        )?;
        activity(
            conn,
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

    /// A vendor's reply from the portal behind `portal_token`: stored as an
    /// inbound reply (route `portal`) with the raw message it stands for,
    /// given the effects of an email reply, and relayed by email to the
    /// other participants. 404 for an unknown or revoked token, 409 when
    /// the side conversation is closed, 429 over `portal.replies_per_hour`.
    pub async fn portal_reply(
        &self,
        portal_token: String,
        req: PortalReply,
    ) -> Result<Sent, ServiceError> {
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
        check_attachments(&req.attachments)?;
        let config = self.config.clone();
        let this = self.clone();
        let sent = self
            .store
            .write_with(move |conn| this.portal_reply_in(conn, &config, &portal_token, &req))
            .await?;
        self.outbox_waker.notify_one();
        Ok(sent)
    }

    fn portal_reply_in(
        &self,
        conn: &Db<'_>,
        config: &Config,
        portal_token: &str,
        req: &PortalReply,
    ) -> Result<Sent, ServiceError> {
        let found = store::portal::by_token(conn, portal_token)?
            .ok_or(ServiceError::NotFound("portal link"))?;
        let sc_id = found.id;
        let sc = load_sc(conn, sc_id)?;
        if sc.status == "closed" {
            return Err(ServiceError::Conflict(
                "the side conversation is closed".into(),
            ));
        }
        let now = now_ms();
        // Counted inside the writer's transaction, so concurrent posts
        // cannot both slip under the limit.
        let recent: i64 = conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE side_conversation_id = ?1 AND direction = 'in'
             AND route = 'portal' AND received_at > ?2",
            params![sc_id, now - 3_600_000],
            |r| r.get(0),
        )?;
        if recent >= config.portal.replies_per_hour as i64 {
            return Err(ServiceError::RateLimited(format!(
                "at most {} replies an hour through this page",
                config.portal.replies_per_hour
            )));
        }

        // The author: a participant, by default the first recipient.
        let mut stmt = conn.prepare(
            "SELECT p.email, COALESCE(p.name, c.name), p.role FROM participants p
             LEFT JOIN contacts c ON c.email = p.email
             WHERE p.side_conversation_id = ?1 ORDER BY p.added_at, p.rowid",
        )?;
        let people: Vec<(String, Option<String>, String)> = stmt
            .query_map([sc_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        // A recipient's own link replies as that recipient, whatever the
        // form says; the shared link of older conversations lets the reader
        // choose among the participants.
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
                .find(|(e, _, _)| e.eq_ignore_ascii_case(wanted))
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
                .find(|(_, _, role)| role == "to")
                .or_else(|| people.first())
                .ok_or_else(|| {
                    ServiceError::Conflict("the side conversation has no participants".into())
                })?,
        };
        let (author_email, author_name) = (
            author.0.clone(),
            author.1.clone().filter(|n| !n.trim().is_empty()),
        );

        let sender = resolve_sender(conn, config, Some(&sc.sender_email), None)
            .or_else(|_| resolve_sender(conn, config, None, None))?;
        let token: Token = sc
            .token
            .parse()
            .map_err(|_| ServiceError::Store("stored token is malformed".into()))?;
        let reply_address =
            compose::reply_to(sender.reply_mode, &sender.email, &token, &config.domain)
                .unwrap_or_else(|| sender.email.clone());
        let ids = thread_ids(conn, sc_id)?;
        let text = req.text.replace("\r\n", "\n").trim_end().to_string();
        let attachments = out_attachments(&req.attachments);
        let composed = compose::portal_message(&compose::PortalDraft {
            gateway_domain: &config.domain,
            from: Person {
                name: author_name.clone(),
                email: author_email.clone(),
            },
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
        let to_json = json!([{"name": null, "email": reply_address}]).to_string();
        conn.execute(
            "INSERT INTO messages
               (side_conversation_id, direction, kind, route, raw, raw_sha256, message_id, in_reply_to, refs,
                from_name, from_email, to_addrs, cc_addrs, date, subject, text_body, visible_reply, flags,
                received_at)
             VALUES (?1, 'in', 'reply', 'portal', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '[]', ?10, ?11, ?12, ?13, '[]', ?10)",
            params![
                sc_id,
                composed.raw,
                &sha[..],
                composed.message_id,
                composed.in_reply_to,
                serde_json::to_string(&composed.references).map_err(StoreError::from)?,
                author_name,
                author_email,
                to_json,
                now,
                composed.subject,
                text,
                visible,
            ],
        )?;
        let message = conn.last_insert_rowid();
        store::messages::insert_refs(
            conn,
            message,
            composed.in_reply_to.as_deref(),
            &composed.references,
        )?;
        store::messages::insert_attachments(
            conn,
            message,
            req.attachments
                .iter()
                .map(|a| store::messages::NewAttachment {
                    filename: Some(&a.filename),
                    content_type: &a.content_type,
                    content_id: None,
                    data: &a.data,
                }),
        )?;
        view::add_message(
            conn,
            message,
            Placement::Thread {
                parent_id: sc.parent_id,
                external_id: &sc.external_id,
                inbound: true,
            },
        )?;
        let facts = crate::ingest::apply::ReplyFacts {
            from: Some(crate::ingest::parse::Mailbox {
                name: author_name.clone(),
                email: author_email.clone(),
            }),
            to: Vec::new(),
            cc: Vec::new(),
            message_id: Some(composed.message_id.clone()),
            subject: composed.subject.clone(),
            visible_reply: Some(visible),
            received_at: now,
            // The portal author is one of the participants, chosen on the form.
            trust: crate::ingest::apply::Trust::Verified,
            flags: Vec::new(),
            auth: None,
        };
        crate::ingest::apply::apply_reply_effects(conn, &config.domain, sc_id, &facts, message)?;

        // Everyone else on the thread gets the reply by email, from the
        // side conversation's sender in the vendor's name, so that their
        // answers come back here.
        let others: Vec<&(String, Option<String>, String)> = people
            .iter()
            .filter(|(e, _, _)| !e.eq_ignore_ascii_case(&author_email))
            .collect();
        if !others.is_empty() {
            let to: Vec<String> = others
                .iter()
                .filter(|(_, _, role)| role != "cc")
                .map(|(e, _, _)| e.clone())
                .collect();
            let cc: Vec<String> = others
                .iter()
                .filter(|(_, _, role)| role == "cc")
                .map(|(e, _, _)| e.clone())
                .collect();
            write_message(
                conn,
                config,
                Outgoing {
                    sc: &sc,
                    sender: &sender,
                    actor: None,
                    from_name: Some(author_name.clone().unwrap_or_else(|| author_email.clone())),
                    route: "portal",
                    to: &to,
                    cc: &cc,
                    text: Some(&text).filter(|t| !t.is_empty()).map(String::as_str),
                    html: None,
                    context: None,
                    portal: sc.portal(&config.http.public_url),
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

    /// Turns portal links off for good: one recipient's (`email`), or all of
    /// the side conversation's (later mail no longer carries any). Revoking
    /// what is already off is a no-op; an `email` with no link is 404.
    pub async fn revoke_portal(
        &self,
        actor: Actor,
        sc_id: i64,
        email: Option<String>,
    ) -> Result<(), ServiceError> {
        self.store
            .write_with(move |conn| {
                let sc = load_sc(conn, sc_id)?;
                let now = now_ms();
                if let Some(email) = email.as_deref().map(str::trim) {
                    let known = store::portal::links(conn, sc_id)?
                        .iter()
                        .any(|(e, _, _)| e.eq_ignore_ascii_case(email));
                    if !known {
                        return Err(ServiceError::NotFound("portal link"));
                    }
                    if store::portal::revoke_links(conn, sc_id, Some(email), now)? == 0 {
                        return Ok(());
                    }
                    return activity(
                        conn,
                        sc.parent_id,
                        sc_id,
                        &actor,
                        format!("{} revoked the portal link of {email}", actor.name),
                    );
                }
                let shared = sc.portal_token.is_some() && !sc.portal_revoked;
                let personal = store::portal::revoke_links(conn, sc_id, None, now)?;
                if !shared && personal == 0 && !sc.portal_per_recipient {
                    return Ok(());
                }
                conn.execute(
                    "UPDATE side_conversations SET portal_revoked = 1, portal_per_recipient = 0,
                            updated_at = ?2 WHERE id = ?1",
                    params![sc_id, now],
                )?;
                activity(
                    conn,
                    sc.parent_id,
                    sc_id,
                    &actor,
                    format!(
                        "{} revoked the portal link of a side conversation",
                        actor.name
                    ),
                )
            })
            .await
    }

    /// An agent admits `email` to the side conversation (SPEC §10): the one
    /// way a sender of unverified mail joins. 404 unknown thread; 409 already
    /// a participant; 422 a malformed address, a user or an address of the
    /// gateway, or a full thread.
    pub async fn admit_participant(
        &self,
        actor: Actor,
        sc_id: i64,
        email: String,
        name: Option<String>,
    ) -> Result<(), ServiceError> {
        let email = email.trim().to_string();
        if !crate::model::is_author_address(&email) {
            return Err(invalid(
                "email",
                format!("`{}` is not a valid email address", clean_header(&email)),
            ));
        }
        let name = name
            .map(|n| clean_header(&n))
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(200).collect::<String>());
        let config = self.config.clone();
        self.store
            .write_with(move |conn| {
                let sc = load_sc(conn, sc_id)?;
                check_recipients(conn, &config, "email", std::slice::from_ref(&email))?;
                let exists = conn
                    .query_row(
                        "SELECT 1 FROM participants WHERE side_conversation_id = ?1 AND email = ?2",
                        params![sc_id, email],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if exists {
                    return Err(ServiceError::Conflict(format!(
                        "{email} is already a participant"
                    )));
                }
                let count: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM participants WHERE side_conversation_id = ?1",
                    [sc_id],
                    |r| r.get(0),
                )?;
                if count >= crate::ingest::apply::MAX_PARTICIPANTS {
                    return Err(invalid(
                        "email",
                        format!(
                            "a side conversation has at most {} participants",
                            crate::ingest::apply::MAX_PARTICIPANTS
                        ),
                    ));
                }
                let now = now_ms();
                conn.execute(
                    "INSERT INTO participants (side_conversation_id, email, name, role, added_at)
                     VALUES (?1, ?2, ?3, 'admitted', ?4)",
                    params![sc_id, email, name, now],
                )?;
                conn.execute(
                    "INSERT OR IGNORE INTO contacts (email, name, created_at) VALUES (?1, ?2, ?3)",
                    params![email, name, now],
                )?;
                activity(
                    conn,
                    sc.parent_id,
                    sc_id,
                    &actor,
                    format!("{} admitted {email} to a side conversation", actor.name),
                )
            })
            .await
    }

    /// An agent removes a participant: they get no more follow-ups and their
    /// portal link stops working. 404 when they are not a participant.
    pub async fn remove_participant(
        &self,
        actor: Actor,
        sc_id: i64,
        email: String,
    ) -> Result<(), ServiceError> {
        self.store
            .write_with(move |conn| {
                let sc = load_sc(conn, sc_id)?;
                let removed = conn.execute(
                    "DELETE FROM participants WHERE side_conversation_id = ?1 AND email = ?2",
                    params![sc_id, email.trim()],
                )?;
                if removed == 0 {
                    return Err(ServiceError::NotFound("participant"));
                }
                let now = now_ms();
                conn.execute(
                    "UPDATE portal_links SET revoked_at = ?3
                     WHERE side_conversation_id = ?1 AND email = ?2 AND revoked_at IS NULL",
                    params![sc_id, email.trim(), now],
                )?;
                activity(
                    conn,
                    sc.parent_id,
                    sc_id,
                    &actor,
                    format!(
                        "{} removed {} from a side conversation",
                        actor.name,
                        email.trim()
                    ),
                )
            })
            .await
    }

    /// Closes or reopens; idempotent states are a 409 to make mistakes visible.
    pub async fn set_status(
        &self,
        actor: Actor,
        sc_id: i64,
        open: bool,
    ) -> Result<(), ServiceError> {
        self.store
            .write_with(move |conn| set_status_in(conn, &actor, sc_id, open))
            .await
    }
}

/// Closes or reopens inside a transaction (also used when a parent closes).
pub fn set_status_in(
    conn: &Db<'_>,
    actor: &Actor,
    sc_id: i64,
    open: bool,
) -> Result<(), ServiceError> {
    let sc = load_sc(conn, sc_id)?;
    let now = now_ms();
    let (want, verb, event) = if open {
        ("open", "reopened", "side_conversation.reopened")
    } else {
        ("closed", "closed", "side_conversation.closed")
    };
    if sc.status == want {
        return Err(ServiceError::Conflict(format!(
            "the side conversation is already {want}"
        )));
    }
    conn.execute(
        "UPDATE side_conversations SET status = ?2, closed_at = CASE WHEN ?2 = 'closed' THEN ?3 ELSE NULL END, updated_at = ?3 WHERE id = ?1",
        params![sc_id, want, now],
    )?;
    activity(
        conn,
        sc.parent_id,
        sc_id,
        actor,
        format!("{} {verb} a side conversation", actor.name),
    )?;
    events::enqueue(
        conn,
        event,
        json!({"side_conversation_id": sc_id, "parent": sc.external_id, "by": actor.email}),
    )?;
    Ok(())
}
