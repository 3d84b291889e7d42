//! Message authentication against a fake DNS server on 127.0.0.1: SPF, DKIM
//! (RSA-2048, so the key's TXT record spans several character-strings),
//! DMARC, ARC, hostile input and a resolver that does not answer.

#[path = "common/dns.rs"]
mod dns;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use backchannel::config::DnsConfig;
use backchannel::ingest::auth::{AuthResults, Authenticator};
use dns::{FakeDns, RecordKind};
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const HOST: &str = "gw.example.com";
const VENDOR_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Not in vendor.example's SPF record. Only ever passed as a parameter.
const STRANGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const VALUES: [&str; 7] = [
    "pass",
    "fail",
    "softfail",
    "neutral",
    "none",
    "temperror",
    "permerror",
];

// ---------------------------------------------------------------------------
// Keys and records

/// One RSA-2048 key (PKCS#8 DER) for the whole test binary.
fn rsa_pkcs8() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate rsa");
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().expect("pkcs8");
        der.as_ref().to_vec()
    })
}

fn rsa_key() -> RsaKey<Sha256> {
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        rsa_pkcs8().to_vec(),
    )))
    .expect("rsa key")
}

fn ed25519_pkcs8() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| Ed25519Key::generate_pkcs8().expect("generate ed25519"))
}

fn ed25519_key() -> Ed25519Key {
    Ed25519Key::from_pkcs8_der(ed25519_pkcs8()).expect("ed25519 key")
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn rsa_dkim_record() -> String {
    format!("v=DKIM1; k=rsa; p={}", base64(&rsa_key().public_key()))
}

fn ed25519_dkim_record() -> String {
    format!(
        "v=DKIM1; k=ed25519; p={}",
        base64(&ed25519_key().public_key())
    )
}

/// vendor.example: SPF for 127.0.0.1 only, an RSA DKIM key at `sel`, DMARC
/// p=reject; forwarder.example: an Ed25519 ARC key at `arc`; a HELO name
/// with its own SPF record.
fn vendor_records() -> Vec<(&'static str, RecordKind)> {
    vec![
        (
            "vendor.example",
            RecordKind::Txt("v=spf1 ip4:127.0.0.1 -all".into()),
        ),
        (
            "vendor.example",
            RecordKind::Mx(10, "mx.vendor.example".into()),
        ),
        ("mx.vendor.example", RecordKind::A(Ipv4Addr::LOCALHOST)),
        (
            "sel._domainkey.vendor.example",
            RecordKind::Txt(rsa_dkim_record()),
        ),
        (
            "_dmarc.vendor.example",
            RecordKind::Txt("v=DMARC1; p=reject".into()),
        ),
        (
            "mail.vendor.example",
            RecordKind::Txt("v=spf1 ip4:127.0.0.1 -all".into()),
        ),
        ("mail.vendor.example", RecordKind::A(Ipv4Addr::LOCALHOST)),
        (
            "arc._domainkey.forwarder.example",
            RecordKind::Txt(ed25519_dkim_record()),
        ),
    ]
}

async fn setup() -> (FakeDns, Authenticator) {
    let dns = FakeDns::start(&vendor_records()).await;
    let auth = authenticator(&dns, Duration::from_secs(2));
    (dns, auth)
}

/// An authenticator that asks `dns` and nothing else.
fn authenticator(dns: &FakeDns, timeout: Duration) -> Authenticator {
    Authenticator::new(&DnsConfig {
        nameservers: vec![dns.addr],
        timeout,
    })
    .expect("authenticator")
}

// ---------------------------------------------------------------------------
// Messages

fn message(from: &str, body: &str) -> String {
    format!(
        "From: Someone <{from}>\r\n\
         To: agent+tok@gw.example.com\r\n\
         Subject: Re: your order\r\n\
         Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
         Message-ID: <m1@vendor.example>\r\n\
         \r\n\
         {body}"
    )
}

const BODY: &str = "Hello,\r\n\r\nThe parts ship tomorrow.\r\n";

fn dkim_signed(msg: &str) -> String {
    dkim_signed_by("vendor.example", msg)
}

fn dkim_signed_by(domain: &str, msg: &str) -> String {
    let sig = DkimSigner::from_key(rsa_key())
        .domain(domain)
        .selector("sel")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .sign(msg.as_bytes())
        .expect("sign");
    format!("{}{}", sig.to_header(), msg)
}

fn arc_sealed(msg: &str) -> String {
    let parsed = AuthenticatedMessage::parse(msg.as_bytes()).expect("parse");
    let results = AuthenticationResults::new("mx.forwarder.example");
    let set = ArcSealer::from_key(ed25519_key())
        .domain("forwarder.example")
        .selector("arc")
        .headers(["From", "To", "Subject", "DKIM-Signature"])
        .seal(&parsed, &results, &ArcOutput::default())
        .expect("seal");
    format!("{}{}", set.to_header(), msg)
}

fn assert_valid(r: &AuthResults) {
    for v in [&r.spf, &r.dkim, &r.dmarc, &r.arc] {
        assert!(VALUES.contains(&v.as_str()), "bad value {v:?} in {r:?}");
    }
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_dns_splits_long_txt_records() {
    // An RSA-2048 public key alone is ~390 base64 characters.
    assert!(rsa_dkim_record().len() > 255);
    let (_dns, auth) = setup().await;
    let raw = dkim_signed(&message("alice@vendor.example", BODY));
    let r = auth
        .authenticate(
            raw.as_bytes(),
            VENDOR_IP,
            "mail.vendor.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.dkim, "pass", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_and_authorised_passes_everything() {
    let (_dns, auth) = setup().await;
    let raw = dkim_signed(&message("alice@vendor.example", BODY));
    let r = auth
        .authenticate(
            raw.as_bytes(),
            VENDOR_IP,
            "mail.vendor.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.spf, "pass", "{r:?}");
    assert_eq!(r.dkim, "pass", "{r:?}");
    assert_eq!(r.dmarc, "pass", "{r:?}");
    assert_eq!(r.arc, "none", "{r:?}");
    assert_eq!(r.from_domain.as_deref(), Some("vendor.example"));
    assert!(!r.dmarc_failed());
    assert!(
        r.detail
            .contains("spf=pass smtp.mailfrom=alice@vendor.example"),
        "{}",
        r.detail
    );
    assert!(
        r.detail.contains("dkim=pass header.d=vendor.example"),
        "{}",
        r.detail
    );
    assert!(
        r.detail
            .contains("dmarc=pass header.from=vendor.example p=reject"),
        "{}",
        r.detail
    );
    // Serializes for storage.
    let json = serde_json::to_string(&r).expect("json");
    assert_eq!(serde_json::from_str::<AuthResults>(&json).expect("back"), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_alone_passes_dmarc_from_an_unauthorised_ip() {
    let (_dns, auth) = setup().await;
    let raw = dkim_signed(&message("alice@vendor.example", BODY));
    let r = auth
        .authenticate(
            raw.as_bytes(),
            STRANGER_IP,
            "relay.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.spf, "fail", "{r:?}");
    assert_eq!(r.dkim, "pass", "{r:?}");
    assert_eq!(r.dmarc, "pass", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_from_fails_dmarc() {
    let (_dns, auth) = setup().await;
    let raw = message("ceo@vendor.example", "Please wire the money.\r\n");

    // Envelope claims vendor.example from an IP it does not authorise.
    let r = auth
        .authenticate(
            raw.as_bytes(),
            STRANGER_IP,
            "evil.example",
            "ceo@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.spf, "fail", "{r:?}");
    assert_eq!(r.dkim, "none", "{r:?}");
    assert_eq!(r.dmarc, "fail", "{r:?}");
    assert!(r.dmarc_failed());
    assert_eq!(r.from_domain.as_deref(), Some("vendor.example"));

    // Envelope in a domain without records: SPF has nothing to say, DMARC
    // still fails for lack of an aligned pass.
    let r = auth
        .authenticate(
            raw.as_bytes(),
            STRANGER_IP,
            "evil.example",
            "x@evil.example",
            HOST,
        )
        .await;
    assert_eq!(r.spf, "none", "{r:?}");
    assert_eq!(r.dmarc, "fail", "{r:?}");
    assert!(r.dmarc_failed());

    // An authorised IP with MAIL FROM in a subdomain of the From domain.
    let r = auth
        .authenticate(
            raw.as_bytes(),
            VENDOR_IP,
            "mail.vendor.example",
            "bounce@mail.vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.spf, "pass", "{r:?}");
    // Relaxed alignment: mail.vendor.example aligns with vendor.example.
    assert_eq!(r.dmarc, "pass", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_without_records_is_none() {
    let (_dns, auth) = setup().await;
    let raw = message("bob@other.example", BODY);
    let r = auth
        .authenticate(
            raw.as_bytes(),
            STRANGER_IP,
            "mail.other.example",
            "bob@other.example",
            HOST,
        )
        .await;
    assert_eq!(r.spf, "none", "{r:?}");
    assert_eq!(r.dkim, "none", "{r:?}");
    assert_eq!(r.dmarc, "none", "{r:?}");
    assert_eq!(r.arc, "none", "{r:?}");
    assert_eq!(r.from_domain.as_deref(), Some("other.example"));
    assert!(!r.dmarc_failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_body_fails_dkim() {
    let (_dns, auth) = setup().await;
    let raw = dkim_signed(&message("alice@vendor.example", BODY)).replace("tomorrow", "never");
    let r = auth
        .authenticate(
            raw.as_bytes(),
            STRANGER_IP,
            "relay.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.dkim, "fail", "{r:?}");
    assert!(
        r.detail.contains("dkim=fail header.d=vendor.example"),
        "{}",
        r.detail
    );
    assert_eq!(r.spf, "fail", "{r:?}");
    assert_eq!(r.dmarc, "fail", "{r:?}");
    assert!(r.dmarc_failed());

    // A tampered signed header fails too.
    let raw = dkim_signed(&message("alice@vendor.example", BODY))
        .replace("Subject: Re: your order", "Subject: Re: your invoice");
    let r = auth
        .authenticate(
            raw.as_bytes(),
            VENDOR_IP,
            "mail.vendor.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.dkim, "fail", "{r:?}");
    // SPF still passes aligned, so DMARC passes.
    assert_eq!(r.dmarc, "pass", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_reverse_path_checks_helo() {
    let (_dns, auth) = setup().await;
    let raw = message("mailer-daemon@vendor.example", BODY);
    let r = auth
        .authenticate(raw.as_bytes(), VENDOR_IP, "mail.vendor.example", "", HOST)
        .await;
    assert_eq!(r.spf, "pass", "{r:?}");
    assert!(
        r.detail.contains("smtp.helo=mail.vendor.example"),
        "{}",
        r.detail
    );
    // The HELO domain aligns (relaxed) with the From domain.
    assert_eq!(r.dmarc, "pass", "{r:?}");

    let r = auth
        .authenticate(raw.as_bytes(), STRANGER_IP, "mail.vendor.example", "", HOST)
        .await;
    assert_eq!(r.spf, "fail", "{r:?}");
    assert_eq!(r.dmarc, "fail", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_chain_is_validated_when_sealed() {
    let (_dns, auth) = setup().await;
    let signed = dkim_signed(&message("alice@vendor.example", BODY));
    let sealed = arc_sealed(&signed);
    let r = auth
        .authenticate(
            sealed.as_bytes(),
            STRANGER_IP,
            "mx.forwarder.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.arc, "pass", "{r:?}");
    assert_eq!(r.dkim, "pass", "{r:?}");

    // A header covered by the ARC-Message-Signature changed after sealing.
    let broken = sealed.replace("To: agent+tok@", "To: other+tok@");
    let r = auth
        .authenticate(
            broken.as_bytes(),
            STRANGER_IP,
            "mx.forwarder.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.arc, "fail", "{r:?}");

    // An ARC-Seal with nothing else is a broken chain, not "none".
    let lone = format!("ARC-Seal: i=1; a=ed25519-sha256; cv=none; d=x; s=y; b=AAAA\r\n{signed}");
    let r = auth
        .authenticate(
            lone.as_bytes(),
            STRANGER_IP,
            "mx.forwarder.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.arc, "fail", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_panics() {
    let (_dns, auth) = setup().await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = vec![0u8; 4096];
    for b in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let signed = dkim_signed(&message("alice@vendor.example", BODY));
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        noise.clone(),
        b"\0\0\0\r\n\r\n\xff\xfe".to_vec(),
        b"\r\n\r\nbody only".to_vec(),
        b"no colon here at all".to_vec(),
        b"From:\r\n\r\n".to_vec(),
        b"From: <@>\r\n\r\n".to_vec(),
        b"From: a@b.example, c@d.example\r\n\r\nx".to_vec(),
        b"DKIM-Signature: v=1; a=rsa-sha256; d=; s=; b=!!!; bh=\r\nFrom: a@vendor.example\r\n\r\n"
            .to_vec(),
        format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d={}; s=sel; h=From; bh=AAAA; b=AAAA\r\nFrom: a@vendor.example\r\n\r\n",
            "a.".repeat(200)
        )
        .into_bytes(),
        b"ARC-Seal: garbage\r\nARC-Message-Signature: i=9\r\nFrom: a@vendor.example\r\n\r\n"
            .to_vec(),
        format!("From: x@{}\r\n\r\n", "\u{1F600}".repeat(100)).into_bytes(),
        signed.as_bytes()[..signed.len() / 2].to_vec(),
        [b"From: a@vendor.example\r\n\r\n".as_slice(), &noise].concat(),
    ];
    for input in &inputs {
        for (mail_from, helo) in [
            ("alice@vendor.example", "mail.vendor.example"),
            ("", ""),
            ("@@@", "[127.0.0.1]"),
            ("x@-bad-.example", "\u{0}\u{7f}"),
        ] {
            let r = auth
                .authenticate(input, STRANGER_IP, helo, mail_from, HOST)
                .await;
            assert_valid(&r);
            assert_ne!(r.dmarc, "pass", "{r:?}");
        }
    }

    // Garbage without any header: nothing to verify, DMARC cannot apply.
    let r = auth
        .authenticate(
            &noise,
            STRANGER_IP,
            "relay.example",
            "x@other.example",
            HOST,
        )
        .await;
    assert_valid(&r);
    assert!(["none", "permerror"].contains(&r.dkim.as_str()), "{r:?}");
    assert!(["none", "permerror"].contains(&r.dmarc.as_str()), "{r:?}");

    // Several From domains: DMARC cannot pick one.
    let r = auth
        .authenticate(
            b"From: ceo@vendor.example, x@evil.example\r\n\r\nhi\r\n",
            STRANGER_IP,
            "evil.example",
            "x@evil.example",
            HOST,
        )
        .await;
    assert_eq!(r.dmarc, "permerror", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_gives_temperror_within_the_timeout() {
    let closed = dns::closed_addr().await;
    let auth = Authenticator::new(&DnsConfig {
        nameservers: vec![closed],
        timeout: Duration::from_millis(500),
    })
    .expect("authenticator");
    assert_eq!(auth.overall_timeout(), Duration::from_millis(500));
    let raw = dkim_signed(&message("alice@vendor.example", BODY));
    let started = Instant::now();
    let r = auth
        .authenticate(
            raw.as_bytes(),
            VENDOR_IP,
            "mail.vendor.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    let took = started.elapsed();
    assert!(
        took < auth.overall_timeout() + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(r.spf, "temperror", "{r:?}");
    assert_eq!(r.dkim, "temperror", "{r:?}");
    assert_eq!(r.dmarc, "temperror", "{r:?}");
    assert!(!r.dmarc_failed());
    assert_eq!(r.from_domain.as_deref(), Some("vendor.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_dns_server_hits_the_overall_timeout() {
    // A UDP socket that reads nothing and answers nothing, and no TCP.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let auth = Authenticator::new(&DnsConfig {
        nameservers: vec![silent.local_addr().expect("addr")],
        timeout: Duration::from_millis(300),
    })
    .expect("authenticator");
    let raw = dkim_signed(&message("alice@vendor.example", BODY));
    let started = Instant::now();
    let r = auth
        .authenticate(
            raw.as_bytes(),
            VENDOR_IP,
            "mail.vendor.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    let took = started.elapsed();
    assert!(
        took < auth.overall_timeout() + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(r.spf, "temperror", "{r:?}");
    assert_eq!(r.dkim, "temperror", "{r:?}");
    assert_eq!(r.dmarc, "temperror", "{r:?}");
    assert_eq!(r.from_domain.as_deref(), Some("vendor.example"));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalling_sender_dns_cannot_turn_dmarc_fail_into_temperror() {
    // The forger signs with, sends from and seals under domains whose name
    // server never answers, hoping the whole check times out: each stalled
    // lookup costs the resolver's timeout times its attempts, and there are
    // more of them, one after the other, than the overall budget.
    let dns = FakeDns::start_with_stalled(&vendor_records(), &["slow.example"]).await;
    let auth = authenticator(&dns, Duration::from_millis(300));
    let mut forged = message("ceo@vendor.example", "Please wire the money.\r\n");
    for d in [
        "a.slow.example",
        "b.slow.example",
        "c.slow.example",
        "d.slow.example",
    ] {
        forged = dkim_signed_by(d, &forged);
    }
    let sealed = format!(
        "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=slow.example; s=arc; b=AAAA\r\n\
         ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=slow.example; s=arc; h=From; bh=AAAA; b=AAAA\r\n\
         ARC-Authentication-Results: i=1; mx.slow.example; spf=pass\r\n{forged}"
    );
    let started = Instant::now();
    let r = auth
        .authenticate(
            sealed.as_bytes(),
            STRANGER_IP,
            "mx.slow.example",
            "x@slow.example",
            HOST,
        )
        .await;
    let took = started.elapsed();
    assert!(
        took < auth.overall_timeout() + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(r.spf, "temperror", "{r:?}");
    assert_eq!(r.dkim, "temperror", "{r:?}");
    assert_eq!(r.dmarc, "fail", "{r:?}");
    assert!(r.dmarc_failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_aligned_key_is_temperror_not_fail() {
    // The From domain's own key server stalls: DMARC cannot tell, so it must
    // not call the message forged.
    let dns =
        FakeDns::start_with_stalled(&vendor_records(), &["sel._domainkey.vendor.example"]).await;
    let auth = authenticator(&dns, Duration::from_millis(300));
    let raw = dkim_signed(&message("alice@vendor.example", BODY));
    let r = auth
        .authenticate(
            raw.as_bytes(),
            STRANGER_IP,
            "relay.example",
            "alice@vendor.example",
            HOST,
        )
        .await;
    assert_eq!(r.spf, "fail", "{r:?}");
    assert_eq!(r.dkim, "temperror", "{r:?}");
    assert_eq!(r.dmarc, "temperror", "{r:?}");
    assert!(!r.dmarc_failed());
}
