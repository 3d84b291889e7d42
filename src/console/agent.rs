//! The agent's pages (SPEC §11): the inbox of side conversations that need
//! attention, a parent ticket's split view, a thread, starting one,
//! follow-up, close/reopen, and the triage of unrouted mail.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::{Chrome, Layout as _, Refusal, ok, when};
use crate::http::AppState;
use crate::store::inbox::{self, Counts, Cursor, Filter, Watch};

pub fn routes() -> Router<AppState> {
    Router::new().route("/app/", get(inbox_page))
}

/// Lines per inbox page.
const PAGE: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    filter: Option<String>,
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
    counts: Counts,
    lines: Vec<Line>,
    next: Option<String>,
    first_page: bool,
}

impl InboxPage {
    fn heading(&self) -> &'static str {
        match self.filter {
            "mine" => "Assigned to me",
            "open" => "All open side conversations",
            "closed" => "Closed side conversations",
            _ => "Needs attention",
        }
    }
}

fn line(row: inbox::Row) -> Line {
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
    let (filter, name) = match q.filter.as_deref() {
        None | Some("") | Some("attention") => (Filter::Attention, "attention"),
        Some("mine") => (Filter::Mine, "mine"),
        Some("open") => (Filter::Open, "open"),
        Some("closed") => (Filter::Closed, "closed"),
        Some(_) => {
            return Err(Refusal::BadRequest(
                "filter: expected attention, mine, open or closed".into(),
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
                inbox::page(c, user, filter, cursor, PAGE)?,
                inbox::latest(c, &Watch::Inbound)?,
            ))
        })
        .await?;
    let mut chrome = chrome.with("inbox", q.notice.as_deref());
    chrome.watch = Some(("inbox".to_string(), latest));
    Ok(ok(&InboxPage {
        chrome,
        filter: name,
        counts,
        lines: page.rows.into_iter().map(line).collect(),
        next: page.next.map(|c| c.encode()),
        first_page: cursor == Cursor::Start,
    }))
}
