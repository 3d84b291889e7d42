//! The DKIM check of a sender's domain: does the TXT record at
//! `<selector>._domainkey.<domain>` hold the gateway's key, with the type
//! (`k=`) it has; the record to publish when it does not.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Check, GatewayDns, LookupError, Resolver, Status, tag, tag_list};
use crate::senders::dkim;

/// Reads the DKIM record of `domain` and judges it.
pub(super) async fn check_dkim(resolver: &Resolver, domain: &str, gateway: &GatewayDns) -> Check {
    let name = format!("{}._domainkey.{domain}", gateway.dkim_selector);
    let records = resolver.txt(&name).await;
    judge_dkim(&name, domain, records, gateway)
}

/// The verdict on the TXT records found at `name` (pure).
fn judge_dkim(
    name: &str,
    domain: &str,
    records: Result<Vec<String>, LookupError>,
    gateway: &GatewayDns,
) -> Check {
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
    let records = match records {
        Ok(r) => r,
        Err(e) => {
            return Check::new(
                Status::Error,
                name,
                None,
                format!("cannot read the DKIM record: {e}"),
            );
        }
    };
    let (Some(ours), Some(algorithm), Some(wanted)) = (ours, algorithm, wanted) else {
        return Check::new(
            Status::Missing,
            name,
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
                name,
                Some(wanted),
                format!("no DKIM record at {name}: publish this TXT record there{long_note}"),
            );
        }
        [one] => one,
        many => {
            return Check::new(
                Status::Mismatch,
                name,
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
            name,
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
        name,
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

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "backchannel._domainkey.acme.com";
    const KEY: &str = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";

    fn ed_key() -> String {
        // Any 32 bytes read as an Ed25519 public key.
        BASE64.encode([7u8; 32])
    }

    fn gateway(key: Option<String>) -> GatewayDns {
        GatewayDns {
            spf: Vec::new(),
            dkim_selector: "backchannel".into(),
            dkim_public_key_b64: key,
            gateway_domain: "gw.example".into(),
        }
    }

    fn dkim_record() -> String {
        format!("v=DKIM1; k=ed25519; p={}", ed_key())
    }

    fn judge(records: &[&str]) -> Check {
        let records = records.iter().map(|r| r.to_string()).collect();
        judge_dkim(NAME, "acme.com", Ok(records), &gateway(Some(ed_key())))
    }

    #[test]
    fn dkim_outcomes() {
        let missing = judge(&[]);
        assert_eq!(missing.status, Status::Missing);
        assert_eq!(missing.record_to_publish, Some(dkim_record()));
        assert_eq!(missing.record_name, NAME);

        assert_eq!(judge(&[&dkim_record()]).status, Status::Pass);
        let split = format!(
            "v=DKIM1; k=ed25519; p={} {}",
            &ed_key()[..10],
            &ed_key()[10..]
        );
        assert_eq!(judge(&[&split]).status, Status::Pass);
        let quoted = format!("\"v=DKIM1; k=ed25519; p={}\"", ed_key());
        assert_eq!(judge(&[&quoted]).status, Status::Pass);

        let wrong = judge(&[&format!("v=DKIM1; k=ed25519; p={KEY}")]);
        assert_eq!(wrong.status, Status::Mismatch);
        assert!(wrong.detail.contains("different key"), "{}", wrong.detail);
        assert_eq!(wrong.record_to_publish, Some(dkim_record()));

        let revoked = judge(&["v=DKIM1; k=ed25519; p="]);
        assert_eq!(revoked.status, Status::Mismatch);
        assert!(revoked.detail.contains("revoked"), "{}", revoked.detail);

        let wrong_k = judge(&[&format!("v=DKIM1; p={}", ed_key())]);
        assert_eq!(wrong_k.status, Status::Mismatch);
        assert!(wrong_k.detail.contains("k=rsa"), "{}", wrong_k.detail);

        for malformed in [
            "v=DKIM1; k=ed25519; p=%%%%".to_string(),
            format!("v=DKIM1; k=ed25519; p={0}; p={0}", ed_key()),
            format!("v=DKIM2; k=ed25519; p={}", ed_key()),
            format!("v=DKIM1; k=ed25519; junk; p={}", ed_key()),
        ] {
            let c = judge(&[&malformed]);
            assert_eq!(c.status, Status::Mismatch, "{malformed}: {c:?}");
        }

        let two = judge(&[&dkim_record(), &dkim_record()]);
        assert_eq!(two.status, Status::Mismatch, "{two:?}");

        assert_eq!(judge(&["hello world"]).status, Status::Missing);

        let failing = judge_dkim(
            NAME,
            "acme.com",
            Err(LookupError("TXT x: SERVFAIL".into())),
            &gateway(Some(ed_key())),
        );
        assert_eq!(failing.status, Status::Error);
        assert!(failing.detail.contains("SERVFAIL"), "{}", failing.detail);

        let no_key = judge_dkim(NAME, "acme.com", Ok(Vec::new()), &gateway(None));
        assert_eq!(
            (no_key.status, no_key.record_to_publish),
            (Status::Missing, None)
        );
    }
}
