//! A parent ticket's page (SPEC §11), as in Intercom's split view: the
//! ticket's details and activity log on one side, its side conversations
//! (status, participants, unread and waiting badges, the latest message)
//! on the other, with a link to start one more. Live on new messages of
//! any of its side conversations.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::agent::{Line, line};
use super::{Chrome, Layout as _, Refusal, ok, when};
use crate::http::AppState;
use crate::model::{Activity, Parent};
use crate::store::inbox::{self, Watch};
use crate::store::{self, Db};

pub fn routes() -> Router<AppState> {
    Router::new().route("/app/parents/{external_id}", get(parent_page))
}

/// Activity entries on one page.
const ACTIVITY_PAGE: i64 = 200;

/// An activity entry as the page shows it.
pub struct Entry {
    pub a: Activity,
    pub when: String,
}

#[derive(Template)]
#[template(path = "parent.html")]
struct ParentPage {
    chrome: Chrome,
    p: Parent,
    requester: String,
    created: String,
    snoozed: Option<String>,
    activity: Vec<Entry>,
    /// The id after which the next page of activity starts.
    more: Option<i64>,
    after: i64,
    lines: Vec<Line>,
}

#[derive(Debug, Deserialize)]
pub struct ParentQuery {
    notice: Option<String>,
    after: Option<String>,
}

struct Loaded {
    parent: Parent,
    activity: Vec<Activity>,
    more: Option<i64>,
    rows: Vec<inbox::Row>,
    latest: i64,
}

fn load(db: &Db<'_>, user: i64, external_id: &str, after: i64) -> store::Result<Option<Loaded>> {
    let Some(parent) = store::parents::get(db, external_id)? else {
        return Ok(None);
    };
    let mut activity = store::activity::list(db, parent.id, after, ACTIVITY_PAGE + 1)?;
    let more = if activity.len() as i64 > ACTIVITY_PAGE {
        activity.truncate(ACTIVITY_PAGE as usize);
        activity.last().map(|a| a.id)
    } else {
        None
    };
    let rows = store::side_conversations::ids_of_parent(db, parent.id, false)?
        .into_iter()
        .rev()
        .map(|id| inbox::row(db, user, id))
        .collect::<store::Result<Vec<Option<inbox::Row>>>>()?
        .into_iter()
        .flatten()
        .collect();
    let latest = inbox::latest(db, &Watch::Parent(parent.id))?;
    Ok(Some(Loaded {
        parent,
        activity,
        more,
        rows,
        latest,
    }))
}

async fn parent_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Path(external_id): Path<String>,
    Query(q): Query<ParentQuery>,
) -> Result<Response, Refusal> {
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Refusal::BadRequest("after: expected an entry number".into()))?,
    };
    let user = chrome.user.id;
    let l = st
        .store
        .read(move |c| load(c, user, &external_id, after))
        .await?
        .ok_or(Refusal::NotFound("That ticket"))?;
    let mut chrome = chrome.with("inbox", q.notice.as_deref());
    chrome.watch = Some((format!("parent:{}", l.parent.external_id), l.latest));
    let p = l.parent;
    let requester = match (&p.requester_name, &p.requester_email) {
        (Some(n), Some(e)) if !n.trim().is_empty() => format!("{n} <{e}>"),
        (_, Some(e)) => e.clone(),
        (Some(n), None) => n.clone(),
        (None, None) => "not known".to_string(),
    };
    Ok(ok(&ParentPage {
        chrome,
        requester,
        created: when(&p.created_at),
        snoozed: p.snoozed_until.as_ref().map(when),
        activity: l
            .activity
            .into_iter()
            .map(|a| Entry {
                when: when(&a.created_at),
                a,
            })
            .collect(),
        more: l.more,
        after,
        lines: l.rows.into_iter().map(line).collect(),
        p,
    }))
}
