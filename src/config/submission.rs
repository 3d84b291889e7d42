//! `[submission]`: the listener agents' own mail clients send through
//! (SPEC §12) — its address (`""` turns it off), message and session
//! limits, per-address connection limits, and the STARTTLS files (by
//! default those of `[smtp]`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{self, TlsFiles, at_least};
use super::{ConfigError, SmtpConfig, invalid};

/// The keys and their defaults, in the order `backchannel config` prints.
pub(super) const DEFAULTS: &str = r#"
listen = "127.0.0.1:1587"
max_message_bytes = 26_214_400
max_recipients = 50
max_connections = 128
max_connections_per_ip = 16
connections_per_minute_per_ip = 60
max_errors = 10
max_line_length = 4096
command_timeout = "5m"
data_timeout = "3m"
data_max_time = "30m"
tls_cert = ""
tls_key = ""
tls_handshake_timeout = "30s"
auth_failure_delay = "1s"
shutdown_grace = "30s"
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionConfig {
    /// `None` when `submission.listen` is empty: no listener.
    #[serde(deserialize_with = "values::optional_socket_addr")]
    pub listen: Option<SocketAddr>,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_message_bytes: usize,
    /// RCPTs of one message; the next gets `452 4.5.3`.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_recipients: usize,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections: usize,
    /// Open connections from one address; beyond → `421 4.7.0`.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections_per_ip: usize,
    /// New connections per minute from one address; beyond → `421 4.7.0`.
    #[serde(deserialize_with = "values::to_u32")]
    pub connections_per_minute_per_ip: u32,
    /// Refused commands after which the session is closed (`421`).
    #[serde(deserialize_with = "values::to_usize")]
    pub max_errors: usize,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_line_length: usize,
    /// Longest wait for one whole command line.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub command_timeout: Duration,
    /// Per read while in DATA.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub data_timeout: Duration,
    /// Longest a whole DATA transfer may take (slow senders).
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub data_max_time: Duration,
    /// `tls_cert` and `tls_key` once both are known: these keys, else
    /// `[smtp]`'s.
    #[serde(skip)]
    pub tls: Option<TlsFiles>,
    tls_cert: String,
    tls_key: String,
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub tls_handshake_timeout: Duration,
    /// Pause before a failed AUTH is answered (slows guessing).
    #[serde(deserialize_with = "values::duration")]
    pub auth_failure_delay: Duration,
    /// How long sessions get to end after shutdown was asked.
    #[serde(deserialize_with = "values::duration")]
    pub shutdown_grace: Duration,
}

impl SubmissionConfig {
    pub(super) fn validate(&mut self, smtp: &SmtpConfig) -> Result<(), ConfigError> {
        at_least("submission.max_message_bytes", self.max_message_bytes, 1024)?;
        at_least("submission.max_recipients", self.max_recipients, 1)?;
        at_least("submission.max_connections", self.max_connections, 1)?;
        at_least(
            "submission.max_connections_per_ip",
            self.max_connections_per_ip,
            1,
        )?;
        at_least(
            "submission.connections_per_minute_per_ip",
            self.connections_per_minute_per_ip,
            1,
        )?;
        at_least("submission.max_errors", self.max_errors, 1)?;
        // RFC 5321 §4.5.3.1.4: a command line is at least 512 octets.
        at_least("submission.max_line_length", self.max_line_length, 512)?;
        if self.auth_failure_delay > Duration::from_secs(60) {
            return Err(invalid(
                "submission.auth_failure_delay",
                "at most 60s (the session waits that long for every failed AUTH)",
            ));
        }
        self.tls = match values::tls_files("submission", &self.tls_cert, &self.tls_key)? {
            Some(files) => Some(files),
            None => smtp.tls.clone(),
        };
        Ok(())
    }
}
