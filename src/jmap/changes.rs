//! The `/changes` machinery shared by Mailbox, Email and Thread: each type
//! lists what happened to which of its ids at which modseq since the
//! client's state; [`summarize`] folds that into created/updated/destroyed
//! and cuts it at `maxChanges` on a modseq boundary, so the intermediate
//! `newState` is exact.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{Ctx, MethodError, opt_str, opt_uint, parse_state};

/// The most changes one call returns when the client sets no lower
/// `maxChanges`; more are reported through `hasMoreChanges`.
pub const MAX_CHANGES: u64 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Created,
    Updated,
    Destroyed,
}

/// Something that happened to one object at one modseq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub modseq: i64,
    pub id: String,
    pub kind: Kind,
}

/// A `/changes` request's arguments: (since, maxChanges), after the
/// account check. `current` is the caller's present state of the type:
/// states only grow, so one beyond it was never handed to this caller
/// (`cannotCalculateChanges`; checking against the server-wide counter
/// instead would tell a member how far changes they may not see, such as
/// unrouted mail or other users' flags, have moved it).
pub fn arguments(args: &Map<String, Value>, current: i64) -> Result<(i64, u64), MethodError> {
    let since = opt_str(args, "sinceState")?
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?;
    let max = match opt_uint(args, "maxChanges")? {
        Some(0) => return Err(MethodError::invalid("maxChanges must be positive")),
        Some(n) => n.min(MAX_CHANGES),
        None => MAX_CHANGES,
    };
    let Some(since) = parse_state(since) else {
        return Err(MethodError::with(
            "cannotCalculateChanges",
            "this state was not issued by this server",
        ));
    };
    if since > current {
        return Err(MethodError::with(
            "cannotCalculateChanges",
            "this state was not issued to this account",
        ));
    }
    Ok((since, max))
}

/// The folded changes of one window.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub destroyed: Vec<String>,
    /// `Some(modseq)` when the list was cut: the intermediate state.
    pub cut_at: Option<i64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fold {
    Created,
    Updated,
    Destroyed,
    /// Created and destroyed within the window: the client never needs it.
    Gone,
}

/// Folds `events` (any order) into one summary of at most `max` ids.
/// Errors when a single modseq alone holds more than `max` ids.
pub fn summarize(mut events: Vec<Event>, max: u64) -> Result<Summary, MethodError> {
    events.sort_by_key(|e| e.modseq);
    let mut state: HashMap<String, Fold> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut cut_at = None;
    let mut i = 0;
    while i < events.len() {
        let modseq = events[i].modseq;
        let mut j = i;
        while j < events.len() && events[j].modseq == modseq {
            j += 1;
        }
        let mut next = state.clone();
        let mut next_order = order.clone();
        for e in &events[i..j] {
            let folded = match (next.get(&e.id).copied(), e.kind) {
                (None, Kind::Created) => Fold::Created,
                (None, Kind::Updated) => Fold::Updated,
                (None, Kind::Destroyed) => Fold::Destroyed,
                (Some(Fold::Created), Kind::Destroyed) => Fold::Gone,
                (Some(Fold::Created), _) => Fold::Created,
                (Some(Fold::Gone), Kind::Created) => Fold::Created,
                (Some(Fold::Gone), _) => Fold::Gone,
                (Some(Fold::Destroyed), Kind::Created) => Fold::Updated,
                (Some(Fold::Destroyed), _) => Fold::Destroyed,
                (Some(Fold::Updated), Kind::Destroyed) => Fold::Destroyed,
                (Some(Fold::Updated), _) => Fold::Updated,
            };
            if !next.contains_key(&e.id) {
                next_order.push(e.id.clone());
            }
            next.insert(e.id.clone(), folded);
        }
        let count = next.values().filter(|f| **f != Fold::Gone).count() as u64;
        if count > max {
            if i == 0 {
                return Err(MethodError::with(
                    "cannotCalculateChanges",
                    "too many changes at one point; raise maxChanges",
                ));
            }
            cut_at = Some(events[i - 1].modseq);
            break;
        }
        state = next;
        order = next_order;
        i = j;
    }
    let mut out = Summary {
        cut_at,
        ..Summary::default()
    };
    for id in order {
        match state.get(&id) {
            Some(Fold::Created) => out.created.push(id),
            Some(Fold::Updated) => out.updated.push(id),
            Some(Fold::Destroyed) => out.destroyed.push(id),
            Some(Fold::Gone) | None => {}
        }
    }
    Ok(out)
}

/// The standard `/changes` response.
pub fn response(ctx: &Ctx, since: i64, current: i64, s: Summary) -> Map<String, Value> {
    let new_state = s.cut_at.unwrap_or(current);
    let mut o = Map::new();
    o.insert("accountId".into(), json!(ctx.account_id));
    o.insert("oldState".into(), json!(since.to_string()));
    o.insert("newState".into(), json!(new_state.to_string()));
    o.insert("hasMoreChanges".into(), json!(s.cut_at.is_some()));
    o.insert("created".into(), json!(s.created));
    o.insert("updated".into(), json!(s.updated));
    o.insert("destroyed".into(), json!(s.destroyed));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(modseq: i64, id: &str, kind: Kind) -> Event {
        Event {
            modseq,
            id: id.into(),
            kind,
        }
    }

    #[test]
    fn folds_and_cuts_on_modseq_boundaries() {
        let events = vec![
            ev(3, "a", Kind::Created),
            ev(5, "a", Kind::Updated),
            ev(4, "b", Kind::Updated),
            ev(6, "b", Kind::Destroyed),
            ev(7, "c", Kind::Created),
            ev(8, "c", Kind::Destroyed),
        ];
        let s = summarize(events.clone(), 100).expect("fits");
        assert_eq!(s.created, vec!["a"]);
        assert!(s.updated.is_empty());
        assert_eq!(s.destroyed, vec!["b"]);
        assert_eq!(s.cut_at, None);
        let s = summarize(events, 1).expect("cut");
        assert_eq!(s.created, vec!["a"]);
        assert_eq!(s.cut_at, Some(3));
        let same = vec![ev(3, "a", Kind::Created), ev(3, "b", Kind::Created)];
        assert!(summarize(same, 1).is_err());
    }
}
