//! The admin pages (SPEC §11): sender addresses, signature and settings,
//! templates, webhooks, users and the audit log. Every page is for owners
//! and admins (others get a 403 page); every post checks the form's CSRF
//! token first. The rules are the API's: these pages call the same domain
//! and store functions (`senders::service`, `conversations::users`,
//! `conversations::settings`, `templates`, `store::webhooks`).
//!
//! - `admin_senders.rs`: sender addresses (add, forwarding, verification
//!   code, DNS records and re-check, edit, delete)
//! - `admin_config.rs`: settings and signature preview, templates, webhooks
//!   and their delivery log
//! - `admin_people.rs`: users (add, role, deactivate, token, sign-in link)
//!   and the audit log

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::Deserialize;

use super::form::Form;
use super::{Chrome, Refusal, check_csrf};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(super::admin_senders::routes())
        .merge(super::admin_config::routes())
        .merge(super::admin_people::routes())
}

/// `?notice=` of a page shown after a redirect.
#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

/// A signed-in admin's page: `chrome` for `nav`, or a 403 page.
pub fn admin(chrome: Chrome, nav: &'static str, notice: Option<&str>) -> Result<Chrome, Refusal> {
    chrome.require_admin()?;
    Ok(chrome.with(nav, notice))
}

/// The start of every admin post: the CSRF token and origin, then the role.
pub fn admin_post(
    st: &AppState,
    chrome: Chrome,
    headers: &HeaderMap,
    form: &Form,
    nav: &'static str,
) -> Result<Chrome, Refusal> {
    check_csrf(
        &chrome,
        headers,
        &st.config.http.public_url,
        form.get("csrf"),
    )?;
    admin(chrome, nav, None)
}

/// A form field that names a path segment of ours (an email in a URL).
pub fn path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A path segment that names a record by number (`/app/admin/users/{id}`):
/// anything else is a console 404 page, not the router's plain text.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Seg(raw) = Seg::from_request_parts(parts, state).await?;
        raw.parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Id)
            .ok_or(Refusal::NotFound("That page"))
    }
}

/// A path segment as text (`/app/admin/senders/{email}`), percent-decoded;
/// one that does not decode is a console 404 page.
pub struct Seg(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Seg {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Seg(s))
            .map_err(|_| Refusal::NotFound("That page"))
    }
}
