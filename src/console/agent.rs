//! The agent's pages (SPEC §11): the inbox of side conversations that need
//! attention, a parent ticket's split view, a thread, starting one,
//! follow-up, close/reopen, and the triage of unrouted mail.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use axum::http::HeaderMap;

use super::form::Form;
use super::{Chrome, Layout as _, Refusal, check_csrf, ok, when};
use crate::conversations::{Attachment, ServiceError};
use crate::http::AppState;
use crate::model::Waiting;
use crate::store::inbox::{self, Counts, Cursor, Filter, Watch};
use crate::store::waiting::ListFilter;

pub fn routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/app/", get(inbox_page))
        .merge(super::agent_parent::routes())
        .merge(super::agent_thread::routes(upload_limit))
        .merge(super::agent_start::routes(upload_limit))
        .merge(super::agent_unrouted::routes())
        .merge(super::agent_reports::routes())
}

/// A number from a path (an id, an attachment's index); anything else is
/// a page that does not exist.
pub fn id_of(s: &str, what: &'static str) -> Result<i64, Refusal> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or(Refusal::NotFound(what))
}

/// Checks a form that changes something: the CSRF token first, then that
/// the user is not a viewer.
pub fn writer_form(
    st: &AppState,
    chrome: &Chrome,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(), Refusal> {
    check_csrf(
        chrome,
        headers,
        &st.config.http.public_url,
        form.get("csrf"),
    )?;
    chrome.require_writer()
}

/// The uploaded files of a form as attachments (file inputs named
/// `attachments`).
pub fn attachments(form: &Form) -> Vec<Attachment> {
    form.files
        .iter()
        .filter(|f| f.field == "attachments")
        .map(|f| Attachment {
            filename: f.filename.clone(),
            content_type: f.content_type.clone(),
            data: f.data.clone(),
        })
        .collect()
}

/// A refusal as a sentence for the page: the field (as the form names
/// it) and why.
pub fn service_message(e: &ServiceError) -> String {
    match e {
        ServiceError::Invalid { field, message } => format!("{field}: {message}"),
        other => other.to_string(),
    }
}

/// Lines per inbox page.
const PAGE: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    filter: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

/// One inbox line as the page shows it.
pub struct Line {
    pub row: inbox::Row,
    pub when: String,
    pub who: String,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    chrome: Chrome,
    filter: &'static str,
    /// The tag listed (filter `tag`).
    tag: String,
    counts: Counts,
    lines: Vec<Line>,
    next: Option<String>,
    first_page: bool,
}

impl InboxPage {
    fn count(&self, n: &i64) -> String {
        inbox::shown(*n)
    }

    /// How long a line has waited, as "3 days".
    fn waited(&self, since: &i64) -> String {
        crate::model::age_text(crate::model::now_ms() - since)
    }

    /// The query of this list's pages.
    fn query(&self) -> String {
        let pairs: &[(&str, &str)] = if self.filter == "tag" {
            &[("filter", "tag"), ("tag", &self.tag)]
        } else {
            &[("filter", self.filter)]
        };
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    fn heading(&self) -> &'static str {
        match self.filter {
            "mine" => "Assigned to me",
            "open" => "All open side conversations",
            "closed" => "Closed side conversations",
            "vendor" => "Waiting on the vendor, longest first",
            "tag" => "Tagged",
            _ => "Needs attention",
        }
    }
}

pub fn line(row: inbox::Row) -> Line {
    let (when_ms, who) = match &row.last {
        Some(m) => (
            m.received_at,
            match (&m.from_name, &m.from_email) {
                (Some(n), _) if !n.trim().is_empty() => n.clone(),
                (_, Some(e)) => e.clone(),
                _ => "unknown sender".to_string(),
            },
        ),
        None => (row.updated_at, String::new()),
    };
    Line {
        when: when(&when_ms),
        who,
        row,
    }
}

async fn inbox_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<InboxQuery>,
) -> Result<Response, Refusal> {
    // The lists of SPEC §15 (waiting on the vendor, a tag) are read like
    // the API's; the others are the inbox's own.
    let mut listed: Option<ListFilter> = None;
    let (filter, name) = match q.filter.as_deref() {
        None | Some("") | Some("attention") => (Filter::Attention, "attention"),
        Some("mine") => (Filter::Mine, "mine"),
        Some("open") => (Filter::Open, "open"),
        Some("closed") => (Filter::Closed, "closed"),
        Some("vendor") => {
            listed = Some(ListFilter {
                waiting: Some(Waiting::Vendor),
                ..ListFilter::default()
            });
            (Filter::Open, "vendor")
        }
        Some("tag") => {
            let tag = q.tag.as_deref().map(str::trim).unwrap_or("");
            if tag.is_empty() {
                return Err(Refusal::BadRequest("tag: which tag to list".into()));
            }
            listed = Some(ListFilter {
                tag: Some(tag.to_string()),
                ..ListFilter::default()
            });
            (Filter::Open, "tag")
        }
        Some(_) => {
            return Err(Refusal::BadRequest(
                "filter: expected attention, mine, open, closed, vendor or tag".into(),
            ));
        }
    };
    let cursor = match q.cursor.as_deref() {
        None => Cursor::Start,
        Some(c) => Cursor::decode(c)
            .ok_or_else(|| Refusal::BadRequest("cursor: not one this page made".into()))?,
    };
    let user = chrome.user.id;
    let (counts, page, latest) = st
        .store
        .read(move |c| {
            Ok((
                inbox::counts(c, user)?,
                match &listed {
                    Some(f) => inbox::page_filtered(c, user, f, cursor, PAGE)?,
                    None => inbox::page(c, user, filter, cursor, PAGE)?,
                },
                inbox::latest(c, &Watch::Inbound)?,
            ))
        })
        .await?;
    let mut chrome = chrome.with("inbox", q.notice.as_deref());
    chrome.watch = Some(("inbox".to_string(), latest));
    Ok(ok(&InboxPage {
        chrome,
        filter: name,
        tag: q.tag.unwrap_or_default().trim().to_string(),
        counts,
        lines: page.rows.into_iter().map(line).collect(),
        next: page.next.map(|c| c.encode()),
        first_page: cursor == Cursor::Start,
    }))
}
