//! DNS health of a sender address (SPEC §6): does the domain's SPF policy
//! authorise the gateway's outbound path, does the DKIM record at
//! `<selector>._domainkey.<domain>` hold the gateway's key, is a DMARC
//! policy published that the gateway's mail can align with. Each answer is
//! a [`Check`] (`pass | missing | mismatch | error`, and `unknown` for SPF
//! when `[outbound] spf` gives nothing to check against; the record to
//! publish; a detail for the admin); the three go into `senders.dns` as
//! JSON.
//!
//! DNS is reached through [`Resolver`]: mail-auth's authenticator on the
//! configured name servers ([`crate::net::dns`]), which evaluates SPF
//! ([`spf`]) and answers the TXT lookups of the DKIM ([`dkim`]) and DMARC
//! ([`dmarc`]) checks. A DNS failure is an `error` check with the reason,
//! never a panic; every lookup is bounded by the resolver timeout, the SPF
//! check by [`SPF_BUDGET_TIMEOUTS`] of them.

mod dkim;
mod dmarc;
mod spf;

use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType};
use serde::{Deserialize, Serialize};

use crate::config::DnsConfig;
use crate::net::dns::Cache;

pub use dmarc::DMARC_SUGGESTED;
pub use spf::insert_before_all;

/// How many resolver timeouts the SPF check may take in all (an
/// evaluation makes up to 10 lookups, more with `mx`, one per gateway
/// address).
pub const SPF_BUDGET_TIMEOUTS: u32 = 4;
/// Responses kept by the resolver's cache.
const CACHE_SIZE: u64 = 256;
/// Longest a cached answer is kept: long enough to serve one check's
/// repeated lookups, short enough that a re-check after the admin
/// published a record asks again.
const CACHE_MAX_TTL: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Missing,
    Mismatch,
    Error,
    /// Not known: for SPF, the gateway's outbound path (`[outbound] spf`)
    /// is not configured, so whether the policy authorises it cannot be
    /// told; for all three, no check has run yet ([`to_publish`]).
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Missing => "missing",
            Status::Mismatch => "mismatch",
            Status::Error => "error",
            Status::Unknown => "unknown",
        }
    }
}

/// One of the three checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub status: Status,
    /// The TXT record the admin should publish (at `record_name`), when
    /// there is one to suggest.
    pub record_to_publish: Option<String>,
    pub detail: String,
    /// Where the record lives: `acme.com`, `backchannel._domainkey.acme.com`,
    /// `_dmarc.acme.com`.
    #[serde(default)]
    pub record_name: String,
}

impl Check {
    fn new(status: Status, name: &str, record: Option<String>, detail: impl Into<String>) -> Check {
        Check {
            status,
            record_to_publish: record,
            detail: detail.into(),
            record_name: name.to_string(),
        }
    }
}

/// The `senders.dns` JSON: `{spf, dkim, dmarc}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsHealth {
    pub spf: Check,
    pub dkim: Check,
    pub dmarc: Check,
}

/// What the gateway sends with, to check the domain against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayDns {
    /// `[outbound] spf`: `ip4:<addr>[/len]`, `ip6:<addr>[/len]`,
    /// `include:<domain>`.
    pub spf: Vec<String>,
    pub dkim_selector: String,
    /// The `p=` value of the domain's key (see [`super::dkim::ensure_key`]);
    /// its type is told by its length ([`super::dkim::algorithm_of_public_key`]).
    pub dkim_public_key_b64: Option<String>,
    /// The gateway's own domain: the envelope sender (VERP) is on it, which
    /// decides whether SPF can align for DMARC; also the HELO name the SPF
    /// evaluation uses.
    pub gateway_domain: String,
}

// ---------------------------------------------------------------------------
// DNS

/// A lookup that did not get an answer (timeout, SERVFAIL, refused, a name
/// that cannot be asked). A name that does not exist or has no records of
/// the type is an empty answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// mail-auth's authenticator on `dns.nameservers` (or the system
/// configuration when that list is empty): it evaluates SPF, and its
/// hickory resolver answers the TXT lookups, each bounded by `dns.timeout`.
#[derive(Clone)]
pub struct Resolver {
    auth: MessageAuthenticator,
    timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    pub fn new(dns: &DnsConfig) -> anyhow::Result<Resolver> {
        let cache = Cache {
            size: CACHE_SIZE,
            max_ttl: Some(CACHE_MAX_TTL),
            negative_max_ttl: None,
        };
        Ok(Resolver {
            auth: crate::net::dns::authenticator(dns, cache)?,
            timeout: dns.timeout,
        })
    }

    /// The bound on one lookup.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The TXT records at `name`, each record's strings joined.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let mut fqdn = Name::from_utf8(name)
            .map_err(|e| LookupError(format!("{name:?} is not a domain name: {e}")))?;
        fqdn.set_fqdn(true);
        let rtype = RecordType::TXT;
        let answer =
            tokio::time::timeout(self.timeout, self.auth.resolver().lookup(fqdn, rtype)).await;
        match answer {
            Err(_) => Err(LookupError(format!(
                "{rtype} {name}: no answer within {} ms",
                self.timeout.as_millis()
            ))),
            Ok(Ok(lookup)) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(none))))
                if matches!(
                    none.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                Ok(Vec::new())
            }
            Ok(Err(e)) => Err(LookupError(format!("{rtype} {name}: {e}"))),
        }
    }

    fn authenticator(&self) -> &MessageAuthenticator {
        &self.auth
    }
}

// ---------------------------------------------------------------------------
// The checks

/// Checks `domain` (the domain of `sender_email`) for sending through the
/// gateway. The three checks run side by side; none fails the others.
#[tracing::instrument(skip_all, fields(domain = %domain))]
pub async fn check(
    resolver: &Resolver,
    domain: &str,
    sender_email: &str,
    gateway: &GatewayDns,
) -> DnsHealth {
    let domain = ascii_domain(domain);
    let budget = resolver.timeout().saturating_mul(SPF_BUDGET_TIMEOUTS);
    let spf_fut = async {
        let work = spf::check_spf(resolver, &domain, sender_email, gateway);
        match tokio::time::timeout(budget, work).await {
            Ok(check) => check,
            Err(_) => Check::new(
                Status::Error,
                &domain,
                None,
                format!(
                    "the SPF evaluation of {domain} took longer than {} ms",
                    budget.as_millis()
                ),
            ),
        }
    };
    let (spf, dkim, dmarc) = tokio::join!(
        spf_fut,
        dkim::check_dkim(resolver, &domain, gateway),
        dmarc::find_dmarc(resolver, &domain)
    );
    let dmarc = dmarc::judge_dmarc(dmarc, &domain, &spf, &dkim, gateway);
    tracing::debug!(
        spf = spf.status.as_str(),
        dkim = dkim.status.as_str(),
        dmarc = dmarc.status.as_str(),
        "sender DNS checked"
    );
    DnsHealth { spf, dkim, dmarc }
}

/// The three records to publish for `domain`, before any check has run
/// (a sender just added): each `unknown`, with the TXT record the admin
/// should publish and where. SPF has a record only when `[outbound] spf`
/// says what the gateway sends from; DKIM only once the domain has a key.
pub fn to_publish(domain: &str, gateway: &GatewayDns) -> DnsHealth {
    let domain = ascii_domain(domain);
    let entries: Vec<&str> = gateway
        .spf
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let spf = if entries.is_empty() {
        Check::new(
            Status::Unknown,
            &domain,
            None,
            "not checked yet; the gateway's outbound path ([outbound] spf) is not configured, \
             so no SPF record can be suggested",
        )
    } else {
        Check::new(
            Status::Unknown,
            &domain,
            Some(format!("v=spf1 {} ~all", entries.join(" "))),
            format!(
                "not checked yet: publish this TXT record at {domain}, or add {} before the \
                 `all` of the SPF record {domain} already has",
                entries.join(" ")
            ),
        )
    };
    let dkim_name = format!("{}._domainkey.{domain}", gateway.dkim_selector);
    let dkim_record = gateway.dkim_public_key_b64.as_deref().and_then(|p| {
        super::dkim::algorithm_of_public_key(p).map(|a| super::dkim::record_for(a, p))
    });
    let dkim = match dkim_record {
        Some(record) => Check::new(
            Status::Unknown,
            &dkim_name,
            Some(record),
            format!("not checked yet: publish this TXT record at {dkim_name}"),
        ),
        None => Check::new(
            Status::Unknown,
            &dkim_name,
            None,
            format!("not checked yet; the gateway has no DKIM key for {domain} yet"),
        ),
    };
    let dmarc_name = format!("_dmarc.{domain}");
    let dmarc = Check::new(
        Status::Unknown,
        &dmarc_name,
        Some(DMARC_SUGGESTED.to_string()),
        format!(
            "not checked yet: unless {domain} (or its organisational domain) already has a \
             DMARC policy, publish this TXT record at {dmarc_name}"
        ),
    );
    DnsHealth { spf, dkim, dmarc }
}

/// Lowercase, no trailing dot, internationalised labels in their ASCII
/// (punycode) form, as DNS and SPF see them; left as it is when it is not a
/// domain name (the lookups then report it).
pub fn ascii_domain(domain: &str) -> String {
    let domain = super::dkim::normalize_domain(domain);
    if domain.is_ascii() {
        return domain;
    }
    Name::from_utf8(&domain)
        .map(|n| super::dkim::normalize_domain(&n.to_ascii()))
        .unwrap_or(domain)
}

/// A `tag=value; …` list (RFC 6376 §3.2, also DMARC's): names lowercased,
/// values trimmed; an empty element (a trailing `;`) is allowed, a
/// duplicate tag or an element without `=` is not.
fn tag_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for element in text.split(';') {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        let (name, value) = element
            .split_once('=')
            .ok_or_else(|| format!("`{element}` has no `=`"))?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("bad tag name in `{element}`"));
        }
        if tags.iter().any(|(t, _)| *t == name) {
            return Err(format!("tag {name}= appears twice"));
        }
        tags.push((name, value.trim().to_string()));
    }
    Ok(tags)
}

fn tag<'t>(tags: &'t [(String, String)], name: &str) -> Option<&'t str> {
    tags.iter()
        .find(|(t, _)| t == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internationalised_domains_are_asked_in_ascii() {
        assert_eq!(ascii_domain("Bücher.example."), "xn--bcher-kva.example");
        assert_eq!(ascii_domain("ACME.com"), "acme.com");
    }

    #[test]
    fn tag_lists() {
        assert_eq!(
            tag_list("v=DKIM1; K=ed25519 ; p=abc;"),
            Ok(vec![
                ("v".to_string(), "DKIM1".to_string()),
                ("k".to_string(), "ed25519".to_string()),
                ("p".to_string(), "abc".to_string()),
            ])
        );
        assert!(tag_list("v=DKIM1; p=a; p=b").is_err());
        assert!(tag_list("v=DKIM1; junk").is_err());
        assert!(tag_list("v=DKIM1; b@d=x").is_err());
    }

    #[test]
    fn statuses_serialise_lowercase() {
        for status in [
            Status::Pass,
            Status::Missing,
            Status::Mismatch,
            Status::Error,
            Status::Unknown,
        ] {
            let json = serde_json::to_value(status).expect("json");
            assert_eq!(json, status.as_str());
        }
        let old: Check =
            serde_json::from_str(r#"{"status":"missing","record_to_publish":null,"detail":""}"#)
                .expect("without record_name");
        assert_eq!(old.status, Status::Missing);
    }
}
