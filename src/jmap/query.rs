//! Email/query (RFC 8621 §4.4): filters over the caller's visible mail,
//! sorted by receivedAt, windowed by position or anchor.
//!
//! The JSON filter becomes a typed [`EmailFilter`] here (its limits and
//! errors are JMAP's); the store runs it (`view::query_emails`). Text
//! conditions match substrings of the columns ingest stored.

use serde_json::{Map, Value, json};

use super::{Ctx, MethodError, MethodResult, ids, opt_bool, opt_str};
use crate::model::parse_rfc3339;
use crate::store::Db;
use crate::store::view::{self, EmailFilter};

// Limits (`[jmap]` config keys, in `Ctx::limits`):
// - `max_query_results`: default and largest number of ids one query
//   returns;
// - `max_filter_depth`: nesting of filter operators;
// - `max_filter_conditions`: conditions in one filter, all levels
//   together: every operator, every condition object and every property
//   in one (and every mailbox of an `inMailboxOtherThan`) counts. Capped
//   at 256 by the config, this also keeps the SQL statement within
//   SQLite's expression depth (1000), so a wide filter is a client error,
//   never a database failure.

struct Builder<'a> {
    ctx: &'a Ctx,
    c: &'a Db<'a>,
    conditions: usize,
}

fn flag_of(keyword: &str) -> Option<view::UserFlag> {
    match keyword.to_ascii_lowercase().as_str() {
        "$seen" => Some(view::UserFlag::Seen),
        "$flagged" => Some(view::UserFlag::Flagged),
        "$answered" => Some(view::UserFlag::Answered),
        _ => None,
    }
}

impl Builder<'_> {
    /// Counts `n` more conditions against `jmap.max_filter_conditions`.
    fn charge(&mut self, n: usize) -> Result<(), MethodError> {
        self.conditions = self.conditions.saturating_add(n);
        if self.conditions > self.ctx.limits.max_filter_conditions {
            return Err(MethodError::invalid("the filter has too many conditions"));
        }
        Ok(())
    }

    fn filter(&mut self, f: &Value, depth: usize) -> Result<EmailFilter, MethodError> {
        if depth > self.ctx.limits.max_filter_depth {
            return Err(MethodError::invalid("the filter is nested too deeply"));
        }
        self.charge(1)?;
        let Value::Object(o) = f else {
            return Err(MethodError::invalid("a filter must be an object"));
        };
        if let Some(op) = o.get("operator") {
            let Value::String(op) = op else {
                return Err(MethodError::invalid("operator must be a string"));
            };
            let Some(Value::Array(conds)) = o.get("conditions") else {
                return Err(MethodError::invalid("an operator needs a conditions list"));
            };
            if o.keys().any(|k| k != "operator" && k != "conditions") {
                return Err(MethodError::invalid(
                    "a filter operator has only operator and conditions",
                ));
            }
            let parts = conds
                .iter()
                .map(|c| self.filter(c, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(match op.as_str() {
                "AND" => EmailFilter::And(parts),
                "OR" => EmailFilter::Or(parts),
                "NOT" => EmailFilter::Not(parts),
                _ => {
                    return Err(MethodError::with(
                        "unsupportedFilter",
                        "operator must be AND, OR or NOT",
                    ));
                }
            });
        }
        let mut parts = Vec::new();
        for (key, value) in o {
            self.charge(1)?;
            parts.push(self.condition(key, value)?);
        }
        Ok(EmailFilter::And(parts))
    }

    fn text(value: &Value, key: &str) -> Result<String, MethodError> {
        match value {
            Value::String(s) if s.len() <= 1000 => Ok(s.clone()),
            Value::String(_) => Err(MethodError::invalid(format!("{key} is too long"))),
            _ => Err(MethodError::invalid(format!("{key} must be a string"))),
        }
    }

    fn date(value: &Value, key: &str) -> Result<i64, MethodError> {
        match value {
            Value::String(s) => parse_rfc3339(s)
                .ok_or_else(|| MethodError::invalid(format!("{key} must be a UTCDate"))),
            _ => Err(MethodError::invalid(format!("{key} must be a UTCDate"))),
        }
    }

    fn size(value: &Value, key: &str) -> Result<i64, MethodError> {
        value
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| MethodError::invalid(format!("{key} must be a non-negative integer")))
    }

    fn mailbox_id(&self, id: &str) -> Result<Option<i64>, MethodError> {
        match ids::parse_mailbox(id) {
            Some(Some(n)) => Ok(view::mailbox_by_id(self.c, self.ctx.viewer(), n)?.map(|m| m.id)),
            _ => Ok(None),
        }
    }

    fn condition(&mut self, key: &str, value: &Value) -> Result<EmailFilter, MethodError> {
        Ok(match key {
            "inMailbox" => {
                let id = Self::text(value, key)?;
                match self.mailbox_id(&id)? {
                    Some(n) => EmailFilter::InMailbox(n),
                    None => EmailFilter::Or(Vec::new()),
                }
            }
            "inMailboxOtherThan" => {
                let Value::Array(list) = value else {
                    return Err(MethodError::invalid("inMailboxOtherThan must be a list"));
                };
                self.charge(list.len())?;
                let mut excluded = Vec::new();
                for v in list {
                    if let Some(n) = self.mailbox_id(&Self::text(v, key)?)? {
                        excluded.push(n);
                    }
                }
                EmailFilter::InMailboxOtherThan(excluded)
            }
            "before" => EmailFilter::Before(Self::date(value, key)?),
            "after" => EmailFilter::After(Self::date(value, key)?),
            "minSize" => EmailFilter::MinSize(Self::size(value, key)?),
            "maxSize" => EmailFilter::MaxSize(Self::size(value, key)?),
            "hasKeyword" | "notKeyword" => {
                let k = Self::text(value, key)?;
                let has = key == "hasKeyword";
                match flag_of(&k) {
                    Some(flag) => EmailFilter::Keyword { flag, has },
                    // The gateway's own keyword, set on unverified mail.
                    None if k.eq_ignore_ascii_case("$unverified") => {
                        EmailFilter::Unverified { has }
                    }
                    // A keyword this server never sets: nothing has it.
                    None if has => EmailFilter::Or(Vec::new()),
                    None => EmailFilter::And(Vec::new()),
                }
            }
            "from" => EmailFilter::From(Self::text(value, key)?),
            "to" => EmailFilter::To(Self::text(value, key)?),
            "cc" => EmailFilter::Cc(Self::text(value, key)?),
            "subject" => EmailFilter::Subject(Self::text(value, key)?),
            "body" => EmailFilter::Body(Self::text(value, key)?),
            "text" => EmailFilter::Text(Self::text(value, key)?),
            other => {
                return Err(MethodError::with(
                    "unsupportedFilter",
                    format!("the filter condition {other} is not supported"),
                ));
            }
        })
    }
}

/// One row of a result: (Email id, Thread id).
fn run(
    ctx: &Ctx,
    c: &Db<'_>,
    filter: &EmailFilter,
    ascending: bool,
    cap: Option<usize>,
) -> Result<Vec<(String, String)>, MethodError> {
    let rows = view::query_emails(
        c,
        ctx.role.can_administer(),
        ctx.user_id,
        filter,
        ascending,
        cap,
    )?;
    Ok(rows
        .into_iter()
        .map(|r| match (r.unrouted, r.side_conversation) {
            (true, _) => (format!("u{}", r.id), format!("tu{}", r.id)),
            (false, Some(sc)) => (format!("m{}", r.id), format!("t{sc}")),
            (false, None) => (format!("m{}", r.id), format!("tu{}", r.id)),
        })
        .collect())
}

/// Every visible Email id, newest first, at most `cap`.
pub fn visible_ids(ctx: &Ctx, c: &Db<'_>, cap: usize) -> Result<Vec<String>, MethodError> {
    Ok(
        run(ctx, c, &EmailFilter::And(Vec::new()), false, Some(cap))?
            .into_iter()
            .map(|(e, _)| e)
            .collect(),
    )
}

fn int_arg(args: &Map<String, Value>, key: &str) -> Result<Option<i64>, MethodError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| MethodError::invalid(format!("{key} must be an integer"))),
        Some(_) => Err(MethodError::invalid(format!("{key} must be an integer"))),
    }
}

/// The sort direction; only receivedAt is supported.
fn sort_ascending(args: &Map<String, Value>) -> Result<bool, MethodError> {
    let list = match args.get("sort") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(l)) => l,
        Some(_) => return Err(MethodError::invalid("sort must be a list of comparators")),
    };
    let mut ascending = None;
    for c in list {
        let Value::Object(c) = c else {
            return Err(MethodError::invalid("a comparator must be an object"));
        };
        match c.get("property") {
            Some(Value::String(p)) if p == "receivedAt" => {}
            Some(Value::String(p)) => {
                return Err(MethodError::with(
                    "unsupportedSort",
                    format!("cannot sort by {p}; only receivedAt"),
                ));
            }
            _ => return Err(MethodError::invalid("a comparator needs a property")),
        }
        if let Some(coll) = c.get("collation")
            && !coll.is_null()
            && !coll.is_string()
        {
            return Err(MethodError::invalid("collation must be a string"));
        }
        let asc = match c.get("isAscending") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(MethodError::invalid("isAscending must be a boolean")),
        };
        // Later comparators only break ties of earlier ones.
        ascending.get_or_insert(asc);
    }
    Ok(ascending.unwrap_or(false))
}

pub fn query(ctx: &Ctx, c: &Db<'_>, args: &Map<String, Value>) -> MethodResult {
    let mut b = Builder {
        ctx,
        c,
        conditions: 0,
    };
    let filter = match args.get("filter") {
        None | Some(Value::Null) => EmailFilter::And(Vec::new()),
        Some(f) => b.filter(f, 0)?,
    };
    let ascending = sort_ascending(args)?;
    let collapse = opt_bool(args, "collapseThreads")?;
    let position = int_arg(args, "position")?.unwrap_or(0);
    let anchor = opt_str(args, "anchor")?;
    let anchor_offset = int_arg(args, "anchorOffset")?.unwrap_or(0);
    let requested_limit = match args.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| MethodError::invalid("limit must be a non-negative integer"))?,
        ),
    };
    let calculate_total = opt_bool(args, "calculateTotal")?;
    let state = view::user_states(c, ctx.role, ctx.user_id)?.email;

    let mut rows = run(ctx, c, &filter, ascending, None)?;
    if collapse {
        let mut seen = std::collections::HashSet::new();
        rows.retain(|(_, t)| seen.insert(t.clone()));
    }
    let total = rows.len();
    let start = match anchor {
        Some(a) => {
            let Some(at) = rows.iter().position(|(e, _)| e == a) else {
                return Err(MethodError::new("anchorNotFound"));
            };
            (at as i64).saturating_add(anchor_offset).max(0) as usize
        }
        None if position < 0 => (total as i64).saturating_add(position).max(0) as usize,
        None => usize::try_from(position).unwrap_or(usize::MAX),
    };
    let max_results = ctx.limits.max_query_results;
    let limit = requested_limit
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX).min(max_results))
        .unwrap_or(max_results);
    let ids: Vec<String> = rows
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|(e, _)| e)
        .collect();
    let mut out = json!({
        "accountId": ctx.account_id,
        "queryState": state.to_string(),
        "canCalculateChanges": false,
        "position": start.min(total),
        "ids": ids,
    });
    if calculate_total {
        out["total"] = json!(total);
    }
    if requested_limit.is_none_or(|l| l > max_results as u64) {
        out["limit"] = json!(max_results);
    }
    Ok(out)
}
