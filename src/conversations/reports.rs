//! The side-conversation report (SPEC §15): per group (vendor domain, tag,
//! agent, sender), how many were opened and closed in a range, how fast
//! vendors first replied and threads closed, what is open now by age, and
//! the bounce and unverified-sender rates. Figures are computed here from
//! the store's per-thread facts; percentiles are nearest-rank.

use std::collections::BTreeMap;

use crate::model::parse_rfc3339;
use crate::store::reports::{Facts, GroupBy};

const DAY_MS: i64 = 86_400_000;
/// The range when `from` is left out: the 30 days before `to`.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest range one report covers.
pub const MAX_DAYS: i64 = 366;

/// What a report is asked for: `[from, to)` (ms) and the grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSpec {
    pub from: i64,
    pub to: i64,
    pub group_by: GroupBy,
    /// The grouping as the API spells it.
    pub group_name: &'static str,
}

/// Reads a report's parameters (RFC 3339 times; `to` defaults to `now`,
/// `from` to [`DEFAULT_DAYS`] before `to`; `group_by` to `vendor_domain`).
/// A refusal says which parameter and why.
pub fn spec(
    from: Option<&str>,
    to: Option<&str>,
    group_by: Option<&str>,
    now: i64,
) -> Result<ReportSpec, String> {
    let time = |name: &str, v: Option<&str>| -> Result<Option<i64>, String> {
        v.map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                format!("{name}: expected an RFC 3339 time such as 2026-01-31T00:00:00Z")
            })
        })
        .transpose()
    };
    let to = time("to", to)?.unwrap_or(now);
    let from = time("from", from)?.unwrap_or(to - DEFAULT_DAYS * DAY_MS);
    if from >= to {
        return Err("from: must be before to".into());
    }
    if to - from > MAX_DAYS * DAY_MS {
        return Err(format!("from: a report covers at most {MAX_DAYS} days"));
    }
    let (group_by, group_name) = match group_by {
        None | Some("vendor_domain") => (GroupBy::VendorDomain, "vendor_domain"),
        Some("tag") => (GroupBy::Tag, "tag"),
        Some("agent") => (GroupBy::Agent, "agent"),
        Some("sender") => (GroupBy::Sender, "sender"),
        Some(_) => return Err("group_by: expected vendor_domain, tag, agent or sender".into()),
    };
    Ok(ReportSpec {
        from,
        to,
        group_by,
        group_name,
    })
}

/// The age buckets of `open_by_age`, as the API names them.
pub const AGE_BUCKETS: [&str; 4] = ["<1d", "1-3d", "3-7d", ">7d"];

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// The group's value (`None`: none, e.g. untagged).
    pub key: Option<String>,
    /// Opened in the range.
    pub opened: i64,
    /// Closed in the range (and still closed).
    pub closed: i64,
    /// Of those opened in the range and answered: seconds from the start
    /// to the first vendor reply.
    pub first_reply_p50_s: Option<i64>,
    pub first_reply_p90_s: Option<i64>,
    /// Of those closed in the range: seconds from the start to closing.
    pub close_p50_s: Option<i64>,
    /// Open now, and by age (see [`AGE_BUCKETS`]).
    pub open_now: i64,
    pub open_by_age: [i64; 4],
    /// Of the recipients of agent messages in those opened in the range,
    /// the share that bounced (`None` without any).
    pub bounce_rate: Option<f64>,
    /// Of the vendor replies in those opened in the range, the share from
    /// an unverified sender (`None` without any).
    pub unverified_rate: Option<f64>,
}

/// The value at percentile `p` (0–100) of sorted `values`, nearest rank.
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (n * p as usize).div_ceil(100).clamp(1, n);
    sorted.get(rank - 1).copied()
}

fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

#[derive(Default)]
struct Acc {
    opened: i64,
    closed: i64,
    first_reply: Vec<i64>,
    close: Vec<i64>,
    open_by_age: [i64; 4],
    recipients: i64,
    bounced: i64,
    replies: i64,
    unverified: i64,
}

/// The report over `[from, to)` at `now`, one row per group, the most
/// opened first (then by key).
pub fn report(facts: &[Facts], group_by: GroupBy, from: i64, to: i64, now: i64) -> Vec<ReportRow> {
    let in_range = |t: i64| t >= from && t < to;
    let mut groups: BTreeMap<Option<String>, Acc> = BTreeMap::new();
    for f in facts {
        let mut keys: Vec<Option<String>> = f
            .keys
            .iter()
            .map(|k| match group_by {
                // Tags compare without case.
                GroupBy::Tag => k.as_ref().map(|t| t.to_lowercase()),
                _ => k.clone(),
            })
            .collect();
        keys.dedup();
        for key in keys {
            let a = groups.entry(key).or_default();
            if in_range(f.created_at) {
                a.opened += 1;
                if let Some(r) = f.first_reply_at {
                    a.first_reply.push((r - f.created_at).max(0) / 1000);
                }
                a.recipients += f.recipients;
                a.bounced += f.bounced;
                a.replies += f.replies;
                a.unverified += f.unverified;
            }
            if let Some(c) = f.closed_at.filter(|c| !f.open && in_range(*c)) {
                a.closed += 1;
                a.close.push((c - f.created_at).max(0) / 1000);
            }
            if f.open {
                let age = now - f.created_at;
                let bucket = match age {
                    a if a < DAY_MS => 0,
                    a if a < 3 * DAY_MS => 1,
                    a if a < 7 * DAY_MS => 2,
                    _ => 3,
                };
                a.open_by_age[bucket] += 1;
            }
        }
    }
    let mut rows: Vec<ReportRow> = groups
        .into_iter()
        .map(|(key, mut a)| {
            a.first_reply.sort_unstable();
            a.close.sort_unstable();
            ReportRow {
                key,
                opened: a.opened,
                closed: a.closed,
                first_reply_p50_s: percentile(&a.first_reply, 50),
                first_reply_p90_s: percentile(&a.first_reply, 90),
                close_p50_s: percentile(&a.close, 50),
                open_now: a.open_by_age.iter().sum(),
                open_by_age: a.open_by_age,
                bounce_rate: rate(a.bounced, a.recipients),
                unverified_rate: rate(a.unverified, a.replies),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.opened.cmp(&a.opened).then_with(|| a.key.cmp(&b.key)));
    rows
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line
/// break; a value a spreadsheet would run as a formula (`=`, `+`, `-`, `@`)
/// is prefixed with `'`.
pub fn csv_field(value: &str) -> String {
    let v = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// The report as CSV, a header line first.
pub fn csv(rows: &[ReportRow]) -> String {
    let mut out = String::from(
        "key,opened,closed,first_reply_p50_s,first_reply_p90_s,close_p50_s,open_now,\
         open_lt_1d,open_1_3d,open_3_7d,open_gt_7d,bounce_rate,unverified_rate\r\n",
    );
    let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    let frac = |n: Option<f64>| n.map(|n| n.to_string()).unwrap_or_default();
    for r in rows {
        let fields = [
            csv_field(r.key.as_deref().unwrap_or("")),
            r.opened.to_string(),
            r.closed.to_string(),
            num(r.first_reply_p50_s),
            num(r.first_reply_p90_s),
            num(r.close_p50_s),
            r.open_now.to_string(),
            r.open_by_age[0].to_string(),
            r.open_by_age[1].to_string(),
            r.open_by_age[2].to_string(),
            r.open_by_age[3].to_string(),
            frac(r.bounce_rate),
            frac(r.unverified_rate),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 90), Some(7));
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), Some(5));
        assert_eq!(percentile(&v, 90), Some(9));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3], 90), Some(3));
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("acme.com"), "acme.com");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
