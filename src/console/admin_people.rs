//! Users and the audit log in the console (SPEC §2, §7, §11): the user
//! list with an add form (the new user's API token is shown once, on the
//! answer page, never in a URL), a role change, deactivate/activate,
//! rotating a token (shown once) and sending a sign-in link; the audit log,
//! newest first. The rules are `conversations::users`, as for the API:
//! owners change anyone, admins not owners, the last active owner stays.

use std::collections::HashSet;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::admin::{Id, NoticeQuery, admin, admin_post};
use super::form::Form;
use super::{Chrome, Layout as _, ROLES, Refusal, ok, page, see_other, when};
use crate::conversations::users::{self as rules, UserError};
use crate::http::AppState;
use crate::model::Role;
use crate::store::users::{self, Change, User};
use crate::store::{audit, console as db};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/admin/users", get(users_page).post(add))
        .route("/app/admin/users/{id}", post(change))
        .route("/app/admin/users/{id}/token", post(rotate))
        .route("/app/admin/users/{id}/login-link", post(login_link))
        .route("/app/admin/audit", get(audit_page))
}

/// A refusal the users page shows beside its forms, or a page of its own.
fn form_error(e: UserError) -> Result<(StatusCode, String), Refusal> {
    match e {
        UserError::Invalid { field, message } => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: {message}"),
        )),
        UserError::Forbidden(m) => Ok((StatusCode::FORBIDDEN, m.to_string())),
        UserError::Conflict(m) => Ok((StatusCode::CONFLICT, m)),
        UserError::NotFound => Err(Refusal::NotFound("That user")),
        UserError::Store(e) => Err(e.into()),
    }
}

/// One line of the user list.
pub struct Line {
    pub user: User,
    pub has_password: bool,
    pub is_me: bool,
}

/// The add form's values, kept when it is refused.
#[derive(Default)]
pub struct AddForm {
    pub email: String,
    pub name: String,
    pub role: String,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    chrome: Chrome,
    lines: Vec<Line>,
    form: AddForm,
    roles: &'static [Role],
}

async fn lines(st: &AppState, me: i64) -> Result<Vec<Line>, Refusal> {
    let (list, with_password): (Vec<User>, HashSet<i64>) = st
        .store
        .read(|c| Ok((users::list(c)?, db::users_with_password(c)?)))
        .await?;
    Ok(list
        .into_iter()
        .map(|user| Line {
            has_password: with_password.contains(&user.id),
            is_me: user.id == me,
            user,
        })
        .collect())
}

async fn users_view(
    st: &AppState,
    status: StatusCode,
    chrome: Chrome,
    form: AddForm,
) -> Result<Response, Refusal> {
    let lines = lines(st, chrome.user.id).await?;
    Ok(page(
        status,
        &UsersPage {
            chrome,
            lines,
            form,
            roles: ROLES,
        },
    ))
}

async fn users_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "users", q.notice.as_deref())?;
    let form = AddForm {
        role: "member".into(),
        ..AddForm::default()
    };
    users_view(&st, StatusCode::OK, chrome, form).await
}

/// The page that shows a new API token, once.
#[derive(Template)]
#[template(path = "admin_token.html")]
struct TokenPage {
    chrome: Chrome,
    user: User,
    token: String,
    added: bool,
}

async fn add(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "users")?;
    let kept = AddForm {
        email: form.raw("email").to_string(),
        name: form.raw("name").to_string(),
        role: form.raw("role").to_string(),
    };
    let checked = rules::check_new(
        chrome.user.role,
        form.raw("email"),
        form.raw("name"),
        form.get("role"),
    );
    let done = match checked {
        Ok((email, name, role)) => {
            let actor = chrome.audit_actor();
            st.store
                .write_with(move |c| rules::add(c, &actor, &email, &name, role))
                .await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok((user, token)) => {
            chrome.notice = super::notice(Some("user-added"));
            Ok(ok(&TokenPage {
                chrome,
                user,
                token: token.as_str().to_string(),
                added: true,
            }))
        }
        Err(e) => {
            let (status, message) = form_error(e)?;
            chrome.error = Some(message);
            users_view(&st, status, chrome, kept).await
        }
    }
}

/// A role change, a deactivation or activation (`role`, `name`, `active`:
/// the API's fields; what the form leaves out stays).
async fn change(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Id(id): Id,
    form: Form,
) -> Result<Response, Refusal> {
    let chrome = admin_post(&st, chrome, &headers, &form, "users")?;
    let parsed = (|| -> Result<Change, UserError> {
        Ok(Change {
            role: form.get("role").map(rules::parse_role).transpose()?,
            name: form.get("name").map(rules::check_name).transpose()?,
            active: match form.get("active") {
                None => None,
                Some("true" | "1" | "on") => Some(true),
                Some("false" | "0" | "off") => Some(false),
                Some(_) => {
                    return Err(UserError::Invalid {
                        field: "active",
                        message: "expected true or false".into(),
                    });
                }
            },
        })
    })();
    let done = match parsed {
        Ok(change) => {
            let (actor, by) = (chrome.audit_actor(), chrome.user.role);
            st.store
                .write_with(move |c| rules::update(c, &actor, by, id, &change))
                .await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(_) => Ok(see_other("/app/admin/users?notice=saved")),
        Err(e) => refused(&st, chrome, e).await,
    }
}

/// A refused action on a listed user: the users page again, with why and
/// an empty add form.
async fn refused(st: &AppState, mut chrome: Chrome, e: UserError) -> Result<Response, Refusal> {
    let (status, message) = form_error(e)?;
    chrome.error = Some(message);
    let form = AddForm {
        role: "member".into(),
        ..AddForm::default()
    };
    users_view(st, status, chrome, form).await
}

async fn rotate(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Id(id): Id,
    form: Form,
) -> Result<Response, Refusal> {
    let mut chrome = admin_post(&st, chrome, &headers, &form, "users")?;
    let (actor, by) = (chrome.audit_actor(), chrome.user.role);
    let done = st
        .store
        .write_with(move |c| rules::rotate_token(c, &actor, by, id))
        .await;
    match done {
        Ok((user, token)) => {
            chrome.notice = super::notice(Some("token"));
            Ok(ok(&TokenPage {
                chrome,
                user,
                token: token.as_str().to_string(),
                added: false,
            }))
        }
        Err(e) => refused(&st, chrome, e).await,
    }
}

async fn login_link(
    State(st): State<AppState>,
    headers: HeaderMap,
    chrome: Chrome,
    Id(id): Id,
    form: Form,
) -> Result<Response, Refusal> {
    let chrome = admin_post(&st, chrome, &headers, &form, "users")?;
    let (config, actor, by) = (st.config.clone(), chrome.audit_actor(), chrome.user.role);
    let done = st
        .store
        .write_with(move |c| rules::send_login_link(c, &config, &actor, by, id))
        .await;
    match done {
        Ok(_) => {
            st.conversations.outbox_waker.notify_one();
            Ok(see_other("/app/admin/users?notice=link-sent"))
        }
        Err(e) => refused(&st, chrome, e).await,
    }
}

// ---------------------------------------------------------------------------
// Audit log

/// Entries per page.
const AUDIT_PAGE: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    before: Option<String>,
}

/// One audit entry as the page shows it.
pub struct Entry {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The detail JSON as text (shown escaped), empty for `{}`.
    pub detail: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<Entry>,
    next: Option<i64>,
    first_page: bool,
}

async fn audit_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Refusal> {
    let chrome = admin(chrome, "audit", None)?;
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => Some(
            b.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Refusal::BadRequest("before: expected an entry number".into()))?,
        ),
    };
    let mut rows = st
        .store
        .read(move |c| audit::list(c, before, AUDIT_PAGE + 1))
        .await?;
    let more = rows.len() as i64 > AUDIT_PAGE;
    rows.truncate(AUDIT_PAGE as usize);
    let next = if more {
        rows.last().map(|e| e.id)
    } else {
        None
    };
    let entries = rows
        .into_iter()
        .map(|e| Entry {
            at: when(&e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: match &e.detail {
                serde_json::Value::Object(m) if m.is_empty() => String::new(),
                serde_json::Value::Null => String::new(),
                d => d.to_string(),
            },
        })
        .collect();
    Ok(ok(&AuditPage {
        chrome,
        entries,
        next,
        first_page: before.is_none(),
    }))
}
