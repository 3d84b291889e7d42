//! The web console for agents and admins (SPEC §11): server-rendered pages
//! under `/app/` on the HTTP listener.
//!
//! Pages are askama templates (`src/console/pages/`, escaping by default:
//! no HTML is built by hand) around one layout and one style sheet; every
//! answer carries a strict Content-Security-Policy (only this door's own
//! style sheet and script, no inline code). A session is a random cookie
//! value (`HttpOnly`, `SameSite=Lax`, `Secure` when `public_url` is https)
//! that the store knows by its SHA-256; it ends on sign-out, after
//! `console.session_idle_timeout` unused or `console.session_max_age`, and
//! at once when its user is deactivated (checked on every request). Every
//! form carries a CSRF token (the session's; before sign-in, a cookie's
//! double) and a post naming another origin is refused. Pages work without
//! script; `console.js` adds live updates through `/app/events` and copy
//! buttons.
//!
//! - `auth.rs`: sign-in (password, link), sign-out, own settings
//! - `agent.rs`: the inbox; `agent_parent.rs` a parent's split view,
//!   `agent_thread.rs` a thread (follow-up, close/reopen, admit, portal
//!   links, downloads), `agent_start.rs` starting one, `agent_unrouted.rs`
//!   unrouted triage
//! - `admin.rs` (with `admin_senders.rs`, `admin_config.rs`,
//!   `admin_people.rs`): senders, signature and settings, templates,
//!   webhooks, users, audit
//! - `live.rs`: the event stream live pages listen to
//! - `form.rs`: url-encoded and multipart forms, as lists of fields

pub mod admin;
pub mod admin_config;
pub mod admin_people;
pub mod admin_senders;
pub mod agent;
pub mod agent_parent;
pub mod agent_reports;
pub mod agent_start;
pub mod agent_thread;
pub mod agent_unrouted;
pub mod auth;
pub mod form;
pub mod live;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use crate::conversations::{Actor, ServiceError, sign_in};
use crate::http::AppState;
use crate::model::{Role, now_ms, random_bytes};
use crate::store::StoreError;
use crate::store::console::{self as db, Session};
use crate::store::users::User;

/// The session cookie.
pub const SESSION_COOKIE: &str = "bc_session";
/// The pre-sign-in CSRF cookie (its value is also the forms' token).
pub const PRE_COOKIE: &str = "bc_pre";
/// Where the console lives.
pub const BASE: &str = "/app";
/// A session's last use is written at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// The console's Content-Security-Policy: its own style sheet and script
/// only, no inline code, no frames, forms only to itself.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Bytes a form with uploads may have beyond its files (its text fields).
const FORM_OVERHEAD: usize = 1024 * 1024;

/// The console's routes; `app` merges them beside the API. Forms with
/// uploads may be `console.max_upload_bytes` (`max_upload`) plus their
/// text, above the global `http.max_body_bytes`.
pub fn routes(shutdown: crate::shutdown::Shutdown, max_upload: usize) -> Router<AppState> {
    let upload_limit = max_upload.saturating_add(FORM_OVERHEAD);
    Router::new()
        .route("/app", get(|| async { Redirect::to("/app/") }))
        .route("/app/static/console.css", get(css))
        .route("/app/static/console.js", get(js))
        .merge(auth::routes())
        .merge(agent::routes(upload_limit))
        .merge(admin::routes())
        .merge(live::routes(live::Streams::new(shutdown)))
        .route("/app/{*rest}", axum::routing::any(not_found))
}

/// An unknown console page: the sign-in page first when signed out (the
/// path is kept for after), then a 404 page.
async fn not_found(chrome: Chrome) -> Response {
    error_page(
        Some(chrome),
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in the console.",
    )
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Headers on every console page.
pub fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
}

/// Renders a page with its status.
pub fn page(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = (status, axum::response::Html(body)).into_response();
            harden(r.headers_mut());
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "console: rendering a page failed");
            plain_error(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// A 200 page.
pub fn ok(t: &impl Template) -> Response {
    page(StatusCode::OK, t)
}

fn plain_error(status: StatusCode) -> Response {
    let mut r = (status, "The console could not show this page.").into_response();
    harden(r.headers_mut());
    r
}

/// After a form: to `to`, with a notice code the page knows (`notice` in
/// [`NOTICES`]).
pub fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    harden(r.headers_mut());
    r
}

/// The texts a redirect may ask a page to show (`?notice=`); nothing from
/// the query is ever shown as given.
pub const NOTICES: &[(&str, &str)] = &[
    ("signed-out", "You are signed out."),
    (
        "started",
        "The side conversation was started; the message is on its way.",
    ),
    ("sent", "Your message is on its way."),
    ("closed", "The side conversation is closed."),
    ("reopened", "The side conversation is open again."),
    (
        "assigned",
        "The message was added to the side conversation.",
    ),
    ("admitted", "The sender was admitted as a participant."),
    ("saved", "Saved."),
    (
        "password",
        "Your password is set. Other sessions of yours were signed out.",
    ),
    ("sender-added", "The sender address was added."),
    ("sender-verified", "The sender address is verified."),
    ("checked", "Checked again; the results are below."),
    ("deleted", "Deleted."),
    ("user-added", "The user was added."),
    ("link-sent", "A sign-in link is on its way to that user."),
    (
        "link-requested",
        "If that address belongs to a user, a sign-in link is on its way to it.",
    ),
    ("token", "A new API token was made; it is shown below once."),
    ("portal-revoked", "The portal link was revoked."),
];

/// The text of a notice code, if it is one.
pub fn notice(code: Option<&str>) -> Option<&'static str> {
    let code = code?;
    NOTICES.iter().find(|(c, _)| *c == code).map(|(_, t)| *t)
}

/// What the layout shows around every signed-in page.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub user: User,
    pub csrf: String,
    /// The nav entry that is current.
    pub nav: &'static str,
    pub notice: Option<&'static str>,
    pub error: Option<String>,
    /// For `console.js`: what the page shows live (`inbox`, `sc:<id>`,
    /// `parent:<id>`), and the newest message id it shows.
    pub watch: Option<(String, i64)>,
    /// A sign-out is shown in the layout's form; the cookie id hash is not.
    session_hash: [u8; 32],
}

impl Chrome {
    pub fn is_admin(&self) -> bool {
        self.user.role.can_administer()
    }

    pub fn can_write(&self) -> bool {
        self.user.role.can_write()
    }

    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user.id,
            name: self.user.name.clone(),
            email: self.user.email.clone(),
        }
    }

    pub fn audit_actor(&self) -> crate::store::audit::Actor {
        crate::store::audit::Actor::user(self.user.id, &self.user.email)
    }

    pub fn session_hash(&self) -> &[u8; 32] {
        &self.session_hash
    }

    pub fn with(mut self, nav: &'static str, notice_code: Option<&str>) -> Chrome {
        self.nav = nav;
        self.notice = notice(notice_code);
        self
    }

    pub fn role(&self) -> &'static str {
        self.user.role.as_str()
    }

    pub fn watch_kind(&self) -> String {
        self.watch.as_ref().map(|w| w.0.clone()).unwrap_or_default()
    }

    pub fn watch_latest(&self) -> i64 {
        self.watch.as_ref().map(|w| w.1).unwrap_or(0)
    }

    /// 403 unless the user may administer.
    pub fn require_admin(&self) -> Result<(), Refusal> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Refusal::Forbidden(
                "This page is for owners and admins.".into(),
            ))
        }
    }

    /// 403 for viewers.
    pub fn require_writer(&self) -> Result<(), Refusal> {
        if self.can_write() {
            Ok(())
        } else {
            Err(Refusal::Forbidden("Viewers can only read.".into()))
        }
    }
}

/// What the layout asks of a page's `chrome` field: signed-in pages have a
/// [`Chrome`], the sign-in pages an `Option<Chrome>` (none).
pub trait Layout {
    fn layout(&self) -> Option<&Chrome>;
}

impl Layout for Chrome {
    fn layout(&self) -> Option<&Chrome> {
        Some(self)
    }
}

impl Layout for Option<Chrome> {
    fn layout(&self) -> Option<&Chrome> {
        self.as_ref()
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session hash of a cookie value that looks like one of ours.
fn session_hash_of(value: &str) -> Option<[u8; 32]> {
    (value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| sign_in::hash(value))
}

/// Why a console request was not served; each becomes a page.
#[derive(Debug)]
pub enum Refusal {
    /// Not signed in (or the session is over): to the sign-in page.
    SignIn {
        next: String,
    },
    Forbidden(String),
    NotFound(&'static str),
    /// The form's CSRF token or origin was wrong.
    Csrf,
    BadRequest(String),
    TooLarge(String),
    Throttled(u64),
    Conflict(String),
    Internal(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Refusal::NotFound("That"),
            StoreError::Conflict(m) => Refusal::Conflict(m),
            other => Refusal::Internal(other.to_string()),
        }
    }
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => Refusal::NotFound(what),
            ServiceError::Conflict(m) => Refusal::Conflict(m),
            ServiceError::Invalid { field, message } => {
                Refusal::BadRequest(format!("{field}: {message}"))
            }
            ServiceError::RateLimited(m) => Refusal::Conflict(m),
            ServiceError::Store(m) => Refusal::Internal(m),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Refusal::SignIn { next } => {
                let to = if next == "/app/" || next.is_empty() {
                    "/app/login".to_string()
                } else {
                    format!(
                        "/app/login?next={}",
                        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                    )
                };
                return see_other(&to);
            }
            Refusal::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            Refusal::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("{what} was not found; it may have been deleted."),
            ),
            Refusal::Csrf => (
                StatusCode::FORBIDDEN,
                "The form expired",
                "The form was too old or came from another site. Go back, reload the page and try again.".into(),
            ),
            Refusal::BadRequest(m) => (StatusCode::BAD_REQUEST, "That did not work", m),
            Refusal::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "Too large", m),
            Refusal::Throttled(secs) => {
                let mut r = error_page(
                    None,
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts",
                    &format!("Too many failed attempts from your address. Try again in {} minutes.", secs.div_ceil(60).max(1)),
                );
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            Refusal::Conflict(m) => (StatusCode::CONFLICT, "That did not work", m),
            Refusal::Internal(m) => {
                tracing::error!(error = %m, "console: internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The gateway could not do that just now. Try again in a moment.".into(),
                )
            }
        };
        error_page(None, status, title, &message)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Option<Chrome>,
    title: &'a str,
    message: &'a str,
}

/// A page saying what went wrong, with the layout when signed in.
pub fn error_page(
    chrome: Option<Chrome>,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    page(
        status,
        &ErrorPage {
            chrome,
            title,
            message,
        },
    )
}

/// Whether a post comes from this console's own origin (when the browser
/// says where it comes from). The console's forms send their origin, so
/// `Origin: null` is refused.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    crate::http::origin::same_origin(
        headers,
        public_url,
        crate::http::origin::NullOrigin::Refused,
    )
}

/// Checks a signed-in form: its `csrf` field is the session's and the post
/// is not from another origin.
pub fn check_csrf(
    chrome: &Chrome,
    headers: &HeaderMap,
    public_url: &str,
    given: Option<&str>,
) -> Result<(), Refusal> {
    use subtle::ConstantTimeEq;
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(chrome.csrf.as_bytes())))
        && same_origin(headers, public_url);
    if ok { Ok(()) } else { Err(Refusal::Csrf) }
}

/// A new random secret for a cookie or a CSRF token (256 bits, base64url).
pub fn new_secret() -> String {
    B64URL.encode(random_bytes::<32>())
}

/// The `Set-Cookie` value of a session (or, with `None`, its removal).
pub fn session_cookie(value: Option<&str>, st: &AppState) -> String {
    let secure = if st.config.http.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    match value {
        Some(v) => format!(
            "{SESSION_COOKIE}={v}; Path=/app; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            st.config.console.session_max_age.as_secs()
        ),
        None => format!("{SESSION_COOKIE}=; Path=/app; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    }
}

/// Opens a session for `user` (password sign-in); returns the cookie value.
pub async fn open_session(
    st: &AppState,
    user: &User,
    method: &'static str,
) -> Result<String, Refusal> {
    let value = new_secret();
    let hash = sign_in::hash(&value);
    let csrf = new_secret();
    let uid = user.id;
    st.store
        .write(move |c| db::create_session(c, &hash, uid, &csrf, method, now_ms()))
        .await?;
    Ok(value)
}

/// Looks the request's session up (and marks it used).
async fn session_of(parts: &Parts, st: &AppState) -> Result<Option<(Session, [u8; 32])>, Refusal> {
    let Some(hash) = cookie(&parts.headers, SESSION_COOKIE).and_then(session_hash_of) else {
        return Ok(None);
    };
    let idle = st.config.console.session_idle_timeout.as_millis() as i64;
    let max = st.config.console.session_max_age.as_millis() as i64;
    let now = now_ms();
    let found = st
        .store
        .read(move |c| db::session(c, &hash, now, idle, max))
        .await?;
    let Some(session) = found else {
        return Ok(None);
    };
    // Often enough that a session in use never reaches its idle timeout.
    if now - session.last_seen_at > TOUCH_EVERY_MS.min(idle / 4) {
        st.store
            .write(move |c| db::touch_session(c, &hash, now))
            .await?;
    }
    Ok(Some((session, hash)))
}

/// Where a sign-in should lead back to: a console path, never elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/app/")
                && !n.starts_with("/app//")
                && !n.contains('\\')
                && !n.contains("/login")
                && n.len() <= 512
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/app/".to_string(),
    }
}

fn next_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/app/".to_string())
}

impl FromRequestParts<AppState> for Chrome {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        match session_of(parts, st).await? {
            Some((session, hash)) => Ok(Chrome {
                user: session.user,
                csrf: session.csrf,
                nav: "",
                notice: None,
                error: None,
                watch: None,
                session_hash: hash,
            }),
            None => Err(Refusal::SignIn {
                next: if parts.method == axum::http::Method::GET {
                    safe_next(Some(&next_of(&parts.uri)))
                } else {
                    "/app/".into()
                },
            }),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Chrome {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <Chrome as FromRequestParts<AppState>>::from_request_parts(parts, st).await {
            Ok(c) => Ok(Some(c)),
            Err(Refusal::SignIn { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The role names a form may choose from.
pub const ROLES: &[Role] = &[Role::Owner, Role::Admin, Role::Member, Role::Viewer];

/// Times as pages show them: `2026-12-07 14:03 UTC`.
pub fn when(ms: &i64) -> String {
    let s = crate::model::rfc3339(*ms);
    // 2026-12-07T14:03:05.123Z → 2026-12-07 14:03 UTC
    match (s.get(0..10), s.get(11..16)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => s,
    }
}

/// `State` for handlers: the shared application state.
pub type St = State<AppState>;
