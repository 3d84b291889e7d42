//! The rules of side conversations (SPEC §4–§8, §10): start, follow-up,
//! close/reopen, a vendor's portal reply, the effects of an accepted reply,
//! admitting participants, assigning unrouted mail, upserting a parent.
//! Every front (HTTP API, portal, web console, mail clients, ingest, CLI)
//! calls these, so a rule holds whichever way an action arrives. Each
//! action is one write on the store: the side conversation, the composed
//! message, its outbox rows, the activity entry, the agent-view placement
//! and the webhook events commit together or not at all. This layer names
//! no SQL: it calls the store's typed functions.

mod addressing;
pub mod agent_mail;
pub mod agent_notice;
pub mod delivery;
mod follow_up;
mod outgoing;
mod parents;
mod participants;
mod portal;
pub mod reminders;
pub mod replies;
pub mod reports;
pub mod settings;
pub mod sign_in;
mod start;
mod status;
pub mod tags;
pub mod users;

use std::sync::Arc;

use crate::config::Config;
use crate::model::{MailAddr, is_valid_email};
use crate::outbound::compose::clean_header;
use crate::store::{self, Db, Store, StoreError};

pub use delivery::DeliveryOutcomes;
pub use outgoing::reply_address;
pub use parents::{ParentUpsert, upsert_parent_in};
pub use replies::{AssignError, ReplyFacts, Trust, apply_reply_effects, assign_unrouted};
pub use start::Draft;
pub use status::set_status_in;
pub use tags::{ScPatch, check_tags, split_tags};

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

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
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

/// Stores what a composed message threads on and carries: its
/// In-Reply-To/References rows and its attachments.
fn store_parts(
    db: &crate::store::Db<'_>,
    message: i64,
    composed: &crate::outbound::compose::Composed,
    attachments: &[Attachment],
) -> crate::store::Result<()> {
    use crate::store::messages;
    messages::insert_refs(
        db,
        message,
        composed.in_reply_to.as_deref(),
        &composed.references,
    )?;
    messages::insert_attachments(
        db,
        message,
        attachments.iter().map(|a| messages::NewAttachment {
            filename: Some(&a.filename),
            content_type: &a.content_type,
            content_id: None,
            data: &a.data,
        }),
    )
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
    /// Tags to set (SPEC §15), checked by [`check_tags`] on start.
    pub tags: Vec<String>,
    /// Remind after this delay (`2d`; `off`: never); `None` takes the
    /// workspace default (SPEC §15).
    pub remind_after: Option<String>,
    /// A reminder also sends the vendor one follow-up.
    pub nudge_vendor: bool,
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
    /// The participant replying, on an older shared link; a recipient's own
    /// link replies as that recipient only.
    pub from: Option<String>,
    pub text: String,
    pub attachments: Vec<Attachment>,
}

/// Longest portal reply text accepted, in bytes.
pub const MAX_PORTAL_TEXT: usize = 256 * 1024;
/// Most attachments on one portal reply.
pub const MAX_PORTAL_ATTACHMENTS: usize = 20;
/// Most people one message may add to a side conversation.
pub const MAX_NEW_PARTICIPANTS: usize = 10;
/// Most participants one side conversation may have.
pub const MAX_PARTICIPANTS: i64 = 50;

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

/// Users of the gateway and its own addresses are never recipients.
fn check_recipients(
    db: &Db<'_>,
    config: &Config,
    field: &str,
    list: &[String],
) -> Result<(), ServiceError> {
    for (i, a) in list.iter().enumerate() {
        if store::users::exists(db, a)? {
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

/// Writes an activity entry by `actor`.
fn activity(
    db: &Db<'_>,
    parent: i64,
    sc: i64,
    actor: &Actor,
    text: String,
) -> Result<(), ServiceError> {
    store::activity::add(
        db,
        parent,
        Some(sc),
        Some(actor.user_id),
        &text,
        crate::model::now_ms(),
    )?;
    Ok(())
}

/// The sender address a start on a parent uses when none is asked for:
/// the last one used on it (`parent_last`), else the settings' default,
/// else the gateway's own; one no longer verified falls back as a start
/// would (SPEC §5).
pub fn default_sender(
    db: &Db<'_>,
    config: &Config,
    parent_last: Option<&str>,
) -> Result<String, ServiceError> {
    outgoing::resolve_sender(db, config, None, parent_last).map(|s| s.email)
}

/// Whether a user with `role` may see message `id`: messages of side
/// conversations, everyone; unrouted mail, owners and admins only (SPEC
/// §9). `false` for an unknown message.
pub fn may_see_message(db: &Db<'_>, role: crate::model::Role, id: i64) -> store::Result<bool> {
    Ok(match store::messages::side_conversation_of(db, id)? {
        None => false,
        Some(None) => role.can_administer(),
        Some(Some(_)) => true,
    })
}

/// The side conversation, or 404.
fn load_sc(db: &Db<'_>, id: i64) -> Result<crate::model::SideConversation, ServiceError> {
    store::side_conversations::get(db, id)?.ok_or(ServiceError::NotFound("side conversation"))
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
        let checked = start::check(&external_id, &req)?;
        let config = self.config.clone();
        let sent = self
            .store
            .write_with(move |db| {
                start::start_in(db, &config, &actor, &external_id, &req, &checked)
            })
            .await?;
        self.outbox_waker.notify_one();
        Ok(sent)
    }

    /// Fills what `draft` leaves out from template `template` for a start
    /// on parent `external_id` by `agent_name` (see [`Draft`]); 422 on
    /// `template` when there is no such template.
    pub async fn fill_from_template(
        &self,
        template: i64,
        external_id: String,
        agent_name: String,
        draft: Draft,
    ) -> Result<Draft, ServiceError> {
        self.store
            .read(move |db| {
                start::fill_from_template(db, template, &external_id, &agent_name, draft)
            })
            .await?
            .ok_or_else(|| invalid("template", format!("no template {template}")))
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
        let sent = self
            .store
            .write_with(move |db| {
                follow_up::follow_up_in(db, &config, &actor, sc_id, &req, &extra_cc)
            })
            .await?;
        self.outbox_waker.notify_one();
        Ok(sent)
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
        portal::check(&req)?;
        let config = self.config.clone();
        let sent = self
            .store
            .write_with(move |db| portal::portal_reply_in(db, &config, &portal_token, &req))
            .await?;
        self.outbox_waker.notify_one();
        Ok(sent)
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
            .write_with(move |db| portal::revoke_in(db, &actor, sc_id, email.as_deref()))
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
        let (email, name) = participants::check(&email, name)?;
        let config = self.config.clone();
        self.store
            .write_with(move |db| {
                participants::admit_in(db, &config, &actor, sc_id, &email, name.as_deref())
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
            .write_with(move |db| participants::remove_in(db, &actor, sc_id, email.trim()))
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
            .write_with(move |db| set_status_in(db, &actor, sc_id, open))
            .await
    }

    /// Changes a side conversation's settings (tags, reminder); 422 names
    /// a bad field, 404 an unknown side conversation.
    pub async fn patch(
        &self,
        actor: Actor,
        sc_id: i64,
        patch: ScPatch,
    ) -> Result<(), ServiceError> {
        let patch = ScPatch {
            tags: match patch.tags {
                Some(t) => Some(check_tags("tags", &t)?),
                None => None,
            },
            ..patch
        };
        self.store
            .write_with(move |db| tags::patch_in(db, &actor, sc_id, &patch))
            .await
    }

    /// One reminder pass at `now` (the scheduler's clock; a test's own):
    /// see [`reminders::remind_due`]. Returns how many were given.
    pub async fn remind_due(&self, now: i64) -> Result<usize, ServiceError> {
        let config = self.config.clone();
        let given = self
            .store
            .write(move |db| reminders::remind_due(db, &config, now))
            .await?;
        if given > 0 {
            self.outbox_waker.notify_one();
        }
        Ok(given)
    }

    /// Creates or updates a parent ticket as the helpdesk syncs it; closing
    /// it closes its side conversations. `true` when it was created.
    pub async fn upsert_parent(
        &self,
        actor: Actor,
        external_id: String,
        upsert: ParentUpsert,
    ) -> Result<bool, ServiceError> {
        parents::check(&external_id, &upsert)?;
        self.store
            .write_with(move |db| upsert_parent_in(db, &actor, &external_id, &upsert))
            .await
    }

    /// Moves an unrouted message onto a side conversation (triage) and
    /// applies a reply's effects.
    pub async fn assign_unrouted(&self, message: i64, sc: i64) -> Result<(), AssignError> {
        let domain = self.config.domain.clone();
        self.store
            .write_with(move |db| assign_unrouted(db, &domain, message, sc))
            .await
    }
}
