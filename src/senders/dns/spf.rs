//! The SPF check of a sender's domain: does its policy authorise the
//! gateway's outbound path (`[outbound] spf`)?
//!
//! Each address entry (`ip4:`/`ip6:`, both ends of a range) is evaluated
//! by mail-auth (`MessageAuthenticator::verify_spf`, the same evaluator as
//! inbound mail), as the MAIL FROM identity of the sender's address with
//! the gateway's domain as HELO: includes, redirects, macros and the
//! 10-lookup limit are mail-auth's. An `include:<domain>` entry is checked
//! here, by a small walk of the policy: is that domain included (`+`
//! qualifier) or redirected to, at the top or through other literal
//! includes. The one TXT lookup of the domain is also ours: it tells a
//! missing policy from several (RFC 7208 §4.5) and gives the record text
//! the suggested record is built from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use mail_auth::common::cache::NoCache;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use mail_auth::{DnsError, Error as MailAuthError, SpfResult, Txt};

use super::{Check, GatewayDns, Resolver, Status};

/// RFC 7208 §4.6.4: DNS lookups one evaluation may make; also the bound on
/// the records the include walk reads.
const MAX_LOOKUPS: usize = 10;

/// What one `[outbound] spf` entry asks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Would mail from these addresses (both ends of a range) pass?
    Ips(Vec<IpAddr>),
    /// Does the policy include (or redirect to) this domain?
    Include(String),
}

/// Whether a TXT record is an SPF record: `v=spf1` alone or followed by a
/// space (RFC 7208 §4.5), case-insensitively.
fn is_spf_record(txt: &str) -> bool {
    let t = txt.as_bytes();
    t.len() >= 6 && t[..6].eq_ignore_ascii_case(b"v=spf1") && (t.len() == 6 || t[6] == b' ')
}

/// One entry of the gateway's outbound path, or `None` when it is not
/// understood.
fn gateway_target(entry: &str) -> Option<Target> {
    let (kind, value) = entry.split_once(':')?;
    match kind.to_ascii_lowercase().as_str() {
        "ip4" | "ip6" => {
            let (addr, len) = match value.rsplit_once('/') {
                Some((addr, len)) => (addr, Some(len.parse::<u8>().ok()?)),
                None => (value, None),
            };
            let ip: IpAddr = addr.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = len.unwrap_or(max);
            if len > max || ip.is_ipv4() != kind.eq_ignore_ascii_case("ip4") {
                return None;
            }
            let (first, last) = range_ends(ip, len);
            let mut ips = vec![first];
            if last != first {
                ips.push(last);
            }
            Some(Target::Ips(ips))
        }
        "include" => {
            let domain = value.trim_end_matches('.').to_ascii_lowercase();
            let valid = domain.contains('.')
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            valid.then_some(Target::Include(domain))
        }
        _ => None,
    }
}

/// The first and the last address of `net/len` (the same address for a
/// host route).
fn range_ends(net: IpAddr, len: u8) -> (IpAddr, IpAddr) {
    match net {
        IpAddr::V4(net) => {
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let first = u32::from(net) & !host;
            (
                IpAddr::V4(Ipv4Addr::from(first)),
                IpAddr::V4(Ipv4Addr::from(first | host)),
            )
        }
        IpAddr::V6(net) => {
            let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let first = u128::from(net) & !host;
            (
                IpAddr::V6(Ipv6Addr::from(first)),
                IpAddr::V6(Ipv6Addr::from(first | host)),
            )
        }
    }
}

/// Adds `item` to `list` unless it is there already.
fn push_once<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

pub(super) async fn check_spf(
    resolver: &Resolver,
    domain: &str,
    sender_email: &str,
    gateway: &GatewayDns,
) -> Check {
    let records = match resolver.txt(domain).await {
        Ok(r) => r,
        Err(e) => {
            return Check::new(
                Status::Error,
                domain,
                None,
                format!("cannot read the SPF record: {e}"),
            );
        }
    };
    let spf_records: Vec<&String> = records.iter().filter(|r| is_spf_record(r)).collect();
    let entries: Vec<&str> = gateway
        .spf
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let record = match spf_records.as_slice() {
        [] if entries.is_empty() => {
            return Check::new(
                Status::Missing,
                domain,
                None,
                format!(
                    "{domain} publishes no SPF record; the gateway's outbound path \
                     ([outbound] spf) is not configured, so none can be suggested"
                ),
            );
        }
        [] => {
            return Check::new(
                Status::Missing,
                domain,
                Some(format!("v=spf1 {} ~all", entries.join(" "))),
                format!("{domain} publishes no SPF record: publish this TXT record at {domain}"),
            );
        }
        [one] => one.as_str(),
        many => {
            return Check::new(
                Status::Error,
                domain,
                None,
                format!(
                    "{domain} publishes {} SPF records; receivers treat that as a permerror \
                     (RFC 7208 §4.5): merge them into one",
                    many.len()
                ),
            );
        }
    };

    let mut notes: Vec<String> = Vec::new();
    let mut targets: Vec<(&str, Target)> = Vec::new();
    for entry in &entries {
        match gateway_target(entry) {
            Some(target) => targets.push((entry, target)),
            None => notes.push(format!(
                "[outbound] spf entry {entry:?} is not understood; skipped"
            )),
        }
    }
    if targets.is_empty() {
        let why = if entries.is_empty() {
            "the gateway's outbound path ([outbound] spf) is not configured".to_string()
        } else {
            format!(
                "no entry of [outbound] spf is understood ({})",
                notes.join("; ")
            )
        };
        return Check::new(
            Status::Unknown,
            domain,
            None,
            format!(
                "{domain} publishes an SPF policy, but {why}, so there is nothing to check it \
                 against: list the gateway's sending addresses (ip4:, ip6:) or its include: \
                 domain in [outbound] spf"
            ),
        );
    }
    let policy = match Spf::parse(record.as_bytes()) {
        Ok(policy) => Arc::new(policy),
        Err(_) => {
            return Check::new(
                Status::Error,
                domain,
                None,
                format!(
                    "the SPF record of {domain} is malformed; receivers treat it as a \
                     permerror (RFC 7208 §4.6): fix its syntax"
                ),
            );
        }
    };

    // The sender as SPF sees it: the local part on the (ASCII) domain.
    let local = sender_email
        .rsplit_once('@')
        .map_or("postmaster", |(local, _)| local);
    let sender = format!("{local}@{domain}");
    let ips: Vec<IpAddr> = targets
        .iter()
        .flat_map(|(_, target)| match target {
            Target::Ips(ips) => ips.clone(),
            Target::Include(_) => Vec::new(),
        })
        .collect();
    let mut verdicts = evaluate(resolver, &ips, &sender, &gateway.gateway_domain)
        .await
        .into_iter();

    let mut errors: Vec<String> = Vec::new();
    let mut failing: Vec<String> = Vec::new();
    let mut unauthorised: Vec<&str> = Vec::new();
    for (entry, target) in targets {
        match target {
            Target::Ips(ips) => {
                for ip in ips {
                    match verdicts.next().flatten() {
                        Some(SpfResult::Pass) => {}
                        Some(SpfResult::TempError) => push_once(
                            &mut errors,
                            "temperror (a DNS lookup of the policy failed or timed out)"
                                .to_string(),
                        ),
                        Some(SpfResult::PermError) => push_once(
                            &mut errors,
                            "permerror (a record it includes is malformed, an include: or \
                             redirect= target publishes no SPF record, or the evaluation needs \
                             more than 10 DNS lookups, RFC 7208 §4.6.4)"
                                .to_string(),
                        ),
                        Some(
                            result @ (SpfResult::Fail
                            | SpfResult::SoftFail
                            | SpfResult::Neutral
                            | SpfResult::None),
                        ) => {
                            failing.push(format!("{ip} gets {}", result_name(result)));
                            push_once(&mut unauthorised, entry);
                        }
                        None => push_once(
                            &mut errors,
                            "the evaluation failed unexpectedly".to_string(),
                        ),
                    }
                }
            }
            Target::Include(target) => {
                match includes(resolver, Arc::clone(&policy), domain, &target).await {
                    Ok(true) => {}
                    Ok(false) => {
                        failing.push(format!("include:{target} is not part of the policy"));
                        push_once(&mut unauthorised, entry);
                    }
                    Err(e) => push_once(&mut errors, e),
                }
            }
        }
    }

    let mut detail = if !errors.is_empty() {
        format!(
            "the SPF policy of {domain} cannot be evaluated: {}",
            errors.join("; ")
        )
    } else if !failing.is_empty() {
        format!(
            "the SPF policy of {domain} does not authorise the gateway: {}; \
             add the gateway's terms before the `all`",
            failing.join(", ")
        )
    } else {
        format!("the SPF policy of {domain} authorises the gateway's outbound path")
    };
    if !notes.is_empty() {
        detail.push_str(" (");
        detail.push_str(&notes.join("; "));
        detail.push(')');
    }
    if !errors.is_empty() {
        Check::new(Status::Error, domain, None, detail)
    } else if !unauthorised.is_empty() {
        Check::new(
            Status::Mismatch,
            domain,
            Some(insert_before_all(record, &unauthorised)),
            detail,
        )
    } else {
        Check::new(Status::Pass, domain, None, detail)
    }
}

/// mail-auth's verdict for mail from each of `ips` with `sender` as MAIL
/// FROM and `helo` as HELO name, in order. The evaluations run side by
/// side, each in a task of its own, so that a panic in one is `None`
/// rather than the end of the caller; they are aborted when this future
/// is dropped (the SPF budget ran out).
async fn evaluate(
    resolver: &Resolver,
    ips: &[IpAddr],
    sender: &str,
    helo: &str,
) -> Vec<Option<SpfResult>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ip) in ips.iter().copied().enumerate() {
        let auth = resolver.authenticator().clone();
        let (sender, helo) = (sender.to_string(), helo.to_string());
        tasks.spawn(async move {
            let params = SpfParameters::verify_mail_from(ip, &helo, &helo, &sender);
            (i, auth.verify_spf(params).await.result())
        });
    }
    let mut verdicts = vec![None; ips.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, result)) => {
                if let Some(slot) = verdicts.get_mut(i) {
                    *slot = Some(result);
                }
            }
            Err(e) => tracing::error!(error = %e, "SPF evaluation task failed"),
        }
    }
    verdicts
}

fn result_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::None => "none",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
    }
}

/// Whether the policy of `domain` (`policy`, already read) includes
/// `target` with the `+` qualifier or redirects to it: in its own terms or
/// through the records of the literal domains it includes or redirects to
/// (not those named by macros), each term before an `all`, reading at most
/// [`MAX_LOOKUPS`] records.
async fn includes(
    resolver: &Resolver,
    policy: Arc<Spf>,
    domain: &str,
    target: &str,
) -> Result<bool, String> {
    let mut pending = vec![policy];
    let mut seen = vec![domain.to_string()];
    while let Some(policy) = pending.pop() {
        let (named, reached) = delegations(&policy, target);
        if reached {
            return Ok(true);
        }
        for name in named {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name.clone());
            if seen.len() > MAX_LOOKUPS + 1 {
                return Err(format!(
                    "permerror (looking for include:{target} needs more than {MAX_LOOKUPS} DNS \
                     lookups, RFC 7208 §4.6.4)"
                ));
            }
            let found = resolver
                .authenticator()
                .txt_lookup::<Spf>(name.as_str(), None::<&NoCache<Box<str>, Txt>>)
                .await;
            match found {
                Ok(policy) => pending.push(policy),
                Err(MailAuthError::Dns(
                    DnsError::RecordNotFound(_) | DnsError::InvalidRecordType,
                )) => {
                    return Err(format!(
                        "permerror ({name}, included by the policy, publishes no SPF record)"
                    ));
                }
                Err(MailAuthError::ParseError) => {
                    return Err(format!(
                        "permerror (the SPF record of {name}, included by the policy, is \
                         malformed)"
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "temperror (cannot read the SPF record of {name}: {e})"
                    ));
                }
            }
        }
    }
    Ok(false)
}

/// The literal domains `policy` includes with `+` or redirects to, in
/// order, up to its `all` (after which nothing is evaluated, and a
/// `redirect=` is ignored); and whether `target` is among them.
fn delegations(policy: &Spf, target: &str) -> (Vec<String>, bool) {
    let mut named = Vec::new();
    let mut has_all = false;
    for directive in policy.directives.iter() {
        match (&directive.qualifier, &directive.mechanism) {
            (_, Mechanism::All) => {
                has_all = true;
                break;
            }
            (Qualifier::Pass, Mechanism::Include { macro_string }) => {
                if let Some(name) = literal(macro_string) {
                    named.push(name);
                }
            }
            _ => {}
        }
    }
    if !has_all && let Some(name) = policy.redirect.as_ref().and_then(literal) {
        named.push(name);
    }
    let reached = named.iter().any(|n| n == target);
    (named, reached)
}

/// A domain spec without macros, lowercased, without a trailing dot.
fn literal(spec: &Macro) -> Option<String> {
    match spec {
        Macro::Literal(bytes) => std::str::from_utf8(bytes)
            .ok()
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    }
}

/// `record` with `terms` placed before its `all` mechanism, else before
/// `redirect=`, else at the end. A term the record already holds with
/// another qualifier (`?include:…`, `-ip4:…`) is replaced in place; one it
/// holds as it is stays as it is.
pub fn insert_before_all(record: &str, terms: &[&str]) -> String {
    let bare = |t: &str| {
        t.trim_start_matches(['+', '-', '~', '?'])
            .to_ascii_lowercase()
    };
    let mut tokens: Vec<String> = record
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect();
    let mut new: Vec<String> = Vec::new();
    for term in terms {
        let wanted = bare(term);
        match tokens.iter().skip(1).position(|t| bare(t) == wanted) {
            Some(i) => {
                if let Some(existing) = tokens.get_mut(i + 1)
                    && !existing
                        .trim_start_matches('+')
                        .eq_ignore_ascii_case(&wanted)
                {
                    *existing = term.to_string();
                }
            }
            None if !new.iter().any(|n| bare(n) == wanted) => new.push(term.to_string()),
            None => {}
        }
    }
    let at = tokens
        .iter()
        .skip(1)
        .position(|t| bare(t) == "all")
        .or_else(|| {
            tokens
                .iter()
                .skip(1)
                .position(|t| t.to_ascii_lowercase().starts_with("redirect="))
        })
        .map_or(tokens.len(), |p| p + 1);
    tokens.splice(at..at, new);
    tokens.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_before_all() {
        let t = |r: &str, terms: &[&str]| insert_before_all(r, terms);
        assert_eq!(
            t("v=spf1 mx -all", &["ip4:192.0.2.10"]),
            "v=spf1 mx ip4:192.0.2.10 -all"
        );
        assert_eq!(
            t(
                "v=spf1  mx   ~all",
                &["ip4:192.0.2.10", "include:_spf.gw.example"]
            ),
            "v=spf1 mx ip4:192.0.2.10 include:_spf.gw.example ~all"
        );
        assert_eq!(
            t("v=spf1 mx redirect=x.example", &["ip4:192.0.2.10"]),
            "v=spf1 mx ip4:192.0.2.10 redirect=x.example"
        );
        assert_eq!(
            t("v=spf1 mx", &["ip4:192.0.2.10"]),
            "v=spf1 mx ip4:192.0.2.10"
        );
        assert_eq!(
            t("v=spf1 ip4:192.0.2.10 -all", &["IP4:192.0.2.10"]),
            "v=spf1 ip4:192.0.2.10 -all",
            "a term already there is not repeated"
        );
        assert_eq!(
            t(
                "v=spf1 ?include:_spf.gw.example -ip4:192.0.2.10 ~all",
                &["include:_spf.gw.example", "ip4:192.0.2.10"]
            ),
            "v=spf1 include:_spf.gw.example ip4:192.0.2.10 ~all",
            "a term with another qualifier is replaced"
        );
        assert_eq!(
            t("v=spf1 +ip4:192.0.2.10 -all", &["ip4:192.0.2.10"]),
            "v=spf1 +ip4:192.0.2.10 -all"
        );
    }

    #[test]
    fn gateway_targets() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            gateway_target("ip4:192.0.2.10"),
            Some(Target::Ips(vec![ip("192.0.2.10")]))
        );
        assert_eq!(
            gateway_target("IP4:192.0.2.10/24"),
            Some(Target::Ips(vec![ip("192.0.2.0"), ip("192.0.2.255")]))
        );
        assert_eq!(
            gateway_target("ip6:2001:db8::/64"),
            Some(Target::Ips(vec![
                ip("2001:db8::"),
                ip("2001:db8::ffff:ffff:ffff:ffff")
            ]))
        );
        assert_eq!(
            gateway_target("ip4:0.0.0.0/0"),
            Some(Target::Ips(vec![ip("0.0.0.0"), ip("255.255.255.255")]))
        );
        assert_eq!(
            gateway_target("include:_SPF.gw.example."),
            Some(Target::Include("_spf.gw.example".into()))
        );
        for bad in [
            "ip4:192.0.2.10/33",
            "ip6:2001:db8::/129",
            "ip4:2001:db8::1",
            "ip6:192.0.2.1",
            "ip4:nope",
            "include:localhost",
            "include:a..b",
            "include:%{d}.x.example",
            "a:mail.example",
            "nothing",
        ] {
            assert_eq!(gateway_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn spf_records_are_told_apart() {
        assert!(is_spf_record("v=spf1 -all"));
        assert!(is_spf_record("V=SPF1"));
        assert!(!is_spf_record("v=spf10 -all"));
        assert!(!is_spf_record("google-site-verification=x"));
    }

    #[test]
    fn delegations_stop_at_all_and_skip_macros() {
        let parse = |r: &str| Spf::parse(r.as_bytes()).expect("spf");
        let gw = "_spf.gw.example";
        let (named, reached) = delegations(
            &parse("v=spf1 include:a.example +include:_SPF.gw.example. -all"),
            gw,
        );
        assert!(reached);
        assert_eq!(named, ["a.example", gw]);
        assert!(!delegations(&parse("v=spf1 ?include:_spf.gw.example -all"), gw).1);
        assert!(!delegations(&parse("v=spf1 -all include:_spf.gw.example"), gw).1);
        assert!(delegations(&parse("v=spf1 mx redirect=_spf.gw.example"), gw).1);
        assert!(!delegations(&parse("v=spf1 ~all redirect=_spf.gw.example"), gw).1);
        let (named, _) = delegations(&parse("v=spf1 include:%{d}.x.example -all"), gw);
        assert!(named.is_empty(), "{named:?}");
    }
}
