//! Value parsers every section shares: durations (`500ms`, `30s`, `5m`,
//! `1h`, `3d`), socket addresses, domain names, whole numbers narrowed from
//! TOML's integers, TLS file pairs — as serde `deserialize_with` adapters
//! whose errors quote the bad value — and the range checks sections run
//! after deserializing, whose errors name the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer};

use super::{ConfigError, invalid};

/// Starts the message of every error these adapters raise, so that
/// [`config_error`] can tell them from serde's own type errors: ours are
/// shown as written, serde's as the `toml` crate renders them.
const OWN: char = '\u{0}';

/// An error about a value that has the right type but is not usable.
pub(super) fn bad_value<E: serde::de::Error>(message: impl fmt::Display) -> E {
    E::custom(format_args!("{OWN}{message}"))
}

/// The error for a merged table that does not deserialize, naming the key
/// path serde was at (`smtp.listen`, `dns.nameservers[0]`).
pub(super) fn config_error(e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let key = e.path().to_string();
    let inner = e.into_inner();
    let message = match inner.message().strip_prefix(OWN) {
        Some(own) => own.to_string(),
        None => inner.to_string(),
    };
    invalid(&key, message)
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `3d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

fn parse_duration_value<E: serde::de::Error>(text: &str) -> Result<Duration, E> {
    parse_duration(text).ok_or_else(|| {
        bad_value(format_args!(
            "`{text}` is not a duration (e.g. 500ms, 30s, 5m, 1h, 3d)"
        ))
    })
}

/// A zero timeout or retry step would make a loop spin.
fn nonzero<E: serde::de::Error>(d: Duration) -> Result<Duration, E> {
    if d.is_zero() {
        return Err(bad_value("must be more than zero"));
    }
    Ok(d)
}

/// A duration string.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration_value(&String::deserialize(d)?)
}

/// A duration string that must not be zero.
pub(super) fn nonzero_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    nonzero(duration(d)?)
}

/// A list of duration strings (a retry schedule).
pub(super) fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse_duration_value(t))
        .collect()
}

/// A list of duration strings, none of them zero.
pub(super) fn nonzero_durations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| nonzero(parse_duration_value(t)?))
        .collect()
}

fn parse_socket_addr<E: serde::de::Error>(text: &str) -> Result<SocketAddr, E> {
    text.parse()
        .map_err(|_| bad_value(format_args!("`{text}` is not an ip:port address")))
}

/// An `ip:port` string.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(d)?)
}

/// An `ip:port` string, or empty (blank) for none.
pub(super) fn optional_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    match String::deserialize(d)?.trim() {
        "" => Ok(None),
        addr => parse_socket_addr(addr).map(Some),
    }
}

/// A list of `ip:port` strings.
pub(super) fn socket_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse_socket_addr(t))
        .collect()
}

/// A whole number (TOML has no unsigned type) held as `usize`.
pub(super) fn to_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    usize::try_from(u64::deserialize(d)?).map_err(|_| bad_value("too large"))
}

/// A whole number held as `u32`.
pub(super) fn to_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    u32::try_from(u64::deserialize(d)?).map_err(|_| bad_value("too large"))
}

/// A TCP port, 1 to 65535.
pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = u64::deserialize(d)?;
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad_value(format_args!("{n} is not a port")))
}

/// The gateway's domain: lowercased, without a final dot.
pub(super) fn domain_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if !is_domain(&domain) {
        return Err(bad_value(format_args!("`{raw}` is not a domain name")));
    }
    Ok(domain)
}

/// A directory path that is not blank.
pub(super) fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let raw = String::deserialize(d)?;
    if raw.trim().is_empty() {
        return Err(bad_value("must not be empty"));
    }
    Ok(PathBuf::from(raw))
}

/// Dot-separated labels of letters, digits and inner hyphens.
pub(super) fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `value` is at least `min`.
pub(super) fn at_least<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(key, format!("{value} is below the minimum {min}")));
    }
    Ok(())
}

/// `value` is at most `max`.
pub(super) fn at_most<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    max: T,
) -> Result<(), ConfigError> {
    if value > max {
        return Err(invalid(key, format!("{value} is above the maximum {max}")));
    }
    Ok(())
}

/// A certificate chain and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `<section>.tls_cert` and `<section>.tls_key`: both set, or neither.
pub(super) fn tls_files(
    section: &str,
    cert: &str,
    key: &str,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })),
        (true, false) => Err(invalid(
            &format!("{section}.tls_cert"),
            "set tls_key without tls_cert",
        )),
        (false, true) => Err(invalid(
            &format!("{section}.tls_key"),
            "set tls_cert without tls_key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("3d"), Some(Duration::from_secs(259_200)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }
}
