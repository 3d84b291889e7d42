//! `[imap]`: the IMAP listener of the agent view — its address, implicit
//! TLS files, connection and command limits, and the timeouts of the
//! unauthenticated phase.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{self, TlsFiles, at_least};
use super::{ConfigError, invalid};

/// The keys and their defaults, in the order `backchannel config` prints.
pub(super) const DEFAULTS: &str = r#"
listen = "127.0.0.1:1143"
tls_cert = ""
tls_key = ""
max_connections = 256
max_connections_per_ip = 16
idle_timeout = "30m"
max_line_bytes = 262_144
max_literal_bytes = 65_536
max_append_bytes = 26_214_400
preauth_timeout = "60s"
preauth_max_time = "2m"
tls_handshake_timeout = "30s"
login_failure_delay = "1s"
max_bad_commands = 50
shutdown_grace = "10s"
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    #[serde(deserialize_with = "values::socket_addr")]
    pub listen: SocketAddr,
    /// `tls_cert` and `tls_key` once both are known to be set.
    #[serde(skip)]
    pub tls: Option<TlsFiles>,
    tls_cert: String,
    tls_key: String,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections: usize,
    /// Open connections from one address; beyond → `* BYE [UNAVAILABLE]`.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections_per_ip: usize,
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub idle_timeout: Duration,
    /// Largest command a client may send, literals included (more than
    /// `max_literal_bytes`).
    #[serde(deserialize_with = "values::to_u32")]
    pub max_line_bytes: u32,
    /// Largest literal (`{n}`) before login (a LOGIN password), where
    /// `max_line_bytes` bounds the whole command; the limit of both after
    /// login when `max_append_bytes` is no larger.
    #[serde(deserialize_with = "values::to_u32")]
    pub max_literal_bytes: u32,
    /// Largest literal after login — in practice a sent message a client
    /// saves to `Sent` with APPEND (read and dropped: the gateway keeps its
    /// own copy); a command after login may be this plus 1 KiB.
    #[serde(deserialize_with = "values::to_u32")]
    pub max_append_bytes: u32,
    /// Before login, the longest wait for the next command.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub preauth_timeout: Duration,
    /// Before login, the longest the whole unauthenticated phase may last
    /// (a client sending NOOPs forever is still logged out).
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub preauth_max_time: Duration,
    /// Longest a TLS handshake (implicit TLS listener) may take.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub tls_handshake_timeout: Duration,
    /// Pause before a failed LOGIN/AUTHENTICATE is answered.
    #[serde(deserialize_with = "values::duration")]
    pub login_failure_delay: Duration,
    /// Consecutive invalid commands after which the connection is closed.
    #[serde(deserialize_with = "values::to_u32")]
    pub max_bad_commands: u32,
    /// How long sessions get to end after shutdown was asked.
    #[serde(deserialize_with = "values::duration")]
    pub shutdown_grace: Duration,
}

impl ImapConfig {
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        self.tls = values::tls_files("imap", &self.tls_cert, &self.tls_key)?;
        at_least("imap.max_connections", self.max_connections, 1)?;
        at_least(
            "imap.max_connections_per_ip",
            self.max_connections_per_ip,
            1,
        )?;
        // RFC 7162 §4: clients keep lines under 8192 octets, but the
        // largest literal plus its command must fit too.
        at_least("imap.max_line_bytes", self.max_line_bytes, 2048)?;
        // A literal is most often a LOGIN password.
        at_least("imap.max_literal_bytes", self.max_literal_bytes, 1024)?;
        at_least("imap.max_bad_commands", self.max_bad_commands, 1)?;
        if self.max_append_bytes < self.max_literal_bytes {
            return Err(invalid(
                "imap.max_append_bytes",
                format!(
                    "at least imap.max_literal_bytes ({})",
                    self.max_literal_bytes
                ),
            ));
        }
        if u64::from(self.max_literal_bytes) + 1024 > u64::from(self.max_line_bytes) {
            return Err(invalid(
                "imap.max_literal_bytes",
                format!(
                    "at most imap.max_line_bytes - 1024 ({}): a literal travels inside its command",
                    self.max_line_bytes.saturating_sub(1024)
                ),
            ));
        }
        if self.login_failure_delay > Duration::from_secs(60) {
            return Err(invalid(
                "imap.login_failure_delay",
                "at most 60s (the session waits that long for every failed login)",
            ));
        }
        Ok(())
    }
}
