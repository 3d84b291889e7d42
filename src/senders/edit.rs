//! Editing a sender address in place (`PATCH /api/senders/{email}`): its
//! display name, reply mode and signature. The address itself, its
//! verification and its forwarding address do not change — a different
//! address is a new sender. Replies to addresses handed out under the old
//! reply mode keep threading: every mode's reply address carries the token.

use serde_json::Value;

use super::service::{SenderError, view};
use crate::config::Config;
use crate::outbound::compose::{ReplyMode, clean_header};
use crate::store::{self, Db};

/// What an edit changes; `None` leaves a field as it is, and a signature
/// part set to `Some(None)` is removed.
#[derive(Debug, Clone, Default)]
pub struct SenderPatch {
    pub name: Option<String>,
    pub reply_mode: Option<String>,
    pub signature_text: Option<Option<String>>,
    pub signature_html: Option<Option<String>>,
}

fn invalid(field: &str, message: impl Into<String>) -> SenderError {
    SenderError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Applies `patch` to the sender `email`; returns the sender's JSON and
/// the names of the fields that changed (for the audit log).
pub fn update(
    db: &Db<'_>,
    config: &Config,
    email: &str,
    patch: &SenderPatch,
) -> Result<(Value, Vec<&'static str>), SenderError> {
    let Some(old) = store::senders::get(db, email)? else {
        return Err(SenderError::NotFound);
    };
    let name = match &patch.name {
        Some(n) => {
            let n = clean_header(n);
            if n.chars().count() > 200 {
                return Err(invalid("name", "at most 200 characters"));
            }
            n
        }
        None => old.name.clone(),
    };
    let reply_mode = match &patch.reply_mode {
        Some(m) if ReplyMode::parse(m).is_none() => {
            return Err(invalid("reply_mode", "expected gateway, plus or none"));
        }
        Some(m) => m.clone(),
        None => old.reply_mode.clone(),
    };
    crate::templates::check_signature(
        "signature",
        patch.signature_text.as_ref().and_then(Option::as_deref),
        patch.signature_html.as_ref().and_then(Option::as_deref),
    )
    .map_err(|e| invalid(&e.field, e.message))?;
    let settings = store::senders::SenderSettings {
        name,
        reply_mode,
        signature_text: patch
            .signature_text
            .clone()
            .unwrap_or_else(|| old.signature_text.clone()),
        signature_html: patch
            .signature_html
            .clone()
            .unwrap_or_else(|| old.signature_html.clone()),
    };
    let mut changed = Vec::new();
    if settings.name != old.name {
        changed.push("name");
    }
    if settings.reply_mode != old.reply_mode {
        changed.push("reply_mode");
    }
    if settings.signature_text != old.signature_text {
        changed.push("signature.text");
    }
    if settings.signature_html != old.signature_html {
        changed.push("signature.html");
    }
    if !store::senders::update(db, email, &settings)? {
        return Err(SenderError::NotFound);
    }
    Ok((view(db, config, email)?, changed))
}

/// [`update`], recorded in the audit log as `actor`'s when something
/// changed (`sender.updated` with the names of the changed fields).
pub fn update_audited(
    db: &Db<'_>,
    config: &Config,
    actor: &store::audit::Actor,
    email: &str,
    patch: &SenderPatch,
) -> Result<Value, SenderError> {
    let (v, changed) = update(db, config, email, patch)?;
    if !changed.is_empty() {
        store::audit::record(
            db,
            actor,
            "sender.updated",
            email,
            &serde_json::json!({"changed": changed}),
        )?;
    }
    Ok(v)
}
