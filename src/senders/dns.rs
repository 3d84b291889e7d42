//! DNS health of a sender address (SPEC §6): does the domain's SPF policy
//! authorise the gateway's outbound path, does the DKIM record at
//! `<selector>._domainkey.<domain>` hold the gateway's key, is a DMARC
//! policy published that the gateway's mail can align with. Each answer is
//! a [`Check`] (`pass | missing | mismatch | error`, the record to publish,
//! a detail for the admin); the three go into `senders.dns` as JSON.
//!
//! DNS is reached through the small [`Dns`] trait: [`Resolver`] is the
//! hickory implementation on the configured name servers, tests bring
//! their own. A DNS failure is an `error` check with the reason, never a
//! panic; every lookup is bounded by the resolver timeout, the SPF
//! evaluation by [`SPF_BUDGET_TIMEOUTS`] of them.
//!
//! Limitation: the organisational domain for the DMARC fallback is found by
//! a simple rule ([`organizational_domain`]), not the Public Suffix List.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType};
use serde::{Deserialize, Serialize};

use super::dkim;
use super::spf::{self, Identity, SpfResult, Target};
use crate::config::DnsConfig;

/// How many resolver timeouts the SPF evaluation may take in all (it makes
/// up to about 10 lookups, more with `mx`).
pub const SPF_BUDGET_TIMEOUTS: u32 = 4;
/// Responses kept by the resolver's cache.
const CACHE_SIZE: u64 = 256;
/// Longest a cached answer is kept: long enough to serve one check's
/// repeated lookups, short enough that a re-check after the admin
/// published a record asks again.
const CACHE_MAX_TTL: Duration = Duration::from_secs(5);
/// The suggested DMARC policy when none is published.
pub const DMARC_SUGGESTED: &str = "v=DMARC1; p=none";

// ---------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Missing,
    Mismatch,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Missing => "missing",
            Status::Mismatch => "mismatch",
            Status::Error => "error",
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
    /// The `p=` value of the domain's key (see [`dkim::ensure_key`]); its
    /// type is told by its length ([`dkim::algorithm_of_public_key`]).
    pub dkim_public_key_b64: Option<String>,
    /// The gateway's own domain: the envelope sender (VERP) is on it, which
    /// decides whether SPF can align for DMARC.
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

/// The DNS answers the checks need.
pub trait Dns: Sync {
    /// The TXT records at `name`, each record's strings joined.
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, LookupError>> + Send;
    fn a(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv4Addr>, LookupError>> + Send;
    fn aaaa(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv6Addr>, LookupError>> + Send;
    /// MX exchange names, most preferred first.
    fn mx(&self, name: &str) -> impl Future<Output = Result<Vec<String>, LookupError>> + Send;
    /// The bound on one lookup.
    fn timeout(&self) -> Duration;
}

/// hickory-resolver on `dns.nameservers` (or the system configuration when
/// that list is empty), each lookup bounded by `dns.timeout`.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
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
        let cache = crate::net::dns::Cache {
            size: CACHE_SIZE,
            max_ttl: Some(CACHE_MAX_TTL),
        };
        let inner = crate::net::dns::resolver(dns, cache)?;
        Ok(Resolver {
            inner,
            timeout: dns.timeout,
        })
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, LookupError> {
        let mut fqdn = Name::from_utf8(name)
            .map_err(|e| LookupError(format!("{name:?} is not a domain name: {e}")))?;
        fqdn.set_fqdn(true);
        let answer = tokio::time::timeout(self.timeout, self.inner.lookup(fqdn, rtype)).await;
        match answer {
            Err(_) => Err(LookupError(format!(
                "{rtype} {name}: no answer within {} ms",
                self.timeout.as_millis()
            ))),
            Ok(Ok(lookup)) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data.clone())
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
}

impl Dns for Resolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        Ok(self
            .lookup(name, RecordType::TXT)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, LookupError> {
        Ok(self
            .lookup(name, RecordType::A)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, LookupError> {
        Ok(self
            .lookup(name, RecordType::AAAA)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let mut hosts: Vec<(u16, String)> = self
            .lookup(name, RecordType::MX)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        hosts.sort();
        Ok(hosts.into_iter().map(|(_, h)| h).collect())
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

// ---------------------------------------------------------------------------
// The checks

/// Checks `domain` (the domain of `sender_email`) for sending through the
/// gateway. The three checks run side by side; none fails the others.
#[tracing::instrument(skip_all, fields(domain = %domain))]
pub async fn check<D: Dns>(
    dns: &D,
    domain: &str,
    sender_email: &str,
    gateway: &GatewayDns,
) -> DnsHealth {
    let domain = ascii_domain(domain);
    let budget = dns.timeout().saturating_mul(SPF_BUDGET_TIMEOUTS);
    let spf_fut = async {
        match tokio::time::timeout(budget, check_spf(dns, &domain, sender_email, gateway)).await {
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
        check_dkim(dns, &domain, gateway),
        find_dmarc(dns, &domain)
    );
    let dmarc = judge_dmarc(dmarc, &domain, &spf, &dkim, gateway);
    tracing::debug!(
        spf = spf.status.as_str(),
        dkim = dkim.status.as_str(),
        dmarc = dmarc.status.as_str(),
        "sender DNS checked"
    );
    DnsHealth { spf, dkim, dmarc }
}

/// Lowercase, no trailing dot, internationalised labels in their ASCII
/// (punycode) form, as DNS and SPF see them; left as it is when it is not a
/// domain name (the lookups then report it).
pub fn ascii_domain(domain: &str) -> String {
    let domain = dkim::normalize_domain(domain);
    if domain.is_ascii() {
        return domain;
    }
    Name::from_utf8(&domain)
        .map(|n| dkim::normalize_domain(&n.to_ascii()))
        .unwrap_or(domain)
}

// ---------------------------------------------------------------------------
// SPF

/// One entry of the gateway's outbound path and what is evaluated for it:
/// an address (both ends of a range), or an include domain.
fn gateway_targets(entry: &str) -> Option<Vec<Target>> {
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
            let (first, last) = spf::range_ends(ip, len);
            let mut targets = vec![Target::Ip(first)];
            if last != first {
                targets.push(Target::Ip(last));
            }
            Some(targets)
        }
        "include" if spf::valid_domain(value.trim_end_matches('.')) => {
            Some(vec![Target::Include(value.to_ascii_lowercase())])
        }
        _ => None,
    }
}

async fn check_spf<D: Dns>(
    dns: &D,
    domain: &str,
    sender_email: &str,
    gateway: &GatewayDns,
) -> Check {
    let records = match dns.txt(domain).await {
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
    let spf_records: Vec<&String> = records.iter().filter(|r| spf::is_spf_record(r)).collect();
    let entries: Vec<&str> = gateway.spf.iter().map(|s| s.trim()).collect();
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
    if entries.is_empty() {
        return Check::new(
            Status::Pass,
            domain,
            None,
            "the domain publishes SPF; the gateway's outbound path ([outbound] spf) is not \
             configured, so there is nothing to check it against",
        );
    }

    let identity = Identity {
        sender: sender_email,
        helo: &gateway.gateway_domain,
    };
    let mut errors: Vec<String> = Vec::new();
    let mut failing: Vec<String> = Vec::new();
    let mut unauthorised: Vec<&str> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for entry in &entries {
        let Some(targets) = gateway_targets(entry) else {
            notes.push(format!(
                "[outbound] spf entry {entry:?} is not understood; skipped"
            ));
            continue;
        };
        for target in targets {
            let eval = spf::evaluate(dns, domain, &target, identity).await;
            for note in eval.notes {
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
            let described = match &target {
                Target::Ip(ip) => format!("{ip} gets {}", eval.result.name()),
                Target::Include(d) => format!("include:{d} is not part of the policy"),
            };
            match eval.result {
                SpfResult::Pass => {}
                SpfResult::TempError(why) => {
                    let e = format!("temperror: {why}");
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                }
                SpfResult::PermError(why) => {
                    let e = format!("permerror: {why}");
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                }
                SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral | SpfResult::None => {
                    failing.push(described);
                    if !unauthorised.contains(entry) {
                        unauthorised.push(entry);
                    }
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
                let existing = &mut tokens[i + 1];
                if !existing
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

// ---------------------------------------------------------------------------
// DKIM

async fn check_dkim<D: Dns>(dns: &D, domain: &str, gateway: &GatewayDns) -> Check {
    let name = format!("{}._domainkey.{domain}", gateway.dkim_selector);
    let ours = gateway
        .dkim_public_key_b64
        .as_deref()
        .map(strip_ws_quotes)
        .filter(|p| !p.is_empty());
    let algorithm = ours.as_deref().and_then(dkim::algorithm_of_public_key);
    let wanted = match (&ours, algorithm) {
        (Some(p), Some(a)) => Some(dkim::record_for(a, p)),
        _ => None,
    };
    let records = match dns.txt(&name).await {
        Ok(r) => r,
        Err(e) => {
            return Check::new(
                Status::Error,
                &name,
                None,
                format!("cannot read the DKIM record: {e}"),
            );
        }
    };
    let (Some(ours), Some(algorithm), Some(wanted)) = (ours, algorithm, wanted) else {
        return Check::new(
            Status::Missing,
            &name,
            None,
            format!("the gateway has no DKIM key for {domain} yet"),
        );
    };
    let long_note = if wanted.len() > 255 {
        " (longer than 255 characters: publish it as several quoted strings, which most DNS \
         providers do by themselves)"
    } else {
        ""
    };
    let keys: Vec<String> = records
        .iter()
        .map(|r| strip_quotes(r))
        .filter(|r| looks_like_dkim(r))
        .collect();
    let record = match keys.as_slice() {
        [] => {
            return Check::new(
                Status::Missing,
                &name,
                Some(wanted),
                format!("no DKIM record at {name}: publish this TXT record there{long_note}"),
            );
        }
        [one] => one,
        many => {
            return Check::new(
                Status::Mismatch,
                &name,
                Some(wanted),
                format!(
                    "{} DKIM records at {name}; verifiers may use any of them: keep only this \
                     one{long_note}",
                    many.len()
                ),
            );
        }
    };
    let mismatch = |why: String| {
        Check::new(
            Status::Mismatch,
            &name,
            Some(wanted.clone()),
            format!("{why}: publish this TXT record at {name} instead{long_note}"),
        )
    };
    let tags = match tag_list(record) {
        Ok(t) => t,
        Err(e) => return mismatch(format!("the DKIM record at {name} is malformed ({e})")),
    };
    if let Some((tag, value)) = tags.first()
        && tag == "v"
        && value != "DKIM1"
    {
        return mismatch(format!(
            "the DKIM record at {name} has v={value}, not v=DKIM1"
        ));
    }
    if tags.iter().skip(1).any(|(t, _)| t == "v") {
        return mismatch(format!(
            "the DKIM record at {name} is malformed (v= must come first)"
        ));
    }
    let Some(p) = tag(&tags, "p") else {
        return mismatch(format!("the DKIM record at {name} has no p= tag"));
    };
    let p = strip_ws_quotes(p);
    if p.is_empty() {
        return mismatch(format!("the DKIM record at {name} is revoked (empty p=)"));
    }
    if BASE64.decode(&p).is_err() {
        return mismatch(format!(
            "the DKIM record at {name} is malformed (p= is not base64)"
        ));
    }
    if p != ours {
        return mismatch(format!(
            "the DKIM record at {name} holds a different key than the gateway's"
        ));
    }
    let k = tag(&tags, "k").unwrap_or("rsa").trim().to_ascii_lowercase();
    if k != algorithm.as_str() {
        return mismatch(format!(
            "the DKIM record at {name} says k={k} but the key is {}",
            algorithm.as_str()
        ));
    }
    Check::new(
        Status::Pass,
        &name,
        None,
        format!("the DKIM record at {name} holds the gateway's {algorithm} key"),
    )
}

/// A TXT record that means to be a DKIM key: starts with `v=DKIM1` or has
/// a `p=` tag.
fn looks_like_dkim(record: &str) -> bool {
    let compact: String = record
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    compact.starts_with("v=dkim1") || compact.starts_with("p=") || compact.contains(";p=")
}

fn strip_quotes(text: &str) -> String {
    text.chars().filter(|c| *c != '"').collect()
}

fn strip_ws_quotes(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .collect()
}

/// A `tag=value; …` list (RFC 6376 §3.2): names lowercased, values
/// trimmed; an empty element (a trailing `;`) is allowed, a duplicate tag
/// or an element without `=` is not.
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

// ---------------------------------------------------------------------------
// DMARC

/// The organisational domain by a simple rule: the last two labels, or
/// three under a common two-level public suffix (`co.uk`, `com.au`, …).
/// Not the Public Suffix List: under other multi-label suffixes (say
/// `city.state.us`) the fallback asks the wrong name and finds nothing.
pub fn organizational_domain(domain: &str) -> String {
    const TWO_LEVEL: &[&str] = &[
        "co.uk", "org.uk", "ac.uk", "gov.uk", "ltd.uk", "plc.uk", "me.uk", "net.uk", "com.au",
        "net.au", "org.au", "edu.au", "gov.au", "co.nz", "org.nz", "net.nz", "co.jp", "ne.jp",
        "or.jp", "ac.jp", "co.za", "org.za", "com.br", "net.br", "org.br", "com.cn", "net.cn",
        "org.cn", "com.mx", "org.mx", "co.in", "net.in", "org.in", "firm.in", "com.sg", "com.hk",
        "com.tw", "co.kr", "or.kr", "com.tr", "co.il", "com.ar", "com.co", "co.id", "com.my",
        "com.ph", "com.vn", "co.th", "com.ua", "com.pl", "com.es", "co.at", "or.at",
    ];
    let domain = dkim::normalize_domain(domain);
    let labels: Vec<&str> = domain.split('.').collect();
    let n = labels.len();
    if n <= 2 {
        return domain;
    }
    let last_two = labels[n - 2..].join(".");
    let keep = if TWO_LEVEL.contains(&last_two.as_str()) {
        3
    } else {
        2
    };
    labels[n.saturating_sub(keep)..].join(".")
}

/// The DMARC record that applies to a domain: where it was found and its
/// text, or nothing, or why it could not be read.
enum DmarcLookup {
    Found {
        name: String,
        record: String,
        from_org: bool,
    },
    Several(String, usize),
    None,
    Failed(String, String),
}

async fn find_dmarc<D: Dns>(dns: &D, domain: &str) -> DmarcLookup {
    let org = organizational_domain(domain);
    let mut names = vec![format!("_dmarc.{domain}")];
    if org != domain {
        names.push(format!("_dmarc.{org}"));
    }
    for (i, name) in names.into_iter().enumerate() {
        let records = match dns.txt(&name).await {
            Ok(r) => r,
            Err(e) => return DmarcLookup::Failed(name, e.to_string()),
        };
        let dmarc: Vec<String> = records
            .into_iter()
            .filter(|r| {
                let r = r.trim_start().as_bytes();
                r.len() >= 8 && r[..8].eq_ignore_ascii_case(b"v=DMARC1")
            })
            .collect();
        match dmarc.len() {
            0 => continue,
            1 => {
                return DmarcLookup::Found {
                    name,
                    record: dmarc.into_iter().next().unwrap_or_default(),
                    from_org: i > 0,
                };
            }
            n => return DmarcLookup::Several(name, n),
        }
    }
    DmarcLookup::None
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dmarc {
    policy: String,
    subdomain_policy: Option<String>,
    adkim_strict: bool,
    aspf_strict: bool,
}

fn parse_dmarc(record: &str) -> Result<Dmarc, String> {
    let tags = tag_list(record)?;
    match tags.first() {
        Some((t, v)) if t == "v" && v.eq_ignore_ascii_case("DMARC1") => {}
        _ => return Err("v=DMARC1 must come first".to_string()),
    }
    let policy_value = |name: &str| -> Result<Option<String>, String> {
        match tag(&tags, name) {
            None => Ok(None),
            Some(v) => {
                let v = v.to_ascii_lowercase();
                if matches!(v.as_str(), "none" | "quarantine" | "reject") {
                    Ok(Some(v))
                } else {
                    Err(format!("{name}={v} is not none, quarantine or reject"))
                }
            }
        }
    };
    let alignment = |name: &str| -> Result<bool, String> {
        match tag(&tags, name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("r") => Ok(false),
            Some("s") => Ok(true),
            Some(other) => Err(format!("{name}={other} is not r or s")),
        }
    };
    let policy = policy_value("p")?.ok_or("no p= tag")?;
    let subdomain_policy = policy_value("sp")?;
    if let Some(pct) = tag(&tags, "pct")
        && !matches!(pct.parse::<u8>(), Ok(0..=100))
    {
        return Err(format!("pct={pct} is not 0 to 100"));
    }
    Ok(Dmarc {
        policy,
        subdomain_policy,
        adkim_strict: alignment("adkim")?,
        aspf_strict: alignment("aspf")?,
    })
}

fn judge_dmarc(
    lookup: DmarcLookup,
    domain: &str,
    spf: &Check,
    dkim: &Check,
    gateway: &GatewayDns,
) -> Check {
    let own_name = format!("_dmarc.{domain}");
    let (name, record, from_org) = match lookup {
        DmarcLookup::Failed(name, e) => {
            return Check::new(
                Status::Error,
                &name,
                None,
                format!("cannot read the DMARC record: {e}"),
            );
        }
        DmarcLookup::Several(name, n) => {
            return Check::new(
                Status::Error,
                &name,
                None,
                format!(
                    "{n} DMARC records at {name}; receivers ignore them all (RFC 7489 §6.6.3): \
                     keep one"
                ),
            );
        }
        DmarcLookup::None => {
            return Check::new(
                Status::Missing,
                &own_name,
                Some(DMARC_SUGGESTED.to_string()),
                format!(
                    "no DMARC policy for {domain}: publish this TXT record at {own_name} \
                     (p=none only asks for nothing; tighten it once mail passes)"
                ),
            );
        }
        DmarcLookup::Found {
            name,
            record,
            from_org,
        } => (name, record, from_org),
    };
    let dmarc = match parse_dmarc(&record) {
        Ok(d) => d,
        Err(e) => {
            return Check::new(
                Status::Error,
                &name,
                None,
                format!("the DMARC record at {name} is malformed: {e}"),
            );
        }
    };
    let applied = if from_org {
        dmarc
            .subdomain_policy
            .clone()
            .unwrap_or_else(|| dmarc.policy.clone())
    } else {
        dmarc.policy.clone()
    };
    let mut facts = vec![format!(
        "policy {applied} from {name}{}",
        if from_org {
            " (the organisational domain)"
        } else {
            ""
        }
    )];
    if dmarc.adkim_strict {
        facts.push("adkim=s (strict DKIM alignment)".to_string());
    }
    if dmarc.aspf_strict {
        facts.push("aspf=s (strict SPF alignment)".to_string());
    }
    let envelope = dkim::normalize_domain(&gateway.gateway_domain);
    let spf_aligns = if dmarc.aspf_strict {
        envelope == domain
    } else {
        organizational_domain(&envelope) == organizational_domain(domain)
    };
    let facts = facts.join(", ");
    if dkim.status == Status::Pass {
        Check::new(
            Status::Pass,
            &name,
            None,
            format!("{facts}; the gateway signs with d={domain}, so DKIM aligns"),
        )
    } else if spf.status == Status::Pass && spf_aligns {
        Check::new(
            Status::Pass,
            &name,
            None,
            format!("{facts}; SPF aligns through the envelope domain {envelope}"),
        )
    } else {
        let why = if spf_aligns {
            "SPF does not pass either"
        } else {
            "SPF cannot align: the envelope sender is on the gateway's domain"
        };
        Check::new(
            Status::Mismatch,
            &name,
            None,
            format!(
                "{facts}; alignment needs the DKIM record ({}): {why}",
                dkim.record_name
            ),
        )
    }
}

/// An in-memory [`Dns`] for unit tests: answers from a table, a name can be
/// made to fail.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::{Dns, LookupError};

    #[derive(Default)]
    pub(crate) struct MapDns {
        txt: HashMap<String, Vec<String>>,
        a: HashMap<String, Vec<Ipv4Addr>>,
        aaaa: HashMap<String, Vec<Ipv6Addr>>,
        mx: HashMap<String, Vec<String>>,
        failing: Vec<String>,
        /// Every query made: "TYPE name".
        pub(crate) queries: Mutex<Vec<String>>,
    }

    impl MapDns {
        pub(crate) fn new() -> MapDns {
            MapDns::default()
        }

        pub(crate) fn txt(mut self, name: &str, record: &str) -> MapDns {
            self.txt
                .entry(name.to_string())
                .or_default()
                .push(record.to_string());
            self
        }

        pub(crate) fn a(mut self, name: &str, ip: &str) -> MapDns {
            let ip = ip.parse().expect("test ip");
            self.a.entry(name.to_string()).or_default().push(ip);
            self
        }

        pub(crate) fn aaaa(mut self, name: &str, ip: &str) -> MapDns {
            let ip = ip.parse().expect("test ip");
            self.aaaa.entry(name.to_string()).or_default().push(ip);
            self
        }

        pub(crate) fn mx(mut self, name: &str, host: &str) -> MapDns {
            self.mx
                .entry(name.to_string())
                .or_default()
                .push(host.to_string());
            self
        }

        pub(crate) fn failing(mut self, name: &str) -> MapDns {
            self.failing.push(name.to_string());
            self
        }

        fn answer<T: Clone>(
            &self,
            kind: &str,
            map: &HashMap<String, Vec<T>>,
            name: &str,
        ) -> Result<Vec<T>, LookupError> {
            if let Ok(mut q) = self.queries.lock() {
                q.push(format!("{kind} {name}"));
            }
            if self.failing.iter().any(|f| f == name) {
                return Err(LookupError(format!("{kind} {name}: SERVFAIL")));
            }
            Ok(map.get(name).cloned().unwrap_or_default())
        }

        pub(crate) fn query_count(&self) -> usize {
            self.queries.lock().map(|q| q.len()).unwrap_or(0)
        }
    }

    impl Dns for MapDns {
        async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
            self.answer("TXT", &self.txt, name)
        }
        async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, LookupError> {
            self.answer("A", &self.a, name)
        }
        async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, LookupError> {
            self.answer("AAAA", &self.aaaa, name)
        }
        async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError> {
            self.answer("MX", &self.mx, name)
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::MapDns;
    use super::*;

    const KEY: &str = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";

    fn ed_key() -> String {
        // Any 32 bytes read as an Ed25519 public key.
        BASE64.encode([7u8; 32])
    }

    fn gateway(spf: &[&str]) -> GatewayDns {
        GatewayDns {
            spf: spf.iter().map(|s| s.to_string()).collect(),
            dkim_selector: "backchannel".into(),
            dkim_public_key_b64: Some(ed_key()),
            gateway_domain: "gw.example".into(),
        }
    }

    fn run(dns: &MapDns, domain: &str, gw: &GatewayDns) -> DnsHealth {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(check(dns, domain, &format!("support@{domain}"), gw))
    }

    fn dkim_record() -> String {
        format!("v=DKIM1; k=ed25519; p={}", ed_key())
    }

    #[test]
    fn everything_in_place_passes() {
        let dns = MapDns::new()
            .txt("acme.com", "v=spf1 include:_spf.gw.example -all")
            .txt("_spf.gw.example", "v=spf1 ip4:192.0.2.0/24 -all")
            .txt("backchannel._domainkey.acme.com", &dkim_record())
            .txt("_dmarc.acme.com", "v=DMARC1; p=reject; adkim=s");
        let h = run(
            &dns,
            "ACME.com.",
            &gateway(&["ip4:192.0.2.10", "include:_spf.gw.example"]),
        );
        assert_eq!(h.spf.status, Status::Pass, "{:?}", h.spf);
        assert_eq!(h.dkim.status, Status::Pass, "{:?}", h.dkim);
        assert_eq!(h.dmarc.status, Status::Pass, "{:?}", h.dmarc);
        assert!(h.dmarc.detail.contains("adkim=s"), "{}", h.dmarc.detail);
        assert_eq!(h.dkim.record_name, "backchannel._domainkey.acme.com");
        let json = serde_json::to_value(&h).expect("json");
        assert_eq!(json["spf"]["status"], "pass");
        assert_eq!(json["dkim"]["record_to_publish"], serde_json::Value::Null);
        let back: DnsHealth = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, h);
        let old: Check =
            serde_json::from_str(r#"{"status":"missing","record_to_publish":null,"detail":""}"#)
                .expect("without record_name");
        assert_eq!(old.status, Status::Missing);
    }

    #[test]
    fn spf_outcomes() {
        let gw = gateway(&["ip4:192.0.2.10", "ip6:2001:db8::/64"]);
        let missing = run(&MapDns::new(), "acme.com", &gw);
        assert_eq!(missing.spf.status, Status::Missing);
        assert_eq!(
            missing.spf.record_to_publish.as_deref(),
            Some("v=spf1 ip4:192.0.2.10 ip6:2001:db8::/64 ~all")
        );

        let partial = MapDns::new().txt("acme.com", "v=spf1 mx ip4:192.0.2.10 -all");
        let h = run(&partial, "acme.com", &gw);
        assert_eq!(h.spf.status, Status::Mismatch, "{:?}", h.spf);
        assert_eq!(
            h.spf.record_to_publish.as_deref(),
            Some("v=spf1 mx ip4:192.0.2.10 ip6:2001:db8::/64 -all")
        );
        assert!(
            h.spf.detail.contains("2001:db8:: gets fail"),
            "{}",
            h.spf.detail
        );
        assert!(
            h.spf
                .detail
                .contains("2001:db8::ffff:ffff:ffff:ffff gets fail"),
            "both ends of the range: {}",
            h.spf.detail
        );

        let several = MapDns::new()
            .txt("acme.com", "v=spf1 -all")
            .txt("acme.com", "v=spf1 +all");
        assert_eq!(run(&several, "acme.com", &gw).spf.status, Status::Error);

        let broken = MapDns::new().failing("acme.com");
        let h = run(&broken, "acme.com", &gw);
        assert_eq!(h.spf.status, Status::Error);
        assert!(h.spf.detail.contains("SERVFAIL"), "{}", h.spf.detail);

        let unconfigured = MapDns::new().txt("acme.com", "v=spf1 -all");
        assert_eq!(
            run(&unconfigured, "acme.com", &gateway(&[])).spf.status,
            Status::Pass
        );
        assert_eq!(
            run(&MapDns::new(), "acme.com", &gateway(&[]))
                .spf
                .record_to_publish,
            None
        );
    }

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
    fn dkim_outcomes() {
        let gw = gateway(&[]);
        let name = "backchannel._domainkey.acme.com";
        let status = |dns: MapDns| run(&dns, "acme.com", &gw).dkim;

        let missing = status(MapDns::new());
        assert_eq!(missing.status, Status::Missing);
        assert_eq!(missing.record_to_publish, Some(dkim_record()));

        let split = format!(
            "v=DKIM1; k=ed25519; p={} {}",
            &ed_key()[..10],
            &ed_key()[10..]
        );
        assert_eq!(status(MapDns::new().txt(name, &split)).status, Status::Pass);
        let quoted = format!("\"v=DKIM1; k=ed25519; p={}\"", ed_key());
        assert_eq!(
            status(MapDns::new().txt(name, &quoted)).status,
            Status::Pass
        );

        let wrong = status(MapDns::new().txt(name, &format!("v=DKIM1; k=ed25519; p={KEY}")));
        assert_eq!(wrong.status, Status::Mismatch);
        assert!(wrong.detail.contains("different key"), "{}", wrong.detail);
        assert_eq!(wrong.record_to_publish, Some(dkim_record()));

        let revoked = status(MapDns::new().txt(name, "v=DKIM1; k=ed25519; p="));
        assert_eq!(revoked.status, Status::Mismatch);
        assert!(revoked.detail.contains("revoked"), "{}", revoked.detail);

        let wrong_k = status(MapDns::new().txt(name, &format!("v=DKIM1; p={}", ed_key())));
        assert_eq!(wrong_k.status, Status::Mismatch);
        assert!(wrong_k.detail.contains("k=rsa"), "{}", wrong_k.detail);

        for malformed in [
            "v=DKIM1; k=ed25519; p=%%%%".to_string(),
            format!("v=DKIM1; k=ed25519; p={0}; p={0}", ed_key()),
            format!("v=DKIM2; k=ed25519; p={}", ed_key()),
            format!("v=DKIM1; k=ed25519; junk; p={}", ed_key()),
        ] {
            let c = status(MapDns::new().txt(name, &malformed));
            assert_eq!(c.status, Status::Mismatch, "{malformed}: {c:?}");
        }

        let other_txt = status(MapDns::new().txt(name, "hello world"));
        assert_eq!(other_txt.status, Status::Missing);

        let failing = status(MapDns::new().failing(name));
        assert_eq!(failing.status, Status::Error);

        let no_key = GatewayDns {
            dkim_public_key_b64: None,
            ..gateway(&[])
        };
        let c = run(&MapDns::new(), "acme.com", &no_key).dkim;
        assert_eq!((c.status, c.record_to_publish), (Status::Missing, None));
    }

    #[test]
    fn dmarc_outcomes() {
        let gw = gateway(&[]);
        let with_dkim = || MapDns::new().txt("backchannel._domainkey.acme.com", &dkim_record());

        let missing = run(&with_dkim(), "acme.com", &gw).dmarc;
        assert_eq!(missing.status, Status::Missing);
        assert_eq!(missing.record_to_publish.as_deref(), Some(DMARC_SUGGESTED));
        assert_eq!(missing.record_name, "_dmarc.acme.com");

        let reject = with_dkim().txt("_dmarc.acme.com", "v=DMARC1; p=reject; aspf=s");
        let c = run(&reject, "acme.com", &gw).dmarc;
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.detail.contains("aspf=s"), "{}", c.detail);

        let no_dkim = MapDns::new().txt("_dmarc.acme.com", "v=DMARC1; p=reject");
        let c = run(&no_dkim, "acme.com", &gw).dmarc;
        assert_eq!(c.status, Status::Mismatch);
        assert!(
            c.detail.contains("alignment needs the DKIM record"),
            "{}",
            c.detail
        );

        // SPF aligns when the envelope domain shares the organisational
        // domain and SPF passes.
        let same_org = GatewayDns {
            gateway_domain: "gw.acme.com".into(),
            spf: vec!["ip4:192.0.2.10".into()],
            ..gateway(&[])
        };
        let dns = MapDns::new()
            .txt("acme.com", "v=spf1 ip4:192.0.2.10 -all")
            .txt("_dmarc.acme.com", "v=DMARC1; p=quarantine");
        assert_eq!(run(&dns, "acme.com", &same_org).dmarc.status, Status::Pass);
        let strict = MapDns::new()
            .txt("acme.com", "v=spf1 ip4:192.0.2.10 -all")
            .txt("_dmarc.acme.com", "v=DMARC1; p=quarantine; aspf=s");
        assert_eq!(
            run(&strict, "acme.com", &same_org).dmarc.status,
            Status::Mismatch
        );

        let org = with_dkim()
            .txt("backchannel._domainkey.mail.acme.co.uk", &dkim_record())
            .txt("_dmarc.acme.co.uk", "v=DMARC1; p=none; sp=reject");
        let c = run(&org, "mail.acme.co.uk", &gw).dmarc;
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(c.record_name, "_dmarc.acme.co.uk");
        assert!(c.detail.contains("policy reject"), "{}", c.detail);

        for bad in [
            "v=DMARC1; p=maybe",
            "v=DMARC1; rua=mailto:x@acme.com",
            "v=DMARC1; p=none; adkim=x",
            "v=DMARC1; p=none; pct=150",
            "v=DMARC1 p=none",
        ] {
            let dns = with_dkim().txt("_dmarc.acme.com", bad);
            assert_eq!(
                run(&dns, "acme.com", &gw).dmarc.status,
                Status::Error,
                "{bad}"
            );
        }
        let two = with_dkim()
            .txt("_dmarc.acme.com", "v=DMARC1; p=none")
            .txt("_dmarc.acme.com", "v=DMARC1; p=reject");
        assert_eq!(run(&two, "acme.com", &gw).dmarc.status, Status::Error);
        let failing = with_dkim().failing("_dmarc.acme.com");
        assert_eq!(run(&failing, "acme.com", &gw).dmarc.status, Status::Error);
    }

    #[test]
    fn internationalised_domains_are_asked_in_ascii() {
        assert_eq!(ascii_domain("Bücher.example."), "xn--bcher-kva.example");
        assert_eq!(ascii_domain("ACME.com"), "acme.com");
        let dns = MapDns::new().txt("xn--bcher-kva.example", "v=spf1 ip4:192.0.2.10 -all");
        let h = run(&dns, "bücher.example", &gateway(&["ip4:192.0.2.10"]));
        assert_eq!(h.spf.status, Status::Pass, "{:?}", h.spf);
        assert_eq!(
            h.dkim.record_name,
            "backchannel._domainkey.xn--bcher-kva.example"
        );
    }

    #[test]
    fn organizational_domains() {
        for (domain, org) in [
            ("acme.com", "acme.com"),
            ("mail.acme.com", "acme.com"),
            ("a.b.mail.acme.com.", "acme.com"),
            ("mail.acme.co.uk", "acme.co.uk"),
            ("acme.co.uk", "acme.co.uk"),
            ("x.shop.com.au", "shop.com.au"),
            ("com", "com"),
            ("Mail.ACME.com", "acme.com"),
        ] {
            assert_eq!(organizational_domain(domain), org, "{domain}");
        }
    }
}
