//! Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3) and LIST
//! patterns with the `*` and `%` wildcards, over the hierarchy delimiter
//! `/`. Pure functions.

use base64::Engine;
use base64::alphabet::IMAP_MUTF7;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD};

pub const DELIMITER: char = '/';

const MUTF7: GeneralPurpose = GeneralPurpose::new(&IMAP_MUTF7, NO_PAD);

/// A UTF-8 name as modified UTF-7: printable ASCII stays, `&` becomes
/// `&-`, everything else is UTF-16 in modified base64 between `&` and `-`.
pub fn encode_mutf7(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&MUTF7.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Modified UTF-7 back to UTF-8; `None` if it is not valid modified UTF-7.
pub fn decode_mutf7(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let dash = after.find('-')?;
        let b64 = &after[..dash];
        if b64.is_empty() {
            out.push('&');
        } else {
            let bytes = MUTF7.decode(b64).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            let decoded = String::from_utf16(&units).ok()?;
            // Printable ASCII must not be base64-encoded.
            if decoded.chars().any(|c| (' '..='~').contains(&c)) {
                return None;
            }
            out.push_str(&decoded);
        }
        rest = &after[dash + 1..];
    }
    if rest.chars().any(|c| !(' '..='~').contains(&c)) {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

/// The name a client sent, as stored: modified UTF-7 decoded when it is
/// valid, else taken as it is (clients that send raw UTF-8).
pub fn from_wire(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    decode_mutf7(&text).unwrap_or_else(|| text.into_owned())
}

/// Whether `name` matches a LIST pattern: `*` matches anything, `%`
/// anything but the delimiter. `INBOX` matches case-insensitively.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // The `INBOX` level of a name compares in any case.
    let inbox = name == "INBOX" || name.starts_with("INBOX/");
    wildcard(&p, &n, if inbox { 5 } else { 0 })
}

/// `p` matches `n`; the first `ci` characters of `n` compare without case.
fn wildcard(p: &[char], n: &[char], ci: usize) -> bool {
    // Dynamic programming: m[j] = p[..i] matches n[..j].
    let mut m = vec![false; n.len() + 1];
    m[0] = true;
    for &pc in p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' => {
                let mut any = false;
                for j in 0..=n.len() {
                    any |= m[j];
                    next[j] = any;
                }
            }
            '%' => {
                let mut any = false;
                for j in 0..=n.len() {
                    if j > 0 && n[j - 1] == DELIMITER {
                        any = false;
                    }
                    any |= m[j];
                    next[j] = any;
                }
            }
            c => {
                for j in 1..=n.len() {
                    let same = if j <= ci {
                        n[j - 1].eq_ignore_ascii_case(&c)
                    } else {
                        n[j - 1] == c
                    };
                    next[j] = m[j - 1] && same;
                }
            }
        }
        m = next;
    }
    m[n.len()]
}

/// The mailbox pattern a LIST reference and name denote (RFC 3501 §6.3.8):
/// the reference is a prefix unless the name is absolute.
pub fn list_pattern(reference: &str, name: &str) -> String {
    if reference.is_empty() || name.starts_with(DELIMITER) {
        return name.to_string();
    }
    if reference.ends_with(DELIMITER) {
        format!("{reference}{name}")
    } else {
        format!("{reference}{DELIMITER}{name}")
    }
}

/// One line of a LIST answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Wire name (modified UTF-7).
    pub name: String,
    /// Not a mailbox, only a level of the hierarchy (`Tickets`).
    pub noselect: bool,
    pub has_children: bool,
}

/// Every name to list for these mailboxes (wire names), with the levels
/// of the hierarchy above them that are not mailboxes themselves, sorted.
pub fn hierarchy(mailboxes: &[String]) -> Vec<Listed> {
    use std::collections::BTreeMap;
    // name → (selectable, has children)
    let mut all: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for name in mailboxes {
        all.entry(name.clone()).or_insert((false, false)).0 = true;
        let mut at = 0;
        while let Some(pos) = name[at..].find(DELIMITER) {
            let prefix = &name[..at + pos];
            if !prefix.is_empty() {
                all.entry(prefix.to_string()).or_insert((false, false)).1 = true;
            }
            at += pos + 1;
        }
    }
    all.into_iter()
        .map(|(name, (selectable, has_children))| Listed {
            name,
            noselect: !selectable,
            has_children,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_round_trip() {
        for s in [
            "INBOX",
            "Tickets/T-1",
            "Tickets/Café",
            "a&b",
            "日本語/x",
            "😀",
        ] {
            let e = encode_mutf7(s);
            assert!(e.chars().all(|c| (' '..='~').contains(&c)), "{e}");
            assert_eq!(decode_mutf7(&e).as_deref(), Some(s), "{e}");
        }
        assert_eq!(encode_mutf7("a&b"), "a&-b");
        // RFC 3501's example.
        assert_eq!(
            encode_mutf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(decode_mutf7("&Jjo-!").as_deref(), Some("☺!"));
        assert_eq!(decode_mutf7("&"), None);
        assert_eq!(decode_mutf7("&AGE-"), None); // "a" must not be encoded
        assert_eq!(from_wire("Tickets/Caf&AOk-".as_bytes()), "Tickets/Café");
        assert_eq!(from_wire("Tickets/Café".as_bytes()), "Tickets/Café");
    }

    #[test]
    fn wildcards() {
        assert!(matches("*", "INBOX"));
        assert!(matches("*", "Tickets/T-1"));
        assert!(matches("%", "INBOX"));
        assert!(!matches("%", "Tickets/T-1"));
        assert!(matches("Tickets/%", "Tickets/T-1"));
        assert!(!matches("Tickets/%", "Tickets"));
        assert!(matches("Tickets/*", "Tickets/a/b"));
        assert!(!matches("Tickets/%", "Tickets/a/b"));
        assert!(matches("T*1", "Tickets/T-1"));
        assert!(!matches("T%1", "Tickets/T-1"));
        assert!(matches("inbox", "INBOX"));
        assert!(matches("Inbox*", "INBOX"));
        assert!(!matches("inboxes", "INBOX"));
        assert!(matches("", ""));
        assert!(!matches("", "INBOX"));
        assert!(matches("%/%", "Tickets/T-1"));
    }

    #[test]
    fn patterns_with_references() {
        assert_eq!(list_pattern("", "*"), "*");
        assert_eq!(list_pattern("Tickets", "%"), "Tickets/%");
        assert_eq!(list_pattern("Tickets/", "%"), "Tickets/%");
        assert_eq!(list_pattern("Tickets", "/x"), "/x");
    }

    #[test]
    fn levels_of_the_hierarchy() {
        let l = hierarchy(&[
            "INBOX".into(),
            "Tickets/A".into(),
            "Tickets/B/c".into(),
            "Unrouted".into(),
        ]);
        let names: Vec<(&str, bool, bool)> = l
            .iter()
            .map(|x| (x.name.as_str(), x.noselect, x.has_children))
            .collect();
        assert_eq!(
            names,
            vec![
                ("INBOX", false, false),
                ("Tickets", true, true),
                ("Tickets/A", false, false),
                ("Tickets/B", true, true),
                ("Tickets/B/c", false, false),
                ("Unrouted", false, false),
            ]
        );
    }
}
