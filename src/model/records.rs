//! Records the store reads and writes, as plain data: what a template, a
//! parent or a side conversation is, whichever backend holds it.

use serde::{Deserialize, Serialize};

/// A person in a header: a display name (if any) and an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub name: Option<String>,
    pub email: String,
}

/// A saved side-conversation template (SPEC §7 templates).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Template {
    pub id: i64,
    pub name: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    /// Tags a side conversation started from it gets (SPEC §15).
    pub tags: Vec<String>,
    pub created_at: String,
}

/// A template to save.
pub struct NewTemplate {
    pub name: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub tags: Vec<String>,
}

/// What one side conversation has taken in (its quota's measure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Intake {
    pub messages: u64,
    pub bytes: u64,
}

/// A sender address as stored (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub id: i64,
    pub email: String,
    pub name: String,
    /// `gateway`, `plus` or `none`.
    pub reply_mode: String,
    /// `pending` or `verified`.
    pub status: String,
    /// Local part of its forwarding address on the gateway domain.
    pub forwarding_local: String,
    /// `unknown` or `confirmed`.
    pub forwarding_state: String,
    pub forwarding_confirmed_at: Option<i64>,
    /// JSON of the provider's confirmation (provider, code, link).
    pub forwarding_confirmation: Option<String>,
    /// JSON of the last DNS check.
    pub dns: Option<String>,
    pub dns_checked_at: Option<i64>,
    pub signature_text: Option<String>,
    pub signature_html: Option<String>,
    pub verified_at: Option<i64>,
    pub created_at: i64,
}

/// A sender to add.
#[derive(Debug, Clone)]
pub struct NewSenderRow {
    pub email: String,
    pub name: String,
    pub reply_mode: String,
    pub forwarding_local: String,
    pub signature_text: Option<String>,
    pub signature_html: Option<String>,
    pub created_at: i64,
}

/// A sender's pending verification code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCode {
    /// `pending` or `verified`.
    pub status: String,
    pub code_hash: Option<Vec<u8>>,
    pub expires_at: Option<i64>,
    pub attempts: i64,
}

/// A sender address as far as forwarding detection needs it.
#[derive(Debug, Clone)]
pub struct ForwardingCandidate {
    pub id: i64,
    pub email: String,
    /// Local part of its forwarding address on the gateway domain.
    pub forwarding_local: String,
    /// Nonce of the verification mail in flight, if any.
    pub verification_nonce: Option<String>,
}

/// A reply waiting in an agent's notification batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReply {
    /// The parent's external id.
    pub parent: String,
    /// The side conversation's subject and id.
    pub subject: String,
    pub side_conversation: i64,
    /// Who wrote it: the name, else the address.
    pub vendor: String,
    /// The start of its visible reply (a bounded prefix, not trimmed).
    pub text: String,
    /// Flagged `unverified_sender`.
    pub unverified: bool,
    /// A reminder (SPEC §15) rather than a reply: its text.
    pub reminder: Option<String>,
}

/// A parent ticket as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub id: i64,
    pub external_id: String,
    pub subject: String,
    pub requester_name: Option<String>,
    pub requester_email: Option<String>,
    pub status: super::ParentStatus,
    pub snoozed_until: Option<i64>,
    pub assignee_id: Option<i64>,
    /// The assignee's address.
    pub assignee: Option<String>,
    /// The sender address last used on this parent.
    pub last_sender: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a parent upsert changes (a field left `None` stays as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentChanges {
    pub subject: Option<String>,
    /// (name, email) of the requester.
    pub requester: Option<(Option<String>, Option<String>)>,
    pub status: Option<super::ParentStatus>,
    pub snoozed_until: Option<Option<i64>>,
    pub assignee_id: Option<Option<i64>>,
}

/// A side conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideConversation {
    pub id: i64,
    pub parent_id: i64,
    /// The parent's external id and state.
    pub parent: String,
    pub parent_status: super::ParentStatus,
    pub token: String,
    /// The one shared portal link handed out before links were per
    /// recipient, and whether it was revoked.
    pub portal_token: Option<String>,
    pub portal_revoked: bool,
    /// Mail carries each recipient's own portal link.
    pub portal_per_recipient: bool,
    pub status: super::ScStatus,
    pub subject: String,
    pub sender_email: String,
    pub started_by: Option<i64>,
    /// The parent's assignee's address.
    pub assignee: Option<String>,
    /// Outlook Thread-Index of the last message (22 bytes + 5 per reply).
    pub thread_index: Option<Vec<u8>>,
    /// The `<n>` of the next outbound Message-ID.
    pub next_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A side conversation to create.
#[derive(Debug, Clone)]
pub struct NewSideConversation<'a> {
    pub parent_id: i64,
    pub token: &'a str,
    pub portal_per_recipient: bool,
    pub subject: &'a str,
    pub sender_email: &'a str,
    /// The agent who started it (`None` only for data loaded by tools).
    pub started_by: Option<i64>,
    pub created_at: i64,
}

/// A participant of a side conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub email: String,
    /// Their own name, else the one their contact record has.
    pub name: Option<String>,
    pub role: super::ParticipantRole,
}

/// An activity entry of a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub id: i64,
    pub text: String,
    pub side_conversation_id: Option<i64>,
    /// The acting user's address.
    pub actor: Option<String>,
    pub created_at: i64,
}

/// A lead: an address first seen on inbound mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub first_message_id: Option<i64>,
    pub created_at: i64,
}

/// An inbound message as the assignment of unrouted mail needs it.
#[derive(Debug, Clone)]
pub struct StoredReply {
    pub side_conversation: Option<i64>,
    pub direction: super::Direction,
    pub kind: super::MessageKind,
    pub from: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub message_id: Option<String>,
    pub subject: String,
    pub visible_reply: Option<String>,
    pub received_at: i64,
}

/// An attachment as listed with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentInfo {
    pub index: i64,
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub content_id: Option<String>,
}

/// A stored message as its readers see it (SPEC §7 message shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: i64,
    pub side_conversation_id: Option<i64>,
    pub direction: super::Direction,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    /// References (JSON array of ids).
    pub references: String,
    pub from: Option<Mailbox>,
    pub reply_to: Option<String>,
    /// To and Cc (JSON arrays of {name, email}).
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub date: Option<i64>,
    pub received_at: i64,
    pub text: Option<String>,
    pub html: Option<String>,
    pub visible_reply: Option<String>,
    pub kind: super::MessageKind,
    /// Flags (JSON array).
    pub flags: String,
    pub route: super::Route,
    /// Authentication results (JSON).
    pub auth: Option<String>,
    /// The bounce report (JSON).
    pub bounce: Option<String>,
    /// Some body was cut to the length asked for.
    pub truncated: bool,
}
