//! HTTP handlers for what only owners and admins manage: sender addresses
//! (SPEC §6), webhook endpoints, the user lifecycle and the audit log
//! (SPEC §2, §7). Reading senders is open to every role (agents choose a
//! sender when they start a conversation). Every change made here is
//! recorded in the audit log in the change's own transaction.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::conversations::users::{self as user_rules, UserError};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Body, Caller, PathParam as Path, QueryParam as Query};
use crate::model::rfc3339;
use crate::senders::service::{self, NewSender, SenderError};
use crate::store::webhooks::{self, WebhookError};
use crate::store::{StoreError, audit, users};

impl From<SenderError> for ApiError {
    fn from(e: SenderError) -> Self {
        match e {
            SenderError::NotFound => ApiError::NotFound("sender"),
            SenderError::Invalid { field, message } => ApiError::Invalid { field, message },
            SenderError::Conflict(m) => ApiError::Conflict(m),
            SenderError::Store(m) => ApiError::Internal(m),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { field, message } => ApiError::invalid(field, message),
            WebhookError::Store(StoreError::NotFound) => ApiError::NotFound("webhook"),
            WebhookError::Store(other) => other.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureIn {
    text: Option<String>,
    html: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderBody {
    email: Option<String>,
    name: Option<String>,
    reply_mode: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::object")]
    signature: Option<SignatureIn>,
    dkim_algorithm: Option<String>,
}

pub async fn create_sender(
    State(st): State<AppState>,
    caller: Caller,
    Body(b): Body<SenderBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let email = b.email.unwrap_or_default().trim().to_string();
    let new = NewSender {
        email: email.clone(),
        name: b.name.unwrap_or_default(),
        reply_mode: b.reply_mode,
        signature_text: b.signature.as_ref().and_then(|s| s.text.clone()),
        signature_html: b.signature.as_ref().and_then(|s| s.html.clone()),
        dkim_algorithm: b.dkim_algorithm,
    };
    let v = service::add_sender_and_check(
        &st.store,
        &st.config,
        &st.resolver,
        &st.conversations.outbox_waker,
        new,
        caller.audit_actor(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list_senders(State(st): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    let config = st.config.clone();
    let items = st
        .store
        .read(move |c| service::list(c, &config).map_err(|e| StoreError::Database(e.to_string())))
        .await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

pub async fn get_sender(
    State(st): State<AppState>,
    _caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<Json<Value>> {
    let config = st.config.clone();
    let v = st
        .store
        .read(move |c| match service::view(c, &config, &email) {
            Ok(v) => Ok(Some(v)),
            Err(SenderError::NotFound) => Ok(None),
            Err(e) => Err(StoreError::Database(e.to_string())),
        })
        .await?
        .ok_or(ApiError::NotFound("sender"))?;
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePatch {
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    text: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    html: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderPatchBody {
    name: Option<String>,
    reply_mode: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::object")]
    signature: Option<SignaturePatch>,
}

/// Changes a sender's display name, reply mode or signature (any subset;
/// a signature part set to `null` is removed, an absent one kept).
pub async fn patch_sender(
    State(st): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
    Body(b): Body<SenderPatchBody>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let patch = crate::senders::edit::SenderPatch {
        name: b.name,
        reply_mode: b.reply_mode,
        signature_text: b.signature.as_ref().and_then(|s| s.text.clone()),
        signature_html: b.signature.as_ref().and_then(|s| s.html.clone()),
    };
    let config = st.config.clone();
    let actor = caller.audit_actor();
    let v = st
        .store
        .write_with(move |c| {
            crate::senders::edit::update_audited(c, &config, &actor, &email, &patch)
        })
        .await?;
    Ok(Json(v))
}

pub async fn delete_sender(
    State(st): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let actor = caller.audit_actor();
    st.store
        .write_with(move |c| service::delete_audited(c, &actor, &email))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    code: Option<String>,
}

pub async fn verify_sender(
    State(st): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
    Body(b): Body<VerifyBody>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let code = b
        .code
        .ok_or_else(|| ApiError::invalid("code", "required"))?;
    let config = st.config.clone();
    let actor = caller.audit_actor();
    let outcome = st
        .store
        .write_with(move |c| service::verify_audited(c, &config, &actor, &email, &code))
        .await?;
    Ok(Json(outcome.into_result()?))
}

pub async fn check_sender(
    State(st): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let v = service::check_sender_now(
        &st.store,
        &st.config,
        &st.resolver,
        &st.conversations.outbox_waker,
        &email,
    )
    .await;
    Ok(Json(v?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    url: Option<String>,
    secret: Option<String>,
    events: Option<Vec<String>>,
}

pub async fn create_webhook(
    State(st): State<AppState>,
    caller: Caller,
    Body(b): Body<WebhookBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let url = b.url.ok_or_else(|| ApiError::invalid("url", "required"))?;
    // What can be judged without DNS is refused now: the scheme, an
    // internal address literal, `localhost`. A host name is judged on
    // what it resolves to, at every delivery (`webhooks::GuardedResolver`).
    if let Some(message) = st.config.webhooks.allow_destinations.webhook_refusal(&url) {
        return Err(ApiError::ForbiddenDestination {
            field: "url".into(),
            message,
        });
    }
    let secret = b
        .secret
        .ok_or_else(|| ApiError::invalid("secret", "required"))?;
    let events = b.events.unwrap_or_default();
    let actor = caller.audit_actor();
    let hook = st
        .store
        .write_with(move |c| webhooks::create_audited(c, &actor, &url, &secret, &events))
        .await?;
    Ok((StatusCode::CREATED, Json(json!(hook))).into_response())
}

pub async fn list_webhooks(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = st.store.read(webhooks::list).await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

pub async fn delete_webhook(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let actor = caller.audit_actor();
    st.store
        .write(move |c| webhooks::delete_audited(c, &actor, id))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("webhook"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn webhook_deliveries(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::BadRequest("limit: expected a number from 1 to 200".into()))?,
    };
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.strip_prefix('c')
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest("cursor: not a cursor from this API".into()))?,
        ),
    };
    let page = st
        .store
        .read(move |c| webhooks::deliveries(c, id, cursor, limit))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("webhook"),
            other => other.into(),
        })?;
    Ok(Json(
        json!({"items": page.items, "next_cursor": page.next_cursor.map(|c| format!("c{c}"))}),
    ))
}

// ---------------------------------------------------------------------------
// Users (SPEC §2 lifecycle, §7)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    role: Option<String>,
    name: Option<String>,
    active: Option<bool>,
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid { field, message } => ApiError::invalid(field, message),
            UserError::Forbidden(m) => ApiError::Forbidden(m),
            UserError::NotFound => ApiError::NotFound("user"),
            UserError::Conflict(m) => ApiError::Conflict(m),
            UserError::Store(e) => e.into(),
        }
    }
}

/// `PATCH /api/users/{id}` `{role?, name?, active?}`: owner/admin (see
/// [`user_rules::may_manage`] for who may change whom). `active: false`
/// deactivates the user: their token, IMAP sessions and push streams stop
/// at once; a role change also ends their open sessions. The last active
/// owner cannot be demoted or deactivated (409). Each change is in the
/// audit log.
pub async fn update_user(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Body(b): Body<UserPatch>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let role = b.role.as_deref().map(user_rules::parse_role).transpose()?;
    let name = b.name.as_deref().map(user_rules::check_name).transpose()?;
    let change = users::Change {
        role,
        name,
        active: b.active,
    };
    let actor = caller.audit_actor();
    let by = caller.role();
    let (_, after) = st
        .store
        .write_with(move |c| user_rules::update(c, &actor, by, id, &change))
        .await?;
    Ok(Json(super::handlers::user_json(&after)))
}

/// `POST /api/users/{id}/token`: a new API token for the user (in the
/// answer, shown once); the old one stops working at once and the user's
/// open sessions end. Same rule as [`update_user`] for who may do it.
pub async fn rotate_user_token(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let actor = caller.audit_actor();
    let by = caller.role();
    let (user, token) = st
        .store
        .write_with(move |c| user_rules::rotate_token(c, &actor, by, id))
        .await?;
    let mut v = super::handlers::user_json(&user);
    v["token"] = json!(token.as_str());
    Ok(Json(v))
}

// ---------------------------------------------------------------------------
// Audit log

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/audit?limit=&cursor=`: owner/admin; newest first.
pub async fn list_audit(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::BadRequest("limit: expected a number from 1 to 200".into()))?,
    };
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.strip_prefix('c')
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::BadRequest("cursor: not a cursor from this API".into()))?,
        ),
    };
    let mut rows = st
        .store
        .read(move |c| audit::list(c, before, limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|e| format!("c{}", e.id))
    } else {
        None
    };
    let items: Vec<Value> = rows
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "at": rfc3339(e.at), "actor": e.actor, "actor_id": e.actor_id,
                   "action": e.action, "target": e.target, "detail": e.detail})
        })
        .collect();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}
