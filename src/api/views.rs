//! The JSON shapes of SPEC §7 (side conversation, message, parent), read
//! from the store. Times are RFC 3339 UTC strings.

use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use crate::model::{Token, rfc3339};
use crate::outbound::compose::{self, ReplyMode};
use crate::store::Db;
use crate::store::{Result, StoreError, outbox};

fn time(ms: Option<i64>) -> Value {
    ms.map(|m| json!(rfc3339(m))).unwrap_or(Value::Null)
}

fn json_text(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Where vendors reply for this side conversation.
pub fn reply_address(conn: &Db<'_>, domain: &str, token: &str, sender: &str) -> Result<String> {
    let mode: Option<String> = conn
        .query_row(
            "SELECT reply_mode FROM senders WHERE email = ?1",
            [sender],
            |r| r.get(0),
        )
        .optional()?;
    let mode = mode
        .and_then(|m| ReplyMode::parse(&m))
        .unwrap_or(ReplyMode::Gateway);
    let token: Token = token
        .parse()
        .map_err(|_| StoreError::Corrupt("malformed token".into()))?;
    Ok(compose::reply_to(mode, sender, &token, domain)
        // Reply mode `none`: replies come through forwarding to the sender itself.
        .unwrap_or_else(|| sender.to_string()))
}

/// Characters of each body (`text`, `html`, `visible_reply`) a message
/// carries in a list (a thread, the unrouted list); the whole message is
/// `GET /api/messages/{id}`. A thread of 40 replies of 5 MB would otherwise
/// be one answer of 400 MB.
pub const LIST_BODY_CHARS: usize = 16 * 1024;

/// One message (SPEC §7 message shape), whole.
pub fn message(conn: &Db<'_>, id: i64) -> Result<Value> {
    message_with(conn, id, None)
}

/// One message as a list shows it: each body cut at [`LIST_BODY_CHARS`]
/// characters (`"truncated": true` says so).
pub fn message_in_list(conn: &Db<'_>, id: i64) -> Result<Value> {
    message_with(conn, id, Some(LIST_BODY_CHARS))
}

/// `body` cut at `cap` characters (it was read with one more, to tell).
fn capped(body: Option<String>, cap: Option<usize>, truncated: &mut bool) -> Option<String> {
    let (Some(mut text), Some(cap)) = (body, cap) else {
        return None;
    };
    if let Some((end, _)) = text.char_indices().nth(cap) {
        text.truncate(end);
        *truncated = true;
    }
    Some(text)
}

fn message_with(conn: &Db<'_>, id: i64, cap: Option<usize>) -> Result<Value> {
    // Capped, only a prefix of each body is read.
    let body = |col: &str| match cap {
        Some(n) => format!("substr({col}, 1, {})", n + 1),
        None => col.to_string(),
    };
    let row = conn.query_row(
        &format!(
            "SELECT id, side_conversation_id, direction, message_id, in_reply_to, refs, from_name, from_email,
                reply_to, to_addrs, cc_addrs, subject, date, received_at, {}, {},
                {},
                kind, flags, route, auth, bounce
         FROM messages WHERE id = ?1",
            body("text_body"),
            body("html_body"),
            match cap {
                Some(n) => format!(
                    "substr(coalesce(visible_reply, text_body), 1, {})",
                    n + 1
                ),
                None => crate::store::messages::visible_reply_sql(""),
            }
        ),
        [id],
        |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, String>(10)?,
                ),
                (
                    r.get::<_, String>(11)?,
                    r.get::<_, Option<i64>>(12)?,
                    r.get::<_, i64>(13)?,
                    r.get::<_, Option<String>>(14)?,
                    r.get::<_, Option<String>>(15)?,
                    r.get::<_, Option<String>>(16)?,
                    r.get::<_, String>(17)?,
                    r.get::<_, String>(18)?,
                    r.get::<_, String>(19)?,
                    r.get::<_, Option<String>>(20)?,
                    r.get::<_, Option<String>>(21)?,
                ),
            ))
        },
    )?;
    let (
        (id, sc, direction, message_id, in_reply_to, refs, from_name, from_email, reply_to, to, cc),
        (subject, date, received_at, text, html, visible, kind, flags, route, auth, bounce),
    ) = row;
    let mut truncated = false;
    let (text, html, visible) = match cap {
        None => (text, html, visible),
        Some(_) => (
            capped(text, cap, &mut truncated),
            capped(html, cap, &mut truncated),
            // Read raw here (no SQL trimming of a long body): trimmed now.
            capped(visible, cap, &mut truncated).map(|v| crate::store::messages::plain_visible(&v)),
        ),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT idx, filename, content_type, size, content_id FROM attachments WHERE message_id = ?1 ORDER BY idx",
    )?;
    let attachments: Vec<Value> = stmt
        .query_map([id], |r| {
            Ok(json!({
                "index": r.get::<_, i64>(0)?,
                "filename": r.get::<_, Option<String>>(1)?,
                "content_type": r.get::<_, String>(2)?,
                "size": r.get::<_, i64>(3)?,
                "content_id": r.get::<_, Option<String>>(4)?,
            }))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let delivery = if direction == "out" {
        json!(
            outbox::for_message(conn, id)?
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
    let auth = json_text(auth);
    let auth = if auth.is_null() {
        Value::Null
    } else {
        json!({"spf": auth["spf"], "dkim": auth["dkim"], "dmarc": auth["dmarc"], "arc": auth["arc"], "detail": auth["detail"]})
    };
    let bounce = json_text(bounce);
    let bounce = if bounce.is_null() {
        Value::Null
    } else {
        json!({"recipient": bounce["recipient"], "status": bounce["status"], "diagnostic": bounce["diagnostic"]})
    };
    Ok(json!({
        "id": id,
        "side_conversation_id": sc,
        "direction": direction,
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": serde_json::from_str::<Value>(&refs).unwrap_or(json!([])),
        "from": from_email.as_ref().map(|e| json!({"name": from_name, "email": e})),
        "reply_to": reply_to,
        "to": serde_json::from_str::<Value>(&to).unwrap_or(json!([])),
        "cc": serde_json::from_str::<Value>(&cc).unwrap_or(json!([])),
        "subject": subject,
        "date": time(date),
        "received_at": rfc3339(received_at),
        "text": text,
        "html": html,
        "visible_reply": visible,
        "attachments": attachments,
        "kind": kind,
        "flags": serde_json::from_str::<Value>(&flags).unwrap_or(json!([])),
        "route": route,
        "auth": auth,
        "delivery": delivery,
        "bounce": bounce,
        "truncated": truncated,
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
    conn: &Db<'_>,
    domain: &str,
    public_url: &str,
    id: i64,
    messages: Option<MessagePage>,
) -> Result<Value> {
    let (sid, ext, token, portal, revoked, status, subject, sender, assignee, created, updated) = conn.query_row(
        "SELECT s.id, p.external_id, s.token, s.portal_token, s.portal_revoked, s.status, s.subject,
                s.sender_email, u.email, s.created_at, s.updated_at
         FROM side_conversations s JOIN parents p ON p.id = s.parent_id
         LEFT JOIN users u ON u.id = p.assignee_id
         WHERE s.id = ?1",
        [id],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, i64>(9)?,
                r.get::<_, i64>(10)?,
            ))
        },
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT email, role FROM participants WHERE side_conversation_id = ?1
         ORDER BY added_at, rowid",
    )?;
    let people: Vec<(String, String)> = stmt
        .query_map([sid], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let participants: Vec<&String> = people.iter().map(|(e, _)| e).collect();
    let links = crate::store::portal::links(conn, sid)?;
    let link_url = |t: &str| format!("{public_url}/p/{t}");
    // The shared link of an older side conversation; else the first
    // recipient's own link (each recipient's is in `portal_links`).
    let portal_url = match (portal, revoked) {
        (Some(t), false) => Some(link_url(&t)),
        _ => people
            .iter()
            .filter(|(_, role)| role == "to")
            .chain(people.iter())
            .find_map(|(e, _)| {
                links
                    .iter()
                    .find(|(le, _, rev)| le.eq_ignore_ascii_case(e) && !rev)
                    .map(|(_, t, _)| link_url(t))
            }),
    };
    let portal_links: Vec<Value> = links
        .iter()
        .map(|(email, t, rev)| json!({"email": email, "url": link_url(t), "revoked": rev}))
        .collect();
    let mut v = json!({
        "id": sid,
        "parent": ext,
        "token": token,
        "reply_address": reply_address(conn, domain, &token, &sender)?,
        "subject": subject,
        "status": status,
        "sender": sender,
        "participants": participants,
        "assignee": assignee,
        "portal_url": portal_url,
        "portal_links": portal_links,
        "created_at": rfc3339(created),
        "updated_at": rfc3339(updated),
    });
    if let Some(page) = messages {
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM messages WHERE side_conversation_id = ?1 AND id > ?2
             ORDER BY id LIMIT ?3",
        )?;
        let mut ids: Vec<i64> = stmt
            .query_map(params![sid, page.after, page.limit + 1], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let more = ids.len() as i64 > page.limit;
        ids.truncate(page.limit.max(0) as usize);
        let next = if more {
            ids.last().map(|id| format!("c{id}"))
        } else {
            None
        };
        let messages = ids
            .into_iter()
            .map(|m| message_in_list(conn, m))
            .collect::<Result<Vec<_>>>()?;
        v["messages"] = json!(messages);
        v["messages_next_cursor"] = json!(next);
    }
    Ok(v)
}

/// A parent with its side conversations.
pub fn parent(conn: &Db<'_>, domain: &str, public_url: &str, external_id: &str) -> Result<Value> {
    let (id, subject, rname, remail, status, snoozed, assignee, created, updated) = conn.query_row(
        "SELECT p.id, p.subject, p.requester_name, p.requester_email, p.status, p.snoozed_until, u.email,
                p.created_at, p.updated_at
         FROM parents p LEFT JOIN users u ON u.id = p.assignee_id WHERE p.external_id = ?1",
        [external_id],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
            ))
        },
    )?;
    let mut stmt =
        conn.prepare_cached("SELECT id FROM side_conversations WHERE parent_id = ?1 ORDER BY id")?;
    let ids: Vec<i64> = stmt
        .query_map(params![id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let scs = ids
        .into_iter()
        .map(|s| side_conversation(conn, domain, public_url, s, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "external_id": external_id,
        "subject": subject,
        "requester": {"name": rname, "email": remail},
        "status": status,
        "snoozed_until": time(snoozed),
        "assignee": assignee,
        "created_at": rfc3339(created),
        "updated_at": rfc3339(updated),
        "side_conversations": scs,
    }))
}
