//! Thread/get and Thread/changes (RFC 8621 §3): a side conversation is one
//! thread (`t<id>`, its Emails oldest first); an unrouted message is a
//! thread of its own (`tu<id>`).

use crate::store::Db;
use serde_json::{Map, Value, json};

use super::changes::{self, Event, Kind};
use super::ids::{self, ThreadRef};
use super::{Ctx, MethodError, MethodResult, get_ids};
use crate::store::view;

fn emails(ctx: &Ctx, c: &Db<'_>, id: &str) -> Result<Option<Vec<String>>, MethodError> {
    Ok(match ids::parse_thread(id) {
        Some(ThreadRef::Side(sc)) => {
            let list = view::thread_messages(c, sc)?;
            (!list.is_empty()).then(|| list.into_iter().map(|n| format!("m{n}")).collect())
        }
        Some(ThreadRef::Alone(n)) => view::placed(c, ctx.viewer(), n)?
            .filter(|p| ids::thread(p) == id)
            .map(|p| vec![ids::email(&p)]),
        None => None,
    })
}

pub fn get(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> MethodResult {
    let Some(wanted) = get_ids(ctx, args)? else {
        return Err(MethodError::with(
            "requestTooLarge",
            "give the ids of the Threads to get",
        ));
    };
    let state = view::user_states(c, ctx.role, ctx.user_id)?.thread;
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for id in wanted {
        match emails(ctx, c, &id)? {
            Some(e) => list.push(json!({"id": id, "emailIds": e})),
            None => not_found.push(id),
        }
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state.to_string(),
        "list": list,
        "notFound": not_found,
    }))
}

pub fn changes(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> MethodResult {
    let current = view::user_states(c, ctx.role, ctx.user_id)?.thread;
    let (since, max) = changes::arguments(ctx, args, current)?;
    let mut events = Vec::new();
    for mb in view::mailboxes_changed_since(c, ctx.viewer(), since)? {
        let unrouted = mb.kind == "unrouted";
        for e in view::added_since(c, mb.id, since)? {
            let p = view::placed(c, ctx.viewer(), e.message_id)?;
            let event = match (unrouted, p.and_then(|p| p.side_conversation_id)) {
                (false, Some(sc)) => {
                    let first = view::thread_first_modseq(c, sc)?;
                    Event {
                        modseq: e.modseq,
                        id: format!("t{sc}"),
                        kind: if first == Some(e.modseq) {
                            Kind::Created
                        } else {
                            Kind::Updated
                        },
                    }
                }
                _ => Event {
                    modseq: e.modseq,
                    id: format!("tu{}", e.message_id),
                    kind: Kind::Created,
                },
            };
            events.push(event);
        }
        if unrouted {
            for e in view::removed_since(c, mb.id, since)? {
                events.push(Event {
                    modseq: e.modseq,
                    id: format!("tu{}", e.message_id),
                    kind: Kind::Destroyed,
                });
            }
        }
    }
    let summary = changes::summarize(events, max)?;
    Ok(Value::Object(changes::response(
        ctx, since, current, summary,
    )))
}
