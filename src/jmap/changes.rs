//! The `/changes` machinery shared by Mailbox, Email and Thread: each type
//! lists what happened to which of its ids at which modseq since the
//! client's state; [`summarize`] folds that into created/updated/destroyed
//! and cuts it at `maxChanges` on a modseq boundary, so the intermediate
//! `newState` is exact.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{Ctx, MethodError, opt_str, opt_uint, parse_state};

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
///
/// The most changes one call returns is `jmap.max_changes` when the client
/// asks for no fewer; more are reported through `hasMoreChanges`.
pub fn arguments(
    ctx: &Ctx,
    args: &Map<String, Value>,
    current: i64,
) -> Result<(i64, u64), MethodError> {
    let since = opt_str(args, "sinceState")?
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?;
    let limit = u64::try_from(ctx.limits.max_changes).unwrap_or(u64::MAX);
    let max = match opt_uint(args, "maxChanges")? {
        Some(0) => return Err(MethodError::invalid("maxChanges must be positive")),
        Some(n) => n.min(limit),
        None => limit,
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

fn fold(prev: Option<Fold>, kind: Kind) -> Fold {
    match (prev, kind) {
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
    }
}

/// Folds `events` (any order) into one summary of at most `max` ids.
/// Errors when a single modseq alone holds more than `max` ids.
///
/// Linear in the events: each modseq's group is folded in place and, if it
/// would overrun `max`, undone from a log of what it changed (copying the
/// whole fold per modseq made a long history quadratic).
pub fn summarize(mut events: Vec<Event>, max: u64) -> Result<Summary, MethodError> {
    events.sort_by_key(|e| e.modseq);
    let mut state: HashMap<String, Fold> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    // Ids whose fold is not Gone: what the response would list.
    let mut listed: u64 = 0;
    let mut undo: Vec<(String, Option<Fold>)> = Vec::new();
    let mut cut_at = None;
    let mut i = 0;
    while i < events.len() {
        let modseq = events[i].modseq;
        let mut j = i;
        while j < events.len() && events[j].modseq == modseq {
            j += 1;
        }
        undo.clear();
        let (order_len, listed_before) = (order.len(), listed);
        for e in &events[i..j] {
            let prev = state.get(&e.id).copied();
            let folded = fold(prev, e.kind);
            if prev.is_some_and(|p| p != Fold::Gone) {
                listed -= 1;
            }
            if folded != Fold::Gone {
                listed += 1;
            }
            if prev.is_none() {
                order.push(e.id.clone());
            }
            undo.push((e.id.clone(), prev));
            state.insert(e.id.clone(), folded);
        }
        if listed > max {
            if i == 0 {
                return Err(MethodError::with(
                    "cannotCalculateChanges",
                    "too many changes at one point; raise maxChanges",
                ));
            }
            for (id, prev) in undo.drain(..).rev() {
                match prev {
                    Some(p) => state.insert(id, p),
                    None => state.remove(&id),
                };
            }
            order.truncate(order_len);
            listed = listed_before;
            debug_assert_eq!(
                listed,
                state.values().filter(|f| **f != Fold::Gone).count() as u64
            );
            cut_at = Some(events[i - 1].modseq);
            break;
        }
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

    /// The straightforward fold: copies the whole state per modseq.
    fn copying_summarize(mut events: Vec<Event>, max: u64) -> Option<Summary> {
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
                if !next.contains_key(&e.id) {
                    next_order.push(e.id.clone());
                }
                let f = fold(next.get(&e.id).copied(), e.kind);
                next.insert(e.id.clone(), f);
            }
            if next.values().filter(|f| **f != Fold::Gone).count() as u64 > max {
                if i == 0 {
                    return None;
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
                _ => {}
            }
        }
        Some(out)
    }

    #[test]
    fn folding_in_place_matches_copying() {
        // A deterministic pseudo-random history over a few ids, with
        // several events per modseq, cut at every maxChanges.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..200 {
            let mut events = Vec::new();
            let mut modseq = 1;
            for _ in 0..(5 + round % 40) {
                modseq += next(3) as i64;
                let kind = match next(3) {
                    0 => Kind::Created,
                    1 => Kind::Updated,
                    _ => Kind::Destroyed,
                };
                events.push(ev(modseq, &format!("m{}", next(12)), kind));
            }
            for max in 1..15 {
                let fast = summarize(events.clone(), max).ok();
                let slow = copying_summarize(events.clone(), max);
                assert_eq!(fast, slow, "round {round}, max {max}: {events:?}");
            }
        }
    }
}
