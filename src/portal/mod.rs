//! The vendor portal (SPEC §8): `GET /p/{token}` shows a side conversation
//! to a vendor without an account — what their side was sent and wrote,
//! nothing internal — with a reply form posting to `/p/{token}/reply`, and
//! `/p/{token}/attachments/{message}/{n}` serves the files shown there.
//!
//! The page is server-rendered HTML without script; every piece of mail
//! content is HTML-escaped and stored HTML bodies are never rendered as
//! HTML (their text is shown). The only style sheet is inline and allowed
//! by its hash in the Content-Security-Policy. The form carries a CSRF
//! token bound to the portal token (HMAC with a secret kept in `settings`),
//! and an `Origin` naming another site is refused. Uploads are counted
//! while they are read, so a multipart body cannot stream past the limit.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::conversations::{
    Attachment, MAX_PORTAL_ATTACHMENTS, MAX_PORTAL_TEXT, PortalReply, ServiceError,
};
use crate::http::AppState;
use crate::http::download::attachment_response;
use crate::http::extract::ClientIp;
pub use crate::http::human_size;
use crate::http::origin::{NullOrigin, same_origin};
use crate::model::{now_ms, random_bytes, rfc3339};
use crate::reply_text::escape_html as escape;
use crate::store::portal::{self as db, PortalMessage, PortalThread};
use crate::store::{StoreError, get_setting};

/// Room in a reply's body for its text and the multipart framing, on top
/// of the attachments' own limit.
const FORM_OVERHEAD: usize = MAX_PORTAL_TEXT + 64 * 1024;
/// How long a form stays valid.
const CSRF_TTL_SECS: i64 = 7 * 86_400;
/// Longest text shown for one message; the rest is cut.
const MAX_SHOWN_CHARS: usize = 100_000;
/// Where the CSRF secret is kept.
const SECRET_KEY: &str = "portal_csrf_secret";

type HmacSha256 = Hmac<Sha256>;

/// The page's only style sheet; allowed by its hash, so no other style
/// (and no script at all) can run on the page.
const CSS: &str = r#"
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--text:#1c2431;--muted:#5d6877;--line:#e1e5eb;--accent:#2563eb;--accent-ink:#fff;--mine:#f1f6ff;--mine-line:#cddcf8;--ok:#17663f;--ok-bg:#e3f4ea;--warn:#7a4b00;--warn-bg:#fff3dc;--err:#9b1c1c}
@media (prefers-color-scheme:dark){:root{--bg:#121519;--card:#1b1f26;--text:#e5e8ed;--muted:#9aa3b1;--line:#2c323c;--accent:#7aa2ff;--accent-ink:#0b1020;--mine:#19253a;--mine-line:#2b4068;--ok:#8fd6ad;--ok-bg:#16291f;--warn:#f2c56f;--warn-bg:#2d2412;--err:#ff9b9b}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--text);font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:760px;margin:0 auto;padding:32px 20px 48px}
.eyebrow{margin:0 0 6px;color:var(--muted);font-size:14px;font-weight:600;overflow-wrap:anywhere}
h1{margin:0 0 10px;font-size:26px;line-height:1.25;overflow-wrap:anywhere}
h2{margin:0 0 14px;font-size:18px}
.meta{display:flex;flex-wrap:wrap;gap:8px 12px;align-items:center;margin:0 0 24px;color:var(--muted);font-size:14px}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;background:var(--ok-bg);color:var(--ok);font-size:12px;font-weight:700;letter-spacing:.03em;text-transform:uppercase}
.badge.closed{background:var(--line);color:var(--muted)}
.notice{margin:0 0 20px;padding:12px 16px;border-radius:10px;background:var(--ok-bg);color:var(--ok);font-weight:600}
.notice.warn{background:var(--warn-bg);color:var(--warn)}
.thread{display:flex;flex-direction:column;gap:14px;margin:0 0 28px;padding:0;list-style:none}
.msg{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:18px 20px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.msg.mine{background:var(--mine);border-color:var(--mine-line)}
.head{display:flex;gap:12px;align-items:center;margin:0 0 12px}
.avatar{flex:none;display:grid;place-items:center;width:38px;height:38px;border-radius:50%;background:var(--accent);color:var(--accent-ink);font-weight:700}
.mine .avatar{background:var(--muted);color:var(--card)}
.who{flex:1;min-width:0}
.name{font-weight:650;overflow-wrap:anywhere}
.addr{color:var(--muted);font-size:13px;overflow-wrap:anywhere}
time{flex:none;color:var(--muted);font-size:13px;white-space:nowrap}
.text{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;font:inherit}
.empty{color:var(--muted);font-style:italic}
details{margin-top:12px}
summary{cursor:pointer;color:var(--accent);font-size:14px;font-weight:600}
details .text{margin-top:10px;padding-top:10px;border-top:1px dashed var(--line);color:var(--muted);font-size:15px}
.files{display:flex;flex-wrap:wrap;gap:8px;margin:14px 0 0;padding:0;list-style:none}
.files a{display:inline-flex;gap:8px;align-items:baseline;max-width:100%;padding:7px 12px;border:1px solid var(--line);border-radius:9px;background:var(--card);color:var(--text);font-size:14px;text-decoration:none;overflow-wrap:anywhere}
.files a:hover,.files a:focus{border-color:var(--accent)}
.files .arrow{color:var(--accent);font-weight:700}
.size{color:var(--muted);white-space:nowrap}
.card{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:20px}
label{display:block;margin:0 0 6px;font-weight:600;font-size:14px}
textarea,select,input[type=file]{width:100%;font:inherit;color:var(--text);background:var(--card);border:1px solid var(--line);border-radius:9px}
textarea{min-height:150px;padding:10px 12px;resize:vertical}
select{padding:8px 10px}
input[type=file]{padding:7px}
input[type=file]::file-selector-button{margin-right:10px;padding:6px 12px;border:1px solid var(--line);border-radius:7px;background:var(--bg);color:var(--text);font:inherit;font-size:14px;cursor:pointer}
textarea:focus,select:focus,input:focus,button:focus,summary:focus,.files a:focus{outline:3px solid color-mix(in srgb,var(--accent) 35%,transparent);outline-offset:1px}
.fields{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin:16px 0 0}
.fields .wide{grid-column:1/-1}
.hint{margin:6px 0 0;color:var(--muted);font-size:13px}
.actions{display:flex;flex-wrap:wrap;gap:12px;align-items:center;justify-content:space-between;margin:18px 0 0}
.actions .hint{margin:0;flex:1 1 260px}
button{padding:10px 22px;border:0;border-radius:9px;background:var(--accent);color:var(--accent-ink);font:inherit;font-weight:650;cursor:pointer}
button:hover{filter:brightness(1.08)}
.error h1{font-size:22px}
.error p{margin:0 0 12px}
a{color:var(--accent)}
footer{margin-top:32px;color:var(--muted);font-size:13px;text-align:center}
@media (max-width:560px){.wrap{padding:20px 12px 32px}h1{font-size:21px}.msg,.card{padding:14px}.head{flex-wrap:wrap}time{flex-basis:calc(100% - 50px);margin-left:50px;margin-top:-8px}.fields{grid-template-columns:1fr}button{width:100%}}
"#;

static STYLE_HASH: LazyLock<String> =
    LazyLock::new(|| BASE64.encode(Sha256::digest(CSS.as_bytes())));

/// The page's Content-Security-Policy.
fn page_csp() -> String {
    format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        *STYLE_HASH
    )
}

#[derive(Clone)]
struct PortalState {
    api: AppState,
    /// The CSRF secret, read from (or first written to) `settings` on first use.
    secret: Arc<tokio::sync::OnceCell<[u8; 32]>>,
}

/// The portal's routes; mounted by [`super::router`] beside the API.
pub fn routes<S>(api: AppState) -> Router<S> {
    let body_limit = api
        .config
        .portal
        .max_upload_bytes
        .saturating_add(FORM_OVERHEAD);
    Router::new()
        .route("/p/{token}", get(page))
        .route(
            "/p/{token}/reply",
            post(reply).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/p/{token}/attachments/{message}/{n}", get(download))
        .with_state(PortalState {
            api,
            secret: Arc::new(tokio::sync::OnceCell::new()),
        })
}

// ---------------------------------------------------------------------------
// Responses

/// Headers on every portal answer: nothing may frame, sniff, cache or
/// leak the page (its address is the token).
fn harden(headers: &mut HeaderMap, csp: &str) {
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(headers, header::CONTENT_SECURITY_POLICY, csp);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::CACHE_CONTROL, "no-store");
    set(
        headers,
        header::HeaderName::from_static("x-robots-tag"),
        "noindex, nofollow",
    );
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, Html(body)).into_response();
    harden(r.headers_mut(), &page_csp());
    r
}

/// Why the portal refused; each is a small page with its status.
#[derive(Debug)]
enum PortalError {
    NotFound,
    Closed {
        back: String,
    },
    Forbidden {
        back: String,
    },
    TooLarge {
        what: String,
        back: String,
    },
    RateLimited {
        limit: usize,
        back: String,
    },
    /// Too many unknown links from this address: refused for a while.
    Throttled {
        retry_after: u64,
    },
    Invalid {
        message: String,
        back: String,
    },
    BadRequest {
        back: String,
    },
    Internal(String),
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let mut retry = None;
        let (status, title, message, back) = match self {
            PortalError::NotFound => (
                StatusCode::NOT_FOUND,
                "Link not found",
                "This conversation link is not valid, or it has been turned off. If you still need to reply, answer the last email you received about it.".to_string(),
                None,
            ),
            PortalError::Closed { back } => (
                StatusCode::CONFLICT,
                "This conversation is closed",
                "Replies through this page are turned off because the conversation was closed. A reply by email still reaches the team: answer the last email you received about it.".to_string(),
                Some(back),
            ),
            PortalError::Forbidden { back } => (
                StatusCode::FORBIDDEN,
                "Your reply was not sent",
                "The form has expired or did not come from this page. Go back to the conversation, reload it and send your reply again.".to_string(),
                Some(back),
            ),
            PortalError::TooLarge { what, back } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Your reply was not sent",
                what,
                Some(back),
            ),
            PortalError::RateLimited { limit, back } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many replies",
                format!("This conversation has received too many replies through this page in the last hour (limit: {limit}). Please try again later."),
                Some(back),
            ),
            PortalError::Throttled { retry_after } => {
                retry = Some(retry_after);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    "Too many invalid conversation links were opened from your address. Please try again later.".to_string(),
                    None,
                )
            }
            PortalError::Invalid { message, back } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Your reply was not sent",
                message,
                Some(back),
            ),
            PortalError::BadRequest { back } => (
                StatusCode::BAD_REQUEST,
                "Your reply was not sent",
                "The form could not be read. Go back to the conversation and try again.".to_string(),
                Some(back),
            ),
            PortalError::Internal(detail) => {
                tracing::error!(error = %detail, "portal: internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The page could not be shown. Please try again in a moment.".to_string(),
                    None,
                )
            }
        };
        let back = back
            .map(|href| {
                format!(
                    "<p><a href=\"{}\">Back to the conversation</a></p>",
                    escape(&href)
                )
            })
            .unwrap_or_default();
        let body = format!(
            "<main class=\"wrap error\"><div class=\"card\"><h1>{}</h1><p>{}</p>{back}</div></main>",
            escape(title),
            escape(&message)
        );
        let mut r = html(status, document(title, &body));
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<StoreError> for PortalError {
    fn from(e: StoreError) -> Self {
        PortalError::Internal(e.to_string())
    }
}

// ---------------------------------------------------------------------------
// CSRF

impl PortalState {
    async fn secret(&self) -> Result<[u8; 32], PortalError> {
        let store = self.api.store.clone();
        let secret = self
            .secret
            .get_or_try_init(|| async move {
                let fresh = serde_json::json!(hex::encode(random_bytes::<32>())).to_string();
                let stored = store
                    .write(move |db| {
                        crate::store::put_setting_if_absent(db, SECRET_KEY, &fresh)?;
                        get_setting(db, SECRET_KEY)
                    })
                    .await
                    .map_err(|e| PortalError::Internal(e.to_string()))?;
                stored
                    .as_ref()
                    .and_then(|v| v.as_str())
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| PortalError::Internal("the portal secret is malformed".into()))
            })
            .await?;
        Ok(*secret)
    }
}

fn csrf_mac(secret: &[u8; 32], token: &str, issued: i64) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(b"backchannel portal reply\0");
    mac.update(token.as_bytes());
    mac.update(b"\0");
    mac.update(issued.to_string().as_bytes());
    Some(mac)
}

/// `<issued, hex seconds>.<HMAC, hex>`: valid for this portal token only,
/// for [`CSRF_TTL_SECS`].
pub fn csrf_token(secret: &[u8; 32], token: &str, now_secs: i64) -> String {
    let mac = csrf_mac(secret, token, now_secs)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{now_secs:x}.{mac}")
}

pub fn csrf_valid(secret: &[u8; 32], token: &str, value: &str, now_secs: i64) -> bool {
    let Some((issued, mac)) = value.trim().split_once('.') else {
        return false;
    };
    let Ok(issued) = i64::from_str_radix(issued, 16) else {
        return false;
    };
    if issued > now_secs + 300 || now_secs - issued > CSRF_TTL_SECS {
        return false;
    }
    let (Ok(given), Some(expected)) = (hex::decode(mac), csrf_mac(secret, token, issued)) else {
        return false;
    };
    expected.verify_slice(&given).is_ok()
}

// ---------------------------------------------------------------------------
// Handlers

/// Looks the token up (case-insensitively); `None` for junk, unknown and
/// revoked tokens alike. An address that opened too many unknown links is
/// refused (429) before the lookup, and each unknown link counts against it
/// (`limits.login_failures` per `limits.login_window`), so links cannot be
/// guessed at speed.
async fn thread(
    st: &PortalState,
    ip: Option<IpAddr>,
    token: &str,
) -> Result<PortalThread, PortalError> {
    let limiter = &st.api.limits.portal;
    if let Some(ip) = ip
        && let Err(wait) = limiter.check(ip)
    {
        return Err(PortalError::Throttled {
            retry_after: wait.secs(),
        });
    }
    let token = token.to_ascii_lowercase();
    let found = if db::is_token_shaped(&token) {
        st.api.store.read(move |c| db::by_token(c, &token)).await?
    } else {
        None
    };
    // Blocked meanwhile by a concurrent request from the address: refused
    // like any request while blocked, found or not (see `limits`).
    match found {
        Some(t) => match ip.map(|ip| limiter.check(ip)) {
            Some(Err(wait)) => Err(PortalError::Throttled {
                retry_after: wait.secs(),
            }),
            _ => Ok(t),
        },
        None => {
            crate::metrics::inc("auth_failures_total", &[("service", "portal")]);
            if let Some(ip) = ip
                && let Err(wait) = limiter.failure(ip)
            {
                return Err(PortalError::Throttled {
                    retry_after: wait.secs(),
                });
            }
            Err(PortalError::NotFound)
        }
    }
}

async fn page(
    State(st): State<PortalState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, PortalError> {
    let token = token.to_ascii_lowercase();
    let thread = thread(&st, ip, &token).await?;
    let sc = thread.id;
    let messages = st.api.store.read(move |c| db::messages(c, sc)).await?;
    let csrf = if thread.is_open() {
        Some(csrf_token(&st.secret().await?, &token, now_ms() / 1000))
    } else {
        None
    };
    let sent = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "sent=1"));
    let body = render_page(&PageData {
        token: &token,
        thread: &thread,
        messages: &messages,
        csrf: csrf.as_deref(),
        sent,
        max_upload: st.api.config.portal.max_upload_bytes,
    });
    Ok(html(StatusCode::OK, body))
}

async fn download(
    State(st): State<PortalState>,
    ClientIp(ip): ClientIp,
    Path((token, message, n)): Path<(String, String, String)>,
) -> Result<Response, PortalError> {
    let thread = thread(&st, ip, &token).await?;
    let (Ok(message), Ok(n)) = (message.parse::<i64>(), n.parse::<i64>()) else {
        return Err(PortalError::NotFound);
    };
    let sc = thread.id;
    let (filename, ctype, data) = st
        .api
        .store
        .read(move |c| db::attachment(c, sc, message, n))
        .await?
        .ok_or(PortalError::NotFound)?;
    let mut r = attachment_response(filename.as_deref(), &ctype, data);
    harden(r.headers_mut(), "default-src 'none'; sandbox");
    Ok(r)
}

/// What the reply form sent.
#[derive(Default)]
struct Form {
    csrf: Option<String>,
    email: Option<String>,
    text: String,
    attachments: Vec<Attachment>,
}

enum FormError {
    TooLarge(String),
    TooMany,
    Bad,
}

fn upload_too_large(limit: usize) -> FormError {
    FormError::TooLarge(format!(
        "The attachment is too large (limit: {}).",
        human_size(limit)
    ))
}

/// Reads one field, giving up as soon as it passes `cap` bytes.
async fn read_capped(
    field: &mut Field<'_>,
    cap: usize,
    too_large: impl Fn() -> FormError,
) -> Result<Vec<u8>, FormError> {
    let mut out = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, &too_large))?
    {
        if out.len() + chunk.len() > cap {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn multipart_error(e: MultipartError, too_large: &impl Fn() -> FormError) -> FormError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        FormError::Bad
    }
}

async fn read_form(mut mp: Multipart, max_upload: usize) -> Result<Form, FormError> {
    let mut form = Form::default();
    let mut uploaded = 0usize;
    let body_too_large = || upload_too_large(max_upload);
    loop {
        let next = mp
            .next_field()
            .await
            .map_err(|e| multipart_error(e, &body_too_large))?;
        let Some(mut field) = next else { break };
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "csrf" | "email" => {
                let bytes = read_capped(&mut field, 1024, || FormError::Bad).await?;
                let value = String::from_utf8(bytes).map_err(|_| FormError::Bad)?;
                if name == "csrf" {
                    form.csrf = Some(value);
                } else {
                    form.email = Some(value).filter(|v| !v.trim().is_empty());
                }
            }
            "text" => {
                let bytes = read_capped(&mut field, MAX_PORTAL_TEXT, || {
                    FormError::TooLarge(format!(
                        "The message is too long (limit: {}).",
                        human_size(MAX_PORTAL_TEXT)
                    ))
                })
                .await?;
                form.text = String::from_utf8_lossy(&bytes).into_owned();
            }
            "attachment" => {
                let filename = field
                    .file_name()
                    .map(str::to_string)
                    .filter(|f| !f.trim().is_empty());
                let content_type = field
                    .content_type()
                    .filter(|c| c.contains('/'))
                    .unwrap_or("application/octet-stream")
                    .to_string();
                let data = read_capped(&mut field, max_upload - uploaded, body_too_large).await?;
                // An empty file input still sends an unnamed, empty part.
                if filename.is_none() && data.is_empty() {
                    continue;
                }
                uploaded += data.len();
                if form.attachments.len() >= MAX_PORTAL_ATTACHMENTS {
                    return Err(FormError::TooMany);
                }
                form.attachments.push(Attachment {
                    filename: filename.unwrap_or_else(|| "attachment".to_string()),
                    content_type,
                    data,
                });
            }
            // Unknown fields are read (bounded) and ignored.
            _ => {
                read_capped(&mut field, 64 * 1024, || FormError::Bad).await?;
            }
        }
    }
    Ok(form)
}

async fn reply(
    State(st): State<PortalState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, PortalError> {
    let token = token.to_ascii_lowercase();
    let thread = thread(&st, ip, &token).await?;
    let back = format!("../{token}");
    if !thread.is_open() {
        return Err(PortalError::Closed { back });
    }
    // With the page's `no-referrer` policy browsers send `Origin: null` for
    // its own form: the CSRF token decides then.
    if !same_origin(
        &headers,
        &st.api.config.http.public_url,
        NullOrigin::Allowed,
    ) {
        tracing::warn!("portal: refused a reply posted from another site");
        return Err(PortalError::Forbidden { back });
    }
    let limit = st.api.config.portal.replies_per_hour;
    // Checked before the body is read (and again in the transaction).
    let sc = thread.id;
    let recent: i64 = st
        .api
        .store
        .read(move |db| {
            crate::store::side_conversations::portal_replies_since(db, sc, now_ms() - 3_600_000)
        })
        .await?;
    if recent >= limit as i64 {
        return Err(PortalError::RateLimited { limit, back });
    }
    let Ok(multipart) = multipart else {
        return Err(PortalError::BadRequest { back });
    };
    let max_upload = st.api.config.portal.max_upload_bytes;
    let form = match read_form(multipart, max_upload).await {
        Ok(f) => f,
        Err(FormError::TooLarge(what)) => return Err(PortalError::TooLarge { what, back }),
        Err(FormError::TooMany) => {
            return Err(PortalError::Invalid {
                message: format!("Attach at most {MAX_PORTAL_ATTACHMENTS} files to one reply."),
                back,
            });
        }
        Err(FormError::Bad) => return Err(PortalError::BadRequest { back }),
    };
    let secret = st.secret().await?;
    let csrf_ok = form
        .csrf
        .as_deref()
        .is_some_and(|v| csrf_valid(&secret, &token, v, now_ms() / 1000));
    if !csrf_ok {
        tracing::warn!("portal: refused a reply without a valid form token");
        return Err(PortalError::Forbidden { back });
    }
    let req = PortalReply {
        from: form.email,
        text: form.text,
        attachments: form.attachments,
    };
    match st.api.conversations.portal_reply(token.clone(), req).await {
        Ok(sent) => {
            tracing::info!(
                side_conversation = sent.side_conversation,
                message_id = sent.message,
                "portal: reply stored"
            );
            let mut r = html(StatusCode::SEE_OTHER, String::new());
            if let Ok(v) = HeaderValue::from_str(&format!("../{token}?sent=1")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
        Err(ServiceError::NotFound(_)) => Err(PortalError::NotFound),
        Err(ServiceError::Conflict(_)) => Err(PortalError::Closed { back }),
        Err(ServiceError::RateLimited(_)) => Err(PortalError::RateLimited { limit, back }),
        Err(ServiceError::Invalid { field, message }) => Err(PortalError::Invalid {
            message: invalid_message(&field, &message),
            back,
        }),
        Err(ServiceError::Store(e)) => Err(PortalError::Internal(e)),
    }
}

/// A sentence for a refused field, as a vendor would read it.
fn invalid_message(field: &str, message: &str) -> String {
    match field {
        "text" if message.starts_with("write") => "Write a reply or attach a file.".to_string(),
        "email" => format!("{message}: choose one of the addresses on this conversation."),
        _ => {
            let mut m = message.to_string();
            if let Some(first) = m.get(..1) {
                let upper = first.to_uppercase();
                m.replace_range(..1, &upper);
            }
            format!("{m}.")
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering (pure)

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"robots\" content=\"noindex, nofollow\">\n<link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        escape(title)
    )
}

/// `21 Nov 2026, 10:47 UTC`.
pub fn human_time(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = rfc3339(ms);
    let month = t
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("");
    format!(
        "{} {month} {}, {} UTC",
        t.get(8..10).unwrap_or("").trim_start_matches('0'),
        t.get(0..4).unwrap_or(""),
        t.get(11..16).unwrap_or("")
    )
}

fn cut(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let trimmed = text.trim_matches('\n').trim_end();
    match trimmed.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((i, _)) => format!("{}\n…", &trimmed[..i]),
        None => trimmed.to_string(),
    }
}

fn initial(name: &str) -> String {
    name.chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_else(|| "?".to_string())
}

struct PageData<'a> {
    token: &'a str,
    thread: &'a PortalThread,
    messages: &'a [PortalMessage],
    /// The form's token; `None` when the page is read-only.
    csrf: Option<&'a str>,
    /// Just sent a reply (after the redirect).
    sent: bool,
    max_upload: usize,
}

/// What the full text holds beyond the visible reply (quoted history,
/// signature, context block), shown when the reader expands the message.
fn rest_of(full: &str, visible: &str) -> Option<String> {
    let (full, visible) = (full.trim(), visible.trim());
    if full == visible || full.is_empty() {
        return None;
    }
    match full.strip_prefix(visible) {
        Some(rest) => {
            Some(rest.trim_matches('\n').trim_end().to_string()).filter(|r| !r.is_empty())
        }
        None => Some(full.to_string()),
    }
}

/// Drops the "View conversation: <portal link>" lines of our own mail: the
/// reader's own link is this page, and another recipient's link (the stored
/// copy carries the first recipient's) must never be shown to anyone else.
fn without_portal_links(text: &str) -> String {
    text.lines()
        .filter(|l| !(l.starts_with("View conversation: ") && l.contains("/p/")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_message(token: &str, viewer: Option<&str>, m: &PortalMessage) -> String {
    // The full text: stored HTML is never rendered, only its text.
    let full = m
        .text
        .clone()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| m.html.as_deref().map(crate::reply_text::html_to_text))
        .unwrap_or_default();
    let full = cut(&without_portal_links(&full));
    let visible = m
        .visible_reply
        .as_deref()
        .map(cut)
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| full.clone());
    let email = m.from_email.clone().unwrap_or_default();
    // On a recipient's own page, the other participants are shown by name
    // only (SPEC §8): their addresses are theirs to give.
    let other_participant = !m.outbound && viewer.is_some_and(|v| !v.eq_ignore_ascii_case(&email));
    let email = if other_participant {
        String::new()
    } else {
        email
    };
    let name = m
        .from_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| {
            if other_participant {
                "Another participant".to_string()
            } else {
                email.clone()
            }
        });
    let mut s = format!(
        "<li class=\"msg{}\" id=\"m{}\">\n<div class=\"head\"><span class=\"avatar\" aria-hidden=\"true\">{}</span><div class=\"who\"><div class=\"name\">{}</div>",
        if m.outbound { "" } else { " mine" },
        m.id,
        escape(&initial(&name)),
        escape(&name),
    );
    if !email.is_empty() && email != name {
        s.push_str(&format!("<div class=\"addr\">{}</div>", escape(&email)));
    }
    s.push_str(&format!(
        "</div><time datetime=\"{}\">{}</time></div>\n",
        escape(&rfc3339(m.at)),
        escape(&human_time(m.at))
    ));
    if visible.trim().is_empty() {
        if m.attachments.is_empty() {
            s.push_str("<p class=\"text empty\">(no text)</p>\n");
        }
    } else {
        s.push_str(&format!("<div class=\"text\">{}</div>\n", escape(&visible)));
    }
    let rest = if visible.trim().is_empty() {
        None
    } else {
        rest_of(&full, &visible)
    };
    if let Some(rest) = rest {
        s.push_str(&format!(
            "<details><summary>Show full message</summary><div class=\"text\">{}</div></details>\n",
            escape(&rest)
        ));
    }
    if !m.attachments.is_empty() {
        s.push_str("<ul class=\"files\">");
        for a in &m.attachments {
            let name = a
                .filename
                .as_deref()
                .filter(|f| !f.trim().is_empty())
                .map(crate::model::file_name)
                .unwrap_or_else(|| format!("attachment-{}", a.index + 1));
            s.push_str(&format!(
                "<li><a href=\"{}/attachments/{}/{}\" download><span class=\"arrow\" aria-hidden=\"true\">↓</span><span>{}</span><span class=\"size\">{}</span></a></li>",
                escape(token),
                m.id,
                a.index,
                escape(&name),
                escape(&human_size(usize::try_from(a.size).unwrap_or(0)))
            ));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</li>\n");
    s
}

/// Who the vendor is talking to: the sender's display name, else the name
/// the first message went out under, else the sender address.
fn team_name(d: &PageData<'_>) -> String {
    let t = d.thread;
    if !t.sender_name.trim().is_empty() {
        return t.sender_name.clone();
    }
    d.messages
        .iter()
        .find(|m| m.outbound)
        .and_then(|m| m.from_name.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| t.sender_email.clone())
}

fn render_form(d: &PageData<'_>, csrf: &str) -> String {
    let team = team_name(d);
    let people = &d.thread.participants;
    let default = people
        .iter()
        .position(|(_, _, role)| role == "to")
        .unwrap_or(0);
    let who = if let Some(viewer) = d.thread.viewer.as_deref() {
        // A recipient's own link: they reply as themselves, nobody else.
        format!(
            "<div><label>Reply as</label><p class=\"hint\">{}</p></div>",
            escape(viewer)
        )
    } else if people.len() > 1 {
        let options: String = people
            .iter()
            .enumerate()
            .map(|(i, (email, name, _))| {
                let label = match name.as_deref().filter(|n| !n.trim().is_empty()) {
                    Some(n) => format!("{n} <{email}>"),
                    None => email.clone(),
                };
                format!(
                    "<option value=\"{}\"{}>{}</option>",
                    escape(email),
                    if i == default { " selected" } else { "" },
                    escape(&label)
                )
            })
            .collect();
        format!(
            "<div><label for=\"email\">Reply as</label><select id=\"email\" name=\"email\">{options}</select></div>"
        )
    } else {
        let me = people.first().map(|(e, _, _)| e.as_str()).unwrap_or("");
        format!(
            "<div><label>Reply as</label><p class=\"hint\">{}</p></div>",
            escape(me)
        )
    };
    format!(
        "<section class=\"card\" aria-labelledby=\"reply-h\">\n<h2 id=\"reply-h\">Reply</h2>\n<form method=\"post\" action=\"{token}/reply\" enctype=\"multipart/form-data\">\n<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n<label for=\"text\">Your message</label>\n<textarea id=\"text\" name=\"text\" rows=\"6\" maxlength=\"{maxtext}\" placeholder=\"Write your reply…\"></textarea>\n<div class=\"fields\">{who}<div><label for=\"files\">Attachments</label><input id=\"files\" type=\"file\" name=\"attachment\" multiple><p class=\"hint\">Up to {limit} in total.</p></div></div>\n<div class=\"actions\"><p class=\"hint\">Your reply goes to {team} and everyone else on this conversation.</p><button type=\"submit\">Send reply</button></div>\n</form>\n</section>\n",
        token = escape(d.token),
        csrf = escape(csrf),
        maxtext = MAX_PORTAL_TEXT,
        limit = escape(&human_size(d.max_upload)),
        team = escape(&team),
    )
}

fn render_page(d: &PageData<'_>) -> String {
    let t = d.thread;
    let team = team_name(d);
    let mut body = String::from("<main class=\"wrap\">\n<header>\n");
    body.push_str(&format!(
        "<p class=\"eyebrow\">Conversation with {}</p>\n<h1>{}</h1>\n",
        escape(&team),
        escape(&t.subject)
    ));
    let count = d.messages.len();
    body.push_str(&format!(
        "<div class=\"meta\"><span class=\"badge{}\">{}</span><span>{count} message{}</span></div>\n</header>\n",
        if t.is_open() { "" } else { " closed" },
        if t.is_open() { "Open" } else { "Closed" },
        if count == 1 { "" } else { "s" },
    ));
    if d.sent {
        body.push_str("<p class=\"notice\" role=\"status\">Your reply was sent.</p>\n");
    }
    body.push_str("<ol class=\"thread\">\n");
    for m in d.messages {
        body.push_str(&render_message(d.token, t.viewer.as_deref(), m));
    }
    body.push_str("</ol>\n");
    match d.csrf {
        Some(csrf) if t.is_open() => body.push_str(&render_form(d, csrf)),
        _ => body.push_str(
            "<p class=\"notice warn\">This conversation is closed. You can still read it, but replies through this page are turned off. A reply by email still reaches the team.</p>\n",
        ),
    }
    body.push_str("<footer>This page is private to the people on this conversation. Please do not share its link.</footer>\n</main>");
    document(&t.subject, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert(1)</script> & \"x\" 'y'"),
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot; &#39;y&#39;"
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_portal_token_and_expire() {
        let secret = [7u8; 32];
        let now = 1_800_000_000;
        let t = csrf_token(&secret, "aaaa", now);
        assert!(csrf_valid(&secret, "aaaa", &t, now));
        assert!(csrf_valid(&secret, "aaaa", &t, now + 3600));
        assert!(!csrf_valid(&secret, "bbbb", &t, now));
        assert!(!csrf_valid(&[8u8; 32], "aaaa", &t, now));
        assert!(!csrf_valid(&secret, "aaaa", &t, now + CSRF_TTL_SECS + 1));
        assert!(!csrf_valid(&secret, "aaaa", "", now));
        assert!(!csrf_valid(&secret, "aaaa", "zz.zz", now));
        let forged = format!("{:x}.{}", now, "00".repeat(32));
        assert!(!csrf_valid(&secret, "aaaa", &forged, now));
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_size(10 * 1024 * 1024), "10 MB");
        assert_eq!(human_size(1536 * 1024), "1.5 MB");
        assert_eq!(human_size(2048), "2 KB");
        assert_eq!(human_size(12), "12 bytes");
        assert_eq!(human_time(1_788_256_800_000), "1 Sep 2026, 10:00 UTC");
    }

    #[test]
    fn the_rest_of_a_message_is_what_follows_the_visible_reply() {
        assert_eq!(rest_of("Hi\n\n> old", "Hi").as_deref(), Some("> old"));
        assert_eq!(rest_of("Hi\n", "Hi"), None);
        assert_eq!(rest_of("Other\ntext", "Hi").as_deref(), Some("Other\ntext"));
        assert_eq!(
            without_portal_links(
                "Hi\n\nView conversation: http://x/p/tok\nView conversation: http://x/p/other\n"
            ),
            "Hi\n"
        );
    }

    #[test]
    fn stored_html_is_shown_as_text() {
        let m = PortalMessage {
            id: 3,
            outbound: false,
            from_name: Some("<b>Eve</b>".into()),
            from_email: Some("eve@vendor.example".into()),
            at: 0,
            text: None,
            html: Some("<p>Hi <img src=x onerror=alert(2)></p><script>alert(1)</script>".into()),
            visible_reply: Some("<script>alert(1)</script>".into()),
            attachments: vec![],
        };
        let out = render_message("tok", None, &m);
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        assert!(!out.contains("<b>"), "{out}");
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{out}"
        );
        assert!(out.contains("eve@vendor.example"), "{out}");
        // On another recipient's own page, Eve's address is not shown.
        let out = render_message("tok", Some("vera@vendor.example"), &m);
        assert!(!out.contains("eve@vendor.example"), "{out}");
        assert!(out.contains("&lt;b&gt;Eve&lt;/b&gt;"), "{out}");
    }
}
