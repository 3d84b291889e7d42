//! Signing in and out, and a user's own settings (SPEC §11).
//!
//! Sign-in by password (Argon2id, checked off the async threads; unknown
//! users and users without a password cost the same work) or by a one-time
//! link: asked for on the sign-in page (always answered the same way, so
//! the page does not tell who is a user), sent by an admin, or printed by
//! `backchannel user login-link`. Opening a link shows a button that uses
//! it (a POST), so a mail scanner that fetches links does not spend it.
//! Failures count against the address (`limits.login_failures` per
//! `limits.login_window`, then 429).

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::form::Form;
use super::{
    Chrome, Layout as _, PRE_COOKIE, Refusal, St, check_csrf, cookie, new_secret, notice, ok, page,
    safe_next, same_origin, see_other, session_cookie,
};
use crate::conversations::sign_in;
use crate::http::AppState;
use crate::http::extract::ClientIp;
use crate::model::now_ms;
use crate::store::console::{self as db, LinkRefusal};
use crate::store::users;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/login", get(login_page).post(login))
        .route("/app/login/link", post(request_link))
        .route("/app/login/{token}", get(link_page).post(use_link))
        .route("/app/logout", post(logout))
        .route("/app/me", get(me_page).post(save_me))
        .route("/app/me/password", post(set_password))
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    chrome: Option<Chrome>,
    csrf: &'a str,
    next: &'a str,
    email: &'a str,
    error: Option<&'a str>,
    notice: Option<&'static str>,
}

/// The pre-sign-in CSRF value: the cookie's, or a new one to set.
fn pre_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, PRE_COOKIE).filter(|v| v.len() == 43) {
        Some(v) => (v.to_string(), false),
        None => (new_secret(), true),
    }
}

fn with_pre_cookie(mut r: Response, value: &str, fresh: bool, st: &AppState) -> Response {
    if fresh {
        let secure = if st.config.http.public_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        let c = format!(
            "{PRE_COOKIE}={value}; Path=/app; HttpOnly; SameSite=Lax; Max-Age=86400{secure}"
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// A pre-sign-in form's token matches its cookie, and the post is ours.
fn check_pre(headers: &HeaderMap, form: &Form, st: &AppState) -> Result<(), Refusal> {
    use subtle::ConstantTimeEq;
    let cookie = cookie(headers, PRE_COOKIE).unwrap_or("");
    let given = form.get("csrf").unwrap_or("");
    let ok = !cookie.is_empty()
        && bool::from(cookie.as_bytes().ct_eq(given.as_bytes()))
        && same_origin(headers, &st.config.http.public_url);
    if ok { Ok(()) } else { Err(Refusal::Csrf) }
}

fn login_form(
    st: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    email: &str,
    error: Option<&str>,
    notice: Option<&'static str>,
) -> Response {
    let (csrf, fresh) = pre_token(headers);
    let r = page(
        status,
        &LoginPage {
            chrome: None,
            csrf: &csrf,
            next,
            email,
            error,
            notice,
        },
    );
    with_pre_cookie(r, &csrf, fresh, st)
}

async fn login_page(
    axum::extract::State(st): St,
    headers: HeaderMap,
    chrome: Option<Chrome>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if chrome.is_some() {
        return see_other(&next);
    }
    login_form(
        &st,
        &headers,
        StatusCode::OK,
        &next,
        "",
        None,
        notice(q.notice.as_deref()),
    )
}

/// Refuses an address that failed too often, before any work.
fn throttle(st: &AppState, ip: Option<std::net::IpAddr>) -> Result<(), Refusal> {
    if let Some(ip) = ip {
        st.limits
            .console_login
            .check(ip)
            .map_err(|w| Refusal::Throttled(w.secs()))?;
    }
    Ok(())
}

fn failed(st: &AppState, ip: Option<std::net::IpAddr>) -> Result<(), Refusal> {
    crate::metrics::inc("auth_failures_total", &[("service", "console")]);
    if let Some(ip) = ip {
        let f = st
            .limits
            .console_login
            .failure(ip)
            .map_err(|w| Refusal::Throttled(w.secs()))?;
        // This failure reached the limit: refused from now on.
        if let Some(w) = f.blocked {
            return Err(Refusal::Throttled(w.secs()));
        }
    }
    Ok(())
}

fn signed_in(st: &AppState, value: &str, next: &str) -> Response {
    let mut r = see_other(next);
    if let Ok(v) = HeaderValue::from_str(&session_cookie(Some(value), st)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn login(
    axum::extract::State(st): St,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, Refusal> {
    check_pre(&headers, &form, &st)?;
    throttle(&st, ip)?;
    let next = safe_next(form.get("next"));
    let email = form.get("email").unwrap_or("").to_string();
    let password = form.raw("password").to_string();
    if email.is_empty() || password.is_empty() {
        return Ok(login_form(
            &st,
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            &next,
            &email,
            Some("Enter your email address and your password."),
            None,
        ));
    }
    let lookup = email.clone();
    let found = st.store.read(move |c| db::password_of(c, &lookup)).await?;
    let (user, phc) = match found {
        Some((u, p)) => (Some(u), p),
        None => (None, None),
    };
    let verified =
        tokio::task::spawn_blocking(move || sign_in::verify_password(&password, phc.as_deref()))
            .await
            .map_err(|e| Refusal::Internal(e.to_string()))?;
    match user {
        Some(u) if verified && u.active => {
            if let Some(ip) = ip {
                let _ = st.limits.console_login.success(ip);
            }
            let value = super::open_session(&st, &u, "password").await?;
            Ok(signed_in(&st, &value, &next))
        }
        _ => {
            failed(&st, ip)?;
            Ok(login_form(
                &st,
                &headers,
                StatusCode::UNAUTHORIZED,
                &next,
                &email,
                Some(
                    "That email address and password do not match an active user. You can ask for a sign-in link instead.",
                ),
                None,
            ))
        }
    }
}

/// "Email me a sign-in link": the same answer whoever asks, so the page
/// does not say who is a user. Each ask counts against the address like a
/// failure (a link costs an email).
async fn request_link(
    axum::extract::State(st): St,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, Refusal> {
    check_pre(&headers, &form, &st)?;
    throttle(&st, ip)?;
    let email = form.get("email").unwrap_or("").to_string();
    if !email.is_empty() {
        let config = st.config.clone();
        st.store
            .write(move |c| {
                match users::by_email(c, &email) {
                    Ok(u) if u.active => {
                        sign_in::email_link(c, &config, &u, now_ms())?;
                    }
                    Ok(_) | Err(crate::store::StoreError::NotFound) => {}
                    Err(e) => return Err(e),
                }
                Ok(())
            })
            .await?;
        if let Some(ip) = ip {
            let _ = st.limits.console_login.failure(ip);
        }
    }
    let next = safe_next(form.get("next"));
    Ok(see_other(&format!(
        "/app/login?notice=link-requested{}",
        if next == "/app/" {
            String::new()
        } else {
            format!(
                "&next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            )
        }
    )))
}

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage<'a> {
    chrome: Option<Chrome>,
    csrf: &'a str,
    name: &'a str,
    email: &'a str,
    action: &'a str,
}

fn link_token_ok(token: &str) -> bool {
    token.len() == 52
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn link_refused(r: LinkRefusal) -> Response {
    let message = match r {
        LinkRefusal::Unknown => {
            "This sign-in link is not known. Check that the whole link was copied, or ask for a new one."
        }
        LinkRefusal::Used => {
            "This sign-in link was used already; each link works once. Ask for a new one."
        }
        LinkRefusal::Expired => {
            "This sign-in link has expired. Ask for a new one on the sign-in page."
        }
        LinkRefusal::Inactive => "The user this link is for is deactivated.",
    };
    let status = if r == LinkRefusal::Unknown {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::GONE
    };
    super::error_page(None, status, "This link does not work", message)
}

/// The page for a link that did not sign in; an unknown one counts
/// against the address like a wrong password.
fn link_not_used(
    st: &AppState,
    ip: Option<std::net::IpAddr>,
    r: LinkRefusal,
) -> Result<Response, Refusal> {
    if r == LinkRefusal::Unknown {
        failed(st, ip)?;
    }
    Ok(link_refused(r))
}

async fn link_page(
    axum::extract::State(st): St,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, Refusal> {
    throttle(&st, ip)?;
    if !link_token_ok(&token) {
        return link_not_used(&st, ip, LinkRefusal::Unknown);
    }
    let hash = sign_in::hash(&token);
    let found = st
        .store
        .read(move |c| db::peek_link(c, &hash, now_ms()))
        .await?;
    match found {
        Ok(user) => {
            let (csrf, fresh) = pre_token(&headers);
            let action = format!("/app/login/{token}");
            let r = ok(&LinkPage {
                chrome: None,
                csrf: &csrf,
                name: &user.name,
                email: &user.email,
                action: &action,
            });
            Ok(with_pre_cookie(r, &csrf, fresh, &st))
        }
        Err(r) => link_not_used(&st, ip, r),
    }
}

async fn use_link(
    axum::extract::State(st): St,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(token): Path<String>,
    form: Form,
) -> Result<Response, Refusal> {
    check_pre(&headers, &form, &st)?;
    throttle(&st, ip)?;
    if !link_token_ok(&token) {
        return link_not_used(&st, ip, LinkRefusal::Unknown);
    }
    let hash = sign_in::hash(&token);
    let value = new_secret();
    let session_hash = sign_in::hash(&value);
    let csrf = new_secret();
    let used = st
        .store
        .write(move |c| db::use_link(c, &hash, &session_hash, &csrf, now_ms()))
        .await?;
    match used {
        Ok(_) => {
            if let Some(ip) = ip {
                let _ = st.limits.console_login.success(ip);
            }
            Ok(signed_in(&st, &value, "/app/"))
        }
        Err(r) => link_not_used(&st, ip, r),
    }
}

async fn logout(
    axum::extract::State(st): St,
    headers: HeaderMap,
    chrome: Option<Chrome>,
    form: Form,
) -> Result<Response, Refusal> {
    if let Some(chrome) = chrome {
        check_csrf(
            &chrome,
            &headers,
            &st.config.http.public_url,
            form.get("csrf"),
        )?;
        let hash = *chrome.session_hash();
        st.store
            .write(move |c| db::delete_session(c, &hash))
            .await?;
    }
    let mut r = see_other("/app/login?notice=signed-out");
    if let Ok(v) = HeaderValue::from_str(&session_cookie(None, &st)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    chrome: Chrome,
    has_password: bool,
    min_password: usize,
    password_error: Option<String>,
}

async fn me_view(
    st: &AppState,
    chrome: Chrome,
    status: StatusCode,
    password_error: Option<String>,
) -> Result<Response, Refusal> {
    let email = chrome.user.email.clone();
    let found = st.store.read(move |c| db::password_of(c, &email)).await?;
    let has_password = found.is_some_and(|(_, p)| p.is_some());
    Ok(page(
        status,
        &MePage {
            chrome,
            has_password,
            min_password: sign_in::MIN_PASSWORD_CHARS,
            password_error,
        },
    ))
}

async fn me_page(
    axum::extract::State(st): St,
    chrome: Chrome,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, Refusal> {
    let chrome = chrome.with("me", q.notice.as_deref());
    me_view(&st, chrome, StatusCode::OK, None).await
}

async fn save_me(
    axum::extract::State(st): St,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    check_csrf(
        &chrome,
        &headers,
        &st.config.http.public_url,
        form.get("csrf"),
    )?;
    let notifications = match form.get("notifications") {
        None => None,
        Some(n @ ("email" | "off")) => Some(n.to_string()),
        Some(_) => {
            let mut chrome = chrome.with("me", None);
            chrome.error = Some("Notifications are either email or off.".into());
            return me_view(&st, chrome, StatusCode::UNPROCESSABLE_ENTITY, None).await;
        }
    };
    let name = form.get("name").map(str::to_string);
    if let Some(n) = &name
        && n.chars().count() > 200
    {
        let mut chrome = chrome.with("me", None);
        chrome.error = Some("A name may have at most 200 characters.".into());
        return me_view(&st, chrome, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    }
    let id = chrome.user.id;
    st.store
        .write(move |c| users::update_profile(c, id, name.as_deref(), notifications.as_deref()))
        .await?;
    Ok(see_other("/app/me?notice=saved"))
}

async fn set_password(
    axum::extract::State(st): St,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    chrome: Chrome,
    form: Form,
) -> Result<Response, Refusal> {
    check_csrf(
        &chrome,
        &headers,
        &st.config.http.public_url,
        form.get("csrf"),
    )?;
    throttle(&st, ip)?;
    let password = form.raw("password").to_string();
    let confirm = form.raw("password_confirm").to_string();
    let current = form.raw("current_password").to_string();
    let refuse = |message: String| {
        let chrome = chrome.clone().with("me", None);
        (chrome, message)
    };
    if let Err(m) = sign_in::check_password(&password) {
        let (c, m) = refuse(format!("The new password was not set: {m}."));
        return me_view(&st, c, StatusCode::UNPROCESSABLE_ENTITY, Some(m)).await;
    }
    if password != confirm {
        let (c, m) = refuse("The new password was not set: the two entries differ.".into());
        return me_view(&st, c, StatusCode::UNPROCESSABLE_ENTITY, Some(m)).await;
    }
    // Someone at an unlocked screen must not be able to change a password
    // they do not know: the current one is asked for when there is one.
    let email = chrome.user.email.clone();
    let found = st.store.read(move |c| db::password_of(c, &email)).await?;
    let stored = found.and_then(|(_, p)| p);
    if stored.is_some() {
        let phc = stored.clone();
        let matches =
            tokio::task::spawn_blocking(move || sign_in::verify_password(&current, phc.as_deref()))
                .await
                .map_err(|e| Refusal::Internal(e.to_string()))?;
        if !matches {
            failed(&st, ip)?;
            let (c, m) =
                refuse("The new password was not set: the current password is wrong.".into());
            return me_view(&st, c, StatusCode::UNPROCESSABLE_ENTITY, Some(m)).await;
        }
    }
    let phc = tokio::task::spawn_blocking(move || sign_in::hash_password(&password))
        .await
        .map_err(|e| Refusal::Internal(e.to_string()))?
        .map_err(Refusal::Internal)?;
    let (id, actor, keep) = (chrome.user.id, chrome.audit_actor(), *chrome.session_hash());
    st.store
        .write(move |c| db::set_password(c, &actor, id, Some(&phc), Some(&keep)))
        .await?;
    Ok(see_other("/app/me?notice=password"))
}
