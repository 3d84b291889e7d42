//! Tags on side conversations (SPEC §15): what a tag may be, and changing
//! a side conversation's tags (`PATCH /api/side-conversations/{id}`, the
//! console's thread page).

use super::{Actor, ServiceError, invalid, load_sc};
use crate::store::{self, Db};

/// Most tags on one side conversation.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 50;

/// Checks a list of tags (`field` names it in a refusal): each trimmed, 1
/// to [`MAX_TAG_CHARS`] characters, no control characters or commas;
/// duplicates (ignoring case) dropped, the first spelling kept; at most
/// [`MAX_TAGS`].
pub fn check_tags(field: &str, list: &[String]) -> Result<Vec<String>, ServiceError> {
    let mut out: Vec<String> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let t = t.trim();
        if t.is_empty() {
            return Err(invalid(&format!("{field}[{i}]"), "must not be empty"));
        }
        if t.chars().count() > MAX_TAG_CHARS {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!("at most {MAX_TAG_CHARS} characters"),
            ));
        }
        if t.chars().any(|c| c.is_control() || c == ',') {
            return Err(invalid(
                &format!("{field}[{i}]"),
                "must not contain control characters or commas",
            ));
        }
        if !out.iter().any(|o| o.to_lowercase() == t.to_lowercase()) {
            out.push(t.to_string());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(invalid(field, format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

/// Tags typed in one text field, separated by commas (the console's form).
pub fn split_tags(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// What `PATCH /api/side-conversations/{id}` changes; `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default)]
pub struct ScPatch {
    /// Checked by [`check_tags`].
    pub tags: Option<Vec<String>>,
    /// `Some(None)`: no reminder; `Some(Some(ms))`: after that delay.
    pub remind_after: Option<Option<i64>>,
    pub nudge_vendor: Option<bool>,
}

/// Applies a checked patch inside a transaction; 404 for an unknown side
/// conversation.
pub fn patch_in(
    db: &Db<'_>,
    _actor: &Actor,
    sc_id: i64,
    patch: &ScPatch,
) -> Result<(), ServiceError> {
    let sc = load_sc(db, sc_id)?;
    if let Some(tags) = &patch.tags {
        store::waiting::set_tags(db, sc.id, tags)?;
        store::side_conversations::touch(db, sc.id, crate::model::now_ms())?;
    }
    if patch.remind_after.is_some() || patch.nudge_vendor.is_some() {
        let (after, nudge) = store::waiting::reminder_settings(db, sc.id)?.unwrap_or((None, false));
        store::waiting::set_reminder(
            db,
            sc.id,
            patch.remind_after.unwrap_or(after),
            patch.nudge_vendor.unwrap_or(nudge),
        )?;
    }
    Ok(())
}
