//! Settings, templates and webhooks in the console (SPEC §7, §11).
//!
//! Settings: the workspace signature (form fields `signature_text` and
//! `signature_html` are the API's `signature.text` and `signature.html`),
//! `default_sender`, `side_conversations_enabled`; a preview fills the
//! placeholders for the signed-in agent and the chosen sender, shown as
//! text (the HTML signature as its source and as the text it reads as,
//! never as live markup). Templates: list, add, delete. Webhooks: list,
//! add (events as checkboxes of the known names), delete, and an
//! endpoint's delivery log. Same rules as the API: `conversations::settings`,
//! `templates::validate`, `store::webhooks`.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::admin::{Id, NoticeQuery, admin, admin_post};
use super::form::Form;
use super::{Chrome, Layout as _, Refusal, ok, page, see_other, when};
use crate::conversations::ServiceError;
use crate::conversations::settings::{self, SettingsPatch};
use crate::http::AppState;
use crate::model::NewTemplate;
use crate::store::webhooks::{self, Delivery, Webhook, WebhookError};
use crate::store::{self, StoreError, events};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/app/admin/settings",
            get(settings_page).post(save_settings),
        )
        .route(
            "/app/admin/templates",
            get(templates_page).post(add_template),
        )
        .route("/app/admin/templates/{id}/delete", post(delete_template))
        .route("/app/admin/webhooks", get(webhooks_page).post(add_webhook))
        .route("/app/admin/webhooks/{id}", get(webhook_page))
        .route("/app/admin/webhooks/{id}/delete", post(delete_webhook))
}

// ---------------------------------------------------------------------------
// Settings

/// The settings form's values.
pub struct SettingsForm {
    pub signature_text: String,
    pub signature_html: String,
    pub default_sender: String,
    pub side_conversations_enabled: bool,
    /// The default reminder delay (`2d`; "" for none).
    pub remind_after: String,
}

/// The signature as it would read: placeholders filled for a sample.
pub struct Preview {
    pub agent: String,
    pub sender_name: String,
    pub sender_email: String,
    pub text: String,
    /// The filled HTML signature as text (what it reads as).
    pub html_as_text: String,
    /// The filled HTML signature's source.
    pub html_source: String,
    pub error: Option<String>,
}

/// A sender the default may be.
pub struct Choice {
    pub email: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "admin_settings.html")]
struct SettingsPage {
    chrome: Chrome,
    form: SettingsForm,
    choices: Vec<Choice>,
    preview: Preview,
}

/// The verified senders, and `current` when it is none of them (the
/// gateway's own address, which the API accepts too), so it stays chosen.
async fn choices(st: &AppState, current: &str) -> Result<Vec<Choice>, Refusal> {
    let mut list = st
        .store
        .read(|c| {
            let mut out = Vec::new();
            for e in store::senders::emails(c)? {
                if let Some(s) = store::senders::get(c, &e)?
                    && s.status == "verified"
                {
                    out.push(Choice {
                        email: s.email,
                        name: s.name,
                    });
                }
            }
            Ok(out)
        })
        .await?;
    if !current.is_empty() && !list.iter().any(|c| c.email.eq_ignore_ascii_case(current)) {
        list.push(Choice {
            email: current.to_string(),
            name: String::new(),
        });
    }
    Ok(list)
}

fn preview(
    chrome: &Chrome,
    form: &SettingsForm,
    choices: &[Choice],
    gateway: &str,
    error: Option<String>,
) -> Preview {
    let (sender_name, sender_email) = match choices
        .iter()
        .find(|c| c.email.eq_ignore_ascii_case(&form.default_sender))
    {
        Some(c) => (c.name.clone(), c.email.clone()),
        None => ("Support".to_string(), gateway.to_string()),
    };
    let agent = chrome.user.name.clone();
    let fill = |t: &str, html: bool| {
        crate::templates::fill_signature(t, html, &agent, &sender_name, &sender_email)
    };
    let html_source = fill(&form.signature_html, true);
    Preview {
        text: fill(&form.signature_text, false),
        html_as_text: crate::reply_text::html_to_text(&html_source),
        html_source,
        agent: agent.clone(),
        sender_name: sender_name.clone(),
        sender_email: sender_email.clone(),
        error,
    }
}

async fn settings_view(
    st: &AppState,
    status: StatusCode,
    chrome: Chrome,
    form: SettingsForm,
    preview_error: Option<String>,
) -> Result<Response, Refusal> {
    let choices = choices(st, &form.default_sender).await?;
    let gateway = format!("reply@{}", st.config.domain);
    let preview = preview(&chrome, &form, &choices, &gateway, preview_error);
    Ok(page(
        status,
        &SettingsPage {
            chrome,
            form,
            choices,
            preview,
        },
    ))
}

async fn settings_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "settings", q.notice.as_deref())?;
    let s = st.store.read(settings::read).await?;
    let form = SettingsForm {
        signature_text: s.signature_text.unwrap_or_default(),
        signature_html: s.signature_html.unwrap_or_default(),
        default_sender: s.default_sender.unwrap_or_default(),
        side_conversations_enabled: s.side_conversations_enabled,
        remind_after: s.remind_after.unwrap_or_default(),
    };
    settings_view(&st, StatusCode::OK, chrome, form, None).await
}

fn service_message(e: ServiceError) -> Result<String, Refusal> {
    match e {
        ServiceError::Invalid { field, message } => Ok(format!("{field}: {message}")),
        ServiceError::Conflict(m) => Ok(m),
        other => Err(other.into()),
    }
}

async fn save_settings(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "settings")?;
    let posted = SettingsForm {
        signature_text: form.raw("signature_text").to_string(),
        signature_html: form.raw("signature_html").to_string(),
        default_sender: form.get("default_sender").unwrap_or_default().to_string(),
        side_conversations_enabled: form.checked("side_conversations_enabled"),
        remind_after: form.raw("remind_after").trim().to_string(),
    };
    // What the form leaves out stays as it is (a script may post one
    // field); a field posted empty is removed. The page's checkbox comes
    // after a hidden `false`, so an unticked box is posted too.
    let part = |name: &str| form.posts(name).then(|| form.optional(name));
    let patch = SettingsPatch {
        signature_text: part("signature_text"),
        signature_html: part("signature_html"),
        default_sender: form
            .posts("default_sender")
            .then(|| form.get("default_sender").map(str::to_string)),
        side_conversations_enabled: form
            .posts("side_conversations_enabled")
            .then_some(posted.side_conversations_enabled),
        // Posted empty: no default reminder.
        remind_after: form
            .posts("remind_after")
            .then(|| Some(posted.remind_after.clone()).filter(|r| !r.is_empty())),
    };
    if form.get("preview").is_some() {
        // Not saved: the page again with the preview of what was typed
        // (and what is wrong with it).
        let problem = settings::check(&patch)
            .err()
            .map(service_message)
            .transpose()?;
        return settings_view(&st, StatusCode::OK, chrome, posted, problem).await;
    }
    let (domain, actor) = (st.config.domain.clone(), chrome.audit_actor());
    let done = st
        .store
        .write_with(move |c| settings::update(c, &domain, &actor, &patch))
        .await;
    match done {
        Ok(()) => Ok(see_other("/app/admin/settings?notice=saved")),
        Err(e) => {
            chrome.error = Some(service_message(e)?);
            settings_view(&st, StatusCode::UNPROCESSABLE_ENTITY, chrome, posted, None).await
        }
    }
}

// ---------------------------------------------------------------------------
// Templates

/// The add form's values, kept when it is refused.
#[derive(Default)]
pub struct TemplateForm {
    pub name: String,
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub tags: String,
}

#[derive(Template)]
#[template(path = "admin_templates.html")]
struct TemplatesPage {
    chrome: Chrome,
    templates: Vec<crate::model::Template>,
    form: TemplateForm,
    placeholders: &'static [&'static str],
}

impl TemplatesPage {
    fn braces(&self, name: &str) -> String {
        format!("{{{{{name}}}}}")
    }
}

async fn templates_view(
    st: &AppState,
    status: StatusCode,
    chrome: Chrome,
    form: TemplateForm,
) -> Result<Response, Refusal> {
    let templates = st.store.read(store::templates::list).await?;
    Ok(page(
        status,
        &TemplatesPage {
            chrome,
            templates,
            form,
            placeholders: crate::templates::PLACEHOLDERS,
        },
    ))
}

async fn templates_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "templates", q.notice.as_deref())?;
    templates_view(&st, StatusCode::OK, chrome, TemplateForm::default()).await
}

async fn add_template(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "templates")?;
    let new = NewTemplate {
        name: form.raw("name").to_string(),
        to: form.addresses("to"),
        cc: form.addresses("cc"),
        subject: form.raw("subject").to_string(),
        body_text: form.optional("body_text"),
        body_html: form.optional("body_html"),
        tags: Vec::new(),
    };
    let tags = crate::conversations::check_tags(
        "tags",
        &crate::conversations::split_tags(form.raw("tags")),
    );
    let checked = crate::templates::validate(&new)
        .map_err(|e| format!("{}: {}", e.field, e.message))
        .and_then(|()| tags.map_err(|e| e.to_string()));
    let new = match checked {
        Ok(tags) => NewTemplate { tags, ..new },
        Err(message) => {
            chrome.error = Some(message);
            let kept = TemplateForm {
                name: form.raw("name").to_string(),
                to: form.all("to").join(", "),
                cc: form.all("cc").join(", "),
                subject: form.raw("subject").to_string(),
                body_text: form.raw("body_text").to_string(),
                body_html: form.raw("body_html").to_string(),
                tags: form.raw("tags").to_string(),
            };
            return templates_view(&st, StatusCode::UNPROCESSABLE_ENTITY, chrome, kept).await;
        }
    };
    let by = chrome.user.id;
    st.store
        .write(move |c| store::templates::create(c, &new, by))
        .await?;
    Ok(see_other("/app/admin/templates?notice=saved"))
}

async fn delete_template(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Id(id): Id,
    form: Form,
) -> Result<Response, Refusal> {
    admin_post(&st, chrome, &headers, &form, "templates")?;
    st.store
        .write(move |c| store::templates::delete(c, id))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Refusal::NotFound("That template"),
            other => other.into(),
        })?;
    Ok(see_other("/app/admin/templates?notice=deleted"))
}

// ---------------------------------------------------------------------------
// Webhooks

/// The add form's values, kept when it is refused (never the secret).
#[derive(Default)]
pub struct WebhookForm {
    pub url: String,
    pub events: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin_webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    hooks: Vec<Webhook>,
    form: WebhookForm,
    known: &'static [&'static str],
}

impl WebhooksPage {
    fn picked(&self, event: &str) -> bool {
        self.form.events.iter().any(|e| e == event)
    }
}

async fn webhooks_view(
    st: &AppState,
    status: StatusCode,
    chrome: Chrome,
    form: WebhookForm,
) -> Result<Response, Refusal> {
    let hooks = st.store.read(webhooks::list).await?;
    Ok(page(
        status,
        &WebhooksPage {
            chrome,
            hooks,
            form,
            known: events::EVENTS,
        },
    ))
}

async fn webhooks_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "webhooks", q.notice.as_deref())?;
    webhooks_view(&st, StatusCode::OK, chrome, WebhookForm::default()).await
}

async fn add_webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "webhooks")?;
    let url = form.raw("url").trim().to_string();
    let secret = form.raw("secret").to_string();
    let events: Vec<String> = form.all("events").into_iter().map(str::to_string).collect();
    let kept = WebhookForm {
        url: url.clone(),
        events: events.clone(),
    };
    let refused = if url.is_empty() {
        Some("url: required".to_string())
    } else {
        st.config
            .webhooks
            .allow_destinations
            .webhook_refusal(&url)
            .map(|m| format!("url: {m}"))
    };
    let done = match refused {
        Some(m) => Err(m),
        None => {
            let actor = chrome.audit_actor();
            match st
                .store
                .write_with(move |c| webhooks::create_audited(c, &actor, &url, &secret, &events))
                .await
            {
                Ok(h) => Ok(h),
                Err(WebhookError::Invalid { field, message }) => Err(format!("{field}: {message}")),
                Err(WebhookError::Store(e)) => return Err(e.into()),
            }
        }
    };
    match done {
        Ok(hook) => Ok(see_other(&format!(
            "/app/admin/webhooks/{}?notice=saved",
            hook.id
        ))),
        Err(m) => {
            chrome.error = Some(m);
            webhooks_view(&st, StatusCode::UNPROCESSABLE_ENTITY, chrome, kept).await
        }
    }
}

async fn delete_webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Id(id): Id,
    form: Form,
) -> Result<Response, Refusal> {
    let chrome = admin_post(&st, chrome, &headers, &form, "webhooks")?;
    let actor = chrome.audit_actor();
    st.store
        .write(move |c| webhooks::delete_audited(c, &actor, id))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Refusal::NotFound("That webhook"),
            other => other.into(),
        })?;
    Ok(see_other("/app/admin/webhooks?notice=deleted"))
}

/// Deliveries per page of the log.
const LOG_PAGE: usize = 50;

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    before: Option<String>,
    notice: Option<String>,
}

/// One delivery as the log shows it.
pub struct LogLine {
    pub d: Delivery,
    pub created: String,
    pub next: String,
    pub delivered: String,
}

#[derive(Template)]
#[template(path = "admin_webhook.html")]
struct WebhookPage {
    chrome: Chrome,
    hook: Webhook,
    lines: Vec<LogLine>,
    next: Option<i64>,
    first_page: bool,
}

async fn webhook_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Id(id): Id,
    Query(q): Query<LogQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "webhooks", q.notice.as_deref())?;
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => Some(
            b.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Refusal::BadRequest("before: expected a delivery number".into()))?,
        ),
    };
    let (hook, log) = st
        .store
        .read(move |c| {
            Ok((
                webhooks::get(c, id)?,
                webhooks::deliveries(c, id, before, LOG_PAGE)?,
            ))
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Refusal::NotFound("That webhook"),
            other => other.into(),
        })?;
    let lines = log
        .items
        .into_iter()
        .map(|d| LogLine {
            created: when(&d.created_at),
            next: if matches!(
                d.state,
                webhooks::DeliveryState::Queued | webhooks::DeliveryState::Deferred
            ) {
                when(&d.next_attempt_at)
            } else {
                String::new()
            },
            delivered: d.delivered_at.as_ref().map(when).unwrap_or_default(),
            d,
        })
        .collect();
    Ok(ok(&WebhookPage {
        chrome,
        hook,
        lines,
        next: log.next_cursor,
        first_page: before.is_none(),
    }))
}
