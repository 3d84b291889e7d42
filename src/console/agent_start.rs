//! Starting a side conversation (SPEC §5, §11): `GET /app/new` (the
//! ticket is a field) and `GET /app/parents/{external_id}/new` (it is the
//! page's). The form's fields are the API's: `parent`, `to`, `cc`,
//! `subject`, `body_text`, `from`, `include_context`, `share_portal_link`,
//! `attachments` (files) and `template`. `from` defaults to the sender last
//! used on the ticket, else the settings' default, else the gateway's own
//! address. A template picked with "Use template" (`?template=<id>`) fills
//! the form on the server with its placeholders filled; posted with the
//! form, it fills what the form leaves out, as the API does. A ticket the
//! helpdesk has not synced yet is created by the start, as the API does.

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::agent::{attachments, service_message, writer_form};
use super::form::Form;
use super::{Chrome, Layout as _, Refusal, page, see_other};
use crate::conversations::{self, Draft, ServiceError, StartRequest};
use crate::http::AppState;
use crate::store::{self, agent_pages};

pub fn routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/app/new",
            get(new_page)
                .post(start_any)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/app/parents/{external_id}/new",
            get(parent_new_page)
                .post(start_on_parent)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
}

/// What the form holds (kept when a start is refused).
#[derive(Debug, Clone, Default)]
pub struct StartDraft {
    pub parent: String,
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub body_text: String,
    /// Tags, separated by commas.
    pub tags: String,
    pub from: String,
    pub include_context: bool,
    pub share_portal_link: bool,
    pub template: Option<i64>,
}

impl StartDraft {
    /// Whether template `id` is the one the form was filled from.
    pub fn picked(&self, id: &i64) -> bool {
        self.template == Some(*id)
    }
}

/// A template in the picker.
pub struct Choice {
    pub id: i64,
    pub name: String,
}

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    chrome: Chrome,
    action: String,
    /// The ticket, when the page is a ticket's (`None`: a form field).
    fixed_parent: Option<String>,
    /// The ticket is known (a ticket page's form only).
    parent_known: bool,
    d: StartDraft,
    senders: Vec<String>,
    templates: Vec<Choice>,
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    parent: Option<String>,
    template: Option<String>,
}

/// What the page needs from the store: the ticket's default sender, the
/// sender choices, the templates, and whether the ticket is known.
struct Options {
    default_from: String,
    senders: Vec<String>,
    templates: Vec<Choice>,
    parent_known: bool,
}

async fn options(st: &AppState, parent: &str) -> Result<Options, Refusal> {
    let config = st.config.clone();
    let parent = parent.to_string();
    st.store
        .read(move |c| {
            let p = if parent.is_empty() {
                None
            } else {
                store::parents::get(c, &parent)?
            };
            let default_from = conversations::default_sender(
                c,
                &config,
                p.as_ref().and_then(|p| p.last_sender.as_deref()),
            )
            .map_err(|e| store::StoreError::Database(e.to_string()))?;
            let gateway = format!("reply@{}", config.domain);
            let mut senders = vec![gateway];
            senders.extend(agent_pages::verified_senders(c)?);
            let templates = store::templates::list(c)?
                .into_iter()
                .map(|t| Choice {
                    id: t.id,
                    name: t.name,
                })
                .collect();
            Ok(Options {
                default_from,
                senders,
                templates,
                parent_known: p.is_some(),
            })
        })
        .await
        .map_err(Refusal::from)
}

/// Renders the form for `parent` (fixed when the page is a ticket's).
async fn show(
    st: &AppState,
    chrome: Chrome,
    fixed: Option<String>,
    mut d: StartDraft,
    status: StatusCode,
) -> Result<Response, Refusal> {
    let parent = fixed.clone().unwrap_or_else(|| d.parent.clone());
    let o = options(st, &parent).await?;
    if d.from.is_empty() {
        d.from = o.default_from.clone();
    }
    let mut senders = o.senders;
    if !senders.iter().any(|s| s.eq_ignore_ascii_case(&d.from)) {
        senders.push(d.from.clone());
    }
    let action = match &fixed {
        Some(p) => format!(
            "/app/parents/{}/new",
            url::form_urlencoded::byte_serialize(p.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        ),
        None => "/app/new".to_string(),
    };
    let mut chrome = chrome;
    chrome.nav = "new";
    Ok(page(
        status,
        &StartPage {
            chrome,
            action,
            parent_known: o.parent_known,
            fixed_parent: fixed,
            d,
            senders,
            templates: o.templates,
        },
    ))
}

/// A draft from a template, for the form (`?template=`).
async fn from_template(
    st: &AppState,
    chrome: &Chrome,
    parent: &str,
    template: &str,
) -> Result<StartDraft, ServiceError> {
    let tid = template
        .parse::<i64>()
        .map_err(|_| conversations_invalid("template", "expected a template number"))?;
    let filled = st
        .conversations
        .fill_from_template(
            tid,
            parent.to_string(),
            chrome.user.name.clone(),
            Draft::default(),
        )
        .await?;
    Ok(StartDraft {
        parent: parent.to_string(),
        to: filled.to.unwrap_or_default().join(", "),
        cc: filled.cc.unwrap_or_default().join(", "),
        subject: filled.subject.unwrap_or_default(),
        body_text: filled
            .body_text
            .or_else(|| {
                filled
                    .body_html
                    .as_deref()
                    .map(crate::reply_text::html_to_text)
            })
            .unwrap_or_default(),
        tags: filled.tags.unwrap_or_default().join(", "),
        template: Some(tid),
        ..StartDraft::default()
    })
}

fn conversations_invalid(field: &str, message: &str) -> ServiceError {
    ServiceError::Invalid {
        field: field.to_string(),
        message: message.to_string(),
    }
}

async fn form_page(
    st: AppState,
    chrome: Chrome,
    fixed: Option<String>,
    q: StartQuery,
) -> Result<Response, Refusal> {
    chrome.require_writer()?;
    let parent = fixed
        .clone()
        .or(q.parent)
        .map(|p| p.trim().to_string())
        .unwrap_or_default();
    let draft = match q.template.as_deref().filter(|t| !t.is_empty()) {
        None => StartDraft {
            parent: parent.clone(),
            ..StartDraft::default()
        },
        Some(t) => match from_template(&st, &chrome, &parent, t).await {
            Ok(d) => d,
            Err(e @ ServiceError::Invalid { .. }) => {
                let mut chrome = chrome;
                chrome.error = Some(service_message(&e));
                let d = StartDraft {
                    parent,
                    ..StartDraft::default()
                };
                return show(&st, chrome, fixed, d, StatusCode::UNPROCESSABLE_ENTITY).await;
            }
            Err(e) => return Err(e.into()),
        },
    };
    show(&st, chrome, fixed, draft, StatusCode::OK).await
}

async fn new_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<StartQuery>,
) -> Result<Response, Refusal> {
    form_page(st, chrome, None, q).await
}

async fn parent_new_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Path(external_id): Path<String>,
    Query(q): Query<StartQuery>,
) -> Result<Response, Refusal> {
    form_page(st, chrome, Some(external_id), q).await
}

/// Starts from a posted form, through the same service call as the API.
async fn start(
    st: AppState,
    headers: HeaderMap,
    chrome: Chrome,
    fixed: Option<String>,
    form: Form,
) -> Result<Response, Refusal> {
    writer_form(&st, &chrome, &headers, &form)?;
    let d = StartDraft {
        parent: form.get("parent").unwrap_or("").to_string(),
        to: form.all("to").join(", "),
        cc: form.all("cc").join(", "),
        subject: form.raw("subject").to_string(),
        body_text: form.raw("body_text").to_string(),
        tags: form.raw("tags").to_string(),
        from: form.get("from").unwrap_or("").to_string(),
        include_context: form.checked("include_context"),
        share_portal_link: form.checked("share_portal_link"),
        template: form.get("template").and_then(|t| t.parse().ok()),
    };
    let refuse = |chrome: Chrome, d: StartDraft, e: ServiceError| {
        let st = st.clone();
        let fixed = fixed.clone();
        async move {
            let status = match &e {
                ServiceError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                ServiceError::Conflict(_) => StatusCode::CONFLICT,
                ServiceError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::NotFound(_) | ServiceError::Store(_) => return Err(e.into()),
            };
            let mut chrome = chrome;
            chrome.error = Some(service_message(&e));
            show(&st, chrome, fixed, d, status).await
        }
    };
    let parent = match &fixed {
        Some(p) => p.clone(),
        None if d.parent.is_empty() => {
            let e = conversations_invalid("parent", "enter the ticket's id in your helpdesk");
            return refuse(chrome, d, e).await;
        }
        None => d.parent.clone(),
    };
    let mut draft = Draft {
        to: Some(form.addresses("to")).filter(|t| !t.is_empty()),
        cc: (!form.all("cc").is_empty()).then(|| form.addresses("cc")),
        subject: Some(d.subject.clone()).filter(|s| !s.trim().is_empty()),
        body_text: Some(d.body_text.clone()).filter(|b| !b.trim().is_empty()),
        body_html: None,
        tags: Some(crate::conversations::split_tags(&d.tags)).filter(|t| !t.is_empty()),
    };
    if let Some(tid) = form.get("template") {
        let Ok(tid) = tid.parse::<i64>() else {
            let e = conversations_invalid("template", "expected a template number");
            return refuse(chrome, d, e).await;
        };
        draft = match st
            .conversations
            .fill_from_template(tid, parent.clone(), chrome.user.name.clone(), draft)
            .await
        {
            Ok(filled) => filled,
            Err(e) => return refuse(chrome, d, e).await,
        };
    }
    let req = StartRequest {
        to: draft.to.unwrap_or_default(),
        cc: draft.cc.unwrap_or_default(),
        subject: draft.subject.unwrap_or_default(),
        body_text: draft.body_text,
        body_html: draft.body_html,
        from: form.get("from").map(str::to_string),
        include_context: d.include_context,
        share_portal_link: d.share_portal_link,
        attachments: attachments(&form),
        tags: draft.tags.unwrap_or_default(),
        ..StartRequest::default()
    };
    match st.conversations.start(chrome.actor(), parent, req).await {
        Ok(sent) => Ok(see_other(&format!(
            "/app/side-conversations/{}?notice=started",
            sent.side_conversation
        ))),
        Err(e) => refuse(chrome, d, e).await,
    }
}

async fn start_any(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    start(st, headers, chrome, None, form).await
}

async fn start_on_parent(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(external_id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    start(st, headers, chrome, Some(external_id), form).await
}
