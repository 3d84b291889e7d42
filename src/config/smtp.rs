//! `[smtp]`: the inbound SMTP listener — its address and name, message and
//! session limits, STARTTLS files, and the per-address abuse limits it
//! applies (tarpit, blocks, per-sender quotas).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{self, TlsFiles, at_least, is_domain};
use super::{ConfigError, invalid};

/// The keys and their defaults, in the order `backchannel config` prints.
pub(super) const DEFAULTS: &str = r#"
listen = "127.0.0.1:2525"
hostname = ""
max_message_bytes = 26_214_400
max_connections = 512
max_connections_per_ip = 64
max_recipients = 100
max_errors = 10
max_line_length = 4096
command_timeout = "5m"
data_timeout = "3m"
data_max_time = "30m"
shutdown_grace = "30s"
tls_cert = ""
tls_key = ""
tls_handshake_timeout = "30s"
connections_per_minute_per_ip = 120
rcpt_failures_before_tarpit = 3
tarpit_delay = "1s"
max_rcpt_failures = 20
rcpt_failure_window = "1h"
block_time = "30m"
max_messages_per_sender_per_hour = 1000
max_bytes_per_sender_per_hour = 1_073_741_824
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    #[serde(deserialize_with = "values::socket_addr")]
    pub listen: SocketAddr,
    /// Name in the greeting and EHLO reply; empty in the file: `domain`.
    pub hostname: String,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_message_bytes: usize,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections: usize,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections_per_ip: usize,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_recipients: usize,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_errors: usize,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_line_length: usize,
    #[serde(deserialize_with = "values::duration")]
    pub command_timeout: Duration,
    /// Per read while in DATA/BDAT.
    #[serde(deserialize_with = "values::duration")]
    pub data_timeout: Duration,
    /// Longest a whole DATA or BDAT transfer may take (slow senders).
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub data_max_time: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub shutdown_grace: Duration,
    /// `tls_cert` and `tls_key` once both are known to be set.
    #[serde(skip)]
    pub tls: Option<TlsFiles>,
    tls_cert: String,
    tls_key: String,
    /// Longest a TLS handshake after STARTTLS may take.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub tls_handshake_timeout: Duration,
    /// New connections per minute from one address; beyond → 421 4.7.0.
    #[serde(deserialize_with = "values::to_u32")]
    pub connections_per_minute_per_ip: u32,
    /// Failed RCPTs (unknown recipient, relaying) from one address before
    /// each further one is answered slowly.
    #[serde(deserialize_with = "values::to_u32")]
    pub rcpt_failures_before_tarpit: u32,
    /// The n-th failure past that threshold waits n times this.
    #[serde(deserialize_with = "values::duration")]
    pub tarpit_delay: Duration,
    /// Failed RCPTs from one address within `rcpt_failure_window` that cut
    /// the session (421) and block the address for `block_time`.
    #[serde(deserialize_with = "values::to_u32")]
    pub max_rcpt_failures: u32,
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub rcpt_failure_window: Duration,
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub block_time: Duration,
    /// Messages accepted from one envelope sender within an hour; beyond,
    /// `451 4.7.1` until the hour has passed.
    pub max_messages_per_sender_per_hour: u64,
    /// Bytes accepted from one envelope sender within an hour; likewise.
    pub max_bytes_per_sender_per_hour: u64,
}

impl SmtpConfig {
    /// Ranges and the rules between keys; an empty `hostname` becomes the
    /// gateway's `domain`.
    pub(super) fn validate(&mut self, domain: &str) -> Result<(), ConfigError> {
        self.hostname = if self.hostname.is_empty() {
            domain.to_string()
        } else if is_domain(&self.hostname) {
            self.hostname.to_ascii_lowercase()
        } else {
            return Err(invalid("smtp.hostname", "not a domain name"));
        };
        at_least("smtp.max_message_bytes", self.max_message_bytes, 1024)?;
        at_least("smtp.max_connections", self.max_connections, 1)?;
        at_least(
            "smtp.max_connections_per_ip",
            self.max_connections_per_ip,
            1,
        )?;
        // RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted.
        at_least("smtp.max_recipients", self.max_recipients, 1)?;
        at_least("smtp.max_errors", self.max_errors, 1)?;
        // RFC 5321 §4.5.3.1.4: a command line is at least 512 octets.
        at_least("smtp.max_line_length", self.max_line_length, 512)?;
        self.tls = values::tls_files("smtp", &self.tls_cert, &self.tls_key)?;
        at_least(
            "smtp.connections_per_minute_per_ip",
            self.connections_per_minute_per_ip,
            1,
        )?;
        at_least("smtp.max_rcpt_failures", self.max_rcpt_failures, 1)?;
        at_least(
            "smtp.max_messages_per_sender_per_hour",
            self.max_messages_per_sender_per_hour,
            1,
        )?;
        at_least(
            "smtp.max_bytes_per_sender_per_hour",
            self.max_bytes_per_sender_per_hour,
            1,
        )?;
        if self.tarpit_delay > Duration::from_secs(60) {
            return Err(invalid(
                "smtp.tarpit_delay",
                "at most 60s (each further failure waits longer still)",
            ));
        }
        Ok(())
    }
}
