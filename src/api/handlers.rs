//! HTTP handlers of SPEC §7, by resource. Each checks the caller's role,
//! validates its input (naming the field), and delegates state changes to
//! the side-conversation service or one store transaction.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value, json};

use super::views;
use crate::conversations::{self, Attachment, FollowUpRequest, StartRequest};
use crate::http::AppState;
use crate::http::download::attachment_response;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Body, Caller, PathParam as Path, QueryParam as Query};
use crate::ingest::apply::{self, AssignError};
use crate::model::{Role, is_valid_email, now_ms, parse_rfc3339, rfc3339};
use crate::store::{self, StoreError, events, get_setting, put_setting, users};
use crate::templates;

// ---------------------------------------------------------------------------
// Pagination

#[derive(Debug, Deserialize)]
pub struct Page {
    limit: Option<String>,
    cursor: Option<String>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

impl Page {
    /// (limit, id after which to continue).
    fn parse(&self) -> ApiResult<(i64, i64)> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit: expected a number from 1 to {MAX_LIMIT}"))
                })?,
        };
        let after = match &self.cursor {
            None => 0,
            Some(c) => c
                .strip_prefix("c")
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadRequest("cursor: not a cursor from this API".into()))?,
        };
        Ok((limit, after))
    }
}

/// `{"items": [...], "next_cursor": "c<id>" | null}` from `limit + 1` rows.
fn page(mut items: Vec<(i64, Value)>, limit: i64) -> Value {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = if more {
        items.last().map(|(id, _)| format!("c{id}"))
    } else {
        None
    };
    json!({"items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), "next_cursor": next})
}

// ---------------------------------------------------------------------------
// Parents

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentUpsert {
    subject: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::object")]
    requester: Option<Requester>,
    status: Option<String>,
    snoozed_until: Option<Option<String>>,
    assignee: Option<Option<String>>,
}

fn check_external_id(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "external_id",
            "must be 1 to 200 printable characters",
        ));
    }
    Ok(())
}

pub async fn put_parent(
    State(st): State<AppState>,
    caller: Caller,
    Path(external_id): Path<String>,
    Body(body): Body<ParentUpsert>,
) -> ApiResult<Response> {
    caller.require_writer()?;
    check_external_id(&external_id)?;
    if let Some(s) = &body.status
        && !matches!(s.as_str(), "open" | "snoozed" | "closed")
    {
        return Err(ApiError::invalid(
            "status",
            "expected open, snoozed or closed",
        ));
    }
    let snoozed = match &body.snoozed_until {
        Some(Some(t)) => Some(Some(parse_rfc3339(t).ok_or_else(|| {
            ApiError::invalid("snoozed_until", "expected an RFC 3339 time")
        })?)),
        Some(None) => Some(None),
        None => None,
    };
    if let Some(r) = &body.requester
        && let Some(e) = &r.email
        && !is_valid_email(e)
    {
        return Err(ApiError::invalid(
            "requester.email",
            "not a valid email address",
        ));
    }
    if body.subject.as_deref().is_some_and(|s| s.len() > 998) {
        return Err(ApiError::invalid("subject", "at most 998 bytes"));
    }
    let actor = caller.actor();
    let ext = external_id.clone();
    let created = st
        .store
        .write_with(move |c| -> ApiResult<bool> {
            let now = now_ms();
            let assignee_id: Option<Option<i64>> = match &body.assignee {
                Some(Some(email)) => Some(Some(
                    c.query_row("SELECT id FROM users WHERE email = ?1", [email], |r| r.get(0))
                        .optional()?
                        .ok_or_else(|| ApiError::invalid("assignee", format!("{email} is not a user of this gateway")))?,
                )),
                Some(None) => Some(None),
                None => None,
            };
            let existing: Option<(i64, String)> = c
                .query_row("SELECT id, status FROM parents WHERE external_id = ?1", [&ext], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let (id, created) = match existing {
                Some((id, _)) => (id, false),
                None => {
                    c.execute(
                        "INSERT INTO parents (external_id, created_at, updated_at) VALUES (?1, ?2, ?2)",
                        params![ext, now],
                    )?;
                    (c.last_insert_rowid(), true)
                }
            };
            let before: String = c.query_row("SELECT status FROM parents WHERE id = ?1", [id], |r| r.get(0))?;
            if let Some(s) = &body.subject {
                c.execute("UPDATE parents SET subject = ?2 WHERE id = ?1", params![id, s.trim()])?;
            }
            if let Some(r) = &body.requester {
                c.execute(
                    "UPDATE parents SET requester_name = ?2, requester_email = ?3 WHERE id = ?1",
                    params![id, r.name, r.email],
                )?;
            }
            if let Some(s) = &body.status {
                c.execute("UPDATE parents SET status = ?2 WHERE id = ?1", params![id, s])?;
                if s != "snoozed" {
                    c.execute("UPDATE parents SET snoozed_until = NULL WHERE id = ?1", [id])?;
                }
            }
            if let Some(sn) = snoozed {
                c.execute("UPDATE parents SET snoozed_until = ?2 WHERE id = ?1", params![id, sn])?;
            }
            if let Some(a) = assignee_id {
                c.execute("UPDATE parents SET assignee_id = ?2 WHERE id = ?1", params![id, a])?;
            }
            c.execute("UPDATE parents SET updated_at = ?2 WHERE id = ?1", params![id, now])?;
            // Closing the parent closes its side conversations.
            if body.status.as_deref() == Some("closed") && before != "closed" {
                let mut stmt = c.prepare("SELECT id FROM side_conversations WHERE parent_id = ?1 AND status = 'open'")?;
                let open: Vec<i64> = stmt.query_map([id], |r| r.get(0))?.collect::<Result<_, _>>()?;
                for sc in open {
                    conversations::set_status_in(c, &actor, sc, false)?;
                }
            }
            Ok(created)
        })
        .await?;
    let (domain, url) = (st.config.domain.clone(), st.config.http.public_url.clone());
    let v = st
        .store
        .read(move |c| views::parent(c, &domain, &url, &external_id))
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(v)).into_response())
}

pub async fn get_parent(
    State(st): State<AppState>,
    _caller: Caller,
    Path(external_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (domain, url) = (st.config.domain.clone(), st.config.http.public_url.clone());
    let v = st
        .store
        .read(move |c| views::parent(c, &domain, &url, &external_id))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("parent"),
            other => other.into(),
        })?;
    Ok(Json(v))
}

pub async fn parent_activity(
    State(st): State<AppState>,
    _caller: Caller,
    Path(external_id): Path<String>,
    Query(p): Query<Page>,
) -> ApiResult<Json<Value>> {
    let (limit, after) = p.parse()?;
    let items = st
        .store
        .read(move |c| -> store::Result<Option<Vec<(i64, Value)>>> {
            let Some(pid): Option<i64> = c
                .query_row("SELECT id FROM parents WHERE external_id = ?1", [&external_id], |r| r.get(0))
                .optional()?
            else {
                return Ok(None);
            };
            let mut stmt = c.prepare(
                "SELECT a.id, a.text, a.side_conversation_id, u.email, a.created_at FROM activity a
                 LEFT JOIN users u ON u.id = a.actor_id
                 WHERE a.parent_id = ?1 AND a.id > ?2 ORDER BY a.id LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(params![pid, after, limit + 1], |r| {
                    let id: i64 = r.get(0)?;
                    Ok((
                        id,
                        json!({"id": id, "text": r.get::<_, String>(1)?, "side_conversation_id": r.get::<_, Option<i64>>(2)?,
                               "actor": r.get::<_, Option<String>>(3)?, "created_at": rfc3339(r.get(4)?)}),
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(rows))
        })
        .await?
        .ok_or(ApiError::NotFound("parent"))?;
    Ok(Json(page(items, limit)))
}

// ---------------------------------------------------------------------------
// Side conversations

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentIn {
    filename: String,
    content_type: String,
    content_base64: String,
}

fn attachments(list: Option<Vec<AttachmentIn>>) -> ApiResult<Vec<Attachment>> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let data = decode_base64(&a.content_base64).ok_or_else(|| {
                ApiError::invalid(
                    &format!("attachments[{i}].content_base64"),
                    "not valid base64",
                )
            })?;
            Ok(Attachment {
                filename: a.filename,
                content_type: a.content_type,
                data,
            })
        })
        .collect()
}

/// Standard base64 (padding optional, whitespace ignored).
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut buf = 0u32;
    let mut bits = 0;
    let mut padding = false;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding = true;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        if padding {
            return None;
        }
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    to: Option<Vec<String>>,
    cc: Option<Vec<String>>,
    subject: Option<String>,
    body_text: Option<String>,
    body_html: Option<String>,
    from: Option<String>,
    include_context: Option<bool>,
    share_portal_link: Option<bool>,
    #[serde(default, deserialize_with = "crate::http::extract::objects")]
    attachments: Option<Vec<AttachmentIn>>,
    template: Option<i64>,
}

async fn side_conversation_json(
    st: &AppState,
    id: i64,
    messages: Option<views::MessagePage>,
) -> ApiResult<Value> {
    let (domain, url) = (st.config.domain.clone(), st.config.http.public_url.clone());
    st.store
        .read(move |c| views::side_conversation(c, &domain, &url, id, messages))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("side conversation"),
            other => other.into(),
        })
}

pub async fn start_side_conversation(
    State(st): State<AppState>,
    caller: Caller,
    Path(external_id): Path<String>,
    Body(body): Body<StartBody>,
) -> ApiResult<Response> {
    caller.require_writer()?;
    check_external_id(&external_id)?;
    // A template fills what the request leaves out; explicit fields win.
    let mut body = body;
    if let Some(tid) = body.template {
        let (ext, agent) = (external_id.clone(), caller.0.name.clone());
        let found = st
            .store
            .read(move |c| {
                let t = match store::templates::get(c, tid) {
                    Ok(t) => t,
                    Err(StoreError::NotFound) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let parent: Option<(String, Option<String>, Option<String>)> = c
                    .query_row(
                        "SELECT subject, requester_name, requester_email FROM parents WHERE external_id = ?1",
                        [&ext],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let (subject, rname, remail) = parent.unwrap_or_default();
                let values = templates::Values {
                    parent_id: ext.clone(),
                    parent_subject: subject,
                    requester_name: rname.unwrap_or_default(),
                    requester_email: remail.unwrap_or_default(),
                    agent_name: agent,
                };
                Ok(Some((t, values)))
            })
            .await?;
        let (t, values) =
            found.ok_or_else(|| ApiError::invalid("template", format!("no template {tid}")))?;
        if body.to.as_ref().is_none_or(Vec::is_empty) {
            body.to = Some(t.to.clone());
        }
        if body.cc.is_none() {
            body.cc = Some(t.cc.clone());
        }
        if body.subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
            body.subject = Some(templates::fill(&t.subject, &values));
        }
        if body.body_text.is_none() && body.body_html.is_none() {
            body.body_text = t.body_text.as_deref().map(|b| templates::fill(b, &values));
            body.body_html = t
                .body_html
                .as_deref()
                .map(|b| templates::fill_html(b, &values));
        }
    }
    let req = StartRequest {
        to: body.to.unwrap_or_default(),
        cc: body.cc.unwrap_or_default(),
        subject: body.subject.unwrap_or_default(),
        body_text: body.body_text,
        body_html: body.body_html,
        from: body.from,
        include_context: body.include_context.unwrap_or(false),
        share_portal_link: body.share_portal_link.unwrap_or(false),
        attachments: attachments(body.attachments)?,
    };
    let sent = st
        .conversations
        .start(caller.actor(), external_id, req)
        .await?;
    let v = side_conversation_json(
        &st,
        sent.side_conversation,
        Some(views::MessagePage {
            limit: THREAD_DEFAULT_LIMIT,
            after: 0,
        }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    parent: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list_side_conversations(
    State(st): State<AppState>,
    _caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, after) = Page {
        limit: q.limit.clone(),
        cursor: q.cursor.clone(),
    }
    .parse()?;
    if let Some(s) = &q.status
        && !matches!(s.as_str(), "open" | "closed")
    {
        return Err(ApiError::BadRequest(
            "status: expected open or closed".into(),
        ));
    }
    let (domain, url) = (st.config.domain.clone(), st.config.http.public_url.clone());
    let items = st
        .store
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT s.id FROM side_conversations s JOIN parents p ON p.id = s.parent_id
                 WHERE s.id > ?1 AND (?2 IS NULL OR p.external_id = ?2) AND (?3 IS NULL OR s.status = ?3)
                 ORDER BY s.id LIMIT ?4",
            )?;
            let ids: Vec<i64> = stmt
                .query_map(params![after, q.parent, q.status, limit + 1], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.into_iter()
                .map(|id| Ok((id, views::side_conversation(c, &domain, &url, id, None)?)))
                .collect::<store::Result<Vec<_>>>()
        })
        .await?;
    Ok(Json(page(items, limit)))
}

/// Messages of a thread in one answer, by default and at most.
const THREAD_DEFAULT_LIMIT: i64 = 100;

pub async fn get_side_conversation(
    State(st): State<AppState>,
    _caller: Caller,
    Path(id): Path<i64>,
    Query(p): Query<Page>,
) -> ApiResult<Json<Value>> {
    let (limit, after) = p.parse()?;
    let limit = if p.limit.is_none() {
        THREAD_DEFAULT_LIMIT.min(MAX_LIMIT)
    } else {
        limit
    };
    Ok(Json(
        side_conversation_json(&st, id, Some(views::MessagePage { limit, after })).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpBody {
    body_text: Option<String>,
    body_html: Option<String>,
    cc: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::objects")]
    attachments: Option<Vec<AttachmentIn>>,
}

pub async fn follow_up(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Body(body): Body<FollowUpBody>,
) -> ApiResult<Response> {
    caller.require_writer()?;
    let req = FollowUpRequest {
        body_text: body.body_text,
        body_html: body.body_html,
        cc: body.cc.unwrap_or_default(),
        attachments: attachments(body.attachments)?,
    };
    let sent = st.conversations.follow_up(caller.actor(), id, req).await?;
    let msg = st
        .store
        .read(move |c| views::message(c, sent.message))
        .await?;
    Ok((StatusCode::CREATED, Json(msg)).into_response())
}

pub async fn close(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    caller.require_writer()?;
    st.conversations
        .set_status(caller.actor(), id, false)
        .await?;
    Ok(Json(side_conversation_json(&st, id, None).await?))
}

pub async fn reopen(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    caller.require_writer()?;
    st.conversations
        .set_status(caller.actor(), id, true)
        .await?;
    Ok(Json(side_conversation_json(&st, id, None).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    email: Option<String>,
}

/// Turns vendor portal links off: with `{"email"}` that recipient's only,
/// without a body every link (the answer's `portal_url` is then null).
pub async fn revoke_portal(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    caller.require_writer()?;
    let body: RevokeBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    st.conversations
        .revoke_portal(caller.actor(), id, body.email)
        .await?;
    Ok(Json(side_conversation_json(&st, id, None).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantBody {
    email: String,
    name: Option<String>,
}

/// Admits a sender (typically of unverified mail) to the side conversation;
/// `201` with the side conversation.
pub async fn admit_participant(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Body(body): Body<ParticipantBody>,
) -> ApiResult<Response> {
    caller.require_writer()?;
    st.conversations
        .admit_participant(caller.actor(), id, body.email, body.name)
        .await?;
    let v = side_conversation_json(&st, id, None).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Removes a participant; the side conversation without them.
pub async fn remove_participant(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, email)): Path<(i64, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_writer()?;
    st.conversations
        .remove_participant(caller.actor(), id, email)
        .await?;
    Ok(Json(side_conversation_json(&st, id, None).await?))
}

// ---------------------------------------------------------------------------
// Messages and unrouted mail

/// Unrouted mail is for owners and admins only.
async fn visible_message(st: &AppState, caller: &Caller, id: i64) -> ApiResult<()> {
    let sc: Option<Option<i64>> = st
        .store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT side_conversation_id FROM messages WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await?;
    match sc {
        None => Err(ApiError::NotFound("message")),
        Some(None) if !caller.role().can_administer() => Err(ApiError::NotFound("message")),
        Some(_) => Ok(()),
    }
}

pub async fn get_message(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    visible_message(&st, &caller, id).await?;
    Ok(Json(st.store.read(move |c| views::message(c, id)).await?))
}

pub async fn get_raw(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    visible_message(&st, &caller, id).await?;
    let raw: Vec<u8> = st
        .store
        .read(move |c| store::view::raw(c, id)?.ok_or(StoreError::NotFound))
        .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("message/rfc822"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        raw,
    )
        .into_response())
}

pub async fn get_attachment(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, n)): Path<(i64, i64)>,
) -> ApiResult<Response> {
    visible_message(&st, &caller, id).await?;
    let att: Option<(Option<String>, String, Vec<u8>)> = st
        .store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT filename, content_type, data FROM attachments WHERE message_id = ?1 AND idx = ?2",
                params![id, n],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
        })
        .await?;
    let (filename, ctype, data) = att.ok_or(ApiError::NotFound("attachment"))?;
    Ok(attachment_response(filename.as_deref(), &ctype, data))
}

pub async fn list_unrouted(
    State(st): State<AppState>,
    caller: Caller,
    Query(p): Query<Page>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let (limit, after) = p.parse()?;
    let items = st
        .store
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT id FROM messages WHERE side_conversation_id IS NULL AND direction = 'in'
                 AND kind IN ('reply', 'auto_reply', 'bounce') AND id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let ids: Vec<i64> = stmt
                .query_map(params![after, limit + 1], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.into_iter()
                .map(|id| Ok((id, views::message_in_list(c, id)?)))
                .collect::<store::Result<Vec<_>>>()
        })
        .await?;
    Ok(Json(page(items, limit)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    side_conversation_id: Option<i64>,
}

pub async fn assign_unrouted(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Body(body): Body<AssignBody>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let sc = body
        .side_conversation_id
        .ok_or_else(|| ApiError::invalid("side_conversation_id", "required"))?;
    let domain = st.config.domain.clone();
    st.store
        .write_with(move |c| match apply::assign(c, &domain, id, sc) {
            Ok(()) => Ok(()),
            Err(AssignError::MessageNotFound) => Err(ApiError::NotFound("message")),
            Err(AssignError::SideConversationNotFound) => Err(ApiError::invalid(
                "side_conversation_id",
                "no such side conversation",
            )),
            Err(AssignError::NotUnrouted) => {
                Err(ApiError::Conflict("the message is not unrouted".into()))
            }
            Err(AssignError::Store(e)) => Err(e.into()),
        })
        .await?;
    Ok(Json(st.store.read(move |c| views::message(c, id)).await?))
}

// ---------------------------------------------------------------------------
// Contacts, users, me, settings

pub async fn list_contacts(
    State(st): State<AppState>,
    _caller: Caller,
    Query(p): Query<Page>,
) -> ApiResult<Json<Value>> {
    let (limit, after) = p.parse()?;
    let items = st
        .store
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, email, name, first_message_id, created_at FROM contacts WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![after, limit + 1], |r| {
                    let id: i64 = r.get(0)?;
                    Ok((
                        id,
                        json!({"id": id, "email": r.get::<_, String>(1)?, "name": r.get::<_, Option<String>>(2)?,
                               "first_message_id": r.get::<_, Option<i64>>(3)?, "created_at": rfc3339(r.get(4)?)}),
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    Ok(Json(page(items, limit)))
}

fn user_json(u: &users::User) -> Value {
    json!({"id": u.id, "email": u.email, "name": u.name, "role": u.role.as_str(),
           "notifications": u.notifications, "created_at": rfc3339(u.created_at)})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    email: Option<String>,
    name: Option<String>,
    role: Option<String>,
}

pub async fn create_user(
    State(st): State<AppState>,
    caller: Caller,
    Body(body): Body<UserBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let email = body.email.unwrap_or_default().trim().to_string();
    if !is_valid_email(&email) {
        return Err(ApiError::invalid("email", "not a valid email address"));
    }
    let name = body.name.unwrap_or_default().trim().to_string();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 200 printable characters",
        ));
    }
    let role: Role = body
        .role
        .as_deref()
        .unwrap_or("member")
        .parse()
        .map_err(|e: String| ApiError::invalid("role", e))?;
    if role == Role::Owner && caller.role() != Role::Owner {
        return Err(ApiError::Forbidden("only an owner can add an owner"));
    }
    let (user, token) = st
        .store
        .write(move |c| users::create(c, &email, &name, role))
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => other.into(),
        })?;
    let mut v = user_json(&user);
    v["token"] = json!(token.as_str());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list_users(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let list = st.store.read(users::list).await?;
    Ok(Json(
        json!({"items": list.iter().map(user_json).collect::<Vec<_>>(), "next_cursor": null}),
    ))
}

pub async fn get_me(caller: Caller) -> Json<Value> {
    Json(user_json(&caller.0))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeBody {
    name: Option<String>,
    notifications: Option<String>,
}

pub async fn put_me(
    State(st): State<AppState>,
    caller: Caller,
    Body(body): Body<MeBody>,
) -> ApiResult<Json<Value>> {
    if let Some(n) = &body.notifications
        && !matches!(n.as_str(), "email" | "off")
    {
        return Err(ApiError::invalid("notifications", "expected email or off"));
    }
    if let Some(n) = &body.name
        && (n.trim().is_empty() || n.len() > 200 || n.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 200 printable characters",
        ));
    }
    let id = caller.0.id;
    let user = st
        .store
        .write(move |c| {
            if let Some(n) = &body.notifications {
                c.execute(
                    "UPDATE users SET notifications = ?2 WHERE id = ?1",
                    params![id, n],
                )?;
            }
            if let Some(n) = &body.name {
                c.execute(
                    "UPDATE users SET name = ?2 WHERE id = ?1",
                    params![id, n.trim()],
                )?;
            }
            let email: String =
                c.query_row("SELECT email FROM users WHERE id = ?1", [id], |r| r.get(0))?;
            users::by_email(c, &email)
        })
        .await?;
    Ok(Json(user_json(&user)))
}

async fn settings_json(st: &AppState) -> ApiResult<Value> {
    Ok(st
        .store
        .read(|c| {
            let sig = get_setting(c, "signature")?.unwrap_or(json!({"text": null, "html": null}));
            let default_sender = get_setting(c, "default_sender")?.unwrap_or(Value::Null);
            let enabled = get_setting(c, "side_conversations_enabled")?.unwrap_or(json!(true));
            Ok(json!({"signature": {"text": sig.get("text").cloned().unwrap_or(Value::Null), "html": sig.get("html").cloned().unwrap_or(Value::Null)},
                      "default_sender": default_sender, "side_conversations_enabled": enabled}))
        })
        .await?)
}

pub async fn get_settings(State(st): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(settings_json(&st).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureBody {
    text: Option<String>,
    html: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    #[serde(default, deserialize_with = "crate::http::extract::object")]
    signature: Option<SignatureBody>,
    default_sender: Option<Option<String>>,
    side_conversations_enabled: Option<bool>,
}

pub async fn put_settings(
    State(st): State<AppState>,
    caller: Caller,
    Body(body): Body<SettingsBody>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let limit = 64 * 1024;
    if let Some(s) = &body.signature
        && (s.text.as_deref().is_some_and(|t| t.len() > limit)
            || s.html.as_deref().is_some_and(|t| t.len() > limit))
    {
        return Err(ApiError::invalid("signature", "at most 64 KiB"));
    }
    let gateway = format!("reply@{}", st.config.domain);
    st.store
        .write_with(move |c| -> ApiResult<()> {
            if let Some(s) = &body.signature {
                put_setting(c, "signature", &json!({"text": s.text, "html": s.html}))?;
            }
            match &body.default_sender {
                Some(Some(email)) => {
                    let ok = email.eq_ignore_ascii_case(&gateway)
                        || c.query_row(
                            "SELECT 1 FROM senders WHERE email = ?1 AND status = 'verified'",
                            [email],
                            |_| Ok(()),
                        )
                        .optional()?
                        .is_some();
                    if !ok {
                        return Err(ApiError::invalid(
                            "default_sender",
                            format!("{email} is not a verified sender"),
                        ));
                    }
                    put_setting(c, "default_sender", &json!(email))?;
                }
                Some(None) => put_setting(c, "default_sender", &Value::Null)?,
                None => {}
            }
            if let Some(b) = body.side_conversations_enabled {
                put_setting(c, "side_conversations_enabled", &json!(b))?;
            }
            Ok(())
        })
        .await?;
    Ok(Json(settings_json(&st).await?))
}

/// Events named in webhook subscriptions must exist.
pub fn check_events(list: &[String]) -> ApiResult<()> {
    for (i, e) in list.iter().enumerate() {
        if !events::EVENTS.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                &format!("events[{i}]"),
                format!("unknown event `{e}`"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Templates

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    name: Option<String>,
    to: Option<Vec<String>>,
    cc: Option<Vec<String>>,
    subject: Option<String>,
    body_text: Option<String>,
    body_html: Option<String>,
}

pub async fn create_template(
    State(st): State<AppState>,
    caller: Caller,
    Body(b): Body<TemplateBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let new = templates::NewTemplate {
        name: b.name.unwrap_or_default(),
        to: b
            .to
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.trim().to_string())
            .collect(),
        cc: b
            .cc
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.trim().to_string())
            .collect(),
        subject: b.subject.unwrap_or_default(),
        body_text: b.body_text,
        body_html: b.body_html,
    };
    templates::validate(&new).map_err(|e| ApiError::Invalid {
        field: e.field,
        message: e.message,
    })?;
    let by = caller.0.id;
    let t = st
        .store
        .write(move |c| store::templates::create(c, &new, by))
        .await?;
    Ok((StatusCode::CREATED, Json(json!(t))).into_response())
}

pub async fn list_templates(State(st): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    let items = st.store.read(store::templates::list).await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

pub async fn delete_template(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    st.store
        .write(move |c| store::templates::delete(c, id))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("template"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
