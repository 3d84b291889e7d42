//! A side conversation's thread (SPEC §11): its header (parent, status,
//! participants and how they joined, sender address, portal links), its
//! messages in order with the visible reply first and the whole message
//! on demand, delivery per recipient, and the forms that act on it:
//! follow-up, close/reopen, admit an unverified sender, revoke portal
//! links. Raw messages and attachments download with the session.

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::agent::{id_of, writer_form};
use super::form::Form;
use super::{Chrome, Layout as _, Refusal, page, see_other, when};
use crate::conversations::{self, FollowUpRequest, ServiceError};
use crate::http::AppState;
use crate::http::download::attachment_response;
use crate::model::{Direction, ParticipantRole, ScStatus};
use crate::store::inbox::{self, Watch};
use crate::store::{self, Db, agent_pages, outbox};

pub fn routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/app/side-conversations/{id}", get(thread_page))
        .route(
            "/app/side-conversations/{id}/messages",
            post(follow_up).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/app/side-conversations/{id}/close", post(close))
        .route("/app/side-conversations/{id}/settings", post(set_settings))
        .route("/app/side-conversations/{id}/reopen", post(reopen))
        .route("/app/side-conversations/{id}/participants", post(admit))
        .route("/app/side-conversations/{id}/portal/revoke", post(revoke))
        .route("/app/messages/{id}/raw", get(raw))
        .route("/app/messages/{id}/attachments/{n}", get(attachment))
}

/// Messages on one page of a thread.
const THREAD_PAGE: i64 = 100;
/// Characters of each message body a thread page carries; the rest is in
/// the raw message download.
const BODY_CHARS: usize = 64 * 1024;

/// A participant as the header shows them.
pub struct Person {
    pub email: String,
    pub name: Option<String>,
    pub joined: &'static str,
}

/// A recipient's portal link.
pub struct PortalLink {
    pub n: usize,
    /// The one link of an older side conversation, shared by everyone.
    pub shared: bool,
    pub email: String,
    pub url: String,
    pub revoked: bool,
}

/// One recipient's delivery of an outbound message.
pub struct Delivery {
    pub recipient: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt: Option<String>,
    pub sent: Option<String>,
}

/// An attachment link.
pub struct File {
    pub index: i64,
    pub name: String,
    pub content_type: String,
    pub size: String,
}

/// One message as the thread shows it.
pub struct Msg {
    pub id: i64,
    pub out: bool,
    pub kind: String,
    pub from: String,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub when: String,
    pub visible: String,
    pub full: String,
    pub cut: bool,
    pub unverified: bool,
    /// An unverified sender who is not a participant yet: the page offers
    /// to admit them.
    pub admit: bool,
    pub auth: Option<String>,
    pub files: Vec<File>,
    pub delivery: Vec<Delivery>,
}

/// A thread page's contents.
pub struct Thread {
    pub id: i64,
    pub subject: String,
    pub open: bool,
    pub parent: String,
    pub parent_subject: String,
    pub sender: String,
    pub reply_address: String,
    pub people: Vec<Person>,
    pub portal: Vec<PortalLink>,
    pub messages: Vec<Msg>,
    /// The id after which the next page of messages starts.
    pub more: Option<i64>,
    pub latest: i64,
    pub unread: bool,
    /// "waiting on the vendor for 2 days" (SPEC §15), when it waits.
    pub waiting: Option<String>,
    pub tags: Vec<String>,
    /// The reminder delay as `2d` ("" for none), and the vendor nudge.
    pub remind_after: String,
    pub nudge_vendor: bool,
}

/// What a follow-up form held, kept when it is refused.
#[derive(Default)]
pub struct FollowDraft {
    pub body_text: String,
    pub cc: String,
}

#[derive(Template)]
#[template(path = "thread.html")]
struct ThreadPage {
    chrome: Chrome,
    t: Thread,
    draft: FollowDraft,
    after: i64,
}

#[derive(Debug, Deserialize)]
pub struct ThreadQuery {
    notice: Option<String>,
    after: Option<String>,
}

fn joined(role: ParticipantRole) -> &'static str {
    match role {
        ParticipantRole::To => "to",
        ParticipantRole::Cc => "cc",
        ParticipantRole::Joined => "joined by replying",
        ParticipantRole::Admitted => "admitted by an agent",
    }
}

/// `a@x, B <b@y>` from a JSON list of `{name, email}`.
fn addresses(json: &str) -> String {
    serde_json::from_str::<Vec<Value>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|a| {
            let email = a["email"].as_str()?;
            Some(match a["name"].as_str().filter(|n| !n.trim().is_empty()) {
                Some(n) => format!("{n} <{email}>"),
                None => email.to_string(),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SPF pass · DKIM none · DMARC fail` from stored authentication results.
fn auth_summary(json: Option<&str>) -> Option<String> {
    let v: Value = serde_json::from_str(json?).ok()?;
    let part = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "none".to_string(),
        Value::Object(o) => o
            .get("result")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string(),
        other => other.to_string(),
    };
    Some(format!(
        "SPF {} · DKIM {} · DMARC {}",
        part("spf"),
        part("dkim"),
        part("dmarc")
    ))
}

/// The text of a stored message: its text body, else its HTML as text
/// (stored HTML is never shown as HTML).
fn text_of(text: Option<String>, html: Option<&str>) -> String {
    text.filter(|t| !t.trim().is_empty())
        .or_else(|| html.map(crate::reply_text::html_to_text))
        .unwrap_or_default()
}

/// One message of a thread, as the page shows it.
pub fn message(db: &Db<'_>, id: i64, participants: &[String]) -> store::Result<Option<Msg>> {
    let Some(m) = store::messages::get(db, id, Some(BODY_CHARS))? else {
        return Ok(None);
    };
    let flags: Vec<String> = serde_json::from_str(&m.flags).unwrap_or_default();
    let unverified = flags.iter().any(|f| f == "unverified_sender");
    let out = m.direction == Direction::Out;
    let full = text_of(m.text.clone(), m.html.as_deref());
    let visible = m
        .visible_reply
        .clone()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| full.clone());
    let files = store::messages::attachments(db, id)?
        .into_iter()
        .map(|a| File {
            index: a.index,
            name: a.filename.unwrap_or_else(|| "attachment".into()),
            content_type: a.content_type,
            size: crate::http::human_size(a.size.max(0) as usize),
        })
        .collect();
    let delivery = if out {
        outbox::for_message(db, id)?
            .into_iter()
            .map(|d| Delivery {
                recipient: d.recipient,
                state: d.state,
                attempts: d.attempts,
                last_error: d.last_error,
                next_attempt: d.next_attempt_at.as_ref().map(when),
                sent: d.sent_at.as_ref().map(when),
            })
            .collect()
    } else {
        Vec::new()
    };
    let (from, from_email, from_name) = match &m.from {
        Some(f) => (
            match f.name.as_deref().filter(|n| !n.trim().is_empty()) {
                Some(n) => format!("{n} <{}>", f.email),
                None => f.email.clone(),
            },
            Some(f.email.clone()),
            f.name.clone(),
        ),
        None => ("unknown sender".to_string(), None, None),
    };
    let admit = !out
        && unverified
        && from_email
            .as_deref()
            .is_some_and(|e| !participants.iter().any(|p| p.eq_ignore_ascii_case(e)));
    Ok(Some(Msg {
        id,
        out,
        kind: m.kind.as_str().to_string(),
        from,
        from_email,
        from_name,
        to: addresses(&m.to),
        cc: addresses(&m.cc),
        subject: m.subject,
        when: when(&m.received_at),
        visible,
        full,
        cut: m.truncated,
        unverified,
        admit,
        auth: if out {
            None
        } else {
            auth_summary(m.auth.as_deref())
        },
        files,
        delivery,
    }))
}

fn load(
    db: &Db<'_>,
    domain: &str,
    public_url: &str,
    user_id: i64,
    id: i64,
    after: i64,
) -> store::Result<Option<Thread>> {
    let Some(sc) = store::side_conversations::get(db, id)? else {
        return Ok(None);
    };
    let (remind_after, nudge_vendor) =
        store::waiting::reminder_settings(db, id)?.unwrap_or((None, false));
    let parent_subject = store::parents::get(db, &sc.parent)?
        .map(|p| p.subject)
        .unwrap_or_default();
    let people: Vec<Person> = store::participants::list(db, id)?
        .into_iter()
        .map(|p| Person {
            joined: joined(p.role),
            email: p.email,
            name: p.name,
        })
        .collect();
    let emails: Vec<String> = people.iter().map(|p| p.email.clone()).collect();
    let mut portal: Vec<PortalLink> = Vec::new();
    if let Some(t) = &sc.portal_token {
        portal.push(PortalLink {
            n: 0,
            shared: true,
            email: "everyone (shared link)".into(),
            url: format!("{public_url}/p/{t}"),
            revoked: sc.portal_revoked,
        });
    }
    for (email, token, revoked) in store::portal::links(db, id)? {
        portal.push(PortalLink {
            n: portal.len(),
            shared: false,
            email,
            url: format!("{public_url}/p/{token}"),
            revoked,
        });
    }
    let mut ids = store::messages::thread_page(db, id, after, THREAD_PAGE + 1)?;
    let more = if ids.len() as i64 > THREAD_PAGE {
        ids.truncate(THREAD_PAGE as usize);
        ids.last().copied()
    } else {
        None
    };
    let messages = ids
        .into_iter()
        .map(|m| message(db, m, &emails))
        .collect::<store::Result<Vec<Option<Msg>>>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(Some(Thread {
        id,
        reply_address: conversations::reply_address(db, domain, &sc.token, &sc.sender_email)?,
        subject: sc.subject,
        open: sc.status == ScStatus::Open,
        parent: sc.parent,
        parent_subject,
        sender: sc.sender_email,
        people,
        portal,
        messages,
        more,
        latest: inbox::latest(db, &Watch::SideConversation(id))?,
        unread: store::console::is_unread(db, user_id, id)?,
        waiting: store::waiting::state(db, id)?.map(|(w, since)| {
            let age = crate::model::age_text(crate::model::now_ms() - since);
            match w {
                crate::model::Waiting::Vendor => format!("on the vendor for {age}"),
                crate::model::Waiting::Agent => format!("on us for {age}"),
            }
        }),
        tags: store::waiting::tags(db, id)?,
        remind_after: remind_after.map(crate::model::age_spec).unwrap_or_default(),
        nudge_vendor,
    }))
}

/// Renders the thread (with `chrome`'s notice or error) at `status`.
async fn show(
    st: &AppState,
    mut chrome: Chrome,
    id: i64,
    after: i64,
    status: StatusCode,
    draft: FollowDraft,
) -> Result<Response, Refusal> {
    let (domain, url, user) = (
        st.config.domain.clone(),
        st.config.http.public_url.clone(),
        chrome.user.id,
    );
    let t = st
        .store
        .read(move |c| load(c, &domain, &url, user, id, after))
        .await?
        .ok_or(Refusal::NotFound("That side conversation"))?;
    if t.unread {
        st.store
            .write(move |c| agent_pages::open_thread(c, user, id))
            .await?;
    }
    chrome.nav = "inbox";
    chrome.watch = Some((format!("sc:{id}"), t.latest));
    Ok(page(
        status,
        &ThreadPage {
            chrome,
            t,
            draft,
            after,
        },
    ))
}

async fn thread_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Path(id): Path<String>,
    Query(q): Query<ThreadQuery>,
) -> Result<Response, Refusal> {
    let id = id_of(&id, "That side conversation")?;
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Refusal::BadRequest("after: expected a message number".into()))?,
    };
    let chrome = chrome.with("inbox", q.notice.as_deref());
    show(
        &st,
        chrome,
        id,
        after,
        StatusCode::OK,
        FollowDraft::default(),
    )
    .await
}

/// A refusal of a form on the thread: shown on the thread page (422 for
/// a rule, 409 for the state) with what was typed kept.
async fn refused(
    st: &AppState,
    chrome: Chrome,
    id: i64,
    e: ServiceError,
    draft: FollowDraft,
) -> Result<Response, Refusal> {
    let status = match &e {
        ServiceError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::NotFound(_) | ServiceError::Store(_) => return Err(e.into()),
    };
    let mut chrome = chrome.with("inbox", None);
    chrome.error = Some(super::agent::service_message(&e));
    show(st, chrome, id, 0, status, draft).await
}

async fn follow_up(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    writer_form(&st, &chrome, &headers, &form)?;
    let id = id_of(&id, "That side conversation")?;
    let draft = FollowDraft {
        body_text: form.raw("body_text").to_string(),
        cc: form.all("cc").join(", "),
    };
    let req = FollowUpRequest {
        body_text: form
            .get("body_text")
            .map(|_| form.raw("body_text").to_string()),
        body_html: None,
        cc: form.addresses("cc"),
        attachments: super::agent::attachments(&form),
    };
    match st.conversations.follow_up(chrome.actor(), id, req).await {
        Ok(_) => Ok(see_other(&format!(
            "/app/side-conversations/{id}?notice=sent"
        ))),
        Err(e) => refused(&st, chrome, id, e, draft).await,
    }
}

async fn set_status(
    st: AppState,
    headers: HeaderMap,
    chrome: Chrome,
    id: String,
    form: Form,
    open: bool,
) -> Result<Response, Refusal> {
    writer_form(&st, &chrome, &headers, &form)?;
    let id = id_of(&id, "That side conversation")?;
    match st.conversations.set_status(chrome.actor(), id, open).await {
        Ok(()) => Ok(see_other(&format!(
            "/app/side-conversations/{id}?notice={}",
            if open { "reopened" } else { "closed" }
        ))),
        Err(e) => refused(&st, chrome, id, e, FollowDraft::default()).await,
    }
}

/// Replaces the tags (one field, separated by commas) and the reminder
/// (`remind_after`: a delay or `off`; `nudge_vendor`), through the same
/// service call as `PATCH /api/side-conversations/{id}`; a field the form
/// leaves out is kept.
async fn set_settings(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    writer_form(&st, &chrome, &headers, &form)?;
    let id = id_of(&id, "That side conversation")?;
    let remind_after = match form.posts("remind_after").then(|| form.raw("remind_after")) {
        None => None,
        Some(r) => {
            // Posted empty: no reminder.
            let r = Some(r.trim()).filter(|r| !r.is_empty());
            match conversations::reminders::parse_remind_after("remind_after", r) {
                Ok(ms) => Some(ms),
                Err(e) => return refused(&st, chrome, id, e, FollowDraft::default()).await,
            }
        }
    };
    let patch = conversations::ScPatch {
        tags: form
            .posts("tags")
            .then(|| conversations::split_tags(form.raw("tags"))),
        remind_after,
        nudge_vendor: form
            .posts("nudge_vendor")
            .then(|| form.checked("nudge_vendor")),
    };
    match st.conversations.patch(chrome.actor(), id, patch).await {
        Ok(()) => Ok(see_other(&format!(
            "/app/side-conversations/{id}?notice=saved"
        ))),
        Err(e) => refused(&st, chrome, id, e, FollowDraft::default()).await,
    }
}

async fn close(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    set_status(st, headers, chrome, id, form, false).await
}

async fn reopen(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    set_status(st, headers, chrome, id, form, true).await
}

/// Admits a sender (of unverified mail) as a participant: the API's
/// `POST /api/side-conversations/{id}/participants`.
async fn admit(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    writer_form(&st, &chrome, &headers, &form)?;
    let id = id_of(&id, "That side conversation")?;
    let email = form.get("email").unwrap_or("").to_string();
    let name = form.get("name").map(str::to_string);
    match st
        .conversations
        .admit_participant(chrome.actor(), id, email, name)
        .await
    {
        Ok(()) => Ok(see_other(&format!(
            "/app/side-conversations/{id}?notice=admitted"
        ))),
        Err(e) => refused(&st, chrome, id, e, FollowDraft::default()).await,
    }
}

/// Revokes one recipient's portal link (`email`), or every link without.
async fn revoke(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    writer_form(&st, &chrome, &headers, &form)?;
    let id = id_of(&id, "That side conversation")?;
    let email = form.get("email").map(str::to_string);
    match st
        .conversations
        .revoke_portal(chrome.actor(), id, email)
        .await
    {
        Ok(()) => Ok(see_other(&format!(
            "/app/side-conversations/{id}?notice=portal-revoked"
        ))),
        Err(e) => refused(&st, chrome, id, e, FollowDraft::default()).await,
    }
}

/// 404 unless the user may see message `id` (unrouted mail: admins).
async fn visible(st: &AppState, chrome: &Chrome, id: i64) -> Result<(), Refusal> {
    let role = chrome.user.role;
    let ok = st
        .store
        .read(move |c| conversations::may_see_message(c, role, id))
        .await?;
    if ok {
        Ok(())
    } else {
        Err(Refusal::NotFound("That message"))
    }
}

async fn raw(
    State(st): State<AppState>,
    chrome: Chrome,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let id = id_of(&id, "That message")?;
    visible(&st, &chrome, id).await?;
    let raw = st
        .store
        .read(move |c| store::view::raw(c, id))
        .await?
        .ok_or(Refusal::NotFound("That message"))?;
    let mut r = attachment_response(Some(&format!("message-{id}.eml")), "message/rfc822", raw)
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn attachment(
    State(st): State<AppState>,
    chrome: Chrome,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let id = id_of(&id, "That message")?;
    let n = id_of(&n, "That attachment")?;
    visible(&st, &chrome, id).await?;
    let a = st
        .store
        .read(move |c| store::messages::attachment(c, id, n))
        .await?
        .ok_or(Refusal::NotFound("That attachment"))?;
    let mut r = attachment_response(a.filename.as_deref(), &a.content_type, a.data);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
