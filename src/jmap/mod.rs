//! JMAP (RFC 8620 core, RFC 8621 mail; the subset of SPEC §9): the agent
//! view of `store::view` as JSON for tools and bots.
//!
//! - `GET /.well-known/jmap`: the session resource (capabilities, limits,
//!   the caller's one account, URLs).
//! - `POST /jmap`: the API endpoint. Request-level faults are RFC 7807
//!   problem documents; method-level faults are `["error", {type}, id]`.
//! - `GET /jmap/download/{accountId}/{blobId}/{name}`: blobs (`blob`).
//! - `GET /jmap/eventsource`: push of state changes (`push`).
//!
//! Authentication is the HTTP API's bearer token; each user is one account
//! (`a<user id>`). Objects and their ids (see `ids`): mailboxes `b<n>` plus
//! the virtual parent `tickets` of every `Tickets/<id>` mailbox; emails
//! `m<n>` (on a side conversation) and `u<n>` (in Unrouted); threads `t<side
//! conversation>` and `tu<n>` (an unrouted message alone); blobs `r<n>` (the
//! stored raw message) and `p<n>-<part>` (one MIME part, decoded).
//! Assigning an unrouted message to a thread therefore destroys `u<n>` and
//! creates `m<n>`: RFC 8621 forbids an Email's `threadId` to change.
//!
//! State strings are the modseq values of `view::user_states`.

mod blob;
mod changes;
mod email;
mod ids;
mod mailbox;
mod mime;
mod push;
mod query;
mod thread;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::Db;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::http::AppState;
use crate::http::extract::Caller;
use crate::model::Role;
use crate::shutdown::Shutdown;
use crate::store::StoreError;

pub const CORE: &str = "urn:ietf:params:jmap:core";
pub const MAIL: &str = "urn:ietf:params:jmap:mail";

// The limits (method calls per request, objects per /get and /set,
// requests and push streams per user, properties, filter conditions,
// changes, query results) are the `[jmap]` config keys: see
// `crate::config::JmapConfig`, carried by every request's [`Ctx`].

/// EventSource connections the whole server holds open at once: half of
/// `http.max_connections`, so push streams (each holding one connection
/// for as long as the client likes) never take every connection slot from
/// ordinary requests.
pub fn max_push_streams_total(http_max_connections: usize) -> usize {
    (http_max_connections / 2).max(1)
}

/// Why a concurrency slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The user holds their share.
    User,
    /// The server holds its share (push streams only).
    Server,
}

/// The routes of the JMAP endpoints (the API's list of operations names them too).
/// JMAP's routes; `shared` holds its per-user slots and the shutdown signal
/// its push streams end on.
pub fn routes(shared: Shared) -> Router<AppState> {
    Router::new()
        .route("/.well-known/jmap", get(session))
        .route("/jmap", post(api))
        .route(
            "/jmap/download/{account}/{blob}/{name}",
            get(blob::download),
        )
        .route("/jmap/upload/{account}", post(upload))
        .route("/jmap/eventsource", get(push::eventsource))
        .layer(axum::Extension(shared))
}

// ---------------------------------------------------------------------------
// Shared state: per-user concurrency slots and the shutdown signal

/// What the JMAP handlers share across requests.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<SharedInner>,
}

struct SharedInner {
    shutdown: Shutdown,
    requests: Mutex<HashMap<i64, usize>>,
    streams: Mutex<HashMap<i64, usize>>,
}

impl Shared {
    pub fn new(shutdown: Shutdown) -> Shared {
        Shared {
            inner: Arc::new(SharedInner {
                shutdown,
                requests: Mutex::new(HashMap::new()),
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Takes one of `user`'s `max` slots, and for a stream one of the
    /// server's `total_max`.
    fn acquire(
        &self,
        stream: bool,
        user: i64,
        max: usize,
        total_max: usize,
    ) -> Result<Slot, Refused> {
        let map = if stream {
            &self.inner.streams
        } else {
            &self.inner.requests
        };
        let mut m = map.lock().map_err(|_| Refused::Server)?;
        if m.get(&user).copied().unwrap_or(0) >= max {
            return Err(Refused::User);
        }
        if m.values().sum::<usize>() >= total_max {
            return Err(Refused::Server);
        }
        *m.entry(user).or_insert(0) += 1;
        Ok(Slot {
            shared: self.inner.clone(),
            stream,
            user,
        })
    }

    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }
}

/// One taken concurrency slot, given back when dropped.
struct Slot {
    shared: Arc<SharedInner>,
    stream: bool,
    user: i64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let map = if self.stream {
            &self.shared.streams
        } else {
            &self.shared.requests
        };
        if let Ok(mut m) = map.lock()
            && let Some(n) = m.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Request context, errors

/// Who is calling, as the methods need it.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub user_id: i64,
    pub role: Role,
    pub account_id: String,
    /// The `[jmap]` limits.
    pub limits: crate::config::JmapConfig,
    /// Bytes of Email objects (as JSON) this request may still return, all
    /// its calls together (see [`Ctx::charge`]).
    budget: Arc<AtomicUsize>,
}

impl Ctx {
    /// Who the agent view is shown to.
    pub fn viewer(&self) -> crate::store::view::Viewer {
        crate::store::view::Viewer {
            role: self.role,
            user_id: self.user_id,
        }
    }

    fn of(caller: &Caller, limits: crate::config::JmapConfig) -> Ctx {
        Ctx {
            user_id: caller.0.id,
            role: caller.0.role,
            account_id: account_id(caller.0.id),
            limits,
            budget: Arc::new(AtomicUsize::new(limits.max_size_request)),
        }
    }

    /// Charges one Email object to the request's budget: the Emails one
    /// request returns (bodies, headers, structures) add up to at most
    /// `maxSizeRequest` (`jmap.max_size_request`) bytes of JSON, so a response is never a multiple
    /// of the largest mail the store holds. Over it, the call is
    /// `requestTooLarge`: ask for fewer Emails or properties, set
    /// maxBodyValueBytes, or download the blob.
    pub fn charge(&self, v: &Value) -> Result<(), MethodError> {
        let left = self.budget.load(Ordering::Relaxed);
        match json_len_within(v, left) {
            Some(n) => {
                self.budget.store(left - n, Ordering::Relaxed);
                Ok(())
            }
            None => Err(MethodError::with(
                "requestTooLarge",
                "the Emails asked for are larger than one response may be; ask for fewer, \
                 set maxBodyValueBytes, or download their blobs",
            )),
        }
    }

    /// The `accountId` argument must name the caller's account.
    pub fn check_account(&self, args: &Map<String, Value>) -> Result<(), MethodError> {
        match args.get("accountId") {
            Some(Value::String(a)) if *a == self.account_id => Ok(()),
            Some(Value::String(_)) => Err(MethodError::new("accountNotFound")),
            None | Some(Value::Null) => Err(MethodError::invalid("accountId is required")),
            Some(_) => Err(MethodError::invalid("accountId must be a string")),
        }
    }
}

pub fn account_id(user_id: i64) -> String {
    format!("a{user_id}")
}

/// A method-level error (RFC 8620 §3.6.2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MethodError {
    pub kind: &'static str,
    pub description: Option<String>,
    /// Extra properties some error types carry (`arguments`, `properties`).
    pub extra: Map<String, Value>,
}

impl MethodError {
    pub fn new(kind: &'static str) -> MethodError {
        MethodError {
            kind,
            description: None,
            extra: Map::new(),
        }
    }

    pub fn with(kind: &'static str, description: impl Into<String>) -> MethodError {
        MethodError {
            kind,
            description: Some(description.into()),
            extra: Map::new(),
        }
    }

    pub fn invalid(description: impl Into<String>) -> MethodError {
        MethodError::with("invalidArguments", description)
    }

    fn to_json(&self) -> Value {
        let mut o = self.extra.clone();
        o.insert("type".into(), json!(self.kind));
        if let Some(d) = &self.description {
            o.insert("description".into(), json!(d));
        }
        Value::Object(o)
    }
}

impl From<StoreError> for MethodError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "jmap: store error in a method call");
        MethodError::with("serverFail", "internal error")
    }
}

pub(crate) type MethodResult = Result<Value, MethodError>;

/// An RFC 7807 problem document (request-level error, RFC 8620 §3.6.1).
pub(crate) fn problem(
    status: StatusCode,
    kind: &str,
    detail: impl Into<String>,
    limit: Option<&str>,
) -> Response {
    let mut body = json!({
        "type": if kind.contains(':') { kind.to_string() } else { format!("urn:ietf:params:jmap:error:{kind}") },
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    if let Some(l) = limit {
        body["limit"] = json!(l);
    }
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The unread rest of the body makes the connection unusable.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

// ---------------------------------------------------------------------------
// Argument helpers (every argument comes from the client: checked, never
// trusted)

pub(crate) fn opt_str<'a>(
    args: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, MethodError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MethodError::invalid(format!("{key} must be a string"))),
    }
}

pub(crate) fn opt_bool(args: &Map<String, Value>, key: &str) -> Result<bool, MethodError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(MethodError::invalid(format!("{key} must be a boolean"))),
    }
}

/// An optional non-negative integer (`UnsignedInt`).
pub(crate) fn opt_uint(args: &Map<String, Value>, key: &str) -> Result<Option<u64>, MethodError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| MethodError::invalid(format!("{key} must be a non-negative integer"))),
        Some(_) => Err(MethodError::invalid(format!(
            "{key} must be a non-negative integer"
        ))),
    }
}

/// An optional list of strings (`ids`, `properties`); `None` for null.
pub(crate) fn opt_strings(
    args: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, MethodError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(MethodError::invalid(format!(
                    "{key} must be a list of strings"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(MethodError::invalid(format!(
            "{key} must be a list of strings"
        ))),
    }
}

/// A `properties`-style list, each name once, at most
/// `jmap.max_properties` distinct names: each `header:` form is parsed
/// again for every Email (and part) and becomes a key of every object
/// returned.
pub(crate) fn opt_properties(
    ctx: &Ctx,
    args: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, MethodError> {
    let list = opt_strings(args, key)?.map(distinct);
    let max = ctx.limits.max_properties;
    if list.as_ref().is_some_and(|l| l.len() > max) {
        return Err(MethodError::invalid(format!(
            "{key} names at most {max} different properties"
        )));
    }
    Ok(list)
}

/// `list` with repeats left out, first occurrences in order.
fn distinct(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    list.into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// The `ids` of a `/get`, each once (RFC 8620 §5.1: a repeated id is
/// answered once), at most `maxObjectsInGet`.
pub(crate) fn get_ids(
    ctx: &Ctx,
    args: &Map<String, Value>,
) -> Result<Option<Vec<String>>, MethodError> {
    let ids = opt_strings(args, "ids")?.map(distinct);
    let max = ctx.limits.max_objects_in_get;
    if ids.as_ref().is_some_and(|i| i.len() > max) {
        return Err(MethodError::with(
            "requestTooLarge",
            format!("at most {max} ids in one get"),
        ));
    }
    Ok(ids)
}

/// JMAP `UTCDate`: `2026-09-01T10:00:00Z` (fractional seconds only when
/// not zero).
pub(crate) fn utc_date(ms: i64) -> String {
    let s = crate::model::rfc3339(ms);
    match s.strip_suffix(".000Z") {
        Some(whole) => format!("{whole}Z"),
        None => s,
    }
}

/// Parses a `sinceState`/`ifInState` string: a modseq value.
pub(crate) fn parse_state(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// ---------------------------------------------------------------------------
// Session resource

fn session_object(st: &AppState, caller: &Caller) -> Value {
    let base = &st.config.http.public_url;
    let account = account_id(caller.0.id);
    let j = &st.config.jmap;
    json!({
        "capabilities": {
            CORE: {
                "maxSizeUpload": 0,
                "maxConcurrentUpload": 1,
                "maxSizeRequest": j.max_size_request,
                "maxConcurrentRequests": j.max_concurrent_requests,
                "maxCallsInRequest": j.max_calls_in_request,
                "maxObjectsInGet": j.max_objects_in_get,
                "maxObjectsInSet": j.max_objects_in_set,
                "collationAlgorithms": ["i;ascii-casemap"],
            },
            MAIL: {},
        },
        "accounts": {
            account.clone(): {
                "name": caller.0.email,
                "isPersonal": true,
                "isReadOnly": false,
                "accountCapabilities": {
                    MAIL: {
                        "maxMailboxesPerEmail": null,
                        "maxMailboxDepth": 2,
                        "maxSizeMailboxName": 255,
                        "maxSizeAttachmentsPerEmail": 0,
                        "emailQuerySortOptions": ["receivedAt"],
                        "mayCreateTopLevelMailbox": false,
                    },
                },
            },
        },
        "primaryAccounts": { MAIL: account },
        "username": caller.0.email,
        "apiUrl": format!("{base}/jmap"),
        "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}"),
        "uploadUrl": format!("{base}/jmap/upload/{{accountId}}"),
        "eventSourceUrl": format!("{base}/jmap/eventsource?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
        "state": session_state(caller),
    })
}

/// Changes when what the session shows changes: the account (user) and
/// the role (which decides the Unrouted mailbox).
fn session_state(caller: &Caller) -> String {
    format!("{}-{}", caller.0.id, caller.0.role.as_str())
}

async fn session(State(st): State<AppState>, caller: Caller) -> Response {
    let mut resp = axum::Json(session_object(&st, &caller)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    resp
}

/// Uploads are not part of this server: sending goes through the HTTP API.
async fn upload(_caller: Caller) -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "about:blank",
        "uploads are not supported; send mail through the HTTP API",
        None,
    )
}

// ---------------------------------------------------------------------------
// API endpoint

/// One parsed method call.
struct Call {
    name: String,
    args: Map<String, Value>,
    id: String,
}

/// Checks the shape of a Request object (RFC 8620 §3.3).
/// A checked Request: (using, method calls, createdIds).
type Parsed = (Vec<String>, Vec<Call>, Option<Value>);

fn parse_request(v: Value, max_calls: usize) -> Result<Parsed, String> {
    let Value::Object(mut o) = v else {
        return Err("the request must be a JSON object".into());
    };
    let using = match o.remove("using") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err("using must be a list of strings".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("using must be a list of capability strings".into()),
    };
    let calls = match o.remove("methodCalls") {
        Some(Value::Array(items)) => items,
        _ => return Err("methodCalls must be a list".into()),
    };
    let created_ids = match o.remove("createdIds") {
        None => None,
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Some(Value::Object(m)),
        Some(_) => return Err("createdIds must be an object of ids".into()),
    };
    let mut out = Vec::with_capacity(calls.len().min(max_calls.saturating_add(1)));
    for call in calls {
        let Value::Array(parts) = call else {
            return Err("each method call must be [name, arguments, id]".into());
        };
        let Ok::<[Value; 3], _>([name, args, id]) = parts.try_into() else {
            return Err("each method call must be [name, arguments, id]".into());
        };
        match (name, args, id) {
            (Value::String(name), Value::Object(args), Value::String(id)) => {
                out.push(Call { name, args, id })
            }
            _ => {
                return Err(
                    "a method call is [name (string), arguments (object), id (string)]".into(),
                );
            }
        }
    }
    Ok((using, out, created_ids))
}

async fn api(
    State(st): State<AppState>,
    axum::Extension(shared): axum::Extension<Shared>,
    caller: Caller,
    req: Request,
) -> Response {
    let limits = st.config.jmap;
    let limit = limits.max_size_request;
    let bytes = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(e) => {
            let text = e.to_string().to_ascii_lowercase();
            return if text.contains("length limit") || text.contains("too large") {
                problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "limit",
                    format!("the request is larger than maxSizeRequest ({limit} bytes)"),
                    Some("maxSizeRequest"),
                )
            } else {
                problem(
                    StatusCode::BAD_REQUEST,
                    "notRequest",
                    "the request body could not be read",
                    None,
                )
            };
        }
    };
    let max_requests = limits.max_concurrent_requests;
    let Ok(slot) = shared.acquire(false, caller.0.id, max_requests, usize::MAX) else {
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "limit",
            format!("at most {max_requests} requests at once"),
            Some("maxConcurrentRequests"),
        );
    };
    // Each method's store work holds the slot too: when the request times
    // out (http.request_timeout drops this future), work already handed to
    // the store still runs, and keeps counting against the user's
    // maxConcurrentRequests until it ends.
    let slot = Arc::new(slot);
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "notJSON",
                format!("the body is not valid JSON: {e}"),
                None,
            );
        }
    };
    let (using, calls, created_ids) = match parse_request(value, limits.max_calls_in_request) {
        Ok(r) => r,
        Err(why) => return problem(StatusCode::BAD_REQUEST, "notRequest", why, None),
    };
    if let Some(unknown) = using.iter().find(|u| *u != CORE && *u != MAIL) {
        return problem(
            StatusCode::BAD_REQUEST,
            "unknownCapability",
            format!("the capability {unknown:?} is not supported"),
            None,
        );
    }
    if calls.len() > limits.max_calls_in_request {
        return problem(
            StatusCode::BAD_REQUEST,
            "limit",
            format!(
                "at most {} method calls in one request",
                limits.max_calls_in_request
            ),
            Some("maxCallsInRequest"),
        );
    }
    let ctx = Ctx::of(&caller, limits);
    let mut responses: Vec<(String, Value, String)> = Vec::with_capacity(calls.len());
    // What result references may copy, all calls together: no more than
    // the client could have sent itself (two references to the previous
    // Core/echo per call would otherwise double the response each time).
    let mut reference_budget = limit;
    for call in calls {
        let outcome = match resolve_references(call.args, &responses, &mut reference_budget) {
            Ok(args) => run_method(&st, &ctx, &using, &call.name, args, &slot).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(v) => responses.push((call.name, v, call.id)),
            Err(e) => responses.push(("error".into(), e.to_json(), call.id)),
        }
    }
    let mut body = json!({
        "methodResponses": responses
            .into_iter()
            .map(|(n, v, id)| json!([n, v, id]))
            .collect::<Vec<_>>(),
        "sessionState": session_state(&caller),
    });
    if let Some(c) = created_ids {
        body["createdIds"] = c;
    }
    axum::Json(body).into_response()
}

/// The length of `v` as JSON, if it is at most `max` bytes (counting stops
/// there).
fn json_len_within(v: &Value, max: usize) -> Option<usize> {
    struct Count {
        n: usize,
        max: usize,
    }
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.n = self.n.saturating_add(b.len());
            if self.n > self.max {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count { n: 0, max };
    serde_json::to_writer(&mut count, v).ok()?;
    Some(count.n)
}

/// Replaces every `#name` argument by the value its ResultReference points
/// at (RFC 8620 §3.7). The values taken are charged to `budget` (bytes of
/// JSON); a reference that would overdraw it is `requestTooLarge`.
fn resolve_references(
    args: Map<String, Value>,
    responses: &[(String, Value, String)],
    budget: &mut usize,
) -> Result<Map<String, Value>, MethodError> {
    if !args.keys().any(|k| k.starts_with('#')) {
        return Ok(args);
    }
    let mut out = Map::with_capacity(args.len());
    let mut resolved = Vec::new();
    for (key, value) in args {
        let Some(name) = key.strip_prefix('#') else {
            out.insert(key, value);
            continue;
        };
        let bad = |why: &str| MethodError::with("invalidResultReference", why.to_string());
        let Value::Object(r) = value else {
            return Err(bad("a result reference must be an object"));
        };
        let (Some(Value::String(of)), Some(Value::String(method)), Some(Value::String(path))) =
            (r.get("resultOf"), r.get("name"), r.get("path"))
        else {
            return Err(bad(
                "a result reference needs resultOf, name and path strings",
            ));
        };
        let Some((resp_name, resp, _)) = responses.iter().find(|(_, _, id)| id == of) else {
            return Err(bad("no earlier method call has that id"));
        };
        if resp_name != method {
            return Err(bad("the referenced response has another name"));
        }
        let value = json_pointer(resp, path).ok_or_else(|| bad("the path does not resolve"))?;
        let Some(len) = json_len_within(&value, *budget) else {
            return Err(MethodError::with(
                "requestTooLarge",
                "result references in this request copy more than maxSizeRequest bytes",
            ));
        };
        *budget -= len;
        resolved.push((name.to_string(), value));
    }
    for (name, value) in resolved {
        if out.contains_key(&name) {
            return Err(MethodError::invalid(format!(
                "{name} is given both directly and as #{name}"
            )));
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// Tokens in one result reference path. No response nests deeper (JSON
/// is parsed at most 128 levels deep), so a longer path cannot resolve;
/// splitting one without a bound cost ~28 bytes of memory per byte of path.
const MAX_POINTER_TOKENS: usize = 256;

/// RFC 6901 JSON pointer with the JMAP `*` extension: `*` maps over an
/// array and flattens arrays of arrays one level.
fn json_pointer(v: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(v.clone());
    }
    let rest = path.strip_prefix('/')?;
    let tokens: Vec<String> = rest
        .split('/')
        .take(MAX_POINTER_TOKENS + 1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    if tokens.len() > MAX_POINTER_TOKENS {
        return None;
    }
    eval_pointer(v, &tokens)
}

fn eval_pointer(v: &Value, tokens: &[String]) -> Option<Value> {
    let Some((first, rest)) = tokens.split_first() else {
        return Some(v.clone());
    };
    match v {
        Value::Array(items) if first == "*" => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match eval_pointer(item, rest)? {
                    Value::Array(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            Some(Value::Array(out))
        }
        Value::Array(items) => {
            if first.len() > 1 && first.starts_with('0') {
                return None;
            }
            let i: usize = first.parse().ok()?;
            eval_pointer(items.get(i)?, rest)
        }
        Value::Object(m) => eval_pointer(m.get(first.as_str())?, rest),
        _ => None,
    }
}

/// Which capability a method belongs to, if it is one this server knows.
fn capability_of(name: &str) -> Option<&'static str> {
    match name {
        "Core/echo" => Some(CORE),
        "Mailbox/get" | "Mailbox/changes" | "Email/get" | "Email/query" | "Email/set"
        | "Email/changes" | "Thread/get" | "Thread/changes" => Some(MAIL),
        _ => None,
    }
}

async fn run_method(
    st: &AppState,
    ctx: &Ctx,
    using: &[String],
    name: &str,
    args: Map<String, Value>,
    slot: &Arc<Slot>,
) -> MethodResult {
    let Some(cap) = capability_of(name) else {
        let shown: String = name.chars().take(100).collect();
        return Err(MethodError::with(
            "unknownMethod",
            format!("{shown:?} is not supported"),
        ));
    };
    if !using.iter().any(|u| u == cap) {
        return Err(MethodError::with(
            "unknownMethod",
            format!("{name} needs {cap} in using"),
        ));
    }
    if name == "Core/echo" {
        return Ok(Value::Object(args));
    }
    let ctx = ctx.clone();
    let hold = slot.clone();
    if name == "Email/set" {
        return st
            .store
            .write(move |c| {
                let _hold = hold;
                email::set(&ctx, c, &args)
            })
            .await
            .unwrap_or_else(|e| Err(e.into()));
    }
    let name = name.to_string();
    st.store
        .read(move |c| {
            let _hold = hold;
            // One snapshot for the whole method: states and data agree.
            let out = read_method(&ctx, c, &name, &args);
            Ok(out)
        })
        .await
        .unwrap_or_else(|e| Err(e.into()))
}

fn read_method(ctx: &Ctx, c: &Db<'_>, name: &str, args: &Map<String, Value>) -> MethodResult {
    ctx.check_account(args)?;
    match name {
        "Mailbox/get" => mailbox::get(ctx, c, args),
        "Mailbox/changes" => mailbox::changes(ctx, c, args),
        "Email/get" => email::get(ctx, c, args),
        "Email/query" => query::query(ctx, c, args),
        "Email/changes" => email::changes(ctx, c, args),
        "Thread/get" => thread::get(ctx, c, args),
        "Thread/changes" => thread::changes(ctx, c, args),
        _ => Err(MethodError::new("unknownMethod")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_map_and_flatten() {
        let v = json!({"list": [{"ids": ["a", "b"]}, {"ids": ["c"]}], "n": [1, 2]});
        assert_eq!(
            json_pointer(&v, "/list/*/ids"),
            Some(json!(["a", "b", "c"]))
        );
        assert_eq!(json_pointer(&v, "/n/1"), Some(json!(2)));
        assert_eq!(json_pointer(&v, "/n/01"), None);
        assert_eq!(json_pointer(&v, "/missing"), None);
        assert_eq!(json_pointer(&v, "list"), None);
        assert_eq!(json_pointer(&v, ""), Some(v.clone()));
        // Deep enough paths resolve; one longer than any response is deep
        // does not (and is not split past the limit).
        let mut deep = json!("x");
        for _ in 0..MAX_POINTER_TOKENS {
            deep = json!({"a": deep});
        }
        let path = "/a".repeat(MAX_POINTER_TOKENS);
        assert_eq!(json_pointer(&deep, &path), Some(json!("x")));
        assert_eq!(json_pointer(&deep, &format!("{path}/a")), None);
        assert_eq!(json_pointer(&v, &"/*".repeat(1_000_000)), None);
    }

    #[test]
    fn requests_are_checked_for_shape() {
        assert!(parse_request(json!([]), 32).is_err());
        assert!(parse_request(json!({"using": [], "methodCalls": [["a", {}]]}), 32).is_err());
        assert!(parse_request(json!({"using": [1], "methodCalls": []}), 32).is_err());
        assert!(parse_request(json!({"using": [], "methodCalls": [["a", [], "c"]]}), 32).is_err());
        assert!(
            parse_request(
                json!({"using": [], "methodCalls": [], "createdIds": null}),
                32
            )
            .is_err()
        );
        assert!(
            parse_request(
                json!({"using": [], "methodCalls": [], "createdIds": {"a": 1}}),
                32
            )
            .is_err()
        );
        let (u, c, _) = parse_request(
            json!({"using": [CORE], "methodCalls": [["Core/echo", {}, "c1"]]}),
            32,
        )
        .expect("valid");
        assert_eq!(u, vec![CORE.to_string()]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn references_resolve_or_fail() {
        let responses = vec![(
            "Email/query".to_string(),
            json!({"ids": ["m1", "m2"]}),
            "c1".to_string(),
        )];
        let mut args = Map::new();
        args.insert(
            "#ids".into(),
            json!({"resultOf": "c1", "name": "Email/query", "path": "/ids"}),
        );
        let out = resolve_references(args.clone(), &responses, &mut 1000).expect("resolves");
        assert_eq!(out["ids"], json!(["m1", "m2"]));
        args.insert("ids".into(), json!([]));
        assert_eq!(
            resolve_references(args, &responses, &mut 1000).map_err(|e| e.kind),
            Err("invalidArguments")
        );
        let mut wrong = Map::new();
        wrong.insert(
            "#ids".into(),
            json!({"resultOf": "c1", "name": "Email/get", "path": "/ids"}),
        );
        assert_eq!(
            resolve_references(wrong, &responses, &mut 1000).map_err(|e| e.kind),
            Err("invalidResultReference")
        );
        // Each reference is charged to the budget: `["m1","m2"]` is 11 bytes.
        let mut budget = 21;
        let mut one = Map::new();
        one.insert(
            "#ids".into(),
            json!({"resultOf": "c1", "name": "Email/query", "path": "/ids"}),
        );
        assert!(resolve_references(one.clone(), &responses, &mut budget).is_ok());
        assert_eq!(budget, 10);
        assert_eq!(
            resolve_references(one, &responses, &mut budget).map_err(|e| e.kind),
            Err("requestTooLarge")
        );
        assert_eq!(json_len_within(&json!({"a": [1, "x"]}), 100), Some(13));
        assert_eq!(json_len_within(&json!({"a": [1, "x"]}), 12), None);
    }

    #[test]
    fn dates_and_states() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(parse_state("42"), Some(42));
        assert_eq!(parse_state("-1"), None);
        assert_eq!(parse_state(""), None);
        assert_eq!(parse_state("99999999999999999999"), None);
    }
}
