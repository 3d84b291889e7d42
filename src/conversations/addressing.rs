//! Where a side conversation's next message goes and under which subject
//! (SPEC §5): a participant who set `Reply-To` on their last verified email
//! reply is written to at that address (a vendor's own ticket system), and a
//! tag that system added to the subject (`[VendorDesk #4711] Re: …`) is kept,
//! with one `Re: `. Only verified mail counts: a forged reply must not be
//! able to redirect the thread.

use crate::config::Config;
use crate::model::{MailAddr, is_author_address};
use crate::store::{self, Db};

use super::ServiceError;

/// One address a message is delivered to, and the participant it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Addressee {
    /// The participant (their portal link, their name on the thread).
    pub participant: String,
    /// Where the mail goes: the participant, or their Reply-To.
    pub address: String,
}

/// The addressees of `to` and `cc` (participants), each at their Reply-To
/// where their last verified email reply set one. An address reached twice
/// (two colleagues behind one ticket system) gets one copy, in `to` if it
/// is there.
pub(super) fn addressees(
    db: &Db<'_>,
    config: &Config,
    sc: i64,
    to: &[String],
    cc: &[String],
) -> Result<(Vec<Addressee>, Vec<Addressee>), ServiceError> {
    let mut seen: Vec<String> = Vec::new();
    let mut resolve = |list: &[String]| -> Result<Vec<Addressee>, ServiceError> {
        let mut out = Vec::new();
        for p in list {
            let address = match store::messages::last_verified_reply_to(db, sc, p)? {
                Some(Some(r)) if r.trim() != p && usable_reply_to(db, config, r.trim())? => {
                    r.trim().to_string()
                }
                _ => p.clone(),
            };
            let key = address.to_ascii_lowercase();
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            out.push(Addressee {
                participant: p.clone(),
                address,
            });
        }
        Ok(out)
    };
    let to = resolve(to)?;
    let cc = resolve(cc)?;
    Ok((to, cc))
}

/// A Reply-To the gateway may write to: a well-formed address that is not
/// the gateway's own (a loop), a user's (agents are mentioned, not mailed)
/// or one of the workspace's sender addresses (mail to it comes straight
/// back through forwarding).
fn usable_reply_to(db: &Db<'_>, config: &Config, address: &str) -> Result<bool, ServiceError> {
    if !is_author_address(address) {
        return Ok(false);
    }
    if MailAddr::parse(address).is_none_or(|m| m.domain.eq_ignore_ascii_case(&config.domain)) {
        return Ok(false);
    }
    Ok(!store::users::exists(db, address)? && store::senders::get(db, address)?.is_none())
}

/// The subject of the thread's next message: the side conversation's own,
/// or the last verified email reply's when the vendor's system tagged it.
pub(super) fn thread_subject(db: &Db<'_>, sc: i64, own: &str) -> Result<String, ServiceError> {
    Ok(store::messages::last_verified_subject(db, sc)?
        .and_then(|theirs| tagged_subject(own, &theirs))
        .unwrap_or_else(|| own.to_string()))
}

/// Longest subject kept from a vendor's reply (characters).
const MAX_SUBJECT_CHARS: usize = 400;

/// `theirs` without reply prefixes, when it is `own` plus a tag a ticket
/// system added (`[VendorDesk #4711] RMA 1234`, `RMA 1234 (Ticket#88)`);
/// `None` when it adds nothing or is about something else.
pub fn tagged_subject(own: &str, theirs: &str) -> Option<String> {
    let own = collapse(&strip_reply_prefixes(own));
    let theirs = collapse(&strip_reply_prefixes(theirs));
    if own.is_empty() || theirs.chars().count() > MAX_SUBJECT_CHARS {
        return None;
    }
    let (own_l, theirs_l) = (own.to_lowercase(), theirs.to_lowercase());
    (theirs_l != own_l && theirs_l.contains(&own_l)).then_some(theirs)
}

/// Reply and forward prefixes mail clients write, in the languages of
/// `reply_text` (`Re:`, `AW:`, `SV:`, `Antw:`, `Odp:`, `回复:` …), with an
/// optional count (`Re[2]:`, `Re(2):`).
const PREFIXES: &[&str] = &[
    "re", "aw", "sv", "vs", "antw", "antwort", "odp", "rif", "r", "ref", "res", "ynt", "vá", "fw",
    "fwd", "wg", "tr", "doorst", "vl", "rv", "enc", "i", "πρθ", "σχετ", "回复", "答复", "回覆",
    "轉寄", "转发", "返信", "転送",
];

/// Drops reply/forward prefixes at the start and right after leading
/// bracketed tags: `[VendorDesk #4711] Re: RMA` → `[VendorDesk #4711] RMA`.
fn strip_reply_prefixes(s: &str) -> String {
    let mut tags: Vec<&str> = Vec::new();
    let mut rest = s.trim();
    loop {
        rest = rest.trim_start();
        if rest.starts_with('[')
            && let Some(end) = rest.find(']')
        {
            tags.push(&rest[..=end]);
            rest = &rest[end + 1..];
            continue;
        }
        match strip_one_prefix(rest) {
            Some(after) => rest = after,
            None => break,
        }
    }
    let mut out = tags.join(" ");
    if !out.is_empty() && !rest.is_empty() {
        out.push(' ');
    }
    out.push_str(rest);
    out
}

/// `rest` after one leading prefix and its colon (ASCII or full-width).
fn strip_one_prefix(rest: &str) -> Option<&str> {
    let colon = rest.find([':', '：'])?;
    let head = rest[..colon].trim_end();
    if head.is_empty() || head.chars().any(char::is_whitespace) {
        return None;
    }
    let word = strip_count(head);
    let lower = word.to_lowercase();
    if !PREFIXES.contains(&lower.as_str()) {
        return None;
    }
    let after = &rest[colon..];
    let skip = after.chars().next().map_or(0, char::len_utf8);
    Some(&after[skip..])
}

/// `Re[2]`, `Re(2)`, `Re^2` → `Re`.
fn strip_count(head: &str) -> &str {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    for (open, close) in [('[', Some(']')), ('(', Some(')')), ('^', None)] {
        if let Some(i) = head.find(open) {
            let inner = match close {
                Some(c) => head[i + 1..].strip_suffix(c),
                None => Some(&head[i + 1..]),
            };
            if inner.is_some_and(digits) {
                return &head[..i];
            }
        }
    }
    head
}

/// Whitespace runs as one space, trimmed.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_helpdesk_tag_is_kept() {
        assert_eq!(
            tagged_subject("RMA 1234", "[VendorDesk #4711] Re: RMA 1234").as_deref(),
            Some("[VendorDesk #4711] RMA 1234")
        );
        assert_eq!(
            tagged_subject("RMA 1234", "Re: [VendorDesk #4711] RE: RMA 1234").as_deref(),
            Some("[VendorDesk #4711] RMA 1234")
        );
        assert_eq!(
            tagged_subject("Pallet 7", "AW: Pallet 7 (Ticket#10088)").as_deref(),
            Some("Pallet 7 (Ticket#10088)")
        );
        assert_eq!(
            tagged_subject("Re: Pallet 7", "Re[2]: [#88] Pallet   7").as_deref(),
            Some("[#88] Pallet 7")
        );
    }

    #[test]
    fn plain_replies_and_other_subjects_change_nothing() {
        assert_eq!(tagged_subject("RMA 1234", "Re: RMA 1234"), None);
        assert_eq!(tagged_subject("RMA 1234", "RE: re: Fwd: rma 1234"), None);
        assert_eq!(tagged_subject("RMA 1234", "Out of office"), None);
        assert_eq!(tagged_subject("RMA 1234", "回复: RMA 1234"), None);
        assert_eq!(tagged_subject("", "[x] anything"), None);
        assert_eq!(
            tagged_subject("RMA", &format!("[{}] RMA", "x".repeat(500))),
            None
        );
    }

    #[test]
    fn a_colon_in_the_subject_is_not_a_prefix() {
        assert_eq!(strip_reply_prefixes("Order: 55"), "Order: 55");
        assert_eq!(strip_reply_prefixes("Re: Order: 55"), "Order: 55");
        assert_eq!(strip_reply_prefixes("[a] [b] Re:x"), "[a] [b] x");
    }
}
