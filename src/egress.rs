//! Where the gateway may connect on a user's behalf (SPEC §10): the one
//! classifier of internal addresses (loopback, private, link-local, cloud
//! metadata …) and the admin's allow-list, used by webhook delivery and by
//! outbound mail in mode `mx`. Pure: no I/O, table-tested.
//!
//! A destination is checked on the address actually connected to, after
//! resolution, so a name that resolved to a public address yesterday and
//! to `127.0.0.1` now (DNS rebinding) is refused. Names are also checked
//! as such where they stand for an internal address whatever DNS says
//! (`localhost`, `metadata.google.internal`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::config::AllowList;
use crate::config::normalize_host;

/// IPv4 ranges never connected to unless allowed: (network, prefix).
const FORBIDDEN_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private (RFC 1918)
    ([100, 64, 0, 0], 10),   // carrier-grade NAT (RFC 6598)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata 169.254.169.254
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast
];

/// IPv6 ranges never connected to unless allowed. The ranges that embed an
/// IPv4 address (mapped, NAT64, 6to4) are judged by that address instead.
const FORBIDDEN_V6: &[(u128, u8)] = &[
    (0, 96),                                         // ::, ::1, IPv4-compatible (deprecated)
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // discard-only
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // documentation
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // unique local
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // link-local
    (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10), // site-local (deprecated)
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // multicast
];

/// NAT64 prefixes: the last 32 bits are an IPv4 address (RFC 6052, 8215).
const NAT64: &[(u128, u8)] = &[
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96),
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48),
];

/// 6to4 (RFC 3056): bits 16..48 are an IPv4 address.
const SIX_TO_FOUR: (u128, u8) = (0x2002_0000_0000_0000_0000_0000_0000_0000, 16);

/// Names that stand for an internal address whatever DNS answers, with
/// that address (what an allow-list entry must cover to permit the name).
const INTERNAL_NAMES: &[(&str, IpAddr)] = &[
    ("localhost", IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ("localhost.localdomain", IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ("ip6-localhost", IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ("ip6-loopback", IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ("metadata", METADATA),
    ("metadata.google.internal", METADATA),
    ("metadata.goog", METADATA),
    ("instance-data", METADATA),
    ("instance-data.ec2.internal", METADATA),
];

const METADATA: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(bits: u128, net: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    bits & mask == net & mask
}

/// True for an address the gateway must not connect to on a user's behalf:
/// loopback, private, carrier-grade NAT, link-local (cloud metadata),
/// multicast, reserved and documentation ranges, and IPv6 forms embedding
/// such an IPv4 address (`::ffff:127.0.0.1`, `64:ff9b::a00:1`).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => FORBIDDEN_V4
            .iter()
            .any(|(net, prefix)| in_v4(v4, *net, *prefix)),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let bits = u128::from(v6);
            if NAT64.iter().any(|(net, p)| in_v6(bits, *net, *p)) {
                // Truncation keeps the low 32 bits: the embedded address.
                return is_forbidden(IpAddr::V4(Ipv4Addr::from(bits as u32)));
            }
            if in_v6(bits, SIX_TO_FOUR.0, SIX_TO_FOUR.1) {
                return is_forbidden(IpAddr::V4(Ipv4Addr::from((bits >> 80) as u32)));
            }
            FORBIDDEN_V6
                .iter()
                .any(|(net, prefix)| in_v6(bits, *net, *prefix))
        }
    }
}

/// The internal address `host` stands for whatever DNS says (`localhost`,
/// `*.localhost`, the cloud metadata names), if it is one of those.
pub fn internal_name(host: &str) -> Option<IpAddr> {
    let host = normalize_host(host);
    if host.ends_with(".localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    INTERNAL_NAMES
        .iter()
        .find(|(name, _)| *name == host)
        .map(|(_, ip)| *ip)
}

/// Why a destination was refused. The text names the address or name
/// only, never anything the remote side said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An address literal in a forbidden range.
    Address(IpAddr),
    /// Every address a name resolved to is forbidden (the first named).
    Resolved { host: String, ip: IpAddr },
    /// A name that stands for an internal address (`localhost`).
    Name(String),
    /// A URL scheme other than http or https.
    Scheme(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Address(ip) => write!(f, "{ip} is an internal address"),
            Refusal::Resolved { host, ip } => {
                write!(f, "{host} resolves to {ip} (internal address)")
            }
            Refusal::Name(host) => write!(f, "{host} is an internal host name"),
            Refusal::Scheme(s) => write!(f, "scheme `{s}` is not http or https"),
        }
    }
}

impl std::error::Error for Refusal {}

/// The checks on a destination the allow-list of `[webhooks]` or
/// `[outbound] allow_destinations` takes part in (the list itself, its
/// parser and its matching are config values: `crate::config::AllowList`).
impl AllowList {
    /// The address may be connected to: not internal, or allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_forbidden(ip) || self.allows_ip(ip)
    }

    /// Checks an address literal.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refusal::Address(ip))
        }
    }

    /// Checks a name before it is resolved: only the names that stand for
    /// an internal address are refused here (unless listed, or their
    /// address is allowed); everything else is judged on what it resolves to.
    pub fn check_name(&self, host: &str) -> Result<(), Refusal> {
        match internal_name(host) {
            Some(ip) if !self.allows_name(host) && !self.allows_ip(ip) => {
                Err(Refusal::Name(normalize_host(host)))
            }
            _ => Ok(()),
        }
    }

    /// Of the addresses `host` resolved to, those that may be connected to
    /// (all of them when the name is listed); `Err` when some were found
    /// and none may be used.
    pub fn check_resolved(&self, host: &str, ips: &[IpAddr]) -> Result<Vec<IpAddr>, Refusal> {
        if self.allows_name(host) {
            return Ok(ips.to_vec());
        }
        let permitted: Vec<IpAddr> = ips.iter().copied().filter(|ip| self.permits(*ip)).collect();
        match ips.first() {
            Some(first) if permitted.is_empty() => Err(Refusal::Resolved {
                host: normalize_host(host),
                ip: *first,
            }),
            _ => Ok(permitted),
        }
    }

    /// Checks a webhook URL as far as that is possible without DNS: the
    /// scheme, an address literal host, an internal name.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_string()));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => self.check_name(name),
            None => Ok(()),
        }
    }

    /// Why a new webhook endpoint's URL is refused before it is stored
    /// (what [`AllowList::check_url`] can tell without DNS), as the admin
    /// reads it; `None` when it is not refused here (a URL that does not
    /// parse is refused by the store's own check).
    pub fn webhook_refusal(&self, url: &str) -> Option<String> {
        let parsed = url::Url::parse(url.trim()).ok()?;
        let refusal = self.check_url(&parsed).err()?;
        Some(match refusal {
            Refusal::Scheme(_) => refusal.to_string(),
            _ => format!(
                "{refusal}: webhooks may not reach loopback, private, link-local or \
                 metadata destinations unless webhooks.allow_destinations lists them"
            ),
        })
    }
}

/// Most characters of a remote server's own words kept in a delivery log.
pub const REMOTE_TEXT_MAX: usize = 200;

/// What of a text a remote server chose (an SMTP reply line, an error
/// naming its certificate) may be kept in a delivery log: control and
/// invisible format characters (bidi overrides, which would make the line
/// read differently from what it holds) become spaces, at most
/// [`REMOTE_TEXT_MAX`] characters, trimmed.
pub fn remote_text(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_control() || crate::model::is_invisible_format(c) {
                ' '
            } else {
                c
            }
        })
        .take(REMOTE_TEXT_MAX)
        .collect();
    kept.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn allow(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .expect("allow list")
    }

    #[test]
    fn internal_addresses_are_forbidden_public_ones_are_not() {
        let forbidden = [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.5",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::10.0.0.1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "100::1",
            "2001:db8::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
        ];
        for a in forbidden {
            assert!(is_forbidden(ip(a)), "{a} must be forbidden");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
        ];
        for a in public {
            assert!(!is_forbidden(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn every_spelling_of_loopback_in_a_url_is_refused() {
        // The url crate normalises these hosts, as reqwest (which parses
        // with it too) will see them.
        let none = AllowList::default();
        let cases = [
            ("http://127.0.0.1/h", "127.0.0.1 is an internal address"),
            ("http://0x7f000001/h", "127.0.0.1 is an internal address"),
            ("http://2130706433/h", "127.0.0.1 is an internal address"),
            ("http://0177.0.0.1/h", "127.0.0.1 is an internal address"),
            ("http://127.1/h", "127.0.0.1 is an internal address"),
            (
                "http://0x7f.0.0.1:8080/h",
                "127.0.0.1 is an internal address",
            ),
            ("https://[::1]:8443/h", "::1 is an internal address"),
            (
                "http://[::ffff:127.0.0.1]/h",
                "::ffff:127.0.0.1 is an internal address",
            ),
            (
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254 is an internal address",
            ),
            ("http://10.1.2.3/h", "10.1.2.3 is an internal address"),
            ("http://100.64.0.1/h", "100.64.0.1 is an internal address"),
            ("http://[fe80::1]/h", "fe80::1 is an internal address"),
            ("http://[fd00::1]/h", "fd00::1 is an internal address"),
            (
                "http://localhost:8080/h",
                "localhost is an internal host name",
            ),
            ("http://LOCALHOST./h", "localhost is an internal host name"),
            (
                "http://api.localhost/h",
                "api.localhost is an internal host name",
            ),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                "metadata.google.internal is an internal host name",
            ),
            ("ftp://example.com/h", "scheme `ftp` is not http or https"),
            ("file:///etc/passwd", "scheme `file` is not http or https"),
        ];
        for (text, want) in cases {
            let url = url::Url::parse(text).expect("url");
            let got = none.check_url(&url).map_err(|r| r.to_string());
            assert_eq!(got, Err(want.to_string()), "{text}");
        }
        for ok in [
            "https://hooks.example.com/h",
            "http://93.184.216.34:8080/h",
            "https://[2606:4700:4700::1111]/h",
            // A name is judged on what it resolves to, at delivery.
            "https://internal.example/h",
        ] {
            let url = url::Url::parse(ok).expect("url");
            assert_eq!(none.check_url(&url), Ok(()), "{ok}");
        }
    }

    #[test]
    fn the_allow_list_permits_ranges_and_exact_names() {
        let a = allow(&["127.0.0.0/8", "hooks.corp.example", "fd00::/8"]);
        assert!(a.permits(ip("127.0.0.1")));
        assert!(a.permits(ip("127.9.9.9")));
        assert!(a.permits(ip("::ffff:127.0.0.1")), "mapped counts as v4");
        assert!(a.permits(ip("fd12::1")));
        assert!(!a.permits(ip("10.0.0.1")));
        assert!(!a.permits(ip("::1")));
        assert!(!a.permits(ip("169.254.169.254")));
        assert!(a.permits(ip("8.8.8.8")), "public addresses need no entry");

        // localhost stands for 127.0.0.1, which the range allows.
        let url = |u: &str| url::Url::parse(u).expect("url");
        assert_eq!(a.check_url(&url("http://localhost:9/h")), Ok(()));
        assert_eq!(a.check_url(&url("http://127.0.0.1:9/h")), Ok(()));
        assert_eq!(
            a.check_url(&url("http://metadata.google.internal/")),
            Err(Refusal::Name("metadata.google.internal".into()))
        );

        // Names: exact, case-insensitive, final dot ignored; not suffixes.
        assert!(a.allows_name("HOOKS.corp.example."));
        assert!(!a.allows_name("x.hooks.corp.example"));
        assert!(!a.allows_name("corp.example"));
        assert_eq!(
            a.check_resolved("hooks.corp.example", &[ip("10.0.0.5")]),
            Ok(vec![ip("10.0.0.5")])
        );
        assert_eq!(
            a.check_resolved("other.corp.example", &[ip("10.0.0.5")]),
            Err(Refusal::Resolved {
                host: "other.corp.example".into(),
                ip: ip("10.0.0.5")
            })
        );
        // Forbidden addresses are dropped, permitted ones kept.
        let none = AllowList::default();
        assert_eq!(
            none.check_resolved("mixed.example", &[ip("127.0.0.1"), ip("8.8.8.8")]),
            Ok(vec![ip("8.8.8.8")])
        );
        assert_eq!(
            none.check_resolved("rebind.example", &[ip("127.0.0.1"), ip("::1")])
                .map_err(|r| r.to_string()),
            Err("rebind.example resolves to 127.0.0.1 (internal address)".into())
        );
        assert_eq!(none.check_resolved("empty.example", &[]), Ok(vec![]));
        assert!(none.is_empty());
        assert!(!a.is_empty());
    }

    #[test]
    fn remote_text_is_one_bounded_printable_line() {
        assert_eq!(
            remote_text("  550 5.1.1 no\r\nsuch user\u{0} "),
            "550 5.1.1 no  such user"
        );
        assert_eq!(remote_text("a\u{202e}b\u{1b}[31mc"), "a b [31mc");
        assert_eq!(
            remote_text(&"é".repeat(1000)).chars().count(),
            REMOTE_TEXT_MAX
        );
    }
}
