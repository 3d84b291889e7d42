//! HTTP handlers for what only owners and admins manage: sender addresses
//! (SPEC §6) and webhook endpoints (SPEC §7). Reading senders is open to
//! every role (agents choose a sender when they start a conversation).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::egress::Refusal;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Body, Caller, PathParam as Path, QueryParam as Query};
use crate::senders::service::{self, NewSender, SenderError};
use crate::store::StoreError;
use crate::store::webhooks::{self, WebhookError};

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
    let v = service::add_sender(&st.store, &st.config, new).await?;
    // The first DNS check runs in the background: a slow DNS server must
    // not hold the admin's request; the result appears on the sender.
    let (store, config, resolver) = (st.store.clone(), st.config.clone(), st.resolver.clone());
    st.conversations.outbox_waker.notify_one();
    tokio::spawn(async move {
        if let Err(e) = service::check_dns(&store, &config, &resolver, &email).await {
            tracing::warn!(sender = %email, error = %e, "first DNS check failed");
        }
    });
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
    let (v, _changed) = st
        .store
        .write_with(move |c| crate::senders::edit::update(c, &config, &email, &patch))
        .await?;
    Ok(Json(v))
}

pub async fn delete_sender(
    State(st): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    st.store
        .write_with(move |c| service::delete(c, &email))
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
    let outcome = st
        .store
        .write_with(move |c| service::verify(c, &config, &email, &code))
        .await?;
    Ok(Json(outcome.into_result()?))
}

pub async fn check_sender(
    State(st): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let wait = st.config.senders.probe_wait;
    let store = st.store.clone();
    let waker = st.conversations.outbox_waker.clone();
    // The probe is queued inside check_sender; wake delivery while it waits.
    let ticker = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            waker.notify_one();
        }
    });
    let v = service::check_sender(&store, &st.config, &st.resolver, &email, wait).await;
    ticker.abort();
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
    if let Ok(parsed) = url::Url::parse(url.trim())
        && let Err(refusal) = st.config.webhooks.allow_destinations.check_url(&parsed)
    {
        let message = match refusal {
            Refusal::Scheme(_) => refusal.to_string(),
            _ => format!(
                "{refusal}: webhooks may not reach loopback, private, link-local or \
                 metadata destinations unless webhooks.allow_destinations lists them"
            ),
        };
        return Err(ApiError::ForbiddenDestination {
            field: "url".into(),
            message,
        });
    }
    let secret = b
        .secret
        .ok_or_else(|| ApiError::invalid("secret", "required"))?;
    let events = b.events.unwrap_or_default();
    let hook = st
        .store
        .write_with(move |c| webhooks::create(c, &url, &secret, &events))
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
    st.store
        .write(move |c| webhooks::delete(c, id))
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
