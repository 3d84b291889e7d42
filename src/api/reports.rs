//! `GET /api/reports/side-conversations` (SPEC §15): the report of
//! [`crate::conversations::reports`] as JSON, or CSV with `Accept:
//! text/csv`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::conversations::reports::{self, AGE_BUCKETS, ReportRow};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Caller, QueryParam as Query};
use crate::model::{now_ms, parse_rfc3339, rfc3339};
use crate::store::reports::GroupBy;

/// The range when `from` is left out: the 30 days before `to`.
const DEFAULT_DAYS: i64 = 30;
/// The longest range one report covers.
const MAX_DAYS: i64 = 366;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

fn time(name: &str, value: Option<&str>) -> ApiResult<Option<i64>> {
    value
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{name}: expected an RFC 3339 time such as 2026-01-31T00:00:00Z"
                ))
            })
        })
        .transpose()
}

fn row_json(r: &ReportRow) -> Value {
    let ages: serde_json::Map<String, Value> = AGE_BUCKETS
        .iter()
        .zip(r.open_by_age)
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    json!({
        "key": r.key,
        "opened": r.opened,
        "closed": r.closed,
        "first_reply_p50_s": r.first_reply_p50_s,
        "first_reply_p90_s": r.first_reply_p90_s,
        "close_p50_s": r.close_p50_s,
        "open_now": r.open_now,
        "open_by_age": ages,
        "bounce_rate": r.bounce_rate,
        "unverified_rate": r.unverified_rate,
    })
}

/// Reads the query: the range `[from, to)` and the grouping.
pub fn parse(q: &ReportQuery, now: i64) -> ApiResult<(i64, i64, GroupBy, &'static str)> {
    let to = time("to", q.to.as_deref())?.unwrap_or(now);
    let from = time("from", q.from.as_deref())?.unwrap_or(to - DEFAULT_DAYS * DAY_MS);
    if from >= to {
        return Err(ApiError::BadRequest("from: must be before to".into()));
    }
    if to - from > MAX_DAYS * DAY_MS {
        return Err(ApiError::BadRequest(format!(
            "from: a report covers at most {MAX_DAYS} days"
        )));
    }
    let (group_by, name) = match q.group_by.as_deref() {
        None | Some("vendor_domain") => (GroupBy::VendorDomain, "vendor_domain"),
        Some("tag") => (GroupBy::Tag, "tag"),
        Some("agent") => (GroupBy::Agent, "agent"),
        Some("sender") => (GroupBy::Sender, "sender"),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "group_by: expected vendor_domain, tag, agent or sender".into(),
            ));
        }
    };
    Ok((from, to, group_by, name))
}

/// Whether the caller asked for CSV.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
        })
}

pub async fn side_conversations(
    State(st): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Response> {
    let now = now_ms();
    let (from, to, group_by, name) = parse(&q, now)?;
    let facts = st
        .store
        .read(move |c| crate::store::reports::facts(c, from, to, group_by))
        .await?;
    let rows = reports::report(&facts, group_by, from, to, now);
    if wants_csv(&headers) {
        let mut resp = reports::csv(&rows).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        resp.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"side-conversations.csv\""),
        );
        return Ok(resp);
    }
    Ok(Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "group_by": name,
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
    }))
    .into_response())
}
