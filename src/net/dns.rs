//! The one place that turns `[dns]` ([`DnsConfig`]) into a hickory resolver
//! configuration and builds resolvers from it: mail-auth's
//! [`MessageAuthenticator`] (inbound authentication, the sender DNS
//! checks) and plain [`TokioResolver`]s (MX lookups, webhook endpoints).
//!
//! With `dns.nameservers` set, only those servers answer (UDP and TCP each,
//! never `/etc/hosts`); with the list empty, the system configuration
//! does. Every query is bounded by `dns.timeout`, which must be above zero.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::system_conf::read_system_conf;

use crate::config::DnsConfig;

/// How a resolver caches answers; each user picks its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cache {
    /// Responses kept.
    pub size: u64,
    /// Longest an answer (positive or negative) is kept, whatever its TTL
    /// says; `None` keeps hickory's default.
    pub max_ttl: Option<Duration>,
    /// Longest a negative answer is kept (RFC 2308: its SOA's minimum, but
    /// no longer than this); `None`: as `max_ttl`.
    pub negative_max_ttl: Option<Duration>,
}

impl Cache {
    /// `size` responses, kept as long as their TTL says.
    pub const fn of(size: u64) -> Cache {
        Cache {
            size,
            max_ttl: None,
            negative_max_ttl: None,
        }
    }
}

/// The hickory resolver configuration for `dns`: the servers of
/// `dns.nameservers` (UDP and TCP each, never `/etc/hosts`), or the system
/// configuration when that list is empty; `dns.timeout` per query.
pub fn resolver_config(dns: &DnsConfig) -> anyhow::Result<(ResolverConfig, ResolverOpts)> {
    ensure!(!dns.timeout.is_zero(), "dns.timeout must be above zero");
    let (config, mut opts) = if dns.nameservers.is_empty() {
        read_system_conf().context("reading the system DNS configuration")?
    } else {
        let servers = dns.nameservers.iter().map(name_server).collect();
        let mut opts = ResolverOpts::default();
        // Only the configured servers answer, never /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        (ResolverConfig::from_name_servers(servers), opts)
    };
    opts.timeout = dns.timeout;
    Ok((config, opts))
}

/// A resolver on `dns` with `cache`.
pub fn resolver(dns: &DnsConfig, cache: Cache) -> anyhow::Result<TokioResolver> {
    let (config, opts) = options(dns, cache)?;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .context("building the DNS resolver")
}

/// mail-auth's authenticator (SPF, DKIM, DMARC, ARC) on `dns` with
/// `cache`; its [`MessageAuthenticator::resolver`] serves plain lookups
/// through the same cache.
pub fn authenticator(dns: &DnsConfig, cache: Cache) -> anyhow::Result<MessageAuthenticator> {
    let (config, opts) = options(dns, cache)?;
    MessageAuthenticator::new(config, opts).context("building the DNS resolver")
}

fn options(dns: &DnsConfig, cache: Cache) -> anyhow::Result<(ResolverConfig, ResolverOpts)> {
    let (config, mut opts) = resolver_config(dns)?;
    opts.cache_size = cache.size;
    if let Some(ttl) = cache.max_ttl {
        opts.positive_max_ttl = Some(ttl);
        opts.negative_max_ttl = Some(ttl);
    }
    if let Some(ttl) = cache.negative_max_ttl {
        opts.negative_max_ttl = Some(ttl);
    }
    Ok((config, opts))
}

/// One nameserver from the config: UDP and TCP on its port.
fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(timeout: Duration) -> DnsConfig {
        DnsConfig {
            nameservers: vec![
                "127.0.0.1:5353".parse().expect("addr"),
                "[::1]:53".parse().expect("addr"),
            ],
            timeout,
        }
    }

    #[test]
    fn configured_servers_only_with_udp_and_tcp() {
        let (config, opts) = resolver_config(&dns(Duration::from_millis(700))).expect("config");
        assert_eq!(opts.timeout, Duration::from_millis(700));
        assert_eq!(opts.use_hosts_file, ResolveHosts::Never);
        let servers = config.name_servers();
        assert_eq!(servers.len(), 2);
        let first = &servers[0];
        assert_eq!(
            first.ip,
            "127.0.0.1".parse::<std::net::IpAddr>().expect("ip")
        );
        assert_eq!(first.connections.len(), 2, "UDP and TCP");
        assert!(first.connections.iter().all(|c| c.port == 5353));
    }

    #[test]
    fn zero_timeout_is_refused_by_every_builder() {
        let zero = dns(Duration::ZERO);
        assert!(resolver_config(&zero).is_err());
        assert!(resolver(&zero, Cache::of(8)).is_err());
        assert!(authenticator(&zero, Cache::of(8)).is_err());
    }

    #[test]
    fn cache_settings_reach_the_options() {
        let cache = Cache {
            size: 32,
            max_ttl: Some(Duration::from_secs(5)),
            negative_max_ttl: None,
        };
        let (_, opts) = options(&dns(Duration::from_secs(1)), cache).expect("options");
        assert_eq!(opts.cache_size, 32);
        assert_eq!(opts.positive_max_ttl, Some(Duration::from_secs(5)));
        assert_eq!(opts.negative_max_ttl, Some(Duration::from_secs(5)));
        let negative = Cache {
            negative_max_ttl: Some(Duration::from_secs(60)),
            ..Cache::of(8)
        };
        let (_, opts) = options(&dns(Duration::from_secs(1)), negative).expect("options");
        assert_eq!(opts.negative_max_ttl, Some(Duration::from_secs(60)));
        assert_eq!(
            opts.positive_max_ttl,
            ResolverOpts::default().positive_max_ttl
        );
        let (_, plain) = options(&dns(Duration::from_secs(1)), Cache::of(8)).expect("options");
        assert_eq!(
            plain.positive_max_ttl,
            ResolverOpts::default().positive_max_ttl
        );
    }
}
