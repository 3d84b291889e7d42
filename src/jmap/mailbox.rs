//! Mailbox/get and Mailbox/changes (RFC 8621 §2).
//!
//! INBOX has role `inbox`; `Tickets/<external id>` mailboxes are children
//! (named by the external id) of a virtual mailbox `Tickets` (id
//! `tickets`) that holds no mail itself; Unrouted is listed for owners and
//! admins only; `Sent` (role `sent`) is the caller's own: what they wrote. Everything is read-only except keywords.

use crate::store::Db;
use serde_json::{Map, Value, json};

use super::changes::{self, Event, Kind};
use super::{Ctx, MethodError, MethodResult, get_ids, ids, opt_properties};
use crate::store::view::{self, Mailbox};

const PROPERTIES: &[&str] = &[
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
];

const COUNTS: &[&str] = &[
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
];

fn rights(holds_mail: bool) -> Value {
    json!({
        "mayReadItems": holds_mail,
        "mayAddItems": false,
        "mayRemoveItems": false,
        "maySetSeen": holds_mail,
        "maySetKeywords": holds_mail,
        "mayCreateChild": false,
        "mayRename": false,
        "mayDelete": false,
        "maySubmit": false,
    })
}

fn tickets_parent() -> Value {
    json!({
        "id": ids::TICKETS,
        "name": "Tickets",
        "parentId": null,
        "role": null,
        "sortOrder": 10,
        "totalEmails": 0,
        "unreadEmails": 0,
        "totalThreads": 0,
        "unreadThreads": 0,
        "myRights": rights(false),
        "isSubscribed": true,
    })
}

fn object(ctx: &Ctx, c: &Db<'_>, mb: &Mailbox) -> Result<Value, MethodError> {
    let (total, unread) = view::counts(c, mb.id, ctx.user_id)?;
    let (threads, unread_threads) = view::thread_counts(c, mb.id, ctx.user_id)?;
    let (name, parent, role, sort) = match mb.kind.as_str() {
        "inbox" => ("Inbox".to_string(), Value::Null, json!("inbox"), 0),
        "ticket" => (
            mb.name
                .strip_prefix("Tickets/")
                .unwrap_or(&mb.name)
                .to_string(),
            json!(ids::TICKETS),
            Value::Null,
            0,
        ),
        "sent" => (mb.name.clone(), Value::Null, json!("sent"), 5),
        _ => (mb.name.clone(), Value::Null, Value::Null, 20),
    };
    Ok(json!({
        "id": ids::mailbox(mb.id),
        "name": name,
        "parentId": parent,
        "role": role,
        "sortOrder": sort,
        "totalEmails": total,
        "unreadEmails": unread,
        "totalThreads": threads,
        "unreadThreads": unread_threads,
        "myRights": rights(true),
        "isSubscribed": true,
    }))
}

fn select(v: Value, props: Option<&[String]>) -> Value {
    match (v, props) {
        (Value::Object(o), Some(props)) => {
            let mut out = Map::new();
            for (k, val) in o {
                if k == "id" || props.contains(&k) {
                    out.insert(k, val);
                }
            }
            Value::Object(out)
        }
        (v, _) => v,
    }
}

pub fn get(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> MethodResult {
    let ids_arg = get_ids(ctx, args)?;
    let props = opt_properties(ctx, args, "properties")?;
    if let Some(bad) = props
        .iter()
        .flatten()
        .find(|p| !PROPERTIES.contains(&p.as_str()))
    {
        return Err(MethodError::invalid(format!("unknown property {bad}")));
    }
    let state = view::user_states(c, ctx.role, ctx.user_id)?.mailbox;
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    match ids_arg {
        None => {
            for mb in view::mailboxes(c, ctx.viewer())? {
                list.push(object(ctx, c, &mb)?);
            }
            list.push(tickets_parent());
        }
        Some(wanted) => {
            for id in wanted {
                match ids::parse_mailbox(&id) {
                    Some(None) => list.push(tickets_parent()),
                    Some(Some(n)) => match view::mailbox_by_id(c, ctx.viewer(), n)? {
                        Some(mb) => list.push(object(ctx, c, &mb)?),
                        None => not_found.push(id),
                    },
                    None => not_found.push(id),
                }
            }
        }
    }
    let list: Vec<Value> = list
        .into_iter()
        .map(|v| select(v, props.as_deref()))
        .collect();
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state.to_string(),
        "list": list,
        "notFound": not_found,
    }))
}

pub fn changes(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> MethodResult {
    let current = view::user_states(c, ctx.role, ctx.user_id)?.mailbox;
    let (since, max) = changes::arguments(ctx, args, current)?;
    let mut events = Vec::new();
    for mb in view::mailboxes_changed_since(c, ctx.viewer(), since)? {
        let id = ids::mailbox(mb.id);
        // INBOX, Unrouted and Sent stand from the start (Mailbox/get lists them
        // empty); a ticket's mailbox comes with its first message.
        let created = if mb.kind == "ticket" {
            view::mailbox_created_modseq(c, mb.id)?
        } else {
            0
        };
        if created > since {
            events.push(Event {
                modseq: created,
                id: id.clone(),
                kind: Kind::Created,
            });
        }
        let moved: Vec<i64> = view::added_since(c, mb.id, since)?
            .into_iter()
            .chain(view::removed_since(c, mb.id, since)?)
            .map(|e| e.modseq)
            .collect();
        if moved.is_empty() {
            events.push(Event {
                modseq: mb.highest_modseq,
                id: id.clone(),
                kind: Kind::Updated,
            });
        }
        for modseq in moved {
            events.push(Event {
                modseq,
                id: id.clone(),
                kind: Kind::Updated,
            });
        }
    }
    // The user's own flag changes move unread counts.
    for (message, flags) in view::flags_changed_since(c, ctx.user_id, since)? {
        if let Some(p) = view::placed(c, ctx.viewer(), message)? {
            for mb in p.mailbox_ids {
                events.push(Event {
                    modseq: flags.modseq,
                    id: ids::mailbox(mb),
                    kind: Kind::Updated,
                });
            }
        }
    }
    let summary = changes::summarize(events, max)?;
    let any_updated = !summary.updated.is_empty();
    let mut out = changes::response(ctx, since, current, summary);
    out.insert(
        "updatedProperties".into(),
        if any_updated {
            json!(COUNTS)
        } else {
            Value::Null
        },
    );
    Ok(Value::Object(out))
}
