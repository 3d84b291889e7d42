//! HTTP handlers of SPEC §7, by resource. Each checks the caller's role,
//! validates its input (naming the field), and delegates state changes to
//! the side-conversation service or one store transaction.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::views;
use crate::conversations::AssignError;
use crate::conversations::{self, Attachment, FollowUpRequest, StartRequest};
use crate::http::AppState;
use crate::http::download::attachment_response;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Body, Caller, PathParam as Path, QueryParam as Query};
use crate::model::{ParentStatus, ScStatus, Waiting, now_ms, parse_age, parse_rfc3339, rfc3339};
use crate::store::{self, StoreError, events, users};
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
    let status = match body.status.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<ParentStatus>()
                .map_err(|_| ApiError::invalid("status", "expected open, snoozed or closed"))?,
        ),
    };
    let snoozed = match &body.snoozed_until {
        Some(Some(t)) => Some(Some(parse_rfc3339(t).ok_or_else(|| {
            ApiError::invalid("snoozed_until", "expected an RFC 3339 time")
        })?)),
        Some(None) => Some(None),
        None => None,
    };
    let upsert = conversations::ParentUpsert {
        subject: body.subject,
        requester: body.requester.map(|r| (r.name, r.email)),
        status,
        snoozed_until: snoozed,
        assignee: body.assignee,
    };
    let created = st
        .conversations
        .upsert_parent(caller.actor(), external_id.clone(), upsert)
        .await?;
    let (domain, url) = (st.config.domain.clone(), st.config.http.public_url.clone());
    let v = st
        .store
        .read(move |db| views::parent(db, &domain, &url, &external_id))
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
        .read(move |db| -> store::Result<Option<Vec<(i64, Value)>>> {
            let Some(pid) = store::parents::id_of(db, &external_id)? else {
                return Ok(None);
            };
            let rows = store::activity::list(db, pid, after, limit + 1)?
                .into_iter()
                .map(|a| {
                    (
                        a.id,
                        json!({"id": a.id, "text": a.text, "side_conversation_id": a.side_conversation_id,
                               "actor": a.actor, "created_at": rfc3339(a.created_at)}),
                    )
                })
                .collect();
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

/// Attachment content: standard base64, padding optional, line breaks and
/// other whitespace ignored (as mail clients and scripts wrap it).
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    LENIENT.decode(compact).ok()
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
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    remind_after: Option<Option<String>>,
    nudge_vendor: Option<bool>,
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
        let draft = conversations::Draft {
            to: body.to.take(),
            cc: body.cc.take(),
            subject: body.subject.take(),
            body_text: body.body_text.take(),
            body_html: body.body_html.take(),
            tags: body.tags.take(),
        };
        let filled = st
            .conversations
            .fill_from_template(tid, external_id.clone(), caller.0.name.clone(), draft)
            .await?;
        body.to = filled.to;
        body.cc = filled.cc;
        body.subject = filled.subject;
        body.body_text = filled.body_text;
        body.body_html = filled.body_html;
        body.tags = filled.tags;
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
        tags: body.tags.unwrap_or_default(),
        // null: no reminder; left out: the workspace default.
        remind_after: body
            .remind_after
            .map(|r| r.unwrap_or_else(|| "off".to_string())),
        nudge_vendor: body.nudge_vendor.unwrap_or(false),
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
    waiting: Option<String>,
    older_than: Option<String>,
    tag: Option<String>,
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
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<ScStatus>()
                .map_err(|_| ApiError::BadRequest("status: expected open or closed".into()))?,
        ),
    };
    let waiting = match q.waiting.as_deref() {
        None => None,
        Some(w) => Some(
            w.parse::<Waiting>()
                .map_err(|_| ApiError::BadRequest("waiting: expected vendor or agent".into()))?,
        ),
    };
    let waiting_before = match q.older_than.as_deref() {
        None => None,
        Some(_) if waiting.is_none() => {
            return Err(ApiError::BadRequest(
                "older_than: only with waiting=vendor or waiting=agent".into(),
            ));
        }
        Some(a) => Some(
            now_ms()
                - parse_age(a).ok_or_else(|| {
                    ApiError::BadRequest(
                        "older_than: expected an age such as 90m, 12h, 2d or 1w".into(),
                    )
                })?,
        ),
    };
    let filter = store::waiting::ListFilter {
        parent: q.parent,
        status,
        waiting,
        waiting_before,
        tag: q.tag.map(|t| t.trim().to_string()),
    };
    let (domain, url) = (st.config.domain.clone(), st.config.http.public_url.clone());
    let items = st
        .store
        .read(move |c| {
            store::waiting::list(c, &filter, after, limit + 1)?
                .into_iter()
                .map(|(key, id)| Ok((key, views::side_conversation(c, &domain, &url, id, None)?)))
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
pub struct PatchBody {
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    remind_after: Option<Option<String>>,
    nudge_vendor: Option<bool>,
}

/// Changes a side conversation's tags (SPEC §15).
pub async fn patch_side_conversation(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Body(body): Body<PatchBody>,
) -> ApiResult<Json<Value>> {
    caller.require_writer()?;
    let remind_after = match &body.remind_after {
        None => None,
        Some(r) => Some(conversations::reminders::parse_remind_after(
            "remind_after",
            r.as_deref(),
        )?),
    };
    let patch = conversations::ScPatch {
        tags: body.tags,
        remind_after,
        nudge_vendor: body.nudge_vendor,
    };
    st.conversations.patch(caller.actor(), id, patch).await?;
    Ok(Json(side_conversation_json(&st, id, None).await?))
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
    let role = caller.role();
    let visible = st
        .store
        .read(move |db| conversations::may_see_message(db, role, id))
        .await?;
    if visible {
        Ok(())
    } else {
        Err(ApiError::NotFound("message"))
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
    let att = st
        .store
        .read(move |db| store::messages::attachment(db, id, n))
        .await?;
    let a = att.ok_or(ApiError::NotFound("attachment"))?;
    Ok(attachment_response(
        a.filename.as_deref(),
        &a.content_type,
        a.data,
    ))
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
            let ids = store::messages::unrouted_ids(c, after, limit + 1)?;
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
    match st.conversations.assign_unrouted(id, sc).await {
        Ok(()) => {}
        Err(AssignError::MessageNotFound) => return Err(ApiError::NotFound("message")),
        Err(AssignError::SideConversationNotFound) => {
            return Err(ApiError::invalid(
                "side_conversation_id",
                "no such side conversation",
            ));
        }
        Err(AssignError::NotUnrouted) => {
            return Err(ApiError::Conflict("the message is not unrouted".into()));
        }
        Err(AssignError::Store(e)) => return Err(e.into()),
    }
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
        .read(move |db| {
            Ok(store::contacts::list(db, after, limit + 1)?
                .into_iter()
                .map(|c| {
                    (
                        c.id,
                        json!({"id": c.id, "email": c.email, "name": c.name,
                               "first_message_id": c.first_message_id, "created_at": rfc3339(c.created_at)}),
                    )
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(page(items, limit)))
}

/// A user as the API shows it (never their token).
pub fn user_json(u: &users::User) -> Value {
    json!({"id": u.id, "email": u.email, "name": u.name, "role": u.role.as_str(),
           "notifications": u.notifications, "active": u.active,
           "deactivated_at": u.deactivated_at.map(rfc3339),
           "created_at": rfc3339(u.created_at)})
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
    let (email, name, role) = conversations::users::check_new(
        caller.role(),
        body.email.as_deref().unwrap_or_default(),
        body.name.as_deref().unwrap_or_default(),
        body.role.as_deref(),
    )?;
    let actor = caller.audit_actor();
    let (user, token) = st
        .store
        .write_with(move |c| conversations::users::add(c, &actor, &email, &name, role))
        .await?;
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
        .write(move |db| {
            users::update_profile(
                db,
                id,
                body.name.as_deref().map(str::trim),
                body.notifications.as_deref(),
            )?;
            users::by_id(db, id)
        })
        .await?;
    Ok(Json(user_json(&user)))
}

async fn settings_json(st: &AppState) -> ApiResult<Value> {
    let s = st.store.read(conversations::settings::read).await?;
    Ok(
        json!({"signature": {"text": s.signature_text, "html": s.signature_html},
              "default_sender": s.default_sender,
              "side_conversations_enabled": s.side_conversations_enabled,
              "remind_after": s.remind_after}),
    )
}

pub async fn get_settings(State(st): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(settings_json(&st).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureBody {
    /// Absent: unchanged; `null`: removed.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    text: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    html: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    #[serde(default, deserialize_with = "crate::http::extract::object")]
    signature: Option<SignatureBody>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    default_sender: Option<Option<String>>,
    side_conversations_enabled: Option<bool>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    remind_after: Option<Option<String>>,
}

/// Changes what the body names and keeps the rest: a signature body with
/// only `text` keeps the HTML one (`conversations::settings::update`).
pub async fn put_settings(
    State(st): State<AppState>,
    caller: Caller,
    Body(body): Body<SettingsBody>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let (text, html) = match body.signature {
        Some(s) => (s.text, s.html),
        None => (None, None),
    };
    let patch = conversations::settings::SettingsPatch {
        signature_text: text,
        signature_html: html,
        default_sender: body.default_sender,
        side_conversations_enabled: body.side_conversations_enabled,
        remind_after: body.remind_after,
    };
    conversations::settings::check(&patch)?;
    let domain = st.config.domain.clone();
    let actor = caller.audit_actor();
    st.store
        .write_with(move |c| conversations::settings::update(c, &domain, &actor, &patch))
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
    tags: Option<Vec<String>>,
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
        tags: conversations::check_tags("tags", &b.tags.unwrap_or_default())?,
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
