//! Triage of unrouted mail (SPEC §11): inbound mail that matched no side
//! conversation, oldest first, each with its sender, subject, time, a
//! preview, its authentication verdicts, and a form that assigns it to a
//! side conversation (by number, or one of the recently active open
//! ones), the same service call as `POST /api/unrouted/{id}/assign`.
//! Owners and admins only, as in the API and the agent view (SPEC §9).

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::agent::id_of;
use super::agent_thread::{Msg, message};
use super::form::Form;
use super::{Chrome, Layout as _, Refusal, check_csrf, page, see_other};
use crate::conversations::AssignError;
use crate::http::AppState;
use crate::store::inbox::{self, Cursor, Filter, Watch};
use crate::store::{self, Db};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/unrouted", get(unrouted_page))
        .route("/app/unrouted/{id}/assign", post(assign))
}

/// Messages on one page.
const PAGE: i64 = 50;
/// Open side conversations the assign form offers by name.
const RECENT: i64 = 20;
/// Characters of a message's preview.
const PREVIEW: usize = 600;

/// A side conversation the assign form offers.
pub struct Target {
    pub id: i64,
    pub label: String,
}

/// One unrouted message.
pub struct Item {
    pub m: Msg,
    pub preview: String,
}

#[derive(Template)]
#[template(path = "unrouted.html")]
struct UnroutedPage {
    chrome: Chrome,
    items: Vec<Item>,
    targets: Vec<Target>,
    more: Option<i64>,
    after: i64,
    /// The message whose form was refused and what it held.
    failed: Option<(i64, String)>,
}

#[derive(Debug, Deserialize)]
pub struct UnroutedQuery {
    notice: Option<String>,
    after: Option<String>,
}

struct Loaded {
    items: Vec<Item>,
    targets: Vec<Target>,
    more: Option<i64>,
    latest: i64,
}

fn preview(text: &str) -> String {
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match t.char_indices().nth(PREVIEW) {
        Some((end, _)) => format!("{}…", &t[..end]),
        None => t,
    }
}

fn load(db: &Db<'_>, user: i64, after: i64) -> store::Result<Loaded> {
    let mut ids = store::messages::unrouted_ids(db, after, PAGE + 1)?;
    let more = if ids.len() as i64 > PAGE {
        ids.truncate(PAGE as usize);
        ids.last().copied()
    } else {
        None
    };
    let items = ids
        .into_iter()
        .map(|id| message(db, id, &[]))
        .collect::<store::Result<Vec<Option<Msg>>>>()?
        .into_iter()
        .flatten()
        .map(|m| Item {
            preview: preview(&m.visible),
            m,
        })
        .collect();
    let targets = inbox::page(db, user, Filter::Open, Cursor::Start, RECENT)?
        .rows
        .into_iter()
        .map(|r| Target {
            label: format!(
                "#{} {} (ticket {}, with {})",
                r.id,
                r.subject,
                r.parent,
                r.participants.join(", ")
            ),
            id: r.id,
        })
        .collect();
    Ok(Loaded {
        items,
        targets,
        more,
        latest: inbox::latest(db, &Watch::Inbound)?,
    })
}

async fn show(
    st: &AppState,
    mut chrome: Chrome,
    after: i64,
    status: StatusCode,
    failed: Option<(i64, String)>,
) -> Result<Response, Refusal> {
    let user = chrome.user.id;
    let l = st.store.read(move |c| load(c, user, after)).await?;
    chrome.nav = "unrouted";
    chrome.watch = Some(("inbox".to_string(), l.latest));
    Ok(page(
        status,
        &UnroutedPage {
            chrome,
            items: l.items,
            targets: l.targets,
            more: l.more,
            after,
            failed,
        },
    ))
}

async fn unrouted_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<UnroutedQuery>,
) -> Result<Response, Refusal> {
    chrome.require_admin()?;
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Refusal::BadRequest("after: expected a message number".into()))?,
    };
    let chrome = chrome.with("unrouted", q.notice.as_deref());
    show(&st, chrome, after, StatusCode::OK, None).await
}

async fn assign(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    check_csrf(
        &chrome,
        &headers,
        &st.config.http.public_url,
        form.get("csrf"),
    )?;
    chrome.require_admin()?;
    let id = id_of(&id, "That message")?;
    let given = form.get("side_conversation_id").unwrap_or("").to_string();
    let refuse = |chrome: Chrome, status: StatusCode, message: String| {
        let st = st.clone();
        let given = given.clone();
        async move {
            let mut chrome = chrome.with("unrouted", None);
            chrome.error = Some(message);
            show(&st, chrome, 0, status, Some((id, given))).await
        }
    };
    let Some(sc) = given.parse::<i64>().ok().filter(|n| *n > 0) else {
        let message = "side_conversation_id: enter the number of a side conversation".to_string();
        return refuse(chrome, StatusCode::UNPROCESSABLE_ENTITY, message).await;
    };
    match st.conversations.assign_unrouted(id, sc).await {
        Ok(()) => Ok(see_other(&format!(
            "/app/side-conversations/{sc}?notice=assigned"
        ))),
        Err(AssignError::MessageNotFound) => Err(Refusal::NotFound("That message")),
        Err(AssignError::SideConversationNotFound) => {
            let message = format!("side_conversation_id: there is no side conversation {sc}");
            refuse(chrome, StatusCode::UNPROCESSABLE_ENTITY, message).await
        }
        Err(AssignError::NotUnrouted) => {
            let message = "That message is not unrouted any more.".to_string();
            refuse(chrome, StatusCode::CONFLICT, message).await
        }
        Err(AssignError::Store(e)) => Err(e.into()),
    }
}
