//! The DMARC check of a sender's domain: the policy that applies (the
//! domain's own, else its organisational domain's by the Public Suffix
//! List) and whether the gateway's mail can align with it, through DKIM
//! (`d=` the sender's domain) or SPF (the envelope domain).

use super::{Check, GatewayDns, Resolver, Status, tag, tag_list};
use crate::model::{aligned, organizational_domain};
use crate::senders::dkim;

/// The suggested DMARC policy when none is published.
pub const DMARC_SUGGESTED: &str = "v=DMARC1; p=none";

/// The DMARC record that applies to a domain: where it was found and its
/// text, or nothing, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DmarcLookup {
    Found {
        name: String,
        record: String,
        from_org: bool,
    },
    Several(String, usize),
    None,
    Failed(String, String),
}

/// Looks for the DMARC record at `_dmarc.<domain>`, then at
/// `_dmarc.<organisational domain>` (RFC 7489 §6.6.3).
pub(super) async fn find_dmarc(resolver: &Resolver, domain: &str) -> DmarcLookup {
    let org = organizational_domain(domain);
    let mut names = vec![format!("_dmarc.{domain}")];
    if org != domain {
        names.push(format!("_dmarc.{org}"));
    }
    for (i, name) in names.into_iter().enumerate() {
        let records = match resolver.txt(&name).await {
            Ok(r) => r,
            Err(e) => return DmarcLookup::Failed(name, e.to_string()),
        };
        let mut dmarc: Vec<String> = records
            .into_iter()
            .filter(|r| {
                let r = r.trim_start().as_bytes();
                r.len() >= 8 && r[..8].eq_ignore_ascii_case(b"v=DMARC1")
            })
            .collect();
        match (dmarc.pop(), dmarc.len()) {
            (None, _) => continue,
            (Some(record), 0) => {
                return DmarcLookup::Found {
                    name,
                    record,
                    from_org: i > 0,
                };
            }
            (Some(_), more) => return DmarcLookup::Several(name, more + 1),
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

/// The verdict on the DMARC record found for `domain`, given the SPF and
/// DKIM checks (pure).
pub(super) fn judge_dmarc(
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
        aligned(&envelope, domain)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Status, name: &str) -> Check {
        Check::new(status, name, None, "")
    }

    fn gateway(domain: &str) -> GatewayDns {
        GatewayDns {
            spf: Vec::new(),
            dkim_selector: "backchannel".into(),
            dkim_public_key_b64: None,
            gateway_domain: domain.into(),
        }
    }

    fn found(name: &str, record: &str, from_org: bool) -> DmarcLookup {
        DmarcLookup::Found {
            name: name.into(),
            record: record.into(),
            from_org,
        }
    }

    /// The verdict with DKIM passing or not and SPF passing.
    fn judge(lookup: DmarcLookup, domain: &str, dkim: Status, gw: &str) -> Check {
        let spf = check(Status::Pass, domain);
        let dkim = check(dkim, &format!("backchannel._domainkey.{domain}"));
        judge_dmarc(lookup, domain, &spf, &dkim, &gateway(gw))
    }

    #[test]
    fn dmarc_outcomes() {
        let missing = judge(DmarcLookup::None, "acme.com", Status::Pass, "gw.example");
        assert_eq!(missing.status, Status::Missing);
        assert_eq!(missing.record_to_publish.as_deref(), Some(DMARC_SUGGESTED));
        assert_eq!(missing.record_name, "_dmarc.acme.com");

        let reject = found("_dmarc.acme.com", "v=DMARC1; p=reject; aspf=s", false);
        let c = judge(reject.clone(), "acme.com", Status::Pass, "gw.example");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.detail.contains("aspf=s"), "{}", c.detail);

        let c = judge(reject, "acme.com", Status::Missing, "gw.example");
        assert_eq!(c.status, Status::Mismatch);
        assert!(
            c.detail.contains("alignment needs the DKIM record"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("cannot align"), "{}", c.detail);

        // SPF aligns when the envelope domain shares the organisational
        // domain (by the Public Suffix List) and SPF passes.
        let relaxed = found("_dmarc.acme.com", "v=DMARC1; p=quarantine", false);
        let c = judge(relaxed, "acme.com", Status::Missing, "gw.acme.com");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        let strict = found("_dmarc.acme.com", "v=DMARC1; p=quarantine; aspf=s", false);
        let c = judge(strict, "acme.com", Status::Missing, "gw.acme.com");
        assert_eq!(c.status, Status::Mismatch, "{c:?}");
        let unknown_spf = judge_dmarc(
            found("_dmarc.acme.com", "v=DMARC1; p=none", false),
            "acme.com",
            &check(Status::Unknown, "acme.com"),
            &check(Status::Missing, "backchannel._domainkey.acme.com"),
            &gateway("gw.acme.com"),
        );
        assert_eq!(unknown_spf.status, Status::Mismatch, "{unknown_spf:?}");

        let org = found("_dmarc.acme.co.uk", "v=DMARC1; p=none; sp=reject", true);
        let c = judge(org, "mail.acme.co.uk", Status::Pass, "gw.example");
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
            let c = judge(
                found("_dmarc.acme.com", bad, false),
                "acme.com",
                Status::Pass,
                "gw.example",
            );
            assert_eq!(c.status, Status::Error, "{bad}");
        }
        let two = DmarcLookup::Several("_dmarc.acme.com".into(), 2);
        assert_eq!(
            judge(two, "acme.com", Status::Pass, "gw.example").status,
            Status::Error
        );
        let failing = DmarcLookup::Failed("_dmarc.acme.com".into(), "SERVFAIL".into());
        assert_eq!(
            judge(failing, "acme.com", Status::Pass, "gw.example").status,
            Status::Error
        );
    }
}
