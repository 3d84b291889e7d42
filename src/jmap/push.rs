//! Push over EventSource (RFC 8620 §7.3):
//! `GET /jmap/eventsource?types=*&closeafter=no|state&ping=N`.
//!
//! Each connection waits on the store's commit signal, recomputes the
//! caller's Mailbox/Email/Thread states (two indexed lookups, skipped when
//! the global modseq did not move) and sends a `state` event only when a
//! requested type changed. The event id carries the three states, so a
//! client reconnecting with `Last-Event-ID` is told at once about what it
//! missed. `ping` events (or, with no ping asked for, comment lines) keep
//! the connection alive below the HTTP idle timeout. Every stream ends
//! when the server shuts down, and a user's streams end when the user is
//! deactivated, changes role or gets a new token (`Store::credentials`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::{Refused, account_id, max_push_streams_total, problem};
use crate::http::AppState;
use crate::http::extract::{Caller, QueryParam};
use crate::model::Role;
use crate::store::users;
use crate::store::view::{self, UserStates};

#[derive(Debug, Deserialize)]
pub struct Params {
    types: Option<String>,
    closeafter: Option<String>,
    ping: Option<String>,
}

/// Which types the client wants: (Mailbox, Email, Thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types {
    mailbox: bool,
    email: bool,
    thread: bool,
}

fn parse_types(s: Option<&str>) -> Types {
    let s = s.unwrap_or("*").trim();
    if s == "*" || s.is_empty() {
        return Types {
            mailbox: true,
            email: true,
            thread: true,
        };
    }
    let has = |t: &str| s.split(',').any(|x| x.trim() == t);
    Types {
        mailbox: has("Mailbox"),
        email: has("Email"),
        thread: has("Thread"),
    }
}

fn event_id(s: &UserStates) -> String {
    format!("{}.{}.{}", s.mailbox, s.email, s.thread)
}

fn parse_event_id(s: &str) -> Option<UserStates> {
    let mut it = s.trim().split('.');
    let mut next = || super::parse_state(it.next()?);
    let out = UserStates {
        mailbox: next()?,
        email: next()?,
        thread: next()?,
    };
    Some(out)
}

/// The `state` event for what changed between `old` and `new`, if the
/// client asked for any of it.
fn state_event(account: &str, types: Types, old: &UserStates, new: &UserStates) -> Option<Bytes> {
    let mut changed = Map::new();
    if types.mailbox && old.mailbox != new.mailbox {
        changed.insert("Mailbox".into(), json!(new.mailbox.to_string()));
    }
    if types.email && old.email != new.email {
        changed.insert("Email".into(), json!(new.email.to_string()));
    }
    if types.thread && old.thread != new.thread {
        changed.insert("Thread".into(), json!(new.thread.to_string()));
    }
    if changed.is_empty() {
        return None;
    }
    let data = json!({"@type": "StateChange", "changed": {account: Value::Object(changed)}});
    Some(Bytes::from(format!(
        "event: state\nid: {}\ndata: {data}\n\n",
        event_id(new)
    )))
}

async fn states(
    st: &AppState,
    role: Role,
    user: i64,
    last_global: i64,
) -> Option<(i64, UserStates)> {
    st.store
        .read(move |c| {
            let g = view::current_modseq(c)?;
            if g == last_global {
                return Ok(None);
            }
            Ok(Some((g, view::user_states(c, role, user)?)))
        })
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "jmap push: cannot read the state");
            None
        })
}

/// Whether the stream's user may go on: active, with the token and role
/// the stream was opened with. A store failure keeps the stream (the next
/// change checks again).
async fn still_allowed(st: &AppState, user: i64, epoch: i64) -> bool {
    match st
        .store
        .read(move |c| users::standing(c, user, epoch))
        .await
    {
        Ok(users::Standing::Valid(_)) => true,
        Ok(users::Standing::Revoked) => false,
        Err(e) => {
            tracing::warn!(error = %e, "jmap push: cannot check the user");
            true
        }
    }
}

pub async fn eventsource(
    State(st): State<AppState>,
    axum::Extension(shared): axum::Extension<super::Shared>,
    caller: Caller,
    headers: HeaderMap,
    QueryParam(params): QueryParam<Params>,
) -> Response {
    let types = parse_types(params.types.as_deref());
    let close_after_state = match params.closeafter.as_deref().map(str::trim) {
        None | Some("") | Some("no") => false,
        Some("state") => true,
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "about:blank",
                "closeafter must be state or no",
                None,
            );
        }
    };
    // Writes keep the connection under the HTTP idle timeout: pings (or
    // comments) at most every half of it.
    let idle = st.config.http.idle_timeout;
    let keepalive = (idle / 2).max(Duration::from_secs(1));
    let ping = match params.ping.as_deref().map(str::trim) {
        None | Some("") | Some("0") => None,
        Some(p) => match p.parse::<u64>() {
            Ok(n) => Some(Duration::from_secs(n).clamp(Duration::from_secs(1), keepalive)),
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "about:blank",
                    "ping must be a number of seconds",
                    None,
                );
            }
        },
    };
    let total = max_push_streams_total(st.config.http.max_connections);
    let per_user = st.config.jmap.max_push_streams;
    let slot = match shared.acquire(true, caller.0.id, per_user, total) {
        Ok(slot) => slot,
        Err(Refused::User) => {
            return problem(
                StatusCode::TOO_MANY_REQUESTS,
                "about:blank",
                format!("at most {per_user} push connections at once"),
                None,
            );
        }
        Err(Refused::Server) => {
            let mut resp = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "about:blank",
                "the server holds as many push connections as it takes; try again later",
                None,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            return resp;
        }
    };
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_event_id);
    let (role, user) = (caller.0.role, caller.0.id);
    let account = account_id(user);
    let Some((mut global, current)) = states(&st, role, user, -1).await else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "about:blank",
            "the state cannot be read now",
            None,
        );
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let shutdown = shared.shutdown().clone();
    let mut commits = st.store.commits();
    let mut credentials = st.store.credentials();
    let epoch = caller.0.credential_epoch;
    let task_state = st.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let st = task_state;
        let mut last = current;
        // A client coming back tells us what it last saw.
        if let Some(seen) = last_seen
            && let Some(ev) = state_event(&account, types, &seen, &current)
            && (tx.send(ev).await.is_err() || close_after_state)
        {
            return;
        }
        let interval = ping.unwrap_or(keepalive);
        let ping_data = ping.map(|p| json!({"interval": p.as_secs()}).to_string());
        let mut next_ping = tokio::time::Instant::now() + interval;
        let mut watching_credentials = true;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tx.closed() => break,
                changed = credentials.changed(), if watching_credentials => {
                    if changed.is_err() {
                        watching_credentials = false;
                    } else if !still_allowed(&st, user, epoch).await {
                        // Deactivated, token rotated or role changed: the
                        // stream ends (a reconnect with the old token
                        // gets 401).
                        break;
                    }
                }
                changed = commits.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some((g, now)) = states(&st, role, user, global).await else {
                        continue;
                    };
                    global = g;
                    if let Some(ev) = state_event(&account, types, &last, &now) {
                        last = now;
                        if tx.send(ev).await.is_err() {
                            break;
                        }
                        next_ping = tokio::time::Instant::now() + interval;
                        if close_after_state {
                            break;
                        }
                    } else {
                        last = now;
                    }
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    let chunk = match &ping_data {
                        Some(d) => format!("event: ping\ndata: {d}\n\n"),
                        None => ":\n\n".to_string(),
                    };
                    if tx.send(Bytes::from(chunk)).await.is_err() {
                        break;
                    }
                    next_ping = tokio::time::Instant::now() + interval;
                }
            }
        }
    });
    crate::http::event_stream(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_event_ids() {
        assert_eq!(
            parse_types(Some("Email,Thread")),
            Types {
                mailbox: false,
                email: true,
                thread: true
            }
        );
        assert!(parse_types(None).mailbox);
        let s = UserStates {
            mailbox: 3,
            email: 3,
            thread: 2,
        };
        assert_eq!(parse_event_id(&event_id(&s)), Some(s));
        assert_eq!(parse_event_id("1.2"), None);
        let old = UserStates::default();
        let ev = state_event("a1", parse_types(Some("Thread")), &old, &s).expect("event");
        let text = String::from_utf8(ev.to_vec()).expect("utf8");
        assert!(text.starts_with("event: state\nid: 3.3.2\ndata: "));
        assert!(text.contains("\"Thread\":\"2\""));
        assert!(!text.contains("Email"));
        assert!(state_event("a1", parse_types(Some("Mailbox")), &s, &s).is_none());
    }
}
