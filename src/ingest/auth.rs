//! Message authentication: SPF, DKIM, DMARC and ARC results for an inbound
//! message, computed with mail-auth through the configured DNS resolver.
//!
//! [`Authenticator::authenticate`] never fails and never panics on hostile
//! input: a message that cannot be parsed gets `none`/`permerror` values, a
//! resolver that does not answer in time gets `temperror` values, and the
//! whole check is bounded by [`Authenticator::overall_timeout`] (`[dns]
//! timeout`).
//!
//! Time is spent in two phases so that a sender cannot turn a DMARC `fail`
//! into `temperror` with slow DNS of its own: SPF, DKIM and ARC run side by
//! side for at most half the budget, and whichever of them is late counts as
//! `temperror` (a late DKIM as one temperror per signature, so only a
//! signature aligned with the From domain can hold DMARC back). DMARC then
//! only queries the From domain's own tree, with the other half.

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, DnsError, Error as MailAuthError,
    MessageAuthenticator, SpfOutput, SpfResult,
};

use crate::config::DnsConfig;
pub use crate::model::auth::*;
use crate::net::dns::{self as net_dns, Cache};

/// The share of the budget (`[dns] timeout` for the whole check) that SPF,
/// DKIM and ARC (run side by side) may take; DMARC has the rest.
const FIRST_PHASE_SHARE: u32 = 2;
/// Responses kept by the resolver's cache: thousands of sender domains,
/// a few lookups each.
const CACHE_SIZE: u64 = 16_384;
/// Longest a negative answer (NXDOMAIN, no data) is kept whatever its SOA
/// says: RFC 2308 §5 suggests one to three hours.
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(3 * 3600);
/// Longest input-derived value copied into [`AuthResults::detail`].
const DETAIL_VALUE_MAX: usize = 100;
/// Most passing DKIM domains listed in [`AuthResults::detail`].
const DETAIL_DOMAINS_MAX: usize = 5;

/// Runs SPF/DKIM/DMARC/ARC checks against one resolver. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: MessageAuthenticator,
    /// Bound on SPF, DKIM and ARC.
    first_phase: Duration,
    /// Bound on the whole authentication.
    overall: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("overall_timeout", &self.inner.overall)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// A resolver on `dns.nameservers` (UDP and TCP each), or on the system
    /// configuration when that list is empty. One whole check takes at most
    /// `dns.timeout`: a lookup still unanswered then counts as `temperror`.
    ///
    /// Answers are kept in hickory's cache ([`CACHE_SIZE`] responses) for
    /// their TTL; negative answers for the SOA minimum (RFC 2308), at most
    /// [`NEGATIVE_MAX_TTL`]. Identical lookups in flight at once are sent
    /// once (hickory's name server pool shares them).
    pub fn new(dns: &DnsConfig) -> anyhow::Result<Authenticator> {
        let cache = Cache {
            size: CACHE_SIZE,
            max_ttl: None,
            negative_max_ttl: Some(NEGATIVE_MAX_TTL),
        };
        let resolver = net_dns::authenticator(dns, cache)?;
        Ok(Authenticator {
            inner: Arc::new(Inner {
                resolver,
                first_phase: dns.timeout / FIRST_PHASE_SHARE,
                overall: dns.timeout,
            }),
        })
    }

    /// The bound on one [`authenticate`](Self::authenticate) call.
    pub fn overall_timeout(&self) -> Duration {
        self.inner.overall
    }

    /// Authenticates `raw` (the message as received).
    ///
    /// `peer_ip`: SMTP client IP; `helo`: HELO/EHLO name; `mail_from`:
    /// envelope sender (`""` for `<>`); `host`: our hostname.
    pub async fn authenticate(
        &self,
        raw: &[u8],
        peer_ip: IpAddr,
        helo: &str,
        mail_from: &str,
        host: &str,
    ) -> AuthResults {
        let mut from_domain = None;
        let work = self.run(raw, peer_ip, helo, mail_from, host, &mut from_domain);
        let outcome = tokio::time::timeout(self.inner.overall, catch_unwind(work)).await;
        match outcome {
            Ok(Ok(results)) => results,
            Ok(Err(())) => {
                tracing::error!("message authentication panicked; recording permerror");
                AuthResults::all(
                    PERMERROR,
                    from_domain,
                    "internal error in message authentication".to_string(),
                )
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.inner.overall.as_millis() as u64,
                    "message authentication timed out"
                );
                AuthResults::all(
                    TEMPERROR,
                    from_domain,
                    format!(
                        "authentication timed out after {} ms",
                        self.inner.overall.as_millis()
                    ),
                )
            }
        }
    }

    async fn run(
        &self,
        raw: &[u8],
        peer_ip: IpAddr,
        helo: &str,
        mail_from: &str,
        host: &str,
        from_domain_out: &mut Option<String>,
    ) -> AuthResults {
        let resolver = &self.inner.resolver;
        let message = AuthenticatedMessage::parse(raw);
        let from_domains = message.as_ref().map(from_domains).unwrap_or_default();
        let from_domain = from_domains.first().cloned();
        from_domain_out.clone_from(&from_domain);

        // SPF on MAIL FROM, or on HELO for a null reverse path (RFC 7208 §2.4).
        let spf_params = if mail_from.is_empty() {
            SpfParameters::verify_ehlo(peer_ip, helo, host)
        } else {
            SpfParameters::verify_mail_from(peer_ip, helo, host, mail_from)
        };
        let spf_domain = spf_domain_of(mail_from, helo);
        let phase = self.inner.first_phase;
        let spf_fut = async {
            match tokio::time::timeout(phase, resolver.verify_spf(spf_params)).await {
                Ok(out) => out,
                Err(_) => SpfOutput::new(spf_domain.to_string()).with_result(SpfResult::TempError),
            }
        };

        let Some(message) = message else {
            let spf = spf_fut.await;
            let spf_value = spf_str(spf.result());
            let detail = format!(
                "{}; dkim=none; dmarc=permerror (message has no parsable header); arc=none",
                spf_detail(spf_value, mail_from, helo)
            );
            return AuthResults {
                spf: spf_value.to_string(),
                dkim: NONE.to_string(),
                dmarc: PERMERROR.to_string(),
                arc: NONE.to_string(),
                from_domain,
                detail,
                aligned_pass: false,
            };
        };

        let dkim_fut = async {
            match tokio::time::timeout(phase, resolver.verify_dkim(&message)).await {
                Ok(outputs) => outputs,
                Err(_) => message
                    .dkim_headers
                    .iter()
                    .map(|h| DkimOutput::temp_err(timed_out()).with_signature(&h.header))
                    .collect(),
            }
        };
        let has_arc_seal = message
            .raw_parsed_headers()
            .iter()
            .any(|(name, _)| name.trim_ascii().eq_ignore_ascii_case(b"ARC-Seal"));
        let arc_fut = async {
            if !has_arc_seal {
                return NONE;
            }
            match tokio::time::timeout(phase, resolver.verify_arc(&message)).await {
                // ARC-Seal present but no complete set: a broken chain.
                Ok(out) if matches!(out.result(), DkimResult::None) => FAIL,
                Ok(out) => arc_str(out.result()),
                Err(_) => TEMPERROR,
            }
        };
        // DMARC's tree walk asks its names one after the other; asked now,
        // side by side with SPF, DKIM and ARC, their answers are in the
        // resolver's cache (or in flight, and then shared) when DMARC needs
        // them, so a slow resolver costs one round trip rather than one per
        // label. Nothing waits for these lookups and their answers are only
        // kept by the cache; they end with this check at the latest (the
        // set aborts them when dropped).
        let mut _prefetch = tokio::task::JoinSet::new();
        if let [from] = from_domains.as_slice() {
            for name in dmarc_walk_names(from) {
                let resolver = resolver.0.clone();
                _prefetch.spawn(async move {
                    let _ = resolver.txt_lookup(name).await;
                });
            }
        }
        let (spf, dkim, arc_value) = tokio::join!(spf_fut, dkim_fut, arc_fut);

        let spf_value = spf_str(spf.result());
        let (dkim_value, dkim_detail) = dkim_summary(&dkim);

        let single_author = message.from.len() == 1
            && message
                .from
                .first()
                .is_some_and(|a| crate::model::is_author_address(a));
        let (dmarc_value, dmarc_detail) = match from_domains.len() {
            0 => (PERMERROR, "dmarc=permerror (no From address)".to_string()),
            1 if single_author => dmarc(resolver, &message, &dkim, spf_domain, &spf).await,
            1 if message.from.len() > 1 => (
                PERMERROR,
                "dmarc=permerror (From names several authors)".to_string(),
            ),
            1 => (
                PERMERROR,
                "dmarc=permerror (malformed From address)".to_string(),
            ),
            _ => (
                PERMERROR,
                "dmarc=permerror (From has several domains)".to_string(),
            ),
        };
        let aligned_pass = single_author
            && from_domain
                .as_deref()
                .is_some_and(|from| aligned_pass(dmarc_value, from, spf_value, spf_domain, &dkim));

        let detail = format!(
            "{}; {}; {}; arc={}",
            spf_detail(spf_value, mail_from, helo),
            dkim_detail,
            dmarc_detail,
            arc_value
        );
        AuthResults {
            spf: spf_value.to_string(),
            dkim: dkim_value.to_string(),
            dmarc: dmarc_value.to_string(),
            arc: arc_value.to_string(),
            from_domain,
            detail,
            aligned_pass,
        }
    }
}

/// SPEC §10's verified sender, given the verdicts: DMARC passes; or the
/// From domain publishes no DMARC policy at all (`none`: not a DNS error,
/// which is `temperror`) and SPF passes for an aligned envelope domain, or
/// a DKIM signature of an aligned domain passes. Alignment is relaxed
/// (RFC 7489 §3.1), by the organisational domain of the Public Suffix List.
fn aligned_pass(
    dmarc: &str,
    from_domain: &str,
    spf: &str,
    spf_domain: &str,
    dkim: &[DkimOutput<'_>],
) -> bool {
    match dmarc {
        PASS => true,
        NONE => {
            (spf == PASS && crate::model::aligned(spf_domain, from_domain))
                || dkim.iter().any(|out| {
                    dkim_str(out.result()) == PASS
                        && out
                            .signature()
                            .is_some_and(|sig| crate::model::aligned(&sig.d, from_domain))
                })
        }
        _ => false,
    }
}

async fn dmarc(
    resolver: &MessageAuthenticator,
    message: &AuthenticatedMessage<'_>,
    dkim: &[DkimOutput<'_>],
    mail_from_domain: &str,
    spf: &SpfOutput,
) -> (&'static str, String) {
    let out = resolver
        .verify_dmarc(DmarcParameters::new(message, dkim, mail_from_domain, spf))
        .await;
    let value = match out.result() {
        DmarcResult::Pass => PASS,
        DmarcResult::Fail(_) => FAIL,
        DmarcResult::TempError(_) => TEMPERROR,
        DmarcResult::PermError(_) => PERMERROR,
        DmarcResult::None => NONE,
    };
    let mut detail = format!("dmarc={value}");
    if !out.domain().is_empty() {
        detail.push_str(" header.from=");
        detail.push_str(&clean(out.domain()));
    }
    if out.dmarc_record().is_some() {
        detail.push_str(match out.policy() {
            Policy::Reject => " p=reject",
            Policy::Quarantine => " p=quarantine",
            Policy::None | Policy::Unspecified => " p=none",
        });
    }
    (value, detail)
}

/// The names mail-auth's DMARC tree walk (RFC 9989 §4.10.1) asks for
/// `domain`, in its order: `_dmarc.` and the domain, then with 7 labels
/// if it has 8 or more, then one label less at a time down to the
/// top-level domain (at most 8 names). Empty for a name of fewer than two
/// labels or one not in ASCII (mail-auth asks its A-label form).
fn dmarc_walk_names(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let total = labels.len();
    if total < 2 || !domain.is_ascii() {
        return Vec::new();
    }
    let mut names = Vec::new();
    let mut count = total;
    loop {
        names.push(format!("_dmarc.{}.", labels[total - count..].join(".")));
        if count == 1 {
            break;
        }
        count = if count >= 8 { 7 } else { count - 1 };
    }
    names
}

/// The domain SPF checks, which DMARC also aligns: the MAIL FROM domain, or
/// the HELO name for a null reverse path (RFC 7489 §4.1), as mail-auth's
/// `SpfParameters` picks it.
fn spf_domain_of<'a>(mail_from: &'a str, helo: &'a str) -> &'a str {
    if mail_from.is_empty() {
        helo
    } else {
        mail_from.rsplit_once('@').map_or(helo, |(_, d)| d)
    }
}

fn timed_out() -> MailAuthError {
    MailAuthError::Dns(DnsError::Resolver("timed out".to_string()))
}

/// The distinct domains of the From addresses (already lowercased by
/// mail-auth), in order of appearance.
fn from_domains(message: &AuthenticatedMessage<'_>) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    for addr in &message.from {
        let domain = addr
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_lowercase())
            .unwrap_or_default();
        if !domain.is_empty() && !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    domains
}

fn spf_str(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => PASS,
        SpfResult::Fail => FAIL,
        SpfResult::SoftFail => SOFTFAIL,
        SpfResult::Neutral => NEUTRAL,
        SpfResult::TempError => TEMPERROR,
        SpfResult::PermError => PERMERROR,
        SpfResult::None => NONE,
    }
}

fn spf_detail(value: &str, mail_from: &str, helo: &str) -> String {
    if mail_from.is_empty() {
        format!("spf={value} smtp.helo={}", clean(helo))
    } else {
        format!("spf={value} smtp.mailfrom={}", clean(mail_from))
    }
}

/// One DKIM signature's result. mail-auth reports a body hash mismatch as
/// `neutral`; RFC 6376 §6.1.3 makes it a verification failure, so `fail`.
fn dkim_str(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => PASS,
        DkimResult::Fail(_) => FAIL,
        DkimResult::Neutral(MailAuthError::Dkim(DkimError::FailedBodyHashMatch)) => FAIL,
        DkimResult::Neutral(_) => NEUTRAL,
        DkimResult::TempError(_) => TEMPERROR,
        DkimResult::PermError(_) => PERMERROR,
        DkimResult::None => NONE,
    }
}

/// The ARC chain's result: structural problems mail-auth calls `neutral`
/// (malformed ARC headers, body hash mismatch, expiry) are `fail`
/// (RFC 8617 §5.2).
fn arc_str(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Neutral(_) => FAIL,
        other => dkim_str(other),
    }
}

/// Summary over all signatures: `pass` if any passes, else the most telling
/// of the others (fail, temperror, permerror, neutral), else `none`.
fn dkim_summary(outputs: &[DkimOutput<'_>]) -> (&'static str, String) {
    const ORDER: [&str; 6] = [PASS, FAIL, TEMPERROR, PERMERROR, NEUTRAL, NONE];
    let mut best = NONE;
    let mut passing: Vec<String> = Vec::new();
    let mut reason: Option<String> = None;
    for out in outputs {
        let value = dkim_str(out.result());
        let rank = |v: &str| ORDER.iter().position(|o| *o == v).unwrap_or(ORDER.len());
        if rank(value) < rank(best) {
            best = value;
            if value != PASS {
                reason = Some(describe_dkim(out));
            }
        }
        if let (PASS, Some(sig)) = (value, out.signature()) {
            let d = clean(&sig.d.to_lowercase());
            if !passing.contains(&d) {
                passing.push(d);
            }
        }
    }
    let mut detail = format!("dkim={best}");
    if best == PASS {
        for d in passing.iter().take(DETAIL_DOMAINS_MAX) {
            detail.push_str(" header.d=");
            detail.push_str(d);
        }
    } else if let Some(reason) = reason {
        detail.push(' ');
        detail.push_str(&reason);
    }
    (best, detail)
}

fn describe_dkim(out: &DkimOutput<'_>) -> String {
    let err = match out.result() {
        DkimResult::Fail(e)
        | DkimResult::Neutral(e)
        | DkimResult::TempError(e)
        | DkimResult::PermError(e) => clean(&e.to_string()),
        DkimResult::Pass | DkimResult::None => String::new(),
    };
    match out.signature() {
        Some(sig) => format!("header.d={} ({err})", clean(&sig.d)),
        None => format!("({err})"),
    }
}

/// An input-derived value made safe for the one-line detail: control
/// characters and `;` replaced, length capped.
fn clean(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(DETAIL_VALUE_MAX)
        .map(|c| if c.is_control() || c == ';' { '?' } else { c })
        .collect();
    if value.chars().count() > DETAIL_VALUE_MAX {
        out.push('…');
    }
    out
}

/// Polls `fut`, turning a panic inside it into `Err(())` so that a bug in a
/// parser reached by hostile input cannot take the session task down.
async fn catch_unwind<F: Future>(fut: F) -> Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_replaces_controls_and_caps_length() {
        assert_eq!(clean("a;b\r\nc"), "a?b??c");
        let long = "x".repeat(500);
        assert_eq!(clean(&long).chars().count(), DETAIL_VALUE_MAX + 1);
    }

    #[test]
    fn dmarc_walk_names_follow_the_tree_walk() {
        assert_eq!(
            dmarc_walk_names("mail.vendor.example"),
            [
                "_dmarc.mail.vendor.example.",
                "_dmarc.vendor.example.",
                "_dmarc.example."
            ]
        );
        let deep = dmarc_walk_names("a.b.c.d.e.f.g.h.i.example");
        assert_eq!(deep.len(), 8);
        assert_eq!(deep[0], "_dmarc.a.b.c.d.e.f.g.h.i.example.");
        assert_eq!(deep[1], "_dmarc.d.e.f.g.h.i.example.");
        assert_eq!(deep[7], "_dmarc.example.");
        assert!(dmarc_walk_names("localhost").is_empty());
        assert!(dmarc_walk_names("bücher.example").is_empty());
    }

    #[test]
    fn dkim_summary_of_nothing_is_none() {
        assert_eq!(dkim_summary(&[]), (NONE, "dkim=none".to_string()));
    }

    #[test]
    fn body_hash_mismatch_is_fail() {
        let r = DkimResult::Neutral(MailAuthError::Dkim(DkimError::FailedBodyHashMatch));
        assert_eq!(dkim_str(&r), FAIL);
        assert_eq!(
            dkim_str(&DkimResult::Neutral(MailAuthError::ParseError)),
            NEUTRAL
        );
    }

    #[tokio::test]
    async fn catch_unwind_reports_panics() {
        assert_eq!(catch_unwind(async { 7 }).await, Ok(7));
        let boom = catch_unwind(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            7
        })
        .await;
        assert_eq!(boom, Err(()));
    }

    #[tokio::test]
    async fn zero_timeout_is_rejected() {
        let dns = DnsConfig {
            nameservers: vec!["127.0.0.1:9".parse().expect("addr")],
            timeout: Duration::ZERO,
        };
        assert!(Authenticator::new(&dns).is_err());
    }
}
