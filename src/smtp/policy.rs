//! Which recipients the listener accepts (SPEC §4 acceptance). The address
//! is first classified by a pure function; the store then answers the
//! questions only it can (does this token exist, is this a forwarding
//! address).

use rusqlite::{Connection, OptionalExtension};

use crate::model::{MailAddr, Token};
use crate::store::Result;

/// Local parts on the gateway domain that are always accepted: the bare
/// reply mailbox and the RFC 5321 §4.5.1 / RFC 2142 role addresses (their
/// mail lands with the unrouted messages).
const FIXED_LOCALS: &[&str] = &["reply", "postmaster", "abuse"];

/// What a recipient address is, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptClass {
    /// A fixed mailbox on the gateway domain (`reply`, `postmaster`, `abuse`).
    Fixed,
    /// `bounce+<key>@<gateway>`: VERP return path of outbound mail.
    Bounce,
    /// `<base>+<token>@<gateway>`: accepted if the token exists.
    GatewayToken(Token),
    /// Some other local part on the gateway domain: a forwarding address
    /// if a sender has it, else unknown.
    GatewayOther(String),
    /// `<local>+<token>@<other domain>`: accepted if `<local>@<domain>` is a
    /// registered sender and the token exists (reply mode `plus`).
    ForeignPlus { sender: String, token: Token },
    /// Any other domain: relaying, refused.
    Foreign,
}

/// The verdict for one RCPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptVerdict {
    Accept,
    UnknownUser,
    RelayDenied,
}

/// Classifies `addr` for a gateway on `domain`. Pure.
pub fn classify(addr: &MailAddr, domain: &str) -> RcptClass {
    let local = addr.local.to_ascii_lowercase();
    if addr.domain.eq_ignore_ascii_case(domain) {
        if FIXED_LOCALS.contains(&local.as_str()) {
            return RcptClass::Fixed;
        }
        if let Some((base, detail)) = local.split_once('+') {
            if base == "bounce" && !detail.is_empty() {
                return RcptClass::Bounce;
            }
            if let Ok(token) = detail.parse::<Token>() {
                return RcptClass::GatewayToken(token);
            }
        }
        return RcptClass::GatewayOther(local);
    }
    if let Some((base, detail)) = addr.local.split_once('+')
        && let Ok(token) = detail.parse::<Token>()
        && !base.is_empty()
    {
        return RcptClass::ForeignPlus {
            sender: format!("{base}@{}", addr.domain),
            token,
        };
    }
    RcptClass::Foreign
}

fn token_exists(conn: &Connection, token: &Token) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM side_conversations WHERE token = ?1",
            [token.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Decides a classified recipient against the store.
pub fn decide(conn: &Connection, class: &RcptClass) -> Result<RcptVerdict> {
    Ok(match class {
        RcptClass::Fixed | RcptClass::Bounce => RcptVerdict::Accept,
        RcptClass::GatewayToken(token) => {
            if token_exists(conn, token)? {
                RcptVerdict::Accept
            } else {
                RcptVerdict::UnknownUser
            }
        }
        RcptClass::GatewayOther(local) => {
            let found = conn
                .query_row(
                    "SELECT 1 FROM senders WHERE forwarding_local = ?1",
                    [local],
                    |_| Ok(()),
                )
                .optional()?;
            if found.is_some() {
                RcptVerdict::Accept
            } else {
                RcptVerdict::UnknownUser
            }
        }
        RcptClass::ForeignPlus { sender, token } => {
            let registered = conn
                .query_row("SELECT 1 FROM senders WHERE email = ?1", [sender], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !registered {
                RcptVerdict::RelayDenied
            } else if token_exists(conn, token)? {
                RcptVerdict::Accept
            } else {
                RcptVerdict::UnknownUser
            }
        }
        RcptClass::Foreign => RcptVerdict::RelayDenied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(a: &str) -> RcptClass {
        classify(&MailAddr::parse(a).expect("address"), "gw.example.com")
    }

    #[test]
    fn table() {
        let tok: Token = "abcdefghijklmn23".parse().expect("token");
        let cases = [
            ("reply@gw.example.com", RcptClass::Fixed),
            ("REPLY@GW.EXAMPLE.COM", RcptClass::Fixed),
            ("postmaster@gw.example.com", RcptClass::Fixed),
            (
                "reply+abcdefghijklmn23@gw.example.com",
                RcptClass::GatewayToken(tok.clone()),
            ),
            (
                "reply+ABCDEFGHIJKLMN23@gw.example.com",
                RcptClass::GatewayToken(tok.clone()),
            ),
            (
                "anyone+abcdefghijklmn23@gw.example.com",
                RcptClass::GatewayToken(tok.clone()),
            ),
            (
                "reply+short@gw.example.com",
                RcptClass::GatewayOther("reply+short".into()),
            ),
            ("bounce+k1@gw.example.com", RcptClass::Bounce),
            (
                "fwd-x7@gw.example.com",
                RcptClass::GatewayOther("fwd-x7".into()),
            ),
            (
                "support+abcdefghijklmn23@acme.com",
                RcptClass::ForeignPlus {
                    sender: "support@acme.com".into(),
                    token: tok.clone(),
                },
            ),
            ("someone@elsewhere.example", RcptClass::Foreign),
            // the percent hack names a local part here, not a route
            (
                "victim%elsewhere.example@gw.example.com",
                RcptClass::GatewayOther("victim%elsewhere.example".into()),
            ),
            ("reply@gw.example.com.evil.example", RcptClass::Foreign),
            ("reply@sub.gw.example.com", RcptClass::Foreign),
        ];
        for (addr, expected) in cases {
            assert_eq!(class(addr), expected, "{addr}");
        }
    }
}
