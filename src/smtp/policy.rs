//! Which recipients the listener accepts (SPEC §4 acceptance). The address
//! is first classified by pure functions; the store then answers the
//! questions only it can (does this token exist, is this a forwarding
//! address).
//!
//! The rule against relay tricks (SECURITY.md, "Relay abuse"): the only
//! local parts the gateway hands out are plain dot-atoms of `[a-z0-9_-]`
//! (no leading, trailing or doubled dot), optionally followed by `+` and a
//! detail of `[a-z0-9]`; domains are compared byte for byte (ASCII case
//! aside), never normalised into a match. So, whatever the token part:
//!
//! - routing syntax — source routes (`@a,@b:user@c`), quoted local parts,
//!   the percent hack (`%`), bang paths (`!`), a second `@` —, an address
//!   literal (`[127.0.0.1]`) or a trailing dot in the domain is a request to
//!   pass mail on: `550 5.7.1`, also on a registered sender's domain;
//! - any other local part on the gateway domain that is not of that shape
//!   is simply unknown: `550 5.1.1`;
//! - a domain that is not exactly the gateway domain (IDN look-alikes and
//!   their punycode included) is relaying, unless the address is the plus
//!   address of a registered sender: `550 5.7.1`.

use crate::config::{Config, IngestConfig};
use crate::conversations::agent_mail;
use crate::model::Token;
use crate::store::Db;
use crate::store::{self, Result};

/// Local parts on the gateway domain that are always accepted: the bare
/// reply mailbox and the RFC 5321 §4.5.1 / RFC 2142 role addresses (their
/// mail lands with the unrouted messages).
const FIXED_LOCALS: &[&str] = &["reply", "postmaster", "abuse"];

/// Characters that route mail onwards when they appear in a local part: the
/// percent hack, UUCP bang paths, a quoted `@`, and what only a quoted local
/// part or a source route can carry.
const ROUTING: &[char] = &['%', '!', '@', '"', '\\', ':', ',', '[', ']', '<', '>'];

/// What a recipient address is, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptClass {
    /// A fixed mailbox on the gateway domain (`reply`, `postmaster`, `abuse`).
    Fixed,
    /// `bounce+<key>@<gateway>`: VERP return path of outbound mail.
    Bounce,
    /// `agent+t<token>u<user>m<signature>@<gateway>` (or without the token
    /// part): the Reply-To of a notification email (SPEC §12). Accepted if
    /// the signature is right and the user is active.
    AgentReply(String),
    /// `<base>+<token>@<gateway>`: accepted if the token exists.
    GatewayToken(Token),
    /// Some other plain local part on the gateway domain: a forwarding
    /// address if a sender has it, else unknown.
    GatewayOther(String),
    /// A local part on the gateway domain of a shape the gateway never
    /// hands out (`a#b`, `.x`, `a..b`, non-ASCII, `x+not-a-token`): unknown.
    GatewayUnknown,
    /// `<local>+<token>@<other domain>`: accepted if `<local>@<domain>` is a
    /// registered sender and the token exists (reply mode `plus`).
    ForeignPlus { sender: String, token: Token },
    /// Any other domain, or routing syntax anywhere: relaying, refused.
    Foreign,
}

/// The verdict for one RCPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptVerdict {
    Accept,
    UnknownUser,
    RelayDenied,
    /// The side conversation has taken in `ingest.max_thread_messages` or
    /// `ingest.max_thread_bytes`.
    OverQuota,
}

/// A relay trick visible only in the raw `RCPT TO:` line, before
/// smtp-proto strips it (it drops source routes and quotes) or refuses the
/// address as a syntax error (address literals, `..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathTrick {
    /// `<@a,@b:user@c>`.
    SourceRoute,
    /// `<"…"@domain>`.
    Quoted,
    /// `<user@[127.0.0.1]>`, `<user@[IPv6:::1]>`.
    AddressLiteral,
    /// `<user@domain.>`: not an RFC 5321 domain, and not ours.
    TrailingDot,
}

/// Looks at the path of a `RCPT TO:` command line for the tricks the
/// command parser would hide. `None` for any other line, an empty path, or
/// a path without these tricks. Pure.
pub fn path_trick(line: &[u8]) -> Option<PathTrick> {
    let line = line.trim_ascii_start();
    let rest = strip_prefix_ignore_case(line, b"RCPT")?;
    let rest = strip_prefix_ignore_case(rest.trim_ascii_start(), b"TO:")?;
    let path = rest.trim_ascii_start().strip_prefix(b"<")?;
    // The path runs to the first `>` outside quotes (or the line's end).
    let mut in_quote = false;
    let mut escaped = false;
    let mut quoted = false;
    let mut last_at = None;
    let mut end = path.len();
    for (i, &b) in path.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quote => escaped = true,
            b'"' => {
                in_quote = !in_quote;
                quoted = true;
            }
            b'@' if !in_quote => last_at = Some(i),
            b'>' if !in_quote => {
                end = i;
                break;
            }
            b'\r' | b'\n' if !in_quote => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let path = &path[..end];
    if path.starts_with(b"@") {
        return Some(PathTrick::SourceRoute);
    }
    if quoted {
        return Some(PathTrick::Quoted);
    }
    let domain = &path[last_at? + 1..];
    if domain.starts_with(b"[") {
        Some(PathTrick::AddressLiteral)
    } else if domain.ends_with(b".") {
        Some(PathTrick::TrailingDot)
    } else {
        None
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// A plain dot-atom of `[a-z0-9_-]` (lower case already): no empty atom, so
/// no leading, trailing or doubled dot.
fn plain_local(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// An ASCII host name: letters, digits and hyphens in non-empty labels, no
/// trailing dot (so no IP literal, no UTF-8 look-alike).
fn plain_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether the envelope address `addr` carries routing syntax — the
/// percent hack, a bang path, a quoted `@`, a second `@` — or a domain
/// that is not a plain ASCII host name (an address literal, a trailing dot,
/// a non-ASCII look-alike): a request to pass mail on, whatever domain it
/// names. Pure.
pub fn routing_syntax(addr: &str) -> bool {
    match addr.rsplit_once('@') {
        Some((local, dom)) => local.is_empty() || local.contains(ROUTING) || !plain_domain(dom),
        None => true,
    }
}

/// Classifies the envelope address `addr` (`local@domain`, as the command
/// parser hands it over) for a gateway on `domain`. Pure.
pub fn classify(addr: &str, domain: &str) -> RcptClass {
    let Some((local, dom)) = addr.rsplit_once('@') else {
        return RcptClass::Foreign;
    };
    if local.contains(ROUTING) {
        return RcptClass::Foreign;
    }
    if dom.eq_ignore_ascii_case(domain) && plain_domain(dom) {
        let local = local.to_ascii_lowercase();
        if FIXED_LOCALS.contains(&local.as_str()) {
            return RcptClass::Fixed;
        }
        return match local.split_once('+') {
            None if plain_local(&local) => RcptClass::GatewayOther(local),
            None => RcptClass::GatewayUnknown,
            Some((base, detail)) => {
                let detail_ok =
                    !detail.is_empty() && detail.bytes().all(|b| b.is_ascii_alphanumeric());
                if !plain_local(base) || !detail_ok {
                    RcptClass::GatewayUnknown
                } else if base == "bounce" {
                    RcptClass::Bounce
                } else if let Ok(token) = detail.parse::<Token>() {
                    RcptClass::GatewayToken(token)
                } else if base == "agent" {
                    RcptClass::AgentReply(format!("{local}@{}", dom.to_ascii_lowercase()))
                } else {
                    RcptClass::GatewayUnknown
                }
            }
        };
    }
    if !plain_domain(dom) {
        return RcptClass::Foreign;
    }
    if let Some((base, detail)) = local.split_once('+')
        && plain_local(&base.to_ascii_lowercase())
        && let Ok(token) = detail.parse::<Token>()
    {
        return RcptClass::ForeignPlus {
            sender: format!("{base}@{}", dom.to_ascii_lowercase()),
            token,
        };
    }
    RcptClass::Foreign
}

/// The verdict for a token: unknown, over its thread's quota, or accepted.
fn token_verdict(db: &Db<'_>, token: &Token, quota: &IngestConfig) -> Result<RcptVerdict> {
    Ok(match store::routing::intake_of_token(db, token)? {
        None => RcptVerdict::UnknownUser,
        Some(i) if i.messages >= quota.max_thread_messages || i.bytes >= quota.max_thread_bytes => {
            RcptVerdict::OverQuota
        }
        Some(_) => RcptVerdict::Accept,
    })
}

/// An agent-reply address is accepted when its signature is right (made
/// with this gateway's key for this user and token) and the user is active.
/// A forged or altered address, or one of a deactivated or deleted user, is
/// unknown: whoever writes to it learns nothing more.
fn agent_reply_verdict(db: &Db<'_>, config: &Config, addr: &str) -> Result<RcptVerdict> {
    let Some(target) = agent_mail::parse_agent_reply_address(db, config, addr)? else {
        return Ok(RcptVerdict::UnknownUser);
    };
    match store::users::by_id(db, target.user) {
        Ok(u) if u.active => Ok(RcptVerdict::Accept),
        Ok(_) | Err(store::StoreError::NotFound) => Ok(RcptVerdict::UnknownUser),
        Err(e) => Err(e),
    }
}

/// Decides a classified recipient against what the store knows.
pub fn decide(db: &Db<'_>, class: &RcptClass, config: &Config) -> Result<RcptVerdict> {
    let quota = &config.ingest;
    Ok(match class {
        RcptClass::Fixed | RcptClass::Bounce => RcptVerdict::Accept,
        RcptClass::AgentReply(addr) => agent_reply_verdict(db, config, addr)?,
        RcptClass::GatewayToken(token) => token_verdict(db, token, quota)?,
        RcptClass::GatewayOther(local) => {
            if store::routing::is_forwarding_local(db, local)? {
                RcptVerdict::Accept
            } else {
                RcptVerdict::UnknownUser
            }
        }
        RcptClass::ForeignPlus { sender, token } => {
            if !store::senders::exists(db, sender)? {
                RcptVerdict::RelayDenied
            } else {
                token_verdict(db, token, quota)?
            }
        }
        RcptClass::GatewayUnknown => RcptVerdict::UnknownUser,
        RcptClass::Foreign => RcptVerdict::RelayDenied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(a: &str) -> RcptClass {
        classify(a, "gw.example.com")
    }

    #[test]
    fn table() {
        let t = "abcdefghijklmn23";
        let tok: Token = t.parse().expect("token");
        let plus = |s: &str| RcptClass::ForeignPlus {
            sender: s.into(),
            token: tok.clone(),
        };
        use RcptClass::{Foreign, GatewayUnknown};
        let cases: Vec<(String, RcptClass)> = vec![
            ("reply@gw.example.com".into(), RcptClass::Fixed),
            ("REPLY@GW.EXAMPLE.COM".into(), RcptClass::Fixed),
            ("postmaster@gw.example.com".into(), RcptClass::Fixed),
            (
                format!("reply+{t}@gw.example.com"),
                RcptClass::GatewayToken(tok.clone()),
            ),
            (
                "reply+ABCDEFGHIJKLMN23@gw.example.com".into(),
                RcptClass::GatewayToken(tok.clone()),
            ),
            (
                format!("anyone+{t}@gw.example.com"),
                RcptClass::GatewayToken(tok.clone()),
            ),
            (
                format!("first.last_x-y+{t}@gw.example.com"),
                RcptClass::GatewayToken(tok.clone()),
            ),
            ("reply+short@gw.example.com".into(), GatewayUnknown),
            ("bounce+k1@gw.example.com".into(), RcptClass::Bounce),
            (
                "Agent+tABCDEFGHIJKLMN23u7mAAAAAAAAAAAAAAAA@GW.example.com".into(),
                RcptClass::AgentReply(
                    "agent+tabcdefghijklmn23u7maaaaaaaaaaaaaaaa@gw.example.com".into(),
                ),
            ),
            (
                "agent+x@gw.example.com".into(),
                RcptClass::AgentReply("agent+x@gw.example.com".into()),
            ),
            (
                "agent@gw.example.com".into(),
                RcptClass::GatewayOther("agent".into()),
            ),
            ("agent+t-1@gw.example.com".into(), GatewayUnknown),
            (
                "fwd-x7@gw.example.com".into(),
                RcptClass::GatewayOther("fwd-x7".into()),
            ),
            (
                "Fwd-X7@gw.example.com".into(),
                RcptClass::GatewayOther("fwd-x7".into()),
            ),
            (format!("support+{t}@acme.com"), plus("support@acme.com")),
            (format!("support+{t}@ACME.com"), plus("support@acme.com")),
            ("someone@elsewhere.example".into(), Foreign),
            ("reply@gw.example.com.evil.example".into(), Foreign),
            ("reply@sub.gw.example.com".into(), Foreign),
            // the percent hack, on the gateway and on a sender's domain
            ("victim%elsewhere.example@gw.example.com".into(), Foreign),
            (format!("user%evil.example+{t}@gw.example.com"), Foreign),
            (format!("reply+{t}%evil.example@gw.example.com"), Foreign),
            (format!("support%evil.example+{t}@acme.com"), Foreign),
            ("fwd-x7%evil.example@gw.example.com".into(), Foreign),
            // bang paths
            ("evil.example!user@gw.example.com".into(), Foreign),
            (format!("evil.example!reply+{t}@gw.example.com"), Foreign),
            (format!("reply+{t}!user@gw.example.com"), Foreign),
            (format!("evil.example!support+{t}@acme.com"), Foreign),
            // what smtp-proto makes of quoted local parts: the quotes go, an
            // `@` or a space inside them stays
            (format!("a@b+{t}@gw.example.com"), Foreign),
            (format!("reply+{t}@evil.example@gw.example.com"), Foreign),
            (format!("a b+{t}@gw.example.com"), GatewayUnknown),
            // trailing dots, address literals
            ("reply@gw.example.com.".into(), Foreign),
            (format!("reply+{t}@gw.example.com."), Foreign),
            (format!("support+{t}@acme.com."), Foreign),
            (format!("reply+{t}@[127.0.0.1]"), Foreign),
            (format!("support+{t}@[127.0.0.1]"), Foreign),
            ("postmaster@[IPv6:::1]".into(), Foreign),
            // IDN look-alikes (Cyrillic а U+0430, е U+0435) and punycode
            (format!("reply+{t}@gw.ex\u{0430}mple.com"), Foreign),
            ("reply@gw.\u{0435}xample.com".into(), Foreign),
            // punycode is a plain ASCII domain: only a registered sender
            // there would make it a plus address (decide: 5.7.1 otherwise)
            (
                format!("reply+{t}@xn--gw-ex-mple-w0f.com"),
                plus("reply@xn--gw-ex-mple-w0f.com"),
            ),
            ("reply@xn--gw-6cd.example.com".into(), Foreign),
            (format!("support+{t}@\u{0430}cme.com"), Foreign),
            // Unicode case folding never makes a match (K is U+212A KELVIN SIGN)
            ("reply@gw.example.\u{212a}om".into(), Foreign),
            // odd but inert local parts on the gateway domain: unknown
            (format!(".reply+{t}@gw.example.com"), GatewayUnknown),
            (format!("reply.+{t}@gw.example.com"), GatewayUnknown),
            (format!("re..ply+{t}@gw.example.com"), GatewayUnknown),
            (format!("+{t}@gw.example.com"), GatewayUnknown),
            (format!("a#b+{t}@gw.example.com"), GatewayUnknown),
            (format!("r\u{0435}ply+{t}@gw.example.com"), GatewayUnknown),
            (format!("reply+{t}+x@gw.example.com"), GatewayUnknown),
            ("bounce+@gw.example.com".into(), GatewayUnknown),
            ("bounce+k/1@gw.example.com".into(), GatewayUnknown),
            ("fwd=x7@gw.example.com".into(), GatewayUnknown),
            // and on a sender's domain, relaying
            (format!(".support+{t}@acme.com"), Foreign),
            (format!("a#b+{t}@acme.com"), Foreign),
            ("no-at-sign".into(), Foreign),
        ];
        for (addr, expected) in cases {
            assert_eq!(class(&addr), expected, "{addr}");
        }
    }

    #[test]
    fn routing_syntax_is_told_from_plain_addresses() {
        for plain in [
            "vera@vendor.example",
            "Vera.Smith+rma@Vendor.Example",
            "reply+abcdefghijklmn23@gw.example.com",
        ] {
            assert!(!routing_syntax(plain), "{plain}");
        }
        for trick in [
            "victim%elsewhere.example@gw.example.com",
            "evil.example!user@vendor.example",
            "a@b@vendor.example",
            "vera@vendor.example.",
            "vera@[127.0.0.1]",
            "vera@v\u{0435}ndor.example",
            "@vendor.example",
            "no-at-sign",
        ] {
            assert!(routing_syntax(trick), "{trick}");
        }
    }

    #[test]
    fn path_tricks() {
        use PathTrick::*;
        let cases: &[(&str, Option<PathTrick>)] = &[
            ("RCPT TO:<reply@gw.example.com>", None),
            ("rcpt to: <reply@gw.example.com> NOTIFY=NEVER", None),
            ("RCPT TO:<>", None),
            ("RCPT TO:<postmaster>", None),
            ("MAIL FROM:<@a:b@c>", None),
            (
                "RCPT TO:<@evil.example:reply@gw.example.com>",
                Some(SourceRoute),
            ),
            ("RCPT TO:<@a,@b:user@c>", Some(SourceRoute)),
            ("RCPT TO:<\"reply+x\"@gw.example.com>", Some(Quoted)),
            ("RCPT TO:<\"a>b\"@gw.example.com>", Some(Quoted)),
            ("RCPT TO:<\"a\\\"@b\"@gw.example.com>", Some(Quoted)),
            ("RCPT TO:<reply@[127.0.0.1]>", Some(AddressLiteral)),
            (
                "RCPT TO:<reply@[IPv6:::1]> ORCPT=rfc822;x@y",
                Some(AddressLiteral),
            ),
            ("RCPT TO:<reply@gw.example.com.>", Some(TrailingDot)),
            ("RCPT TO:<reply@gw.example.com..>\r\n", Some(TrailingDot)),
            ("RCPT TO:<reply@gw.example.com>\r\n", None),
        ];
        for (line, expected) in cases {
            assert_eq!(path_trick(line.as_bytes()), *expected, "{line}");
        }
    }
}
