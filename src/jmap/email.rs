//! Email/get, Email/set (keywords only) and Email/changes (RFC 8621 §4).
//!
//! Keywords are the caller's own flags: `$seen`, `$flagged`, `$answered`.
//! Everything else about an Email is immutable here: mail is filed by the
//! gateway and sent through the HTTP API.

use std::collections::HashMap;

use crate::store::Db;
use serde_json::{Map, Value, json};

use super::changes::{self, Event, Kind};
use super::mime::{self, BodyProps, Form, HeaderProp};
use super::{
    Ctx, MethodError, MethodResult, get_ids, ids, opt_bool, opt_properties, opt_str, opt_strings,
    opt_uint, parse_state,
};
use crate::store::view::{self, FlagOp, FlagSet, Flags, Placed};

pub const DEFAULT_PROPERTIES: &[&str] = &[
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
];

/// Properties that need no parsing of the message.
const STORED: &[&str] = &[
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
];

const PARSED: &[&str] = &[
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
    "headers",
    "bodyStructure",
];

/// The convenience properties: (property, header, form).
const CONVENIENCE: &[(&str, &str, Form)] = &[
    ("messageId", "Message-ID", Form::MessageIds),
    ("inReplyTo", "In-Reply-To", Form::MessageIds),
    ("references", "References", Form::MessageIds),
    ("sender", "Sender", Form::Addresses),
    ("from", "From", Form::Addresses),
    ("to", "To", Form::Addresses),
    ("cc", "Cc", Form::Addresses),
    ("bcc", "Bcc", Form::Addresses),
    ("replyTo", "Reply-To", Form::Addresses),
    ("subject", "Subject", Form::Text),
    ("sentAt", "Date", Form::Date),
];

pub fn keywords(f: &Flags) -> Value {
    let mut o = Map::new();
    if f.seen {
        o.insert("$seen".into(), json!(true));
    }
    if f.flagged {
        o.insert("$flagged".into(), json!(true));
    }
    if f.answered {
        o.insert("$answered".into(), json!(true));
    }
    if f.unverified {
        o.insert("$unverified".into(), json!(true));
    }
    Value::Object(o)
}

struct Wanted {
    props: Vec<String>,
    headers: Vec<(String, HeaderProp)>,
    body: BodyProps,
    fetch_text: bool,
    fetch_html: bool,
    fetch_all: bool,
    max_value_bytes: usize,
}

impl Wanted {
    fn parse(ctx: &Ctx, args: &Map<String, Value>) -> Result<Wanted, MethodError> {
        let list = opt_properties(ctx, args, "properties")?
            .unwrap_or_else(|| DEFAULT_PROPERTIES.iter().map(|s| s.to_string()).collect());
        let mut props = Vec::new();
        let mut headers = Vec::new();
        for p in list {
            if let Some(h) = mime::header_prop(&p)? {
                headers.push((p, h));
            } else if STORED.contains(&p.as_str()) || PARSED.contains(&p.as_str()) {
                props.push(p);
            } else {
                return Err(MethodError::invalid(format!("unknown property {p}")));
            }
        }
        let max = opt_uint(args, "maxBodyValueBytes")?.unwrap_or(0);
        Ok(Wanted {
            props,
            headers,
            body: BodyProps::parse(opt_properties(ctx, args, "bodyProperties")?)?,
            fetch_text: opt_bool(args, "fetchTextBodyValues")?,
            fetch_html: opt_bool(args, "fetchHTMLBodyValues")?,
            fetch_all: opt_bool(args, "fetchAllBodyValues")?,
            max_value_bytes: usize::try_from(max).unwrap_or(usize::MAX),
        })
    }

    fn wants(&self, p: &str) -> bool {
        self.props.iter().any(|x| x == p)
    }

    fn needs_parse(&self) -> bool {
        !self.headers.is_empty() || self.props.iter().any(|p| PARSED.contains(&p.as_str()))
    }
}

fn object(
    c: &Db<'_>,
    p: &Placed,
    flags: &HashMap<i64, Flags>,
    w: &Wanted,
) -> Result<Value, MethodError> {
    let mut o = Map::new();
    o.insert("id".into(), json!(ids::email(p)));
    if w.wants("blobId") {
        o.insert("blobId".into(), json!(ids::raw_blob(p.message_id)));
    }
    if w.wants("threadId") {
        o.insert("threadId".into(), json!(ids::thread(p)));
    }
    if w.wants("mailboxIds") {
        let m: Map<String, Value> = p
            .mailbox_ids
            .iter()
            .map(|b| (ids::mailbox(*b), json!(true)))
            .collect();
        o.insert("mailboxIds".into(), Value::Object(m));
    }
    if w.wants("keywords") {
        let f = flags.get(&p.message_id).copied().unwrap_or_default();
        o.insert("keywords".into(), keywords(&f));
    }
    if w.wants("size") {
        o.insert("size".into(), json!(p.size));
    }
    if w.wants("receivedAt") {
        o.insert("receivedAt".into(), json!(super::utc_date(p.received_at)));
    }
    if !w.needs_parse() {
        return Ok(Value::Object(o));
    }
    let raw = view::raw(c, p.message_id)?.unwrap_or_default();
    let msg = mime::parse(&raw);
    for (prop, header, form) in CONVENIENCE {
        if w.wants(prop) {
            o.insert(prop.to_string(), mime::convenience(&msg, header, *form));
        }
    }
    if w.wants("headers") {
        o.insert(
            "headers".into(),
            mime::all_headers(&msg.raw_message, msg.headers()),
        );
    }
    for (key, h) in &w.headers {
        o.insert(
            key.clone(),
            mime::header_value(&msg.raw_message, msg.headers(), h),
        );
    }
    if w.wants("hasAttachment") {
        o.insert("hasAttachment".into(), json!(mime::has_attachment(&msg)));
    }
    if w.wants("preview") {
        o.insert("preview".into(), json!(mime::preview(&msg)));
    }
    let list = |parts: &[u32]| -> Value {
        Value::Array(
            parts
                .iter()
                .map(|&i| mime::body_part(&msg, p.message_id, i as usize, &w.body, false, 0))
                .collect(),
        )
    };
    if w.wants("bodyStructure") {
        o.insert(
            "bodyStructure".into(),
            mime::body_part(&msg, p.message_id, 0, &w.body, true, 0),
        );
    }
    if w.wants("textBody") {
        o.insert("textBody".into(), list(&msg.text_body));
    }
    if w.wants("htmlBody") {
        o.insert("htmlBody".into(), list(&msg.html_body));
    }
    if w.wants("attachments") {
        let att: Vec<u32> = mime::attachment_parts(&msg)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        o.insert("attachments".into(), list(&att));
    }
    if w.wants("bodyValues") {
        let mut values = Map::new();
        let mut take = |parts: &[u32]| {
            for &i in parts {
                let key = i.to_string();
                if values.contains_key(&key) {
                    continue;
                }
                if let Some((text, problem)) = mime::part_text(&msg, i as usize) {
                    values.insert(key, mime::body_value(text, problem, w.max_value_bytes));
                }
            }
        };
        if w.fetch_text || w.fetch_all {
            take(&msg.text_body);
        }
        if w.fetch_html || w.fetch_all {
            take(&msg.html_body);
        }
        o.insert("bodyValues".into(), Value::Object(values));
    }
    Ok(Value::Object(o))
}

pub fn get(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> MethodResult {
    let wanted = Wanted::parse(ctx, args)?;
    let state = view::user_states(c, ctx.role, ctx.user_id)?.email;
    let requested = match get_ids(ctx, args)? {
        Some(i) => i,
        None => {
            let max = ctx.limits.max_objects_in_get;
            let all = super::query::visible_ids(ctx, c, max.saturating_add(1))?;
            if all.len() > max {
                return Err(MethodError::with(
                    "requestTooLarge",
                    "there are too many Emails to get them all; give ids",
                ));
            }
            all
        }
    };
    let mut found = Vec::new();
    let mut not_found = Vec::new();
    for id in requested {
        match ids::find_email(ctx, c, &id)? {
            Some(p) => found.push(p),
            None => not_found.push(id),
        }
    }
    let message_ids: Vec<i64> = found.iter().map(|p| p.message_id).collect();
    let flags = view::flags(c, ctx.user_id, &message_ids)?;
    let mut list = Vec::with_capacity(found.len());
    for p in &found {
        let o = object(c, p, &flags, &wanted)?;
        ctx.charge(&o)?;
        list.push(o);
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state.to_string(),
        "list": list,
        "notFound": not_found,
    }))
}

// ---------------------------------------------------------------------------
// Email/set

fn set_error(kind: &str, description: &str) -> Value {
    json!({"type": kind, "description": description})
}

/// The flag named by a keyword (case-insensitive), if it is one we keep.
fn keyword_flag(k: &str) -> Option<FlagSet> {
    let mut s = FlagSet::default();
    match k.to_ascii_lowercase().as_str() {
        "$seen" => s.seen = true,
        "$flagged" => s.flagged = true,
        "$answered" => s.answered = true,
        _ => return None,
    }
    Some(s)
}

fn union(a: FlagSet, b: FlagSet) -> FlagSet {
    FlagSet {
        seen: a.seen || b.seen,
        flagged: a.flagged || b.flagged,
        answered: a.answered || b.answered,
    }
}

/// Turns one update (a PatchObject) into flag operations, or a SetError.
fn patch_ops(patch: &Value) -> Result<Vec<(FlagOp, FlagSet)>, Value> {
    let Value::Object(patch) = patch else {
        return Err(set_error(
            "invalidPatch",
            "an update must be a patch object",
        ));
    };
    let unsupported = |prop: &str| {
        let mut e = set_error(
            "invalidProperties",
            "only $seen, $flagged and $answered can be set (as true), or removed",
        );
        e["properties"] = json!([prop]);
        e
    };
    let mut ops = Vec::new();
    for (path, value) in patch {
        if path == "keywords" {
            let Value::Object(all) = value else {
                return Err(unsupported("keywords"));
            };
            let mut set = FlagSet::default();
            for (k, v) in all {
                match (keyword_flag(k), v) {
                    (Some(f), Value::Bool(true)) => set = union(set, f),
                    // The gateway's own keyword, echoed back with the others:
                    // kept as it is whatever the client sends.
                    (None, Value::Bool(true)) if k.eq_ignore_ascii_case("$unverified") => {}
                    _ => return Err(unsupported("keywords")),
                }
            }
            ops.push((FlagOp::Replace, set));
        } else if let Some(k) = path.strip_prefix("keywords/") {
            let k = k.replace("~1", "/").replace("~0", "~");
            let Some(f) = keyword_flag(&k) else {
                return Err(unsupported(path));
            };
            match value {
                Value::Bool(true) => ops.push((FlagOp::Add, f)),
                Value::Null => ops.push((FlagOp::Remove, f)),
                _ => return Err(unsupported(path)),
            }
        } else if path == "mailboxIds" || path.starts_with("mailboxIds/") {
            return Err(set_error(
                "forbidden",
                "mail is filed by the gateway; mailboxIds cannot change",
            ));
        } else {
            let mut e = set_error("invalidProperties", "this property cannot be changed");
            e["properties"] = json!([path]);
            return Err(e);
        }
    }
    Ok(ops)
}

/// Email/set: keyword updates; creation and destruction are refused per
/// item. Runs on the writer: store errors roll the whole call back.
pub fn set(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> crate::store::Result<MethodResult> {
    if let Err(e) = ctx.check_account(args) {
        return Ok(Err(e));
    }
    let before = view::user_states(c, ctx.role, ctx.user_id)?.email;
    match opt_str(args, "ifInState") {
        Err(e) => return Ok(Err(e)),
        Ok(Some(s)) if parse_state(s) != Some(before) => {
            return Ok(Err(MethodError::with(
                "stateMismatch",
                "ifInState does not match the current state",
            )));
        }
        Ok(_) => {}
    }
    let object_arg = |key: &str| -> Result<Option<&Map<String, Value>>, MethodError> {
        match args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(MethodError::invalid(format!("{key} must be an object"))),
        }
    };
    let (create, update) = match (object_arg("create"), object_arg("update")) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
    };
    let destroy = match opt_strings(args, "destroy") {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let total = create.map_or(0, |m| m.len())
        + update.map_or(0, |m| m.len())
        + destroy.as_ref().map_or(0, |d| d.len());
    let max = ctx.limits.max_objects_in_set;
    if total > max {
        return Ok(Err(MethodError::with(
            "requestTooLarge",
            format!("at most {max} items in one set"),
        )));
    }
    let mut not_created = Map::new();
    for key in create.into_iter().flat_map(|m| m.keys()) {
        not_created.insert(
            key.clone(),
            set_error(
                "forbidden",
                "Emails cannot be created here; send through the HTTP API",
            ),
        );
    }
    let mut not_destroyed = Map::new();
    for id in destroy.into_iter().flatten() {
        let e = if ids::find_email(ctx, c, &id)?.is_some() {
            set_error("forbidden", "Emails cannot be destroyed here")
        } else {
            set_error("notFound", "no such Email")
        };
        not_destroyed.insert(id, e);
    }
    let mut updated = Map::new();
    let mut not_updated = Map::new();
    for (id, patch) in update.into_iter().flatten() {
        let Some(p) = ids::find_email(ctx, c, id)? else {
            not_updated.insert(id.clone(), set_error("notFound", "no such Email"));
            continue;
        };
        match patch_ops(patch) {
            Err(e) => {
                not_updated.insert(id.clone(), e);
            }
            Ok(ops) => {
                for (op, set) in ops {
                    view::store_flags(c, ctx.user_id, p.message_id, op, set)?;
                }
                updated.insert(id.clone(), Value::Null);
            }
        }
    }
    let after = view::user_states(c, ctx.role, ctx.user_id)?.email;
    let or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    Ok(Ok(json!({
        "accountId": ctx.account_id,
        "oldState": before.to_string(),
        "newState": after.to_string(),
        "created": null,
        "updated": or_null(updated),
        "destroyed": null,
        "notCreated": or_null(not_created),
        "notUpdated": or_null(not_updated),
        "notDestroyed": or_null(not_destroyed),
    })))
}

// ---------------------------------------------------------------------------
// Email/changes

/// What happened to the caller's Emails after `since`.
pub fn events(ctx: &Ctx, c: &Db<'_>, since: i64) -> Result<Vec<Event>, MethodError> {
    let mut events = Vec::new();
    for mb in view::mailboxes_changed_since(c, ctx.viewer(), since)? {
        let unrouted = mb.kind == "unrouted";
        let id_of = |n: i64| {
            if unrouted {
                format!("u{n}")
            } else {
                format!("m{n}")
            }
        };
        // Each message is added to its mailboxes once, all at one modseq:
        // an addition after `since` is the Email's creation.
        for e in view::added_since(c, mb.id, since)? {
            events.push(Event {
                modseq: e.modseq,
                id: id_of(e.message_id),
                kind: Kind::Created,
            });
        }
        for e in view::removed_since(c, mb.id, since)? {
            let still = view::placed(c, ctx.viewer(), e.message_id)?
                .filter(|p| p.unrouted == unrouted)
                .is_some();
            events.push(Event {
                modseq: e.modseq,
                id: id_of(e.message_id),
                kind: if still {
                    Kind::Updated
                } else {
                    Kind::Destroyed
                },
            });
        }
    }
    for (message, flags) in view::flags_changed_since(c, ctx.user_id, since)? {
        if let Some(p) = view::placed(c, ctx.viewer(), message)? {
            // A change from before the Email took its present id (flags
            // set on u<n> before it became m<n>) belongs to the old id;
            // the new id's creation, after `since` then, carries it.
            if flags.modseq < p.added_modseq {
                continue;
            }
            events.push(Event {
                modseq: flags.modseq,
                id: ids::email(&p),
                kind: Kind::Updated,
            });
        }
    }
    Ok(events)
}

pub fn changes(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> MethodResult {
    let current = view::user_states(c, ctx.role, ctx.user_id)?.email;
    let (since, max) = changes::arguments(ctx, args, current)?;
    let summary = changes::summarize(events(ctx, c, since)?, max)?;
    Ok(Value::Object(changes::response(
        ctx, since, current, summary,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_become_flag_operations() {
        let ops =
            patch_ops(&json!({"keywords/$seen": true, "keywords/$Flagged": null})).expect("valid");
        assert_eq!(ops.len(), 2);
        assert!(ops.contains(&(
            FlagOp::Add,
            FlagSet {
                seen: true,
                ..FlagSet::default()
            }
        )));
        let ops = patch_ops(&json!({"keywords": {"$answered": true}})).expect("valid");
        assert_eq!(
            ops,
            vec![(
                FlagOp::Replace,
                FlagSet {
                    answered: true,
                    ..FlagSet::default()
                }
            )]
        );
        assert_eq!(
            patch_ops(&json!({"keywords/$draft": true})).unwrap_err()["type"],
            "invalidProperties"
        );
        assert_eq!(
            patch_ops(&json!({"keywords": {"$seen": false}})).unwrap_err()["type"],
            "invalidProperties"
        );
        assert_eq!(
            patch_ops(&json!({"mailboxIds/b1": true})).unwrap_err()["type"],
            "forbidden"
        );
        assert_eq!(
            patch_ops(&json!({"subject": "x"})).unwrap_err()["type"],
            "invalidProperties"
        );
        assert_eq!(patch_ops(&json!([])).unwrap_err()["type"], "invalidPatch");
    }
}
