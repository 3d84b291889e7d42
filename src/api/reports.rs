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
use crate::model::{now_ms, rfc3339};

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
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
    let spec = reports::spec(
        q.from.as_deref(),
        q.to.as_deref(),
        q.group_by.as_deref(),
        now,
    )
    .map_err(ApiError::BadRequest)?;
    let (from, to, group_by, name) = (spec.from, spec.to, spec.group_by, spec.group_name);
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
