//! Routing: which side conversation an inbound message belongs to, and the
//! rule that decided it (SPEC §4). Pure: the store's knowledge comes in
//! through the [`Known`] trait, so the rules are table-tested with maps.
//!
//! Order: a bounce is never a reply, so a message classified as a bounce is
//! routed by the bounce rule (to the outbound message it reports on) whatever
//! else it carries. Everything else: 1. token, 2. references,
//! 3. forwarding/verification, 5. unrouted. A subject never routes.

use std::collections::BTreeSet;

use crate::model::{MailAddr, Token};

/// What routing needs to ask the store.
pub trait Known {
    /// The side conversation holding `token`.
    fn token(&self, token: &Token) -> Option<i64>;
    /// The side conversations holding a message (either direction) with
    /// this Message-ID (no brackets).
    fn message_id(&self, id: &str) -> Vec<i64>;
    /// The side conversations holding a message that cites this id in its
    /// In-Reply-To or References (an id the gateway never received itself:
    /// a "ghost", such as a vendor ticket system's root message).
    fn cited_by(&self, id: &str) -> Vec<i64>;
    /// Whether `email` is a registered sender address (plus addressing on
    /// its domain carries tokens).
    fn is_sender(&self, email: &str) -> bool;
}

/// Where the recipient-bearing addresses came from, in trust order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Envelope,
    DeliveredTo,
    OriginalTo,
    ForwardedTo,
    To,
    Cc,
}

/// What classification said, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Reply,
    AutoReply,
    Bounce {
        verp_key: Option<String>,
        original_message_id: Option<String>,
    },
}

/// A forwarding/verification match found on the message (rule 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarding {
    /// Our own verification mail came back through the forwarding address.
    Verification { sender_id: i64 },
    /// A mail provider's forwarding-confirmation mail.
    ProviderConfirmation { sender_id: i64 },
}

#[derive(Debug, Clone)]
pub struct RouteInput<'a> {
    pub gateway_domain: &'a str,
    /// Addresses with where they were found.
    pub addresses: Vec<(Source, String)>,
    /// The message's own Message-ID: a second delivery of a stored message
    /// belongs where the first one went.
    pub message_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub references: &'a [String],
    pub class: Class,
    pub forwarding: Option<Forwarding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Token,
    References,
    Forwarding,
    Bounce,
    Unrouted,
}

impl Rule {
    /// The message's `route` this rule records.
    pub fn route(self) -> crate::model::Route {
        match self {
            Rule::Token => crate::model::Route::Token,
            Rule::References => crate::model::Route::References,
            Rule::Forwarding => crate::model::Route::Forwarding,
            Rule::Bounce => crate::model::Route::Bounce,
            Rule::Unrouted => crate::model::Route::Unrouted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Token => "token",
            Rule::References => "references",
            Rule::Forwarding => "forwarding",
            Rule::Bounce => "bounce",
            Rule::Unrouted => "unrouted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A reply or auto-reply on a side conversation.
    Thread {
        side_conversation: i64,
        rule: Rule,
    },
    /// A bounce: `side_conversation` when the outbound message is found.
    Bounce {
        side_conversation: Option<i64>,
        verp_key: Option<String>,
        original_message_id: Option<String>,
    },
    Forwarding(Forwarding),
    /// Nothing decided; `ambiguous` when several side conversations matched.
    Unrouted {
        ambiguous: bool,
    },
}

impl Decision {
    pub fn rule(&self) -> Rule {
        match self {
            Decision::Thread { rule, .. } => *rule,
            Decision::Bounce { .. } => Rule::Bounce,
            Decision::Forwarding(_) => Rule::Forwarding,
            Decision::Unrouted { .. } => Rule::Unrouted,
        }
    }
}

/// The token of a Message-ID in the gateway's own format
/// `<token>.<n>.<random>@<gateway domain>`.
pub fn own_message_id_token(id: &str, gateway_domain: &str) -> Option<Token> {
    let (left, domain) = id.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(gateway_domain) {
        return None;
    }
    let mut parts = left.split('.');
    let token = parts.next()?.parse::<Token>().ok()?;
    let n = parts.next()?;
    let random = parts.next()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || random.is_empty() {
        return None;
    }
    Some(token)
}

/// Rule 1: tokens in plus addresses, by source. The most trusted source that
/// names any known token decides; two different side conversations named by
/// that same source make it ambiguous.
fn by_token(input: &RouteInput<'_>, known: &dyn Known) -> Option<Result<i64, ()>> {
    let mut best: Option<(Source, BTreeSet<i64>)> = None;
    for (source, address) in &input.addresses {
        let Some(addr) = MailAddr::parse(address) else {
            continue;
        };
        let Some(token) = addr.token() else {
            continue;
        };
        let on_our_domain = addr.domain.eq_ignore_ascii_case(input.gateway_domain);
        if !on_our_domain {
            let base = addr.plus_parts().map(|(b, _)| b).unwrap_or("");
            if !known.is_sender(&format!("{base}@{}", addr.domain)) {
                continue;
            }
        }
        let Some(sc) = known.token(&token) else {
            continue;
        };
        match &mut best {
            Some((s, set)) if *s == *source => {
                set.insert(sc);
            }
            Some((s, _)) if *s < *source => {}
            _ => best = Some((*source, BTreeSet::from([sc]))),
        }
    }
    let (_, set) = best?;
    if set.len() == 1 {
        set.into_iter().next().map(Ok)
    } else {
        Some(Err(()))
    }
}

/// Rule 2: the message's own id (a re-delivery), In-Reply-To, then
/// References from last to first. The first id
/// the gateway sent or stored decides; only when none is known, the first id
/// that a stored message also cites (threads joined through a message the
/// gateway never saw). An id shared by several side conversations is
/// ambiguous.
fn by_references(input: &RouteInput<'_>, known: &dyn Known) -> Option<Result<i64, ()>> {
    let ids: Vec<&str> = input
        .message_id
        .into_iter()
        .chain(input.in_reply_to)
        .chain(input.references.iter().rev().map(String::as_str))
        .collect();
    let direct = |id: &str| {
        let mut scs: BTreeSet<i64> = known.message_id(id).into_iter().collect();
        if let Some(token) = own_message_id_token(id, input.gateway_domain)
            && let Some(sc) = known.token(&token)
        {
            scs.insert(sc);
        }
        scs
    };
    let cited = |id: &str| known.cited_by(id).into_iter().collect::<BTreeSet<i64>>();
    for lookup in [&direct as &dyn Fn(&str) -> BTreeSet<i64>, &cited] {
        for id in &ids {
            let scs = lookup(id);
            match scs.len() {
                0 => continue,
                1 => return scs.into_iter().next().map(Ok),
                _ => return Some(Err(())),
            }
        }
    }
    None
}

pub fn route(input: &RouteInput<'_>, known: &dyn Known) -> Decision {
    if let Class::Bounce {
        verp_key,
        original_message_id,
    } = &input.class
    {
        // The outbound message the bounce reports on, by its Message-ID,
        // else the thread its headers point at.
        let side_conversation = original_message_id
            .as_deref()
            .and_then(|id| {
                let mut scs: BTreeSet<i64> = known.message_id(id).into_iter().collect();
                if let Some(t) = own_message_id_token(id, input.gateway_domain)
                    && let Some(sc) = known.token(&t)
                {
                    scs.insert(sc);
                }
                (scs.len() == 1).then(|| scs.into_iter().next()).flatten()
            })
            .or_else(|| by_token(input, known).and_then(Result::ok))
            .or_else(|| by_references(input, known).and_then(Result::ok));
        return Decision::Bounce {
            side_conversation,
            verp_key: verp_key.clone(),
            original_message_id: original_message_id.clone(),
        };
    }
    let mut ambiguous = false;
    match by_token(input, known) {
        Some(Ok(sc)) => {
            return Decision::Thread {
                side_conversation: sc,
                rule: Rule::Token,
            };
        }
        Some(Err(())) => ambiguous = true,
        None => {}
    }
    match by_references(input, known) {
        Some(Ok(sc)) => {
            return Decision::Thread {
                side_conversation: sc,
                rule: Rule::References,
            };
        }
        Some(Err(())) => ambiguous = true,
        None => {}
    }
    if let Some(f) = &input.forwarding {
        return Decision::Forwarding(f.clone());
    }
    Decision::Unrouted { ambiguous }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        tokens: HashMap<String, i64>,
        ids: HashMap<String, Vec<i64>>,
        cited: HashMap<String, Vec<i64>>,
        senders: Vec<String>,
    }

    impl Known for Fake {
        fn token(&self, token: &Token) -> Option<i64> {
            self.tokens.get(token.as_str()).copied()
        }
        fn message_id(&self, id: &str) -> Vec<i64> {
            self.ids.get(id).cloned().unwrap_or_default()
        }
        fn cited_by(&self, id: &str) -> Vec<i64> {
            self.cited.get(id).cloned().unwrap_or_default()
        }
        fn is_sender(&self, email: &str) -> bool {
            self.senders.iter().any(|s| s.eq_ignore_ascii_case(email))
        }
    }

    const T1: &str = "aaaaaaaaaaaaaaa3";
    const T2: &str = "bbbbbbbbbbbbbbb2";
    const T9: &str = "zzzzzzzzzzzzzzz7"; // unknown

    fn known() -> Fake {
        Fake {
            tokens: HashMap::from([(T1.into(), 1), (T2.into(), 2)]),
            ids: HashMap::from([
                ("out1@vendor.example".into(), vec![1]),
                ("in2@vendor.example".into(), vec![2]),
                ("blast@news.example".into(), vec![1, 2]),
            ]),
            cited: HashMap::from([
                ("ticket-root@rt.vendor.example".into(), vec![2]),
                ("in2@vendor.example".into(), vec![1]),
                ("list-root@news.example".into(), vec![1, 2]),
            ]),
            senders: vec!["support@acme.com".into()],
        }
    }

    struct Case {
        name: &'static str,
        addresses: Vec<(Source, String)>,
        message_id: Option<&'static str>,
        in_reply_to: Option<&'static str>,
        references: Vec<String>,
        class: Class,
        forwarding: Option<Forwarding>,
        expected: Decision,
    }

    fn case(name: &'static str, expected: Decision) -> Case {
        Case {
            name,
            addresses: Vec::new(),
            message_id: None,
            in_reply_to: None,
            references: Vec::new(),
            class: Class::Reply,
            forwarding: None,
            expected,
        }
    }

    fn thread(sc: i64, rule: Rule) -> Decision {
        Decision::Thread {
            side_conversation: sc,
            rule,
        }
    }

    fn own(token: &str) -> String {
        format!("{token}.3.k2j4h5@gw.example.com")
    }

    #[test]
    fn table() {
        use Source::*;
        let cases = vec![
            Case {
                addresses: vec![(Envelope, format!("reply+{T1}@gw.example.com"))],
                ..case("token in envelope", thread(1, Rule::Token))
            },
            Case {
                addresses: vec![(
                    Envelope,
                    format!("reply+{}@GW.EXAMPLE.COM", T1.to_uppercase()),
                )],
                ..case("token matched case-insensitively", thread(1, Rule::Token))
            },
            Case {
                addresses: vec![
                    (Envelope, "fwd-x@gw.example.com".into()),
                    (DeliveredTo, format!("support+{T2}@acme.com")),
                ],
                ..case(
                    "token on a sender domain via Delivered-To",
                    thread(2, Rule::Token),
                )
            },
            Case {
                addresses: vec![(To, format!("support+{T2}@unregistered.example"))],
                ..case(
                    "plus address on a foreign non-sender domain is ignored",
                    Decision::Unrouted { ambiguous: false },
                )
            },
            Case {
                addresses: vec![(Cc, format!("reply+{T2}@gw.example.com"))],
                in_reply_to: Some("out1@vendor.example"),
                ..case("token in Cc wins over references", thread(2, Rule::Token))
            },
            Case {
                addresses: vec![
                    (Envelope, format!("reply+{T1}@gw.example.com")),
                    (To, format!("reply+{T2}@gw.example.com")),
                ],
                ..case("envelope beats headers", thread(1, Rule::Token))
            },
            Case {
                addresses: vec![
                    (To, format!("reply+{T1}@gw.example.com")),
                    (To, format!("reply+{T2}@gw.example.com")),
                ],
                ..case(
                    "two threads in the same source: ambiguous",
                    Decision::Unrouted { ambiguous: true },
                )
            },
            Case {
                addresses: vec![
                    (To, format!("reply+{T1}@gw.example.com")),
                    (To, format!("reply+{T2}@gw.example.com")),
                ],
                in_reply_to: Some("in2@vendor.example"),
                ..case(
                    "ambiguous tokens settled by references",
                    thread(2, Rule::References),
                )
            },
            Case {
                addresses: vec![(Envelope, format!("reply+{T9}@gw.example.com"))],
                in_reply_to: Some("out1@vendor.example"),
                ..case(
                    "unknown token falls through to references",
                    thread(1, Rule::References),
                )
            },
            Case {
                addresses: vec![(Envelope, "support@acme.com".into())],
                references: vec!["x@y".into(), own(T2)],
                ..case(
                    "forwarded: plus address gone, own Message-ID in References",
                    thread(2, Rule::References),
                )
            },
            Case {
                addresses: vec![(Envelope, "fwd-x@gw.example.com".into())],
                message_id: Some("in2@vendor.example"),
                ..case(
                    "a second delivery of a stored message goes where the first went",
                    thread(2, Rule::References),
                )
            },
            Case {
                references: vec![own(T1), "unknown@elsewhere".into()],
                ..case(
                    "References read from last to first, skipping unknown ids",
                    thread(1, Rule::References),
                )
            },
            Case {
                in_reply_to: Some("unknown@x"),
                references: vec!["in2@vendor.example".into(), "out1@vendor.example".into()],
                ..case("last known reference wins", thread(1, Rule::References))
            },
            Case {
                in_reply_to: Some("ticket-root@rt.vendor.example"),
                ..case(
                    "joined through an id a stored message cites (vendor ticket system)",
                    thread(2, Rule::References),
                )
            },
            Case {
                in_reply_to: Some("in2@vendor.example"),
                ..case(
                    "a stored Message-ID beats an id merely cited elsewhere",
                    thread(2, Rule::References),
                )
            },
            Case {
                references: vec![
                    "ticket-root@rt.vendor.example".into(),
                    "out1@vendor.example".into(),
                ],
                in_reply_to: Some("ticket-root@rt.vendor.example"),
                ..case(
                    "any stored id beats the first cited one",
                    thread(1, Rule::References),
                )
            },
            Case {
                in_reply_to: Some("list-root@news.example"),
                ..case(
                    "a cited id shared by several threads: unrouted",
                    Decision::Unrouted { ambiguous: true },
                )
            },
            Case {
                references: vec!["blast@news.example".into()],
                ..case(
                    "reference shared by several threads: unrouted",
                    Decision::Unrouted { ambiguous: true },
                )
            },
            Case {
                references: vec![format!("{T1}.3.x@other.example")],
                ..case(
                    "own format on another domain is not ours",
                    Decision::Unrouted { ambiguous: false },
                )
            },
            Case {
                references: vec![format!("{T9}.3.x@gw.example.com")],
                ..case(
                    "own format with an unknown token",
                    Decision::Unrouted { ambiguous: false },
                )
            },
            Case {
                addresses: vec![(Envelope, "fwd-x@gw.example.com".into())],
                forwarding: Some(Forwarding::Verification { sender_id: 7 }),
                ..case(
                    "verification mail",
                    Decision::Forwarding(Forwarding::Verification { sender_id: 7 }),
                )
            },
            Case {
                addresses: vec![
                    (Envelope, "bounce+k1@gw.example.com".to_string()),
                    (To, format!("reply+{T2}@gw.example.com")),
                ],
                class: Class::Bounce {
                    verp_key: Some("k1".into()),
                    original_message_id: Some(own(T1)),
                },
                ..case(
                    "bounce goes to the thread of the original",
                    Decision::Bounce {
                        side_conversation: Some(1),
                        verp_key: Some("k1".into()),
                        original_message_id: Some(own(T1)),
                    },
                )
            },
            Case {
                addresses: vec![(Envelope, format!("reply+{T2}@gw.example.com"))],
                class: Class::Bounce {
                    verp_key: None,
                    original_message_id: None,
                },
                ..case(
                    "bounce to a reply address is still a bounce",
                    Decision::Bounce {
                        side_conversation: Some(2),
                        verp_key: None,
                        original_message_id: None,
                    },
                )
            },
            Case {
                addresses: vec![(Envelope, "bounce+zz@gw.example.com".into())],
                class: Class::Bounce {
                    verp_key: Some("zz".into()),
                    original_message_id: None,
                },
                ..case(
                    "unmatched bounce",
                    Decision::Bounce {
                        side_conversation: None,
                        verp_key: Some("zz".into()),
                        original_message_id: None,
                    },
                )
            },
            Case {
                addresses: vec![(Envelope, format!("reply+{T1}@gw.example.com"))],
                class: Class::AutoReply,
                ..case("auto-replies thread normally", thread(1, Rule::Token))
            },
            Case {
                addresses: vec![(Envelope, "reply@gw.example.com".into())],
                ..case(
                    "bare reply mailbox with nothing else",
                    Decision::Unrouted { ambiguous: false },
                )
            },
        ];
        let k = known();
        for c in cases {
            let input = RouteInput {
                gateway_domain: "gw.example.com",
                addresses: c.addresses,
                message_id: c.message_id,
                in_reply_to: c.in_reply_to,
                references: &c.references,
                class: c.class,
                forwarding: c.forwarding,
            };
            assert_eq!(route(&input, &k), c.expected, "case: {}", c.name);
        }
    }

    #[test]
    fn a_subject_never_routes() {
        // There is no subject in the input at all: by construction.
        let k = known();
        let input = RouteInput {
            gateway_domain: "gw.example.com",
            addresses: vec![(Source::Envelope, "reply@gw.example.com".into())],
            message_id: None,
            in_reply_to: None,
            references: &[],
            class: Class::Reply,
            forwarding: None,
        };
        assert_eq!(route(&input, &k).rule(), Rule::Unrouted);
    }

    #[test]
    fn own_message_id_format() {
        assert!(own_message_id_token(&own(T1), "gw.example.com").is_some());
        assert!(own_message_id_token(&own(T1), "GW.example.com").is_some());
        assert!(
            own_message_id_token(&format!("{T1}.x.y@gw.example.com"), "gw.example.com").is_none()
        );
        assert!(
            own_message_id_token(&format!("{T1}.1.@gw.example.com"), "gw.example.com").is_none()
        );
        assert!(own_message_id_token("short.1.r@gw.example.com", "gw.example.com").is_none());
        assert!(own_message_id_token("nonsense", "gw.example.com").is_none());
    }
}
