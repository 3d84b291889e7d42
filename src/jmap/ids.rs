//! JMAP ids of the agent view's objects (all within the `Id` alphabet of
//! RFC 8620 §1.2). See the module docs of `jmap` for the scheme.

use crate::store::Db;

use super::Ctx;
use crate::store::view::{self, Placed};

/// The virtual parent of every `Tickets/<id>` mailbox.
pub const TICKETS: &str = "tickets";

fn number(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| *n > 0)
}

pub fn mailbox(id: i64) -> String {
    format!("b{id}")
}

/// A mailbox id: `Some(Some(n))` for a stored one, `Some(None)` for the
/// virtual `tickets`, `None` when malformed.
pub fn parse_mailbox(s: &str) -> Option<Option<i64>> {
    if s == TICKETS {
        return Some(None);
    }
    number(s.strip_prefix('b')?).map(Some)
}

/// The Email id of a placed message.
pub fn email(p: &Placed) -> String {
    if p.unrouted {
        format!("u{}", p.message_id)
    } else {
        format!("m{}", p.message_id)
    }
}

/// (unrouted, message id) of an Email id.
pub fn parse_email(s: &str) -> Option<(bool, i64)> {
    if let Some(n) = s.strip_prefix('u') {
        return number(n).map(|n| (true, n));
    }
    number(s.strip_prefix('m')?).map(|n| (false, n))
}

/// The Thread id of a placed message: its side conversation, or the
/// message alone when it has none.
pub fn thread(p: &Placed) -> String {
    match (p.unrouted, p.side_conversation_id) {
        (false, Some(sc)) => format!("t{sc}"),
        _ => format!("tu{}", p.message_id),
    }
}

pub enum ThreadRef {
    Side(i64),
    Alone(i64),
}

pub fn parse_thread(s: &str) -> Option<ThreadRef> {
    if let Some(n) = s.strip_prefix("tu") {
        return number(n).map(ThreadRef::Alone);
    }
    number(s.strip_prefix('t')?).map(ThreadRef::Side)
}

pub fn raw_blob(message: i64) -> String {
    format!("r{message}")
}

pub fn part_blob(message: i64, part: usize) -> String {
    format!("p{message}-{part}")
}

/// (message id, part index or `None` for the whole raw message).
pub fn parse_blob(s: &str) -> Option<(i64, Option<usize>)> {
    if let Some(n) = s.strip_prefix('r') {
        return number(n).map(|n| (n, None));
    }
    let (m, p) = s.strip_prefix('p')?.split_once('-')?;
    let part = if p == "0" {
        0
    } else {
        usize::try_from(number(p)?).ok()?
    };
    Some((number(m)?, Some(part)))
}

/// The message behind an Email id, if the caller may see it under that id.
pub fn find_email(ctx: &Ctx, c: &Db<'_>, id: &str) -> crate::store::Result<Option<Placed>> {
    let Some((unrouted, n)) = parse_email(id) else {
        return Ok(None);
    };
    Ok(view::placed(c, ctx.viewer(), n)?.filter(|p| p.unrouted == unrouted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_junk() {
        assert_eq!(parse_mailbox("b12"), Some(Some(12)));
        assert_eq!(parse_mailbox("tickets"), Some(None));
        assert_eq!(parse_mailbox("b"), None);
        assert_eq!(parse_mailbox("b-1"), None);
        assert_eq!(parse_mailbox("b0"), None);
        assert_eq!(parse_email("m7"), Some((false, 7)));
        assert_eq!(parse_email("u7"), Some((true, 7)));
        assert_eq!(parse_email("m+7"), None);
        assert_eq!(parse_email("m99999999999999999999"), None);
        assert!(matches!(parse_thread("t3"), Some(ThreadRef::Side(3))));
        assert!(matches!(parse_thread("tu3"), Some(ThreadRef::Alone(3))));
        assert!(parse_thread("tx").is_none());
        assert_eq!(parse_blob("r5"), Some((5, None)));
        assert_eq!(parse_blob("p5-0"), Some((5, Some(0))));
        assert_eq!(parse_blob("p5-12"), Some((5, Some(12))));
        assert_eq!(parse_blob("p5-"), None);
        assert_eq!(parse_blob("p5"), None);
    }
}
