//! Records the store reads and writes, as plain data: what a template, a
//! parent or a side conversation is, whichever backend holds it.

use serde::Serialize;

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
}
