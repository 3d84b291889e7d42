//! `[outbound]` and `[notifications]`: how mail leaves the gateway — mode
//! (maildir, relay, MX), the relay URL and its credentials, the retry
//! schedule, DKIM selector and SPF description, destinations mode `mx` may
//! still reach — and how reply notifications to agents are batched.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::Deserializer;

use super::ranges::{self, AllowList};
use super::values::{self, at_least, bad_value, is_domain};
use super::{ConfigError, invalid};

/// `[outbound]` keys and defaults, in the order `backchannel config` prints.
pub(super) const DEFAULTS: &str = r#"
mode = "maildir"
relay_url = ""
retry_schedule = ["1m", "5m", "15m", "1h", "4h"]
max_age = "3d"
dkim_selector = "backchannel"
spf = []
send_timeout = "2m"
mx_port = 25
per_host_concurrency = 4
allow_destinations = []
"#;

/// `[notifications]` keys and defaults.
pub(super) const NOTIFICATIONS_DEFAULTS: &str = r#"
batch_window = "2m"
max_replies_per_email = 20
excerpt_chars = 2000
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundMode {
    Maildir,
    Relay,
    Mx,
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<OutboundMode, D::Error> {
    match String::deserialize(d)?.as_str() {
        "maildir" => Ok(OutboundMode::Maildir),
        "relay" => Ok(OutboundMode::Relay),
        "mx" => Ok(OutboundMode::Mx),
        other => Err(bad_value(format_args!(
            "`{other}`: expected maildir, relay or mx"
        ))),
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    #[serde(deserialize_with = "mode")]
    pub mode: OutboundMode,
    /// Relay URL with credentials; never printed (see `Debug`).
    pub relay_url: String,
    /// Delays between attempts; the last step repeats.
    #[serde(deserialize_with = "values::durations")]
    pub retry_schedule: Vec<Duration>,
    /// Age after which a message that keeps failing is given up.
    #[serde(deserialize_with = "values::duration")]
    pub max_age: Duration,
    pub dkim_selector: String,
    /// The gateway's outbound path: `ip4:`/`ip6:` addresses and
    /// `include:<domain>`.
    pub spf: Vec<String>,
    /// Bound on one SMTP session (relay, or one MX host), connect to QUIT.
    #[serde(deserialize_with = "values::duration")]
    pub send_timeout: Duration,
    /// The smarthost, parsed from `relay_url` (mode relay only).
    #[serde(skip)]
    pub relay: Option<RelayUrl>,
    /// Port of the MX hosts (25; tests point it at a local sink).
    #[serde(deserialize_with = "values::port")]
    pub mx_port: u16,
    /// Concurrent sessions to one MX host.
    #[serde(deserialize_with = "values::to_usize")]
    pub per_host_concurrency: usize,
    /// Internal destinations (CIDRs or host names) mode `mx` may still
    /// deliver to; everything loopback, private or link-local is refused
    /// (SPEC §10).
    #[serde(deserialize_with = "ranges::allow_list")]
    pub allow_destinations: AllowList,
}

impl OutboundConfig {
    /// The relay URL (required in mode relay), and the rules on the
    /// other keys.
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.mode == OutboundMode::Relay && self.relay_url.is_empty() {
            return Err(invalid(
                "outbound.relay_url",
                "required when outbound.mode is relay",
            ));
        }
        self.relay = if self.relay_url.is_empty() {
            None
        } else {
            // The message never repeats the URL: it may hold a password.
            Some(RelayUrl::parse(&self.relay_url).map_err(|m| invalid("outbound.relay_url", m))?)
        };
        if self.send_timeout.is_zero() {
            return Err(invalid("outbound.send_timeout", "must be above zero"));
        }
        if self.retry_schedule.is_empty() {
            return Err(invalid(
                "outbound.retry_schedule",
                "needs at least one step",
            ));
        }
        for entry in &self.spf {
            let ok = entry
                .strip_prefix("ip4:")
                .map(|ip| {
                    ip.split('/')
                        .next()
                        .unwrap_or("")
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok()
                })
                .or_else(|| {
                    entry.strip_prefix("ip6:").map(|ip| {
                        ip.split('/')
                            .next()
                            .unwrap_or("")
                            .parse::<std::net::Ipv6Addr>()
                            .is_ok()
                    })
                })
                .or_else(|| entry.strip_prefix("include:").map(is_domain))
                .unwrap_or(false);
            if !ok {
                return Err(invalid(
                    "outbound.spf",
                    format!("`{entry}`: expected ip4:<addr>, ip6:<addr> or include:<domain>"),
                ));
            }
        }
        if self.dkim_selector.is_empty()
            || !self
                .dkim_selector
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid("outbound.dkim_selector", "must be a DNS label"));
        }
        at_least(
            "outbound.per_host_concurrency",
            self.per_host_concurrency,
            1,
        )
    }
}

/// How the relay connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    /// `smtp://`: STARTTLS when the relay offers it (a failed handshake is
    /// an error, never a silent downgrade).
    StartTlsIfOffered,
    /// `smtp://…?starttls=required`: no STARTTLS, no mail.
    StartTlsRequired,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// `smtp[s]://[user[:password]@]host[:port][?starttls=required]`, user and
/// password percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    pub username: Option<String>,
    /// Never printed (see `Debug`).
    pub password: Option<String>,
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RelayUrl {
    /// Parses a relay URL. Without a port: 587 (submission) for `smtp://`,
    /// 465 for `smtps://`.
    pub fn parse(url: &str) -> Result<RelayUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected smtp://host[:port] or smtps://host[:port]")?;
        let (mut tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "smtp" => (RelayTls::StartTlsIfOffered, 587),
            "smtps" => (RelayTls::Implicit, 465),
            other => return Err(format!("scheme `{other}`: expected smtp or smtps")),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err("a relay URL has no path".into());
        }
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("starttls", "required")) if tls != RelayTls::Implicit => {
                    tls = RelayTls::StartTlsRequired;
                }
                Some(("starttls", "opportunistic")) if tls != RelayTls::Implicit => {}
                _ => {
                    return Err(format!(
                        "unknown parameter `{pair}` (smtp:// takes starttls=required)"
                    ));
                }
            }
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                (
                    Some(percent_decode(user)?),
                    pass.map(percent_decode).transpose()?,
                )
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("`{host}` is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
            };
            (host.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        if !(is_domain(&host.to_ascii_lowercase()) || host.parse::<std::net::IpAddr>().is_ok()) {
            return Err(format!("`{host}` is not a host name or IP address"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{p}` is not a port"))?,
        };
        Ok(RelayUrl {
            host,
            port,
            tls,
            username,
            password,
        })
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent escape in the user or password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "user or password is not UTF-8".to_string())
}

impl fmt::Debug for OutboundConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundConfig")
            .field("mode", &self.mode)
            .field("relay_url", &redact_url(&self.relay_url))
            .field("retry_schedule", &self.retry_schedule)
            .field("max_age", &self.max_age)
            .field("dkim_selector", &self.dkim_selector)
            .field("spf", &self.spf)
            .field("send_timeout", &self.send_timeout)
            .field("relay", &self.relay)
            .field("mx_port", &self.mx_port)
            .field("per_host_concurrency", &self.per_host_concurrency)
            .field("allow_destinations", &self.allow_destinations)
            .finish()
    }
}

/// `smtp://user:secret@host` → `smtp://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Replies to one agent within this window share one email.
    #[serde(deserialize_with = "values::duration")]
    pub batch_window: Duration,
    /// Replies listed in one email; more in the batch are counted, not shown.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_replies_per_email: usize,
    /// Characters of each reply's visible text an email carries.
    #[serde(deserialize_with = "values::to_usize")]
    pub excerpt_chars: usize,
}

impl NotificationsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_least(
            "notifications.max_replies_per_email",
            self.max_replies_per_email,
            1,
        )?;
        at_least("notifications.excerpt_chars", self.excerpt_chars, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_parse() {
        let cases: &[(&str, Result<RelayUrl, ()>)] = &[
            (
                "smtp://relay.example",
                Ok(RelayUrl {
                    host: "relay.example".into(),
                    port: 587,
                    tls: RelayTls::StartTlsIfOffered,
                    username: None,
                    password: None,
                }),
            ),
            (
                "smtp://bob:p%40ss%3Aword@relay.example:2525?starttls=required",
                Ok(RelayUrl {
                    host: "relay.example".into(),
                    port: 2525,
                    tls: RelayTls::StartTlsRequired,
                    username: Some("bob".into()),
                    password: Some("p@ss:word".into()),
                }),
            ),
            (
                "smtps://a%2Bb@[::1]",
                Ok(RelayUrl {
                    host: "::1".into(),
                    port: 465,
                    tls: RelayTls::Implicit,
                    username: Some("a+b".into()),
                    password: None,
                }),
            ),
            (
                "smtp://u:x@y@127.0.0.1:25/",
                Ok(RelayUrl {
                    host: "127.0.0.1".into(),
                    port: 25,
                    tls: RelayTls::StartTlsIfOffered,
                    username: Some("u".into()),
                    password: Some("x@y".into()),
                }),
            ),
            ("smtps://relay.example?starttls=required", Err(())),
            ("smtp://relay.example:0", Err(())),
            ("smtp://relay.example:x", Err(())),
            ("smtp://", Err(())),
            ("smtp://relay.example/path", Err(())),
            ("smtp://bad host", Err(())),
            ("smtp://u:%zz@relay.example", Err(())),
            ("relay.example:25", Err(())),
        ];
        for (url, want) in cases {
            let got = RelayUrl::parse(url).map_err(|_| ());
            assert_eq!(&got, want, "{url}");
        }
        let debug = format!("{:?}", RelayUrl::parse("smtp://bob:hunter2@relay.example"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
