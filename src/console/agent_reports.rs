//! The reports page (SPEC §15, `/app/reports`): the side-conversation
//! report of `GET /api/reports/side-conversations` as a table, a bar chart
//! of `<meter>` elements (the CSP allows no inline styles) and a CSV
//! download of the same figures.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{Chrome, Layout as _, Refusal, harden, ok};
use crate::conversations::reports::{self, ReportRow, ReportSpec};
use crate::http::AppState;
use crate::model::{now_ms, rfc3339};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/reports", get(reports_page))
        .route("/app/reports.csv", get(reports_csv))
}

/// The form's fields: days (`YYYY-MM-DD`, both included) or RFC 3339
/// times, and the grouping.
#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

/// A day of the form as an RFC 3339 time: its start, or with `end` the
/// start of the next day (the form's `to` day is included).
fn day_or_time(v: Option<&str>, end: bool) -> Result<Option<String>, Refusal> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() != 10 {
        return Ok(Some(v.to_string()));
    }
    let start = crate::model::parse_rfc3339(&format!("{v}T00:00:00Z"))
        .ok_or_else(|| Refusal::BadRequest("from/to: expected a day such as 2026-01-31".into()))?;
    Ok(Some(rfc3339(if end { start + DAY_MS } else { start })))
}

fn spec_of(q: &ReportQuery) -> Result<ReportSpec, Refusal> {
    let from = day_or_time(q.from.as_deref(), false)?;
    let to = day_or_time(q.to.as_deref(), true)?;
    reports::spec(
        from.as_deref(),
        to.as_deref(),
        q.group_by.as_deref().filter(|g| !g.is_empty()),
        now_ms(),
    )
    .map_err(Refusal::BadRequest)
}

async fn rows_of(st: &AppState, spec: ReportSpec) -> Result<Vec<ReportRow>, Refusal> {
    let facts = st
        .store
        .read(move |c| crate::store::reports::facts(c, spec.from, spec.to, spec.group_by))
        .await?;
    Ok(reports::report(
        &facts,
        spec.group_by,
        spec.from,
        spec.to,
        now_ms(),
    ))
}

/// One line of the table.
pub struct Line {
    pub key: String,
    pub row: ReportRow,
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    chrome: Chrome,
    lines: Vec<Line>,
    group_by: &'static str,
    /// The form's days (the `to` day included).
    from_day: String,
    to_day: String,
    /// The most opened or open now of any row: the chart's scale.
    top: i64,
    csv_query: String,
}

impl ReportsPage {
    fn secs(&self, s: &Option<i64>) -> String {
        match s {
            None => "–".into(),
            Some(s) if *s < 3600 => format!("{} min", s / 60),
            Some(s) if *s < 86_400 => format!("{:.1} h", *s as f64 / 3600.0),
            Some(s) => format!("{:.1} d", *s as f64 / 86_400.0),
        }
    }

    fn pct(&self, r: &Option<f64>) -> String {
        r.map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "–".into())
    }
}

async fn reports_page(
    State(st): State<AppState>,
    chrome: Chrome,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Refusal> {
    let spec = spec_of(&q)?;
    let rows = rows_of(&st, spec).await?;
    let top = rows
        .iter()
        .map(|r| r.opened.max(r.open_now))
        .max()
        .unwrap_or(0)
        .max(1);
    let day = |ms: i64| rfc3339(ms).get(0..10).unwrap_or_default().to_string();
    let csv_query = serde_urlencoded::to_string([
        ("from", rfc3339(spec.from)),
        ("to", rfc3339(spec.to)),
        ("group_by", spec.group_name.to_string()),
    ])
    .unwrap_or_default();
    Ok(ok(&ReportsPage {
        chrome: chrome.with("reports", None),
        lines: rows
            .into_iter()
            .map(|row| Line {
                key: row.key.clone().unwrap_or_else(|| "(none)".into()),
                row,
            })
            .collect(),
        group_by: spec.group_name,
        from_day: day(spec.from),
        to_day: day(spec.to - 1),
        top,
        csv_query,
    }))
}

async fn reports_csv(
    State(st): State<AppState>,
    _chrome: Chrome,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Refusal> {
    let spec = spec_of(&q)?;
    let rows = rows_of(&st, spec).await?;
    let mut resp = reports::csv(&rows).into_response();
    let h = resp.headers_mut();
    harden(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"side-conversations.csv\""),
    );
    Ok(resp)
}
