//! Sender addresses in the console (SPEC §6, §11): the list with an add
//! form, and a sender's page: the forwarding address to configure (with
//! the providers' steps), the verification code form, the DNS records to
//! publish with their status and a re-check (which also re-tests
//! forwarding), a provider's forwarding confirmation, edit and delete.
//! Everything goes through `senders::service` and `senders::edit`, as the
//! API does.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;

use super::admin::{NoticeQuery, Seg, admin, admin_post, path_segment};
use super::form::Form;
use super::{Chrome, Layout as _, Refusal, ok, page, see_other};
use crate::http::AppState;
use crate::senders::edit::{SenderPatch, update_audited};
use crate::senders::service::{self, NewSender, SenderError};
use crate::store::StoreError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/admin/senders", get(list_page).post(add))
        .route("/app/admin/senders/{email}", get(detail_page).post(edit))
        .route("/app/admin/senders/{email}/verify", post(verify))
        .route("/app/admin/senders/{email}/check", post(check))
        .route("/app/admin/senders/{email}/delete", post(delete))
}

impl From<SenderError> for Refusal {
    fn from(e: SenderError) -> Self {
        match e {
            SenderError::NotFound => Refusal::NotFound("That sender address"),
            SenderError::Invalid { field, message } => {
                Refusal::BadRequest(format!("{field}: {message}"))
            }
            SenderError::Conflict(m) => Refusal::Conflict(m),
            SenderError::Store(m) => Refusal::Internal(m),
        }
    }
}

/// A refusal a form shows beside itself (422/409), or a page of its own.
fn form_error(e: SenderError) -> Result<String, Refusal> {
    match e {
        SenderError::Invalid { field, message } => Ok(format!("{field}: {message}")),
        SenderError::Conflict(m) => Ok(m),
        other => Err(other.into()),
    }
}

/// One DNS record to publish and how it stands.
pub struct Record {
    pub label: &'static str,
    /// `spf`, `dkim`, `dmarc`: for element ids.
    pub key: &'static str,
    pub name: String,
    pub value: Option<String>,
    pub status: String,
    pub detail: String,
}

/// A provider's forwarding-confirmation mail, as captured.
pub struct Confirmation {
    pub provider: String,
    pub code: String,
    pub link: String,
}

/// A sender as the pages show it (from the sender JSON of SPEC §7).
pub struct Sender {
    pub email: String,
    pub name: String,
    pub reply_mode: String,
    pub status: String,
    pub forwarding_address: String,
    pub forwarding: String,
    pub forwarding_confirmed_at: String,
    pub confirmation: Option<Confirmation>,
    pub records: Vec<Record>,
    pub dns_checked_at: String,
    pub signature_text: String,
    pub signature_html: String,
}

/// A time of the sender JSON (RFC 3339) as pages show times.
fn time(v: &Value, key: &str) -> String {
    let t = text(v, key);
    crate::model::parse_rfc3339(&t).map_or(t, |ms| super::when(&ms))
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn sender_of(v: &Value) -> Sender {
    let dns = v.get("dns").cloned().unwrap_or(Value::Null);
    let records = [("SPF", "spf"), ("DKIM", "dkim"), ("DMARC", "dmarc")]
        .into_iter()
        .map(|(label, key)| {
            let c = dns.get(key).cloned().unwrap_or(Value::Null);
            Record {
                label,
                key,
                name: text(&c, "record_name"),
                value: c
                    .get("record_to_publish")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                status: match text(&c, "status") {
                    s if s.is_empty() => "unknown".to_string(),
                    s => s,
                },
                detail: text(&c, "detail"),
            }
        })
        .collect();
    let confirmation = v
        .get("forwarding_confirmation")
        .filter(|c| c.is_object())
        .map(|c| Confirmation {
            provider: text(c, "provider"),
            code: text(c, "code"),
            link: text(c, "link"),
        });
    let sig = v.get("signature").cloned().unwrap_or(Value::Null);
    Sender {
        email: text(v, "email"),
        name: text(v, "name"),
        reply_mode: text(v, "reply_mode"),
        status: text(v, "status"),
        forwarding_address: text(v, "forwarding_address"),
        forwarding: text(v, "forwarding"),
        forwarding_confirmed_at: time(v, "forwarding_confirmed_at"),
        confirmation,
        records,
        dns_checked_at: time(v, "dns_checked_at"),
        signature_text: text(&sig, "text"),
        signature_html: text(&sig, "html"),
    }
}

impl Sender {
    /// "SPF pass, DKIM missing, DMARC pass" for the list.
    pub fn dns_summary(&self) -> String {
        self.records
            .iter()
            .map(|r| format!("{} {}", r.label, r.status))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The add form's values, kept when it is refused.
#[derive(Default)]
pub struct AddForm {
    pub email: String,
    pub name: String,
    pub reply_mode: String,
    pub signature_text: String,
    pub signature_html: String,
}

#[derive(Template)]
#[template(path = "admin_senders.html")]
struct ListPage {
    chrome: Chrome,
    senders: Vec<Sender>,
    form: AddForm,
}

async fn senders(st: &AppState) -> Result<Vec<Sender>, Refusal> {
    let config = st.config.clone();
    let list = st
        .store
        .read(move |c| service::list(c, &config).map_err(|e| StoreError::Database(e.to_string())))
        .await?;
    Ok(list.iter().map(sender_of).collect())
}

async fn list_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "senders", q.notice.as_deref())?;
    Ok(ok(&ListPage {
        chrome,
        senders: senders(&st).await?,
        form: AddForm {
            reply_mode: "gateway".into(),
            ..AddForm::default()
        },
    }))
}

async fn add(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "senders")?;
    let new = NewSender {
        email: form.get("email").unwrap_or_default().to_string(),
        name: form.get("name").unwrap_or_default().to_string(),
        reply_mode: form.get("reply_mode").map(str::to_string),
        signature_text: form.optional("signature_text"),
        signature_html: form.optional("signature_html"),
        dkim_algorithm: form.get("dkim_algorithm").map(str::to_string),
    };
    let email = new.email.trim().to_string();
    match service::add_sender_and_check(
        &st.store,
        &st.config,
        &st.resolver,
        &st.conversations.outbox_waker,
        new,
        chrome.audit_actor(),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "/app/admin/senders/{}?notice=sender-added",
            path_segment(&email)
        ))),
        Err(e) => {
            chrome.error = Some(form_error(e)?);
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ListPage {
                    chrome,
                    senders: senders(&st).await?,
                    form: AddForm {
                        email: form.raw("email").to_string(),
                        name: form.raw("name").to_string(),
                        reply_mode: form.raw("reply_mode").to_string(),
                        signature_text: form.raw("signature_text").to_string(),
                        signature_html: form.raw("signature_html").to_string(),
                    },
                },
            ))
        }
    }
}

#[derive(Template)]
#[template(path = "admin_sender.html")]
struct DetailPage {
    chrome: Chrome,
    s: Sender,
    /// The edit form's values (the sender's, or what was posted).
    edit: AddForm,
}

async fn sender(st: &AppState, email: String) -> Result<Sender, Refusal> {
    let config = st.config.clone();
    let v = st
        .store
        .read(move |c| match service::view(c, &config, &email) {
            Ok(v) => Ok(Some(v)),
            Err(SenderError::NotFound) => Ok(None),
            Err(e) => Err(StoreError::Database(e.to_string())),
        })
        .await?
        .ok_or(Refusal::NotFound("That sender address"))?;
    Ok(sender_of(&v))
}

fn detail(status: StatusCode, chrome: Chrome, s: Sender, edit: Option<AddForm>) -> Response {
    let edit = edit.unwrap_or_else(|| AddForm {
        email: s.email.clone(),
        name: s.name.clone(),
        reply_mode: s.reply_mode.clone(),
        signature_text: s.signature_text.clone(),
        signature_html: s.signature_html.clone(),
    });
    page(status, &DetailPage { chrome, s, edit })
}

async fn detail_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Seg(email): Seg,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "senders", q.notice.as_deref())?;
    let s = sender(&st, email).await?;
    Ok(detail(StatusCode::OK, chrome, s, None))
}

async fn edit(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Seg(email): Seg,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "senders")?;
    // What the form leaves out stays as it is (a script may post one
    // field); a signature part posted empty is removed.
    let patch = SenderPatch {
        name: form
            .posts("name")
            .then(|| form.raw("name").trim().to_string()),
        reply_mode: form.get("reply_mode").map(str::to_string),
        signature_text: form
            .posts("signature_text")
            .then(|| form.optional("signature_text")),
        signature_html: form
            .posts("signature_html")
            .then(|| form.optional("signature_html")),
    };
    let (config, actor, e) = (st.config.clone(), chrome.audit_actor(), email.clone());
    let done = st
        .store
        .write_with(move |c| update_audited(c, &config, &actor, &e, &patch))
        .await;
    match done {
        Ok(_) => Ok(see_other(&format!(
            "/app/admin/senders/{}?notice=saved",
            path_segment(&email)
        ))),
        Err(e) => {
            chrome.error = Some(form_error(e)?);
            let s = sender(&st, email).await?;
            let kept = AddForm {
                email: s.email.clone(),
                name: form.raw("name").to_string(),
                reply_mode: form.raw("reply_mode").to_string(),
                signature_text: form.raw("signature_text").to_string(),
                signature_html: form.raw("signature_html").to_string(),
            };
            Ok(detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                chrome,
                s,
                Some(kept),
            ))
        }
    }
}

async fn verify(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Seg(email): Seg,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "senders")?;
    let code = form.get("code").unwrap_or_default().to_string();
    let (config, actor, e) = (st.config.clone(), chrome.audit_actor(), email.clone());
    let outcome = st
        .store
        .write_with(move |c| {
            if code.is_empty() {
                return Err(SenderError::Invalid {
                    field: "code".into(),
                    message: "required".into(),
                });
            }
            service::verify_audited(c, &config, &actor, &e, &code)
        })
        .await
        .and_then(service::Verified::into_result);
    match outcome {
        Ok(_) => Ok(see_other(&format!(
            "/app/admin/senders/{}?notice=sender-verified",
            path_segment(&email)
        ))),
        Err(e) => {
            chrome.error = Some(form_error(e)?);
            let s = sender(&st, email).await?;
            Ok(detail(StatusCode::UNPROCESSABLE_ENTITY, chrome, s, None))
        }
    }
}

async fn check(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Seg(email): Seg,
    form: Form,
) -> Result<Response, Refusal> {
    admin_post(&st, chrome, &headers, &form, "senders")?;
    service::check_sender_now(
        &st.store,
        &st.config,
        &st.resolver,
        &st.conversations.outbox_waker,
        &email,
    )
    .await?;
    Ok(see_other(&format!(
        "/app/admin/senders/{}?notice=checked",
        path_segment(&email)
    )))
}

async fn delete(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Seg(email): Seg,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "senders")?;
    if !form.checked("confirm") {
        chrome.error = Some(format!(
            "{email} was not deleted: tick the box to confirm the deletion."
        ));
        let s = sender(&st, email).await?;
        return Ok(detail(StatusCode::UNPROCESSABLE_ENTITY, chrome, s, None));
    }
    let actor = chrome.audit_actor();
    st.store
        .write_with(move |c| service::delete_audited(c, &actor, &email))
        .await?;
    Ok(see_other("/app/admin/senders?notice=deleted"))
}
