//! The workspace settings (SPEC §7 `GET/PUT /api/settings`): the default
//! signature (text and HTML), the default sender and whether side
//! conversations may be started. The API and the web console read and
//! change them here, so the same checks hold: placeholders are checked
//! like a template's (`{{agent.nmae}}` is refused, never sent as it is),
//! the default sender must be verified (or the gateway's own address), and
//! a change is recorded in the audit log in its own transaction.

use serde_json::{Value, json};

use super::ServiceError;
use crate::store::audit::Actor;
use crate::store::{self, Db, StoreError, get_setting, put_setting};

/// The settings as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub signature_text: Option<String>,
    pub signature_html: Option<String>,
    pub default_sender: Option<String>,
    pub side_conversations_enabled: bool,
    /// The reminder delay new side conversations get (SPEC §15), as
    /// `2d`; `None`: no reminders.
    pub remind_after: Option<String>,
}

/// A change: `None` keeps a field; `Some(None)` removes a signature part
/// or the default sender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    pub signature_text: Option<Option<String>>,
    pub signature_html: Option<Option<String>>,
    pub default_sender: Option<Option<String>>,
    pub side_conversations_enabled: Option<bool>,
    /// `Some(None)`: no default reminder.
    pub remind_after: Option<Option<String>>,
}

/// Reads the settings (side conversations are enabled unless turned off).
pub fn read(db: &Db<'_>) -> Result<Settings, StoreError> {
    let sig = get_setting(db, "signature")?.unwrap_or(Value::Null);
    let part = |p: &str| sig.get(p).and_then(Value::as_str).map(str::to_string);
    Ok(Settings {
        signature_text: part("text"),
        signature_html: part("html"),
        default_sender: get_setting(db, "default_sender")?
            .and_then(|v| v.as_str().map(str::to_string)),
        side_conversations_enabled: get_setting(db, "side_conversations_enabled")?
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
        remind_after: super::reminders::workspace_default(db)?.map(crate::model::age_spec),
    })
}

/// Checks the signature parts of a change (size, placeholders), naming
/// the field (`signature.text`, `signature.html`).
pub fn check(patch: &SettingsPatch) -> Result<(), ServiceError> {
    crate::templates::check_signature(
        "signature",
        patch.signature_text.as_ref().and_then(Option::as_deref),
        patch.signature_html.as_ref().and_then(Option::as_deref),
    )
    .map_err(|e| ServiceError::Invalid {
        field: e.field,
        message: e.message,
    })
}

/// The settings as stored, for the audit log's before/after.
fn audit_view(c: &Db<'_>) -> Result<Value, StoreError> {
    Ok(json!({
        "signature": get_setting(c, "signature")?,
        "default_sender": get_setting(c, "default_sender")?,
        "side_conversations_enabled": get_setting(c, "side_conversations_enabled")?.unwrap_or(json!(true)),
        "remind_after": get_setting(c, "remind_after")?,
    }))
}

/// Applies a change (what it names; the rest is kept) and records what
/// changed in the audit log. `gateway_domain`: the gateway's own
/// `reply@<domain>` may be the default sender without a sender entry.
pub fn update(
    c: &Db<'_>,
    gateway_domain: &str,
    actor: &Actor,
    patch: &SettingsPatch,
) -> Result<(), ServiceError> {
    check(patch)?;
    let gateway = format!("reply@{gateway_domain}");
    let before = audit_view(c)?;
    if patch.signature_text.is_some() || patch.signature_html.is_some() {
        let old = get_setting(c, "signature")?.unwrap_or(Value::Null);
        let keep = |part: &str| old.get(part).cloned().unwrap_or(Value::Null);
        let text = patch
            .signature_text
            .as_ref()
            .map_or_else(|| keep("text"), |t| json!(t));
        let html = patch
            .signature_html
            .as_ref()
            .map_or_else(|| keep("html"), |h| json!(h));
        put_setting(c, "signature", &json!({"text": text, "html": html}))?;
    }
    match &patch.default_sender {
        Some(Some(email)) => {
            let ok = email.eq_ignore_ascii_case(&gateway) || store::senders::is_verified(c, email)?;
            if !ok {
                return Err(ServiceError::Invalid {
                    field: "default_sender".into(),
                    message: format!("{email} is not a verified sender"),
                });
            }
            put_setting(c, "default_sender", &json!(email))?;
        }
        Some(None) => put_setting(c, "default_sender", &Value::Null)?,
        None => {}
    }
    if let Some(b) = patch.side_conversations_enabled {
        put_setting(c, "side_conversations_enabled", &json!(b))?;
    }
    if let Some(r) = &patch.remind_after {
        let ms = super::reminders::parse_remind_after("remind_after", r.as_deref())?;
        put_setting(c, "remind_after", &json!(ms.map(crate::model::age_spec)))?;
    }
    let after = audit_view(c)?;
    let changed: serde_json::Map<String, Value> = [
        "signature",
        "default_sender",
        "side_conversations_enabled",
        "remind_after",
    ]
    .into_iter()
    .filter(|k| before[k] != after[k])
    .map(|k| {
        // The signature's text can be long: the log says it
        // changed, not what it says.
        let v = if k == "signature" {
            json!("changed")
        } else {
            json!({"before": before[k], "after": after[k]})
        };
        (k.to_string(), v)
    })
    .collect();
    if !changed.is_empty() {
        store::audit::record(
            c,
            actor,
            "settings.updated",
            "settings",
            &Value::Object(changed),
        )?;
    }
    Ok(())
}
