//! Email/query (RFC 8621 §4.4): filters over the caller's visible mail,
//! sorted by receivedAt, windowed by position or anchor.
//!
//! The filter becomes one SQL statement with bound parameters. Text
//! conditions (`from`, `to`, `cc`, `subject`, `body`, `text`) match
//! substrings of the columns ingest stored (case-insensitive for ASCII).
//! The listing walks the `messages_received` index (received time, id) in
//! the order asked, so a query with a limit stops once it has its page
//! instead of reading and sorting every message of the store.

use crate::store::Db;
use rusqlite::types::Value as Sql;
use serde_json::{Map, Value, json};

use super::{Ctx, MethodError, MethodResult, ids, opt_bool, opt_str};
use crate::model::parse_rfc3339;
use crate::store::view;

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
    params: Vec<Sql>,
    conditions: usize,
}

fn like(s: &str) -> Sql {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for ch in s.chars() {
        if matches!(ch, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    Sql::Text(p)
}

fn flag_column(keyword: &str) -> Option<&'static str> {
    match keyword.to_ascii_lowercase().as_str() {
        "$seen" => Some("seen"),
        "$flagged" => Some("flagged"),
        "$answered" => Some("answered"),
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

    fn filter(&mut self, f: &Value, depth: usize) -> Result<String, MethodError> {
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
                "AND" if parts.is_empty() => "1".into(),
                "AND" => format!("({})", parts.join(" AND ")),
                "OR" if parts.is_empty() => "0".into(),
                "OR" => format!("({})", parts.join(" OR ")),
                "NOT" if parts.is_empty() => "1".into(),
                "NOT" => format!("NOT ({})", parts.join(" OR ")),
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
        Ok(if parts.is_empty() {
            "1".into()
        } else {
            format!("({})", parts.join(" AND "))
        })
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
            Some(Some(n)) => Ok(view::mailbox_by_id(self.c, self.ctx.role, n)?.map(|m| m.id)),
            _ => Ok(None),
        }
    }

    fn condition(&mut self, key: &str, value: &Value) -> Result<String, MethodError> {
        let admin = self.ctx.role.can_administer();
        Ok(match key {
            "inMailbox" => {
                let id = Self::text(value, key)?;
                match self.mailbox_id(&id)? {
                    Some(n) => {
                        self.params.push(Sql::Integer(n));
                        "EXISTS (SELECT 1 FROM mailbox_messages q
                                 WHERE q.message_id = m.id AND q.mailbox_id = ?)"
                            .into()
                    }
                    None => "0".into(),
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
                let mut sql = format!(
                    "EXISTS (SELECT 1 FROM mailbox_messages q JOIN mailboxes qb ON qb.id = q.mailbox_id
                     WHERE q.message_id = m.id AND (qb.kind != 'unrouted' OR {})",
                    i32::from(admin)
                );
                if !excluded.is_empty() {
                    sql.push_str(" AND q.mailbox_id NOT IN (");
                    sql.push_str(&vec!["?"; excluded.len()].join(","));
                    sql.push(')');
                    self.params.extend(excluded.into_iter().map(Sql::Integer));
                }
                sql.push(')');
                sql
            }
            "before" => {
                self.params.push(Sql::Integer(Self::date(value, key)?));
                "m.received_at < ?".into()
            }
            "after" => {
                self.params.push(Sql::Integer(Self::date(value, key)?));
                "m.received_at >= ?".into()
            }
            "minSize" => {
                self.params.push(Sql::Integer(Self::size(value, key)?));
                concat!(crate::raw_len_sql!("m"), " >= ?").into()
            }
            "maxSize" => {
                self.params.push(Sql::Integer(Self::size(value, key)?));
                concat!(crate::raw_len_sql!("m"), " < ?").into()
            }
            "hasKeyword" | "notKeyword" => {
                let k = Self::text(value, key)?;
                let Some(col) = flag_column(&k) else {
                    // A keyword this server never sets: nothing has it.
                    return Ok(if key == "hasKeyword" { "0" } else { "1" }.into());
                };
                self.params.push(Sql::Integer(self.ctx.user_id));
                let has = format!(
                    "EXISTS (SELECT 1 FROM message_flags f
                     WHERE f.user_id = ? AND f.message_id = m.id AND f.{col} = 1)"
                );
                if key == "hasKeyword" {
                    has
                } else {
                    format!("NOT {has}")
                }
            }
            "from" => {
                let p = like(&Self::text(value, key)?);
                self.params.extend([p.clone(), p]);
                "(m.from_name LIKE ? ESCAPE '\\' OR m.from_email LIKE ? ESCAPE '\\')".into()
            }
            "to" => {
                self.params.push(like(&Self::text(value, key)?));
                "m.to_addrs LIKE ? ESCAPE '\\'".into()
            }
            "cc" => {
                self.params.push(like(&Self::text(value, key)?));
                "m.cc_addrs LIKE ? ESCAPE '\\'".into()
            }
            "subject" => {
                self.params.push(like(&Self::text(value, key)?));
                "m.subject LIKE ? ESCAPE '\\'".into()
            }
            "body" => {
                let p = like(&Self::text(value, key)?);
                self.params.extend([p.clone(), p]);
                "(m.text_body LIKE ? ESCAPE '\\' OR m.html_body LIKE ? ESCAPE '\\')".into()
            }
            "text" => {
                let p = like(&Self::text(value, key)?);
                self.params.extend(std::iter::repeat_n(p, 7));
                "(m.subject LIKE ? ESCAPE '\\' OR m.from_name LIKE ? ESCAPE '\\'
                  OR m.from_email LIKE ? ESCAPE '\\' OR m.to_addrs LIKE ? ESCAPE '\\'
                  OR m.cc_addrs LIKE ? ESCAPE '\\' OR m.text_body LIKE ? ESCAPE '\\'
                  OR m.html_body LIKE ? ESCAPE '\\')"
                    .into()
            }
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
    filter: &str,
    params: Vec<Sql>,
    ascending: bool,
    cap: Option<usize>,
) -> Result<Vec<(String, String)>, MethodError> {
    let admin = i32::from(ctx.role.can_administer());
    let dir = if ascending { "ASC" } else { "DESC" };
    let limit = cap.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let sql = format!(
        "SELECT m.id, m.side_conversation_id,
                {admin} AND EXISTS (SELECT 1 FROM mailbox_messages u JOIN mailboxes ub ON ub.id = u.mailbox_id
                                    WHERE u.message_id = m.id AND ub.kind = 'unrouted')
         FROM messages m INDEXED BY messages_received
         WHERE EXISTS (SELECT 1 FROM mailbox_messages v JOIN mailboxes vb ON vb.id = v.mailbox_id
                       WHERE v.message_id = m.id AND (vb.kind != 'unrouted' OR {admin}))
           AND {filter}
         ORDER BY m.received_at {dir}, m.id {dir}{limit}"
    );
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            let id: i64 = r.get(0)?;
            let sc: Option<i64> = r.get(1)?;
            let unrouted: bool = r.get(2)?;
            Ok(match (unrouted, sc) {
                (true, _) => (format!("u{id}"), format!("tu{id}")),
                (false, Some(sc)) => (format!("m{id}"), format!("t{sc}")),
                (false, None) => (format!("m{id}"), format!("tu{id}")),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every visible Email id, newest first, at most `cap`.
pub fn visible_ids(ctx: &Ctx, c: &Db<'_>, cap: usize) -> Result<Vec<String>, MethodError> {
    Ok(run(ctx, c, "1", Vec::new(), false, Some(cap))?
        .into_iter()
        .map(|(e, _)| e)
        .collect())
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
        params: Vec::new(),
        conditions: 0,
    };
    let filter = match args.get("filter") {
        None | Some(Value::Null) => "1".to_string(),
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

    let mut rows = run(ctx, c, &filter, b.params, ascending, None)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like("50%_off\\"), Sql::Text("%50\\%\\_off\\\\%".into()));
    }
}
