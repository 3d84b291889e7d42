//! Address ranges and host-name lists the config holds: [`Cidr`], the
//! [`Exempt`] list of `limits.exempt` and the [`AllowList`] of
//! `allow_destinations`, with their parsers. Pure values: the limiters
//! (`src/limits.rs`) and the egress checks (`src/egress.rs`) import them
//! and make the decisions; nothing here imports those.

use std::fmt;
use std::net::IpAddr;

use serde::de::{Deserialize, Deserializer};

use super::values::bad_value;

/// An address range (`127.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, Cidr::canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// An IPv4-mapped IPv6 address as IPv4, as ranges compare it.
    pub fn canonical(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or address/prefix"))?;
        let addr = Cidr::canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// Addresses no abuse limit applies to (`limits.exempt`).
#[derive(Debug, Clone, Default)]
pub struct Exempt(Vec<Cidr>);

impl Exempt {
    pub fn new(ranges: Vec<Cidr>) -> Exempt {
        Exempt(ranges)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// A list of `ip` or `ip/prefix` strings.
pub(super) fn exempt<'de, D: Deserializer<'de>>(d: D) -> Result<Exempt, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|c| c.parse().map_err(bad_value))
        .collect::<Result<_, _>>()
        .map(Exempt::new)
}

/// A host name as lists compare it: lowercased, without a final dot.
pub fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The destinations an admin allows despite the egress rules
/// (`[webhooks] allow_destinations`, `[outbound] allow_destinations`):
/// address ranges, matched against the resolved address, and host names,
/// matched exactly (case-insensitive) against the name connected to. The
/// checks that use it are in `src/egress.rs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    ranges: Vec<Cidr>,
    names: Vec<String>,
}

impl AllowList {
    /// Parses config entries: `10.0.0.0/8`, `::1`, `hooks.corp.example`.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in entries {
            let e = entry.trim();
            if let Ok(cidr) = e.parse::<Cidr>() {
                list.ranges.push(cidr);
                continue;
            }
            let name = normalize_host(e);
            let is_name = !name.is_empty()
                && name.len() <= 253
                && !name.contains('/')
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            // A bare address with a bad prefix must not pass as a name.
            if !is_name || name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(format!(
                    "`{e}` is neither an address range (10.0.0.0/8, ::1) nor a host name"
                ));
            }
            list.names.push(name);
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.names.is_empty()
    }

    /// An allow-list range holds `ip`.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|c| c.contains(ip))
    }

    /// `host` is listed by name.
    pub fn allows_name(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.names.contains(&host)
    }
}

/// A list of address ranges and host names.
pub(super) fn allow_list<'de, D: Deserializer<'de>>(d: D) -> Result<AllowList, D::Error> {
    AllowList::parse(&Vec::<String>::deserialize(d)?).map_err(bad_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidrs_parse_and_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.1.2.3", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("::1/128", "::1", true),
            ("::1", "::2", false),
            ("10.0.0.0/0", "192.0.2.1", true),
            ("10.0.0.0/0", "::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
        ];
        for (net, addr, want) in cases {
            let c: Cidr = net.parse().expect(net);
            assert_eq!(c.contains(ip(addr)), *want, "{net} ∋ {addr}");
        }
        for bad in [
            "",
            "nope",
            "10.0.0.0/33",
            "::/129",
            "1.2.3.4/x",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allow_list_entries_are_validated() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::1/129",
            "not a host",
            "a/b",
            "1.2.3.4.5",
            "x..y",
        ] {
            assert!(
                AllowList::parse(&[bad.to_string()]).is_err(),
                "{bad:?} must be refused"
            );
        }
        let a = AllowList::parse(
            &[
                " 192.168.0.0/16 ",
                "::1",
                "Mail.Example.",
                "relay_1.example",
            ]
            .map(String::from),
        )
        .expect("allow list");
        assert!(a.allows_ip(ip("192.168.4.4")));
        assert!(a.allows_ip(ip("::1")));
        assert!(a.allows_name("mail.example"));
        assert!(a.allows_name("relay_1.example"));
    }
}
