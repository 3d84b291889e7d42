//! The JSON shapes of SPEC §7 (side conversation, message, parent), built
//! from the store's records. Times are RFC 3339 UTC strings.

use serde_json::{Value, json};

use crate::conversations;
use crate::model::{Direction, ParticipantRole, rfc3339};
use crate::store::{self, Db, Result, StoreError, outbox};

fn time(ms: Option<i64>) -> Value {
    ms.map(|m| json!(rfc3339(m))).unwrap_or(Value::Null)
}

fn json_text(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// Characters of each body (`text`, `html`, `visible_reply`) a message
/// carries in a list (a thread, the unrouted list); the whole message is
/// `GET /api/messages/{id}`. A thread of 40 replies of 5 MB would otherwise
/// be one answer of 400 MB.
pub const LIST_BODY_CHARS: usize = 16 * 1024;

/// One message (SPEC §7 message shape), whole.
pub fn message(db: &Db<'_>, id: i64) -> Result<Value> {
    message_with(db, id, None)
}

/// One message as a list shows it: each body cut at [`LIST_BODY_CHARS`]
/// characters (`"truncated": true` says so).
pub fn message_in_list(db: &Db<'_>, id: i64) -> Result<Value> {
    message_with(db, id, Some(LIST_BODY_CHARS))
}

fn message_with(db: &Db<'_>, id: i64, cap: Option<usize>) -> Result<Value> {
    let m = store::messages::get(db, id, cap)?.ok_or(StoreError::NotFound)?;
    let attachments: Vec<Value> = store::messages::attachments(db, id)?
        .into_iter()
        .map(|a| {
            json!({
                "index": a.index,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "content_id": a.content_id,
            })
        })
        .collect();
    let delivery = if m.direction == Direction::Out {
        json!(
            outbox::for_message(db, id)?
                .into_iter()
                .map(|d| json!({
                    "recipient": d.recipient,
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "next_attempt_at": time(d.next_attempt_at),
                    "sent_at": time(d.sent_at),
                }))
                .collect::<Vec<_>>()
        )
    } else {
        Value::Null
    };
    let auth = json_text(m.auth.as_deref());
    let auth = if auth.is_null() {
        Value::Null
    } else {
        json!({"spf": auth["spf"], "dkim": auth["dkim"], "dmarc": auth["dmarc"], "arc": auth["arc"], "detail": auth["detail"]})
    };
    let bounce = json_text(m.bounce.as_deref());
    let bounce = if bounce.is_null() {
        Value::Null
    } else {
        json!({"recipient": bounce["recipient"], "status": bounce["status"], "diagnostic": bounce["diagnostic"]})
    };
    Ok(json!({
        "id": m.id,
        "side_conversation_id": m.side_conversation_id,
        "direction": m.direction.as_str(),
        "message_id": m.message_id,
        "in_reply_to": m.in_reply_to,
        "references": serde_json::from_str::<Value>(&m.references).unwrap_or(json!([])),
        "from": m.from.map(|f| json!({"name": f.name, "email": f.email})),
        "reply_to": m.reply_to,
        "to": serde_json::from_str::<Value>(&m.to).unwrap_or(json!([])),
        "cc": serde_json::from_str::<Value>(&m.cc).unwrap_or(json!([])),
        "subject": m.subject,
        "date": time(m.date),
        "received_at": rfc3339(m.received_at),
        "text": m.text,
        "html": m.html,
        "visible_reply": m.visible_reply,
        "attachments": attachments,
        "kind": m.kind.as_str(),
        "flags": serde_json::from_str::<Value>(&m.flags).unwrap_or(json!([])),
        "route": m.route.as_str(),
        "auth": auth,
        "delivery": delivery,
        "bounce": bounce,
        "truncated": m.truncated,
    }))
}

/// Which messages of a thread to include: at most `limit` after message id
/// `after`, in order.
#[derive(Debug, Clone, Copy)]
pub struct MessagePage {
    pub limit: i64,
    pub after: i64,
}

/// The side conversation; with a page of its messages in order (bodies cut
/// as in every list, see [`LIST_BODY_CHARS`]) when `messages` is given, and
/// `messages_next_cursor` for the next page.
pub fn side_conversation(
    db: &Db<'_>,
    domain: &str,
    public_url: &str,
    id: i64,
    messages: Option<MessagePage>,
) -> Result<Value> {
    let sc = store::side_conversations::get(db, id)?.ok_or(StoreError::NotFound)?;
    let people = store::participants::list(db, sc.id)?;
    let participants: Vec<&String> = people.iter().map(|p| &p.email).collect();
    let links = store::portal::links(db, sc.id)?;
    let link_url = |t: &str| format!("{public_url}/p/{t}");
    // The shared link of an older side conversation; else the first
    // recipient's own link (each recipient's is in `portal_links`).
    let portal_url = match (&sc.portal_token, sc.portal_revoked) {
        (Some(t), false) => Some(link_url(t)),
        _ => people
            .iter()
            .filter(|p| p.role == ParticipantRole::To)
            .chain(people.iter())
            .find_map(|p| {
                links
                    .iter()
                    .find(|(le, _, rev)| le.eq_ignore_ascii_case(&p.email) && !rev)
                    .map(|(_, t, _)| link_url(t))
            }),
    };
    let portal_links: Vec<Value> = links
        .iter()
        .map(|(email, t, rev)| json!({"email": email, "url": link_url(t), "revoked": rev}))
        .collect();
    let waiting = store::waiting::state(db, sc.id)?;
    let tags = store::waiting::tags(db, sc.id)?;
    let (remind_after, nudge_vendor) =
        store::waiting::reminder_settings(db, sc.id)?.unwrap_or((None, false));
    let mut v = json!({
        "id": sc.id,
        "parent": sc.parent,
        "token": sc.token,
        "reply_address": conversations::reply_address(db, domain, &sc.token, &sc.sender_email)?,
        "subject": sc.subject,
        "status": sc.status.as_str(),
        "sender": sc.sender_email,
        "participants": participants,
        "assignee": sc.assignee,
        "portal_url": portal_url,
        "portal_links": portal_links,
        "created_at": rfc3339(sc.created_at),
        "updated_at": rfc3339(sc.updated_at),
        "waiting": waiting.map(|(w, _)| w.as_str()),
        "waiting_since": time(waiting.map(|(_, since)| since)),
        "tags": tags,
        "remind_after": remind_after.map(crate::model::age_spec),
        "nudge_vendor": nudge_vendor,
    });
    if let Some(page) = messages {
        let mut ids = store::messages::thread_page(db, sc.id, page.after, page.limit + 1)?;
        let more = ids.len() as i64 > page.limit;
        ids.truncate(page.limit.max(0) as usize);
        let next = if more {
            ids.last().map(|id| format!("c{id}"))
        } else {
            None
        };
        let messages = ids
            .into_iter()
            .map(|m| message_in_list(db, m))
            .collect::<Result<Vec<_>>>()?;
        v["messages"] = json!(messages);
        v["messages_next_cursor"] = json!(next);
    }
    Ok(v)
}

/// A parent with its side conversations.
pub fn parent(db: &Db<'_>, domain: &str, public_url: &str, external_id: &str) -> Result<Value> {
    let p = store::parents::get(db, external_id)?.ok_or(StoreError::NotFound)?;
    let scs = store::side_conversations::ids_of_parent(db, p.id, false)?
        .into_iter()
        .map(|s| side_conversation(db, domain, public_url, s, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "external_id": p.external_id,
        "subject": p.subject,
        "requester": {"name": p.requester_name, "email": p.requester_email},
        "status": p.status.as_str(),
        "snoozed_until": time(p.snoozed_until),
        "assignee": p.assignee,
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
        "side_conversations": scs,
    }))
}
