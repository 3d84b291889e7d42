//! Webhook endpoints and their deliveries (SPEC §7): the admin's create,
//! list and delete, the delivery log per endpoint, and the claim and record
//! steps of the delivery worker (`crate::webhooks`).
//!
//! Deliveries are queued by [`super::events::enqueue`]. A delivery row moves
//! `queued → sending → delivered`, or `sending → deferred → sending …` on a
//! failed attempt, until `failed` once its age passes the configured limit.
//! `attempts` counts every attempt started, including one cut short by a
//! restart (rows found in `sending` at start go back to `deferred`).

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::audit::{self, Actor};
use super::events::EVENTS;
use super::sql::Dialect;
use super::{Db, Result, StoreError};
use crate::model::now_ms;

/// Longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest signing secret accepted.
pub const MAX_SECRET_LEN: usize = 1024;
/// Most deliveries one page of the log holds.
pub const MAX_PAGE: usize = 500;

/// Why creating an endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Valid JSON that a rule refuses (HTTP 422), naming the field.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for WebhookError {
    fn from(e: rusqlite::Error) -> Self {
        WebhookError::Store(e.into())
    }
}

/// An endpoint as the API shows it. The secret is write-only: it is never
/// read back out of the store except by the worker, to sign.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// Subscribed event names; empty means every event.
    pub events: Vec<String>,
    pub active: bool,
    #[serde(serialize_with = "crate::model::serialize_rfc3339")]
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Queued,
    Sending,
    Delivered,
    Deferred,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sending => "sending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Deferred => "deferred",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<DeliveryState> {
        Some(match s {
            "queued" => DeliveryState::Queued,
            "sending" => DeliveryState::Sending,
            "delivered" => DeliveryState::Delivered,
            "deferred" => DeliveryState::Deferred,
            "failed" => DeliveryState::Failed,
            _ => return None,
        })
    }
}

/// One entry of an endpoint's delivery log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    /// The body that is (or was) POSTed.
    pub payload: serde_json::Value,
    pub state: DeliveryState,
    pub attempts: i64,
    #[serde(serialize_with = "crate::model::serialize_rfc3339")]
    pub next_attempt_at: i64,
    /// HTTP status of the latest attempt that got a response.
    pub last_status: Option<u16>,
    /// The latest failure. Kept after a later success, so the log shows why
    /// a delivered event needed more than one attempt.
    pub last_error: Option<String>,
    #[serde(serialize_with = "crate::model::serialize_rfc3339")]
    pub created_at: i64,
    #[serde(serialize_with = "crate::model::serialize_rfc3339_opt")]
    pub delivered_at: Option<i64>,
}

/// One page of a list, newest first; `next_cursor` is passed back to get
/// the following page (absent on the last one).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}

/// A delivery claimed by the worker, with what it needs to make the attempt.
#[derive(Clone)]
pub struct Claimed {
    pub id: i64,
    pub webhook_id: i64,
    pub url: String,
    pub secret: String,
    pub event: String,
    /// The exact bytes to POST (and sign).
    pub payload: String,
    /// Attempts including this one.
    pub attempts: u32,
    pub created_at: i64,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("url", &self.url)
            .field("secret", &"***")
            .field("event", &self.event)
            .field("attempts", &self.attempts)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// How an attempt ended, as the worker's retry policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    Delivered {
        status: u16,
    },
    /// Failed for now; tried again at `next_attempt_at`.
    Deferred {
        status: Option<u16>,
        error: String,
        next_attempt_at: i64,
    },
    /// Given up.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// Checks an endpoint URL: absolute `http://` or `https://` with a host.
pub fn check_url(url: &str) -> std::result::Result<url::Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not supported; use http:// or https://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(parsed)
}

/// The event list as stored: known names only, each once, in given order.
fn normalize_events(events: &[String]) -> std::result::Result<Vec<String>, WebhookError> {
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        let e = e.trim();
        if !EVENTS.contains(&e) {
            return Err(WebhookError::Invalid {
                field: "events",
                message: format!("unknown event `{e}`; known: {}", EVENTS.join(", ")),
            });
        }
        if !out.iter().any(|x| x == e) {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

/// Creates an active endpoint. `events` empty subscribes to every event.
pub fn create(
    db: &Db<'_>,
    url: &str,
    secret: &str,
    events: &[String],
) -> std::result::Result<Webhook, WebhookError> {
    let conn = db.conn();
    let url = url.trim();
    check_url(url).map_err(|message| WebhookError::Invalid {
        field: "url",
        message,
    })?;
    if secret.trim().is_empty() {
        return Err(WebhookError::Invalid {
            field: "secret",
            message: "must not be empty".into(),
        });
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(WebhookError::Invalid {
            field: "secret",
            message: format!("longer than {MAX_SECRET_LEN} bytes"),
        });
    }
    let events = normalize_events(events)?;
    let now = now_ms();
    conn.execute(
        "INSERT INTO webhooks (url, secret, events, active, created_at) VALUES (?1, ?2, ?3, 1, ?4)",
        params![
            url,
            secret,
            serde_json::to_string(&events).map_err(StoreError::from)?,
            now
        ],
    )?;
    Ok(Webhook {
        id: conn.last_insert_rowid(),
        url: url.to_string(),
        events,
        active: true,
        created_at: now,
    })
}

/// A webhook URL as the audit log keeps it: without a password.
fn redacted_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => raw.to_string(),
    }
}

/// [`create`], recorded in the audit log as `actor`'s (the URL without
/// its password, never the secret).
pub fn create_audited(
    db: &Db<'_>,
    actor: &Actor,
    url: &str,
    secret: &str,
    events: &[String],
) -> std::result::Result<Webhook, WebhookError> {
    let hook = create(db, url, secret, events)?;
    audit::record(
        db,
        actor,
        "webhook.created",
        &hook.id.to_string(),
        &serde_json::json!({"url": redacted_url(&hook.url), "events": hook.events}),
    )?;
    Ok(hook)
}

/// [`delete`], recorded in the audit log as `actor`'s.
pub fn delete_audited(db: &Db<'_>, actor: &Actor, id: i64) -> Result<()> {
    let hook = get(db, id)?;
    delete(db, id)?;
    audit::record(
        db,
        actor,
        "webhook.deleted",
        &id.to_string(),
        &serde_json::json!({"url": redacted_url(&hook.url), "events": hook.events}),
    )?;
    Ok(())
}

const COLUMNS: &str = "id, url, events, active, created_at";

fn from_row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<Webhook> {
    let events: String = r.get(2)?;
    Ok(Webhook {
        id: r.get(0)?,
        url: r.get(1)?,
        // Written only by `create`; anything else reads as "all events",
        // which is also how `events::enqueue` reads it.
        events: serde_json::from_str(&events).unwrap_or_default(),
        active: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// Every endpoint, oldest first.
pub fn list(db: &Db<'_>) -> Result<Vec<Webhook>> {
    let conn = db.conn();
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn get(db: &Db<'_>, id: i64) -> Result<Webhook> {
    let conn = db.conn();
    Ok(conn.query_row(
        &format!("SELECT {COLUMNS} FROM webhooks WHERE id = ?1"),
        [id],
        from_row,
    )?)
}

/// Deletes an endpoint and, by cascade, its deliveries (an attempt in
/// flight finishes but records nothing).
pub fn delete(db: &Db<'_>, id: i64) -> Result<()> {
    let conn = db.conn();
    match conn.execute("DELETE FROM webhooks WHERE id = ?1", [id])? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event, payload, state, attempts, next_attempt_at,
     last_status, last_error, created_at, delivered_at";

fn delivery_from_row(r: &super::sql::Row<'_, '_>) -> rusqlite::Result<Delivery> {
    let payload: String = r.get(3)?;
    let state: String = r.get(4)?;
    let status: Option<i64> = r.get(7)?;
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event: r.get(2)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        state: DeliveryState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown delivery state `{state}`").into(),
            )
        })?,
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        delivered_at: r.get(10)?,
    })
}

/// One delivery by id.
pub fn delivery(db: &Db<'_>, id: i64) -> Result<Delivery> {
    let conn = db.conn();
    Ok(conn.query_row(
        &format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1"),
        [id],
        delivery_from_row,
    )?)
}

/// The delivery log of endpoint `webhook_id`, newest first: at most `limit`
/// entries (clamped to 1..=[`MAX_PAGE`]) with an id below `cursor` when
/// given. `NotFound` when the endpoint does not exist.
pub fn deliveries(
    db: &Db<'_>,
    webhook_id: i64,
    cursor: Option<i64>,
    limit: usize,
) -> Result<Page<Delivery>> {
    let conn = db.conn();
    get(db, webhook_id)?;
    let limit = limit.clamp(1, MAX_PAGE);
    let mut stmt = conn.prepare(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
         WHERE webhook_id = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR id < ?2)
         ORDER BY id DESC LIMIT ?3"
    ))?;
    // One more than asked tells whether another page follows.
    let mut items = stmt
        .query_map(
            params![webhook_id, cursor, limit as i64 + 1],
            delivery_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// At start (and, with several nodes, from time to time): attempts that
/// were in flight when their process stopped went nowhere we know of;
/// they are deferred, due now, and will be sent again (receivers drop
/// duplicates by delivery id). With several nodes only attempts whose
/// lease ran out count (see `Db::stale_before`). Returns how many.
pub fn requeue_interrupted(db: &Db<'_>, now: i64) -> Result<usize> {
    let conn = db.conn();
    Ok(conn.execute(
        "UPDATE webhook_deliveries
         SET state = 'deferred', lease_until = NULL,
             next_attempt_at = CASE WHEN next_attempt_at < ?1 THEN next_attempt_at ELSE ?1 END,
             last_error = 'interrupted: the gateway stopped during the attempt'
         WHERE state = 'sending' AND COALESCE(lease_until, 0) < ?2",
        params![now, db.stale_before(now)],
    )?)
}

/// Claims due deliveries of active endpoints: marks them `sending` with
/// one more attempt and returns them, as [`select`] picks them from what
/// is due given what is in flight (`in_flight`: attempts per endpoint).
pub fn claim_due(
    db: &Db<'_>,
    now: i64,
    lease_until: i64,
    concurrency: usize,
    per_endpoint: usize,
    in_flight: &HashMap<i64, usize>,
) -> Result<Vec<Claimed>> {
    let conn = db.conn();
    // The window bounds what is read to `per_endpoint` rows an endpoint,
    // however long one endpoint's backlog has grown.
    let mut stmt = conn.prepare(
        "SELECT id, webhook_id, url, secret, event, payload, attempts, created_at FROM (
             SELECT d.id, d.webhook_id, w.url, w.secret, d.event, d.payload, d.attempts,
                    d.created_at,
                    ROW_NUMBER() OVER (PARTITION BY d.webhook_id ORDER BY d.id) AS nth
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.state IN ('queued', 'deferred') AND d.next_attempt_at <= ?1
               AND w.active = 1
         ) AS due WHERE nth <= ?2 ORDER BY id",
    )?;
    let rows = stmt
        .query_map(params![now, per_endpoint as i64], |r| {
            Ok(Claimed {
                id: r.get(0)?,
                webhook_id: r.get(1)?,
                url: r.get(2)?,
                secret: r.get(3)?,
                event: r.get(4)?,
                payload: r.get(5)?,
                attempts: u32::try_from(r.get::<_, i64>(6)?)
                    .unwrap_or(u32::MAX - 1)
                    .saturating_add(1),
                created_at: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = select(rows, Claimed::due, in_flight, concurrency, per_endpoint);
    // On PostgreSQL another node may be claiming the same rows: each is
    // taken only if it is still due and not locked by that node's claim.
    let mut mark = conn.prepare_cached(match db.dialect() {
        Dialect::Sqlite => {
            "UPDATE webhook_deliveries SET state = 'sending', attempts = attempts + 1,
                    lease_until = ?2
             WHERE id = ?1"
        }
        Dialect::Postgres => {
            "UPDATE webhook_deliveries SET state = 'sending', attempts = attempts + 1,
                    lease_until = ?2
             WHERE id = (SELECT id FROM webhook_deliveries
                         WHERE id = ?1 AND state IN ('queued', 'deferred')
                         FOR UPDATE SKIP LOCKED)"
        }
    })?;
    let mut taken = Vec::with_capacity(out.len());
    for d in out.drain(..) {
        if mark.execute(params![d.id, lease_until])? == 1 {
            taken.push(d);
        }
    }
    Ok(taken)
}

/// Which of the due deliveries `due` (oldest first) to start now, given
/// the attempts already `in_flight` per endpoint. Pure.
///
/// - No endpoint ever has more than `per_endpoint` attempts in flight.
/// - At most `concurrency` attempts run at once, except that an endpoint
///   with nothing in flight may always start one: otherwise endpoints that
///   hang until their timeout could hold every slot, and a healthy
///   endpoint would wait for them. So the total is at most `concurrency`
///   plus one per endpoint that has no other attempt running.
/// - Fewest in flight first, then oldest: an endpoint's first attempt goes
///   before another's second, so retries of a busy endpoint queued long
///   ago do not take the free slots ahead of everyone else.
pub fn select<T>(
    due: Vec<T>,
    ids: impl Fn(&T) -> Due,
    in_flight: &HashMap<i64, usize>,
    concurrency: usize,
    per_endpoint: usize,
) -> Vec<T> {
    let mut nth: HashMap<i64, usize> = HashMap::new();
    let mut keyed: Vec<((usize, i64), T)> = due
        .into_iter()
        .map(|d| {
            let Due { id, webhook_id } = ids(&d);
            let n = nth.entry(webhook_id).or_default();
            let load = in_flight.get(&webhook_id).copied().unwrap_or(0) + *n;
            *n += 1;
            ((load, id), d)
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    let mut taken: HashMap<i64, usize> = in_flight.clone();
    let mut total: usize = in_flight.values().sum();
    let mut out = Vec::new();
    for (_, d) in keyed {
        let Due { webhook_id, .. } = ids(&d);
        let n = taken.entry(webhook_id).or_default();
        if *n >= per_endpoint || (total >= concurrency && *n > 0) {
            continue;
        }
        *n += 1;
        total += 1;
        out.push(d);
    }
    out
}

/// What [`select`] looks at in a due delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub id: i64,
    pub webhook_id: i64,
}

impl Claimed {
    fn due(&self) -> Due {
        Due {
            id: self.id,
            webhook_id: self.webhook_id,
        }
    }
}

/// Records how an attempt ended. Returns `false` when the row is gone
/// (endpoint deleted meanwhile) or no longer `sending`.
pub fn record(db: &Db<'_>, id: i64, attempted: &Attempted, now: i64) -> Result<bool> {
    let conn = db.conn();
    let n = match attempted {
        Attempted::Delivered { status } => conn.execute(
            "UPDATE webhook_deliveries SET state = 'delivered', last_status = ?2,
                    delivered_at = ?3
             WHERE id = ?1 AND state = 'sending'",
            params![id, status, now],
        )?,
        Attempted::Deferred {
            status,
            error,
            next_attempt_at,
        } => conn.execute(
            "UPDATE webhook_deliveries SET state = 'deferred', last_status = ?2,
                    last_error = ?3, next_attempt_at = ?4
             WHERE id = ?1 AND state = 'sending'",
            params![id, status, error, next_attempt_at],
        )?,
        Attempted::Failed { status, error } => conn.execute(
            "UPDATE webhook_deliveries SET state = 'failed', last_status = ?2, last_error = ?3
             WHERE id = ?1 AND state = 'sending'",
            params![id, status, error],
        )?,
    };
    Ok(n > 0)
}

/// Deliveries not yet settled (queued, deferred or sending).
pub fn queue_depth(db: &Db<'_>) -> Result<i64> {
    let conn = db.conn();
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM webhook_deliveries
         WHERE state IN ('queued', 'deferred', 'sending')",
        [],
        |r| r.get(0),
    )?)
}

/// When the earliest waiting delivery of an active endpoint is due.
pub fn next_due(db: &Db<'_>) -> Result<Option<i64>> {
    let conn = db.conn();
    Ok(conn
        .query_row(
            "SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d
             JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.state IN ('queued', 'deferred') AND w.active = 1",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`select`] over (id, endpoint) pairs, oldest first; returns the
    /// ids picked, in the order picked.
    fn pick(
        due: &[(i64, i64)],
        in_flight: &[(i64, usize)],
        concurrency: usize,
        per_endpoint: usize,
    ) -> Vec<i64> {
        let due: Vec<Due> = due
            .iter()
            .map(|&(id, webhook_id)| Due { id, webhook_id })
            .collect();
        let busy: HashMap<i64, usize> = in_flight.iter().copied().collect();
        select(due, |d| *d, &busy, concurrency, per_endpoint)
            .iter()
            .map(|d| d.id)
            .collect()
    }

    #[test]
    fn select_is_fair_and_never_starves_an_idle_endpoint() {
        // Endpoints 1 and 2 hang, 3 is healthy. (due, in flight,
        // concurrency, per_endpoint, picked)
        type Case = (
            &'static [(i64, i64)],
            &'static [(i64, usize)],
            usize,
            usize,
            &'static [i64],
        );
        let cases: &[Case] = &[
            // Nothing in flight: first attempts of every endpoint first,
            // then seconds, up to the pool.
            (
                &[(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3)],
                &[],
                4,
                2,
                &[1, 3, 5, 2],
            ),
            // The pool is full of hanging attempts: the idle endpoint still
            // starts one, the busy ones nothing.
            (
                &[(7, 1), (8, 2), (9, 3), (10, 3)],
                &[(1, 2), (2, 2)],
                4,
                2,
                &[9],
            ),
            // Same with more hanging endpoints than slots.
            (
                &[(11, 3)],
                &[(1, 1), (2, 1), (4, 1), (5, 1), (6, 1)],
                4,
                2,
                &[11],
            ),
            // A free slot goes to the endpoint with fewer in flight, even
            // when another's rows are older; at equal load, the oldest.
            (&[(1, 1), (20, 3)], &[(1, 1), (2, 1), (3, 0)], 3, 2, &[20]),
            (
                &[(1, 1), (2, 2), (3, 3)],
                &[(1, 1), (2, 1), (3, 1)],
                4,
                2,
                &[1],
            ),
            // per_endpoint always holds.
            (&[(1, 1), (2, 1), (3, 1)], &[(1, 1)], 8, 2, &[1]),
            (&[(1, 1), (2, 1), (3, 1)], &[], 8, 1, &[1]),
            (&[(1, 1), (2, 1)], &[(1, 2)], 8, 2, &[]),
            (&[], &[], 8, 2, &[]),
        ];
        for (due, in_flight, concurrency, per_endpoint, want) in cases {
            assert_eq!(
                pick(due, in_flight, *concurrency, *per_endpoint),
                *want,
                "due {due:?}, in flight {in_flight:?}, {concurrency}/{per_endpoint}"
            );
        }
    }
}
