//! Sender DNS health against a fake DNS server on 127.0.0.1, one zone per
//! outcome: SPF as mail-auth evaluates it (direct, include chains,
//! redirect, macros, ranges, the gateway's include domain, missing,
//! mismatch, unknown, the 10-lookup limit, void lookups), DKIM
//! (both key types, CNAME, missing, wrong, revoked), DMARC (missing,
//! p=reject, organisational-domain fallback), a name server that never
//! answers; and generated DKIM keys that sign mail mail-auth verifies.

#[path = "common/dns.rs"]
mod dns;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use backchannel::config::DnsConfig;
use backchannel::ingest::auth::Authenticator;
use backchannel::outbound::compose::{DkimKey, dkim_sign};
use backchannel::senders::dkim::{self, Algorithm, GeneratedKey};
use backchannel::senders::dns::{
    DMARC_SUGGESTED, DnsHealth, GatewayDns, Resolver, SPF_BUDGET_TIMEOUTS, Status, check,
};
use backchannel::store::Store;
use dns::{FakeDns, RecordKind};

const SELECTOR: &str = "backchannel";
const TIMEOUT: Duration = Duration::from_secs(2);

fn txt<'a>(name: &'a str, text: &str) -> (&'a str, RecordKind) {
    (name, RecordKind::Txt(text.to_string()))
}

fn resolver(dns: &FakeDns, timeout: Duration) -> Resolver {
    Resolver::new(&DnsConfig {
        nameservers: vec![dns.addr],
        timeout,
    })
    .expect("resolver")
}

fn ed25519() -> GeneratedKey {
    dkim::generate(Algorithm::Ed25519).expect("ed25519 key")
}

fn gateway(spf: &[&str], key: Option<&GeneratedKey>) -> GatewayDns {
    GatewayDns {
        spf: spf.iter().map(|s| s.to_string()).collect(),
        dkim_selector: SELECTOR.into(),
        dkim_public_key_b64: key.map(|k| k.public_key_b64.clone()),
        gateway_domain: "gw.example".into(),
    }
}

async fn run(records: &[(&str, RecordKind)], domain: &str, gw: &GatewayDns) -> DnsHealth {
    let dns = FakeDns::start(records).await;
    let resolver = resolver(&dns, TIMEOUT);
    check(&resolver, domain, &format!("support@{domain}"), gw).await
}

async fn spf_of(records: &[(&str, RecordKind)], spf: &[&str]) -> backchannel::senders::dns::Check {
    run(records, "acme.com", &gateway(spf, None)).await.spf
}

// ---------------------------------------------------------------------------
// SPF

#[tokio::test]
async fn spf_direct_ip4_passes() {
    let c = spf_of(
        &[txt("acme.com", "v=spf1 mx ip4:192.0.2.10 -all")],
        &["ip4:192.0.2.10"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
    assert_eq!(c.record_to_publish, None);
}

#[tokio::test]
async fn spf_include_chain_passes() {
    let c = spf_of(
        &[
            txt("acme.com", "v=spf1 include:_spf.acme.com -all"),
            txt(
                "_spf.acme.com",
                "v=spf1 include:outbound.mailhost.example ~all",
            ),
            txt(
                "outbound.mailhost.example",
                "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all",
            ),
        ],
        &["ip4:192.0.2.10", "ip6:2001:db8::25"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

#[tokio::test]
async fn spf_a_and_mx_pass() {
    let c = spf_of(
        &[
            txt("acme.com", "v=spf1 a:out.acme.com mx -all"),
            (
                "out.acme.com",
                RecordKind::A("192.0.2.10".parse().expect("ip")),
            ),
            ("acme.com", RecordKind::Mx(10, "mx.acme.com".into())),
            (
                "mx.acme.com",
                RecordKind::A("192.0.2.11".parse().expect("ip")),
            ),
        ],
        &["ip4:192.0.2.10", "ip4:192.0.2.11"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

#[tokio::test]
async fn spf_missing_suggests_a_record() {
    let c = spf_of(
        &[txt("acme.com", "google-site-verification=abc")],
        &["ip4:192.0.2.10", "include:_spf.gw.example"],
    )
    .await;
    assert_eq!(c.status, Status::Missing, "{c:?}");
    assert_eq!(
        c.record_to_publish.as_deref(),
        Some("v=spf1 ip4:192.0.2.10 include:_spf.gw.example ~all")
    );
    assert_eq!(c.record_name, "acme.com");
}

#[tokio::test]
async fn spf_for_a_domain_that_does_not_exist_is_missing() {
    let c = spf_of(&[], &["ip4:192.0.2.10"]).await;
    assert_eq!(c.status, Status::Missing, "{c:?}");
}

#[tokio::test]
async fn spf_other_ips_with_fail_all_is_a_mismatch() {
    let c = spf_of(
        &[txt("acme.com", "v=spf1 ip4:198.51.100.0/24 -all")],
        &["ip4:192.0.2.10"],
    )
    .await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
    assert!(c.detail.contains("192.0.2.10 gets fail"), "{}", c.detail);
    assert_eq!(
        c.record_to_publish.as_deref(),
        Some("v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.10 -all")
    );
}

#[tokio::test]
async fn spf_softfail_is_a_mismatch_too() {
    let c = spf_of(
        &[
            txt("acme.com", "v=spf1 include:other.example ~all"),
            txt("other.example", "v=spf1 ip4:203.0.113.0/24 -all"),
        ],
        &["ip4:192.0.2.10", "include:_spf.gw.example"],
    )
    .await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
    assert!(
        c.detail.contains("192.0.2.10 gets softfail"),
        "{}",
        c.detail
    );
    assert!(
        c.detail
            .contains("include:_spf.gw.example is not part of the policy"),
        "{}",
        c.detail
    );
    assert_eq!(
        c.record_to_publish.as_deref(),
        Some("v=spf1 include:other.example ip4:192.0.2.10 include:_spf.gw.example ~all")
    );
}

#[tokio::test]
async fn spf_more_than_ten_lookups_is_an_error() {
    // acme.com → i1 → … → i11, the last one authorising the IP.
    let names: Vec<String> = (1..=11).map(|i| format!("i{i}.chain.example")).collect();
    let mut records = vec![txt("acme.com", "v=spf1 include:i1.chain.example -all")];
    for (i, name) in names.iter().enumerate() {
        let text = match names.get(i + 1) {
            Some(next) => format!("v=spf1 include:{next} -all"),
            None => "v=spf1 ip4:192.0.2.10 -all".to_string(),
        };
        records.push(txt(name, &text));
    }
    let c = spf_of(&records, &["ip4:192.0.2.10"]).await;
    assert_eq!(c.status, Status::Error, "{c:?}");
    assert!(c.detail.contains("permerror"), "{}", c.detail);
    assert!(c.detail.contains("more than 10"), "{}", c.detail);

    // Ten is still fine.
    let ten: Vec<(&str, RecordKind)> = records
        .iter()
        .skip(2)
        .cloned()
        .chain([txt("acme.com", "v=spf1 include:i2.chain.example -all")])
        .collect();
    let c = spf_of(&ten, &["ip4:192.0.2.10"]).await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

/// mail-auth does not apply RFC 7208 §4.6.4's limit of two void lookups
/// (the evaluator of our own that did was removed for it): names that
/// find nothing just do not match, and a later term still can.
#[tokio::test]
async fn spf_void_lookups_do_not_match_and_evaluation_goes_on() {
    let c = spf_of(
        &[txt(
            "acme.com",
            "v=spf1 a:gone1.acme.com a:gone2.acme.com mx:gone3.acme.com ip4:192.0.2.10 -all",
        )],
        &["ip4:192.0.2.10"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");

    let c = spf_of(
        &[txt(
            "acme.com",
            "v=spf1 a:gone1.acme.com mx:gone2.acme.com -all",
        )],
        &["ip4:192.0.2.10"],
    )
    .await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
    assert!(c.detail.contains("192.0.2.10 gets fail"), "{}", c.detail);
}

#[tokio::test]
async fn spf_redirect_is_followed() {
    let records = [
        txt("acme.com", "v=spf1 redirect=_spf.hosted.example"),
        txt("_spf.hosted.example", "v=spf1 ip4:192.0.2.10 -all"),
    ];
    let c = spf_of(&records, &["ip4:192.0.2.10"]).await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
    let c = spf_of(&records, &["ip4:192.0.2.99"]).await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
    assert_eq!(
        c.record_to_publish.as_deref(),
        Some("v=spf1 ip4:192.0.2.99 redirect=_spf.hosted.example")
    );
}

#[tokio::test]
async fn spf_include_of_the_gateway_domain_passes() {
    let c = spf_of(
        &[
            txt(
                "acme.com",
                "v=spf1 include:_spf.google.example include:_spf.gw.example -all",
            ),
            txt("_spf.google.example", "v=spf1 ip4:203.0.113.0/24 -all"),
        ],
        &["include:_spf.gw.example"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");

    // Nested one level down, and through redirect=.
    let c = spf_of(
        &[
            txt("acme.com", "v=spf1 include:_spf.acme.com -all"),
            txt("_spf.acme.com", "v=spf1 include:_spf.gw.example ~all"),
        ],
        &["include:_spf.gw.example"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
    let c = spf_of(
        &[txt("acme.com", "v=spf1 redirect=_spf.gw.example")],
        &["include:_spf.gw.example"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

#[tokio::test]
async fn spf_two_records_is_an_error() {
    let c = spf_of(
        &[
            txt("acme.com", "v=spf1 ip4:192.0.2.10 -all"),
            txt("acme.com", "v=spf1 include:_spf.gw.example -all"),
        ],
        &["ip4:192.0.2.10"],
    )
    .await;
    assert_eq!(c.status, Status::Error, "{c:?}");
    assert!(c.detail.contains("2 SPF records"), "{}", c.detail);
}

#[tokio::test]
async fn spf_without_an_outbound_path_is_unknown() {
    // Issue #22: nothing to check against is not a pass.
    let c = spf_of(&[txt("acme.com", "v=spf1 ip4:192.0.2.10 -all")], &[]).await;
    assert_eq!(c.status, Status::Unknown, "{c:?}");
    assert_eq!(c.status.as_str(), "unknown");
    assert!(c.detail.contains("[outbound] spf"), "{}", c.detail);
    assert!(c.detail.contains("nothing to check"), "{}", c.detail);
    assert_eq!(c.record_to_publish, None);
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(json["status"], "unknown");

    // Only entries that are not understood: nothing to check against either.
    let c = spf_of(
        &[txt("acme.com", "v=spf1 ip4:192.0.2.10 -all")],
        &["ip4:192.0.2.10/40"],
    )
    .await;
    assert_eq!(c.status, Status::Unknown, "{c:?}");
    assert!(c.detail.contains("not understood"), "{}", c.detail);

    // No policy at all is still missing, with nothing to suggest.
    let c = spf_of(&[], &[]).await;
    assert_eq!(c.status, Status::Missing, "{c:?}");
    assert_eq!(c.record_to_publish, None);
}

#[tokio::test]
async fn spf_ranges_are_checked_at_both_ends() {
    let gw = ["ip4:192.0.2.10", "ip6:2001:db8::/64"];
    let missing = spf_of(&[], &gw).await;
    assert_eq!(missing.status, Status::Missing, "{missing:?}");
    assert_eq!(
        missing.record_to_publish.as_deref(),
        Some("v=spf1 ip4:192.0.2.10 ip6:2001:db8::/64 ~all")
    );

    let c = spf_of(&[txt("acme.com", "v=spf1 mx ip4:192.0.2.10 -all")], &gw).await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
    assert_eq!(
        c.record_to_publish.as_deref(),
        Some("v=spf1 mx ip4:192.0.2.10 ip6:2001:db8::/64 -all")
    );
    assert!(c.detail.contains("2001:db8:: gets fail"), "{}", c.detail);
    assert!(
        c.detail.contains("2001:db8::ffff:ffff:ffff:ffff gets fail"),
        "{}",
        c.detail
    );

    // Half a range authorised is not enough.
    let c = spf_of(
        &[txt("acme.com", "v=spf1 ip6:2001:db8::/80 -all")],
        &["ip6:2001:db8::/64"],
    )
    .await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
    assert!(
        c.detail.contains("2001:db8::ffff:ffff:ffff:ffff gets fail"),
        "{}",
        c.detail
    );
    assert!(!c.detail.contains("2001:db8:: gets"), "{}", c.detail);
}

#[tokio::test]
async fn spf_macros_are_expanded() {
    // The reversed client address and the sender's local part
    // (support@acme.com), as mail-auth expands them.
    let records = [
        txt("acme.com", "v=spf1 exists:%{ir}.%{l}._spf.%{d} -all"),
        (
            "10.2.0.192.support._spf.acme.com",
            RecordKind::A("127.0.0.2".parse().expect("ip")),
        ),
    ];
    let c = spf_of(&records, &["ip4:192.0.2.10"]).await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
    let c = spf_of(&records, &["ip4:192.0.2.11"]).await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
    assert!(c.detail.contains("192.0.2.11 gets fail"), "{}", c.detail);

    // An include named by a macro, and the HELO name (the gateway's domain).
    let c = spf_of(
        &[
            txt("acme.com", "v=spf1 include:_spf.%{d} -all"),
            txt("_spf.acme.com", "v=spf1 exists:%{h}.ok.acme.com -all"),
            (
                "gw.example.ok.acme.com",
                RecordKind::A("127.0.0.2".parse().expect("ip")),
            ),
        ],
        &["ip4:192.0.2.10"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

#[tokio::test]
async fn spf_broken_policies_are_errors() {
    // An include whose domain publishes no SPF record: permerror.
    let no_record = [txt("acme.com", "v=spf1 include:nothing.example -all")];
    let c = spf_of(&no_record, &["ip4:192.0.2.10"]).await;
    assert_eq!(c.status, Status::Error, "{c:?}");
    assert!(c.detail.contains("permerror"), "{}", c.detail);
    assert_eq!(c.record_to_publish, None);
    // The include walk meets it too.
    let c = spf_of(&no_record, &["include:_spf.gw.example"]).await;
    assert_eq!(c.status, Status::Error, "{c:?}");
    assert!(c.detail.contains("nothing.example"), "{}", c.detail);

    // A syntax error in the domain's own record.
    let c = spf_of(
        &[txt("acme.com", "v=spf1 ip4:192.0.2 -all")],
        &["ip4:192.0.2.10"],
    )
    .await;
    assert_eq!(c.status, Status::Error, "{c:?}");
    assert!(c.detail.contains("malformed"), "{}", c.detail);
    // mail-auth's parser is lenient with an octet above 255 (it reads it
    // as 255), so such a record is evaluated rather than refused.
    let c = spf_of(
        &[txt("acme.com", "v=spf1 ip4:192.0.2.300 -all")],
        &["ip4:192.0.2.255"],
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");

    // An include loop: mail-auth stops at the lookup limit.
    let looped = [
        txt("acme.com", "v=spf1 include:a.loop.example -all"),
        txt("a.loop.example", "v=spf1 include:b.loop.example -all"),
        txt("b.loop.example", "v=spf1 include:a.loop.example -all"),
    ];
    let c = spf_of(&looped, &["ip4:192.0.2.10"]).await;
    assert_eq!(c.status, Status::Error, "{c:?}");
    // The include walk reads each record once and does not find ours.
    let c = spf_of(&looped, &["include:_spf.gw.example"]).await;
    assert_eq!(c.status, Status::Mismatch, "{c:?}");
}

#[tokio::test]
async fn spf_include_search_is_bounded() {
    // acme.com → i1 → … → i11 → include:_spf.gw.example: too deep.
    let names: Vec<String> = (1..=11).map(|i| format!("i{i}.chain.example")).collect();
    let mut records = vec![txt("acme.com", "v=spf1 include:i1.chain.example -all")];
    for (i, name) in names.iter().enumerate() {
        let next = names
            .get(i + 1)
            .map_or("_spf.gw.example".to_string(), |n| n.clone());
        records.push(txt(name, &format!("v=spf1 include:{next} -all")));
    }
    let c = spf_of(&records, &["include:_spf.gw.example"]).await;
    assert_eq!(c.status, Status::Error, "{c:?}");
    assert!(c.detail.contains("more than 10"), "{}", c.detail);

    // Found within ten lookups.
    let c = spf_of(&records[3..], &["include:_spf.gw.example"]).await;
    assert_eq!(c.status, Status::Missing, "acme.com left out: {c:?}");
    let mut shorter: Vec<(&str, RecordKind)> = records[3..].to_vec();
    shorter.push(txt("acme.com", "v=spf1 include:i3.chain.example -all"));
    let c = spf_of(&shorter, &["include:_spf.gw.example"]).await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

#[tokio::test]
async fn everything_in_place_passes() {
    let key = ed25519();
    let h = run(
        &[
            txt("acme.com", "v=spf1 include:_spf.gw.example -all"),
            txt("_spf.gw.example", "v=spf1 ip4:192.0.2.0/24 -all"),
            txt("backchannel._domainkey.acme.com", &dkim::record(&key)),
            txt("_dmarc.acme.com", "v=DMARC1; p=reject; adkim=s"),
        ],
        "ACME.com.",
        &gateway(&["ip4:192.0.2.10", "include:_spf.gw.example"], Some(&key)),
    )
    .await;
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
}

#[tokio::test]
async fn internationalised_domains_are_asked_in_ascii() {
    let h = run(
        &[txt("xn--bcher-kva.example", "v=spf1 ip4:192.0.2.10 -all")],
        "bücher.example",
        &gateway(&["ip4:192.0.2.10"], None),
    )
    .await;
    assert_eq!(h.spf.status, Status::Pass, "{:?}", h.spf);
    assert_eq!(h.spf.record_name, "xn--bcher-kva.example");
    assert_eq!(
        h.dkim.record_name,
        "backchannel._domainkey.xn--bcher-kva.example"
    );
}

// ---------------------------------------------------------------------------
// DKIM

#[tokio::test]
async fn dkim_pass_for_both_key_types() {
    for algorithm in [Algorithm::Ed25519, Algorithm::Rsa2048] {
        let key = dkim::generate(algorithm).expect("key");
        let record = dkim::record(&key);
        let h = run(
            &[txt("backchannel._domainkey.acme.com", &record)],
            "acme.com",
            &gateway(&[], Some(&key)),
        )
        .await;
        assert_eq!(h.dkim.status, Status::Pass, "{algorithm}: {:?}", h.dkim);
        assert!(
            h.dkim.detail.contains(algorithm.as_str()),
            "{}",
            h.dkim.detail
        );
    }
}

#[tokio::test]
async fn dkim_record_behind_a_cname_passes() {
    let key = ed25519();
    let h = run(
        &[
            (
                "backchannel._domainkey.acme.com",
                RecordKind::Cname("acme.keys.provider.example".into()),
            ),
            txt("acme.keys.provider.example", &dkim::record(&key)),
        ],
        "acme.com",
        &gateway(&[], Some(&key)),
    )
    .await;
    assert_eq!(h.dkim.status, Status::Pass, "{:?}", h.dkim);
}

#[tokio::test]
async fn dkim_missing_wrong_and_revoked() {
    let key = dkim::generate(Algorithm::Rsa2048).expect("key");
    let gw = gateway(&[], Some(&key));

    let missing = run(&[], "acme.com", &gw).await.dkim;
    assert_eq!(missing.status, Status::Missing, "{missing:?}");
    assert_eq!(missing.record_to_publish, Some(dkim::record(&key)));
    assert_eq!(missing.record_name, "backchannel._domainkey.acme.com");
    assert!(
        missing.detail.contains("255"),
        "long-record hint: {}",
        missing.detail
    );

    let other = dkim::generate(Algorithm::Rsa2048).expect("other key");
    let wrong = run(
        &[txt(
            "backchannel._domainkey.acme.com",
            &dkim::record(&other),
        )],
        "acme.com",
        &gw,
    )
    .await
    .dkim;
    assert_eq!(wrong.status, Status::Mismatch, "{wrong:?}");
    assert!(wrong.detail.contains("different key"), "{}", wrong.detail);
    assert_eq!(wrong.record_to_publish, Some(dkim::record(&key)));

    let revoked = run(
        &[txt("backchannel._domainkey.acme.com", "v=DKIM1; k=rsa; p=")],
        "acme.com",
        &gw,
    )
    .await
    .dkim;
    assert_eq!(revoked.status, Status::Mismatch, "{revoked:?}");
    assert!(revoked.detail.contains("revoked"), "{}", revoked.detail);

    let malformed = run(
        &[txt(
            "backchannel._domainkey.acme.com",
            "v=DKIM1; k=rsa; p=not*base64",
        )],
        "acme.com",
        &gw,
    )
    .await
    .dkim;
    assert_eq!(malformed.status, Status::Mismatch, "{malformed:?}");
    assert!(
        malformed.detail.contains("malformed"),
        "{}",
        malformed.detail
    );
}

// ---------------------------------------------------------------------------
// DMARC

#[tokio::test]
async fn dmarc_missing_suggests_p_none() {
    let key = ed25519();
    let h = run(
        &[txt("backchannel._domainkey.acme.com", &dkim::record(&key))],
        "acme.com",
        &gateway(&[], Some(&key)),
    )
    .await;
    assert_eq!(h.dmarc.status, Status::Missing, "{:?}", h.dmarc);
    assert_eq!(h.dmarc.record_to_publish.as_deref(), Some(DMARC_SUGGESTED));
    assert_eq!(h.dmarc.record_name, "_dmarc.acme.com");
}

#[tokio::test]
async fn dmarc_reject_passes_when_dkim_passes() {
    let key = ed25519();
    let gw = gateway(&[], Some(&key));
    let dmarc = txt(
        "_dmarc.acme.com",
        "v=DMARC1; p=reject; adkim=s; rua=mailto:d@acme.com",
    );
    let h = run(
        &[
            txt("backchannel._domainkey.acme.com", &dkim::record(&key)),
            dmarc.clone(),
        ],
        "acme.com",
        &gw,
    )
    .await;
    assert_eq!(h.dmarc.status, Status::Pass, "{:?}", h.dmarc);
    assert!(h.dmarc.detail.contains("reject"), "{}", h.dmarc.detail);
    assert!(h.dmarc.detail.contains("adkim=s"), "{}", h.dmarc.detail);

    // Without the DKIM record, alignment is not possible: the envelope
    // sender is on the gateway's domain.
    let h = run(&[dmarc], "acme.com", &gw).await;
    assert_eq!(h.dkim.status, Status::Missing);
    assert_eq!(h.dmarc.status, Status::Mismatch, "{:?}", h.dmarc);
    assert!(
        h.dmarc.detail.contains("alignment needs the DKIM record"),
        "{}",
        h.dmarc.detail
    );
}

#[tokio::test]
async fn dmarc_falls_back_to_the_organisational_domain() {
    let key = ed25519();
    let h = run(
        &[
            txt("backchannel._domainkey.help.acme.com", &dkim::record(&key)),
            txt("_dmarc.acme.com", "v=DMARC1; p=quarantine; sp=reject"),
        ],
        "help.acme.com",
        &gateway(&[], Some(&key)),
    )
    .await;
    assert_eq!(h.dkim.status, Status::Pass, "{:?}", h.dkim);
    assert_eq!(h.dmarc.status, Status::Pass, "{:?}", h.dmarc);
    assert_eq!(h.dmarc.record_name, "_dmarc.acme.com");
    assert!(
        h.dmarc.detail.contains("policy reject"),
        "sp= applies: {}",
        h.dmarc.detail
    );
    assert!(
        h.dmarc.detail.contains("organisational"),
        "{}",
        h.dmarc.detail
    );
}

#[tokio::test]
async fn dmarc_aligns_through_spf_on_the_same_organisational_domain() {
    let gw = GatewayDns {
        gateway_domain: "gw.acme.com".into(),
        ..gateway(&["ip4:192.0.2.10"], None)
    };
    let spf = txt("acme.com", "v=spf1 ip4:192.0.2.10 -all");
    let h = run(
        &[
            spf.clone(),
            txt("_dmarc.acme.com", "v=DMARC1; p=quarantine"),
        ],
        "acme.com",
        &gw,
    )
    .await;
    assert_eq!(h.spf.status, Status::Pass, "{:?}", h.spf);
    assert_eq!(h.dmarc.status, Status::Pass, "{:?}", h.dmarc);
    assert!(h.dmarc.detail.contains("SPF aligns"), "{}", h.dmarc.detail);

    let h = run(
        &[
            spf,
            txt("_dmarc.acme.com", "v=DMARC1; p=quarantine; aspf=s"),
        ],
        "acme.com",
        &gw,
    )
    .await;
    assert_eq!(h.dmarc.status, Status::Mismatch, "{:?}", h.dmarc);
}

#[tokio::test]
async fn dmarc_organisational_domain_follows_the_public_suffix_list() {
    // kyoto.jp is a public suffix the old built-in list did not know.
    for (domain, org) in [
        ("mail.acme.co.uk", "acme.co.uk"),
        ("help.acme.kyoto.jp", "acme.kyoto.jp"),
    ] {
        let key = ed25519();
        let dmarc_name = format!("_dmarc.{org}");
        let dkim_name = format!("backchannel._domainkey.{domain}");
        let h = run(
            &[
                txt(&dkim_name, &dkim::record(&key)),
                txt(&dmarc_name, "v=DMARC1; p=none; sp=reject"),
            ],
            domain,
            &gateway(&[], Some(&key)),
        )
        .await;
        assert_eq!(h.dmarc.status, Status::Pass, "{domain}: {:?}", h.dmarc);
        assert_eq!(h.dmarc.record_name, dmarc_name);
        assert!(
            h.dmarc.detail.contains("policy reject"),
            "{}",
            h.dmarc.detail
        );
    }
}

#[tokio::test]
async fn dmarc_malformed_is_an_error() {
    let h = run(
        &[txt("_dmarc.acme.com", "v=DMARC1; p=sometimes")],
        "acme.com",
        &gateway(&[], None),
    )
    .await;
    assert_eq!(h.dmarc.status, Status::Error, "{:?}", h.dmarc);
    assert!(h.dmarc.detail.contains("malformed"), "{}", h.dmarc.detail);
}

// ---------------------------------------------------------------------------
// DNS failures

#[tokio::test]
async fn stalled_dns_is_an_error_within_the_timeout() {
    let key = ed25519();
    let dns = FakeDns::start_with_stalled(
        &[txt("acme.com", "v=spf1 ip4:192.0.2.10 -all")],
        &["acme.com"],
    )
    .await;
    let timeout = Duration::from_millis(500);
    let resolver = resolver(&dns, timeout);
    let started = Instant::now();
    let h = check(
        &resolver,
        "acme.com",
        "support@acme.com",
        &gateway(&["ip4:192.0.2.10"], Some(&key)),
    )
    .await;
    let took = started.elapsed();
    for (name, c) in [("spf", &h.spf), ("dkim", &h.dkim), ("dmarc", &h.dmarc)] {
        assert_eq!(c.status, Status::Error, "{name}: {c:?}");
        assert!(
            c.detail.contains("no answer within"),
            "{name}: {}",
            c.detail
        );
    }
    // The checks run side by side and each lookup gives up after the
    // timeout; the SPF budget bounds the whole.
    assert!(
        took < timeout * SPF_BUDGET_TIMEOUTS + Duration::from_secs(2),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_stalled_include_is_an_error_within_the_spf_budget() {
    let dns = FakeDns::start_with_stalled(
        &[txt("acme.com", "v=spf1 include:slow.example -all")],
        &["slow.example"],
    )
    .await;
    let timeout = Duration::from_millis(300);
    let resolver = resolver(&dns, timeout);
    for entries in [
        &["ip4:192.0.2.10", "ip6:2001:db8::/64"][..],
        &["include:_spf.gw.example"][..],
    ] {
        let started = Instant::now();
        let h = check(
            &resolver,
            "acme.com",
            "support@acme.com",
            &gateway(entries, None),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(h.spf.status, Status::Error, "{entries:?}: {:?}", h.spf);
        assert!(
            h.spf.detail.contains("temperror") || h.spf.detail.contains("took longer"),
            "{}",
            h.spf.detail
        );
        assert!(
            took < timeout * SPF_BUDGET_TIMEOUTS + Duration::from_secs(1),
            "took {took:?}"
        );
    }
}

#[tokio::test]
async fn unreachable_dns_is_an_error() {
    let addr = dns::closed_addr().await;
    let resolver = Resolver::new(&DnsConfig {
        nameservers: vec![addr],
        timeout: Duration::from_millis(500),
    })
    .expect("resolver");
    let h = check(
        &resolver,
        "acme.com",
        "support@acme.com",
        &gateway(&["ip4:192.0.2.10"], None),
    )
    .await;
    assert_eq!(h.spf.status, Status::Error, "{:?}", h.spf);
    assert_eq!(h.dmarc.status, Status::Error, "{:?}", h.dmarc);
}

// ---------------------------------------------------------------------------
// Generated keys sign mail that verifies

fn message() -> Vec<u8> {
    b"From: Acme Support <support@acme.com>\r\n\
To: vera@carrier.example\r\n\
Subject: Pallet 7\r\n\
Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <abc.1.xyz@gw.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Where is pallet 7?\r\n"
        .to_vec()
}

#[tokio::test]
async fn generated_keys_sign_mail_that_verifies() {
    for algorithm in [Algorithm::Ed25519, Algorithm::Rsa2048] {
        let key = dkim::generate(algorithm).expect("key");
        let record = dkim::record(&key);
        if algorithm == Algorithm::Rsa2048 {
            assert!(record.len() > 255, "split over several TXT strings");
        }
        let dns = FakeDns::start(&[
            txt("backchannel._domainkey.acme.com", &record),
            txt("_dmarc.acme.com", "v=DMARC1; p=reject"),
        ])
        .await;
        let signing = DkimKey {
            domain: "acme.com".into(),
            selector: SELECTOR.into(),
            algorithm: key.algorithm.as_str().into(),
            private_key: key.private_key_pkcs8_der.clone(),
        };
        let signed = dkim_sign(&message(), &signing).expect("sign");
        let auth = Authenticator::new(&DnsConfig {
            nameservers: vec![dns.addr],
            timeout: TIMEOUT,
        })
        .expect("authenticator");
        let peer: IpAddr = "192.0.2.10".parse().expect("ip");
        let result = auth
            .authenticate(
                &signed,
                peer,
                "gw.example",
                "bounce+x@gw.example",
                "mx.carrier.example",
            )
            .await;
        assert_eq!(result.dkim, "pass", "{algorithm}: {result:?}");
        assert_eq!(result.dmarc, "pass", "{algorithm}: {result:?}");

        // And the health check agrees.
        let resolver = resolver(&dns, TIMEOUT);
        let h = check(
            &resolver,
            "acme.com",
            "support@acme.com",
            &gateway(&[], Some(&key)),
        )
        .await;
        assert_eq!(h.dkim.status, Status::Pass, "{algorithm}: {:?}", h.dkim);
        assert_eq!(h.dmarc.status, Status::Pass, "{algorithm}: {:?}", h.dmarc);
    }
}

#[tokio::test]
async fn stored_key_signs_and_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db.sqlite")).expect("store");
    let first = store
        .write_with(|c| dkim::ensure_key(c, "acme.com", SELECTOR, Algorithm::Rsa2048))
        .await
        .expect("ensure key");
    let again = store
        .write_with(|c| dkim::ensure_key(c, "ACME.com", "other", Algorithm::Ed25519))
        .await
        .expect("ensure key again");
    assert_eq!(first, again, "one key per domain, kept");
    assert_eq!(first.algorithm, Algorithm::Rsa2048);

    let dns = FakeDns::start(&[txt("backchannel._domainkey.acme.com", &first.record())]).await;
    let signed = dkim_sign(&message(), &first.signing_key()).expect("sign");
    let auth = Authenticator::new(&DnsConfig {
        nameservers: vec![dns.addr],
        timeout: TIMEOUT,
    })
    .expect("authenticator");
    let result = auth
        .authenticate(
            &signed,
            "192.0.2.10".parse().expect("ip"),
            "gw.example",
            "bounce+x@gw.example",
            "mx.carrier.example",
        )
        .await;
    assert_eq!(result.dkim, "pass", "{result:?}");
    store.close();
}
