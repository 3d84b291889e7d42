//! `[ingest]`, `[dns]`, `[senders]`: how inbound mail is taken in (SPF,
//! DKIM, DMARC and ARC checks; per-thread quotas), the resolver those
//! checks and MX delivery use, and how often sender domains' DNS is
//! re-checked.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{self, at_least};
use super::{ConfigError, invalid};

/// `[ingest]` keys and defaults, in the order `backchannel config` prints.
pub(super) const INGEST_DEFAULTS: &str = r#"
authenticate = true
max_thread_messages = 10_000
max_thread_bytes = 1_073_741_824
"#;

/// `[dns]` keys and defaults.
pub(super) const DNS_DEFAULTS: &str = r#"
nameservers = []
timeout = "5s"
"#;

/// `[senders]` keys and defaults.
pub(super) const SENDERS_DEFAULTS: &str = r#"
recheck_interval = "24h"
probe_wait = "10s"
"#;

/// The `[ingest]` keys; [`Config`](super::Config) holds `authenticate` as
/// `ingest_authenticate` and the quotas as [`IngestConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IngestSection {
    /// Check SPF/DKIM/DMARC/ARC of inbound mail through the resolver.
    pub(super) authenticate: bool,
    max_thread_messages: u64,
    max_thread_bytes: u64,
}

impl IngestSection {
    pub(super) fn quotas(&self) -> Result<IngestConfig, ConfigError> {
        at_least("ingest.max_thread_messages", self.max_thread_messages, 1)?;
        at_least("ingest.max_thread_bytes", self.max_thread_bytes, 1)?;
        Ok(IngestConfig {
            max_thread_messages: self.max_thread_messages,
            max_thread_bytes: self.max_thread_bytes,
        })
    }
}

/// What one side conversation may take in (SPEC §10 limits).
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most messages one side conversation takes in; beyond, RCPT to its
    /// reply address is `552 5.2.2`.
    pub max_thread_messages: u64,
    /// Most bytes of mail one side conversation takes in; likewise.
    pub max_thread_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// `ip:port` of the servers to ask; empty: the system resolver.
    #[serde(deserialize_with = "values::socket_addrs")]
    pub nameservers: Vec<SocketAddr>,
    #[serde(deserialize_with = "values::duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendersConfig {
    /// How often every sender's DNS is re-checked.
    #[serde(deserialize_with = "values::duration")]
    pub recheck_interval: Duration,
    /// How long `check` waits for its forwarding probe to come back.
    #[serde(deserialize_with = "values::duration")]
    pub probe_wait: Duration,
}

impl SendersConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.recheck_interval.as_secs() < 60 {
            return Err(invalid("senders.recheck_interval", "at least 1m"));
        }
        Ok(())
    }
}
