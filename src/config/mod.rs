//! Configuration: TOML file + `BACKCHANNEL_<SECTION>_<KEY>` environment
//! overrides → a validated [`Config`]. Every error names the offending key.
//! The address ranges it holds (`Cidr`, `Exempt`, `AllowList`) are in
//! `ranges.rs`; this module imports nothing else of the crate.

mod ranges;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use ranges::{AllowList, Cidr, Exempt, normalize_host};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown config key `{0}`")]
    UnknownKey(String),
    #[error("environment variable {var} does not name a config key")]
    UnknownEnv { var: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// Raw form: exactly the TOML keys, every one with a default.

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub domain: String,
    pub data_dir: String,
    pub log: RawLog,
    pub smtp: RawSmtp,
    pub http: RawHttp,
    pub imap: RawImap,
    pub jmap: RawJmap,
    pub outbound: RawOutbound,
    pub notifications: RawNotifications,
    pub dns: RawDns,
    pub ingest: RawIngest,
    pub webhooks: RawWebhooks,
    pub senders: RawSenders,
    pub portal: RawPortal,
    pub limits: RawLimits,
}

/// Abuse limits shared by the listeners (see `src/limits.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Addresses (`ip` or `ip/prefix`) no abuse limit applies to.
    pub exempt: Vec<String>,
    /// Addresses each limiter remembers at most; the stalest are forgotten.
    pub max_tracked_ips: u64,
    /// Bad API tokens, portal links or IMAP logins from one address within
    /// `login_window` before it is refused (429 / NO) for `login_window`.
    pub login_failures: u64,
    pub login_window: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            exempt: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_tracked_ips: 65_536,
            login_failures: 10,
            login_window: "15m".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPortal {
    /// Most bytes of attachments one portal reply may carry.
    pub max_upload_bytes: u64,
    /// Portal replies accepted per side conversation and hour.
    pub replies_per_hour: u64,
}

impl Default for RawPortal {
    fn default() -> Self {
        RawPortal {
            max_upload_bytes: 10 * 1024 * 1024,
            replies_per_hour: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSenders {
    /// How often every sender's DNS is re-checked.
    pub recheck_interval: String,
    /// How long `check` waits for its forwarding probe to come back.
    pub probe_wait: String,
}

impl Default for RawSenders {
    fn default() -> Self {
        RawSenders {
            recheck_interval: "24h".into(),
            probe_wait: "10s".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhooks {
    /// Deliver queued events. Off: events are still queued and logged but
    /// nothing is sent (a staging copy, or a fuzzing run).
    pub deliver: bool,
    /// Hard limit on one delivery attempt (connect, send, response).
    pub timeout: String,
    /// Delays between attempts; the last step repeats.
    pub retry_schedule: Vec<String>,
    /// Age after which a delivery that keeps failing is given up.
    pub max_age: String,
    /// Attempts in flight at once, over all endpoints; an endpoint with
    /// nothing in flight may start one beyond it (`store::webhooks::select`).
    pub concurrency: u64,
    /// Attempts in flight at once to one endpoint.
    pub per_endpoint: u64,
    /// Internal destinations (CIDRs or host names) endpoints may still
    /// reach; everything loopback, private or link-local is refused.
    pub allow_destinations: Vec<String>,
}

impl Default for RawWebhooks {
    fn default() -> Self {
        RawWebhooks {
            deliver: true,
            timeout: "10s".into(),
            retry_schedule: ["10s", "1m", "5m", "30m", "2h", "6h"]
                .map(String::from)
                .to_vec(),
            max_age: "24h".into(),
            concurrency: 8,
            per_endpoint: 2,
            allow_destinations: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIngest {
    /// Check SPF/DKIM/DMARC/ARC of inbound mail through the resolver.
    pub authenticate: bool,
    /// Most messages one side conversation takes in; beyond, RCPT to its
    /// reply address is `552 5.2.2`.
    pub max_thread_messages: u64,
    /// Most bytes of mail one side conversation takes in; likewise.
    pub max_thread_bytes: u64,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            authenticate: true,
            max_thread_messages: 10_000,
            max_thread_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSmtp {
    pub listen: String,
    pub hostname: String,
    pub max_message_bytes: u64,
    pub max_connections: u64,
    pub max_connections_per_ip: u64,
    pub max_recipients: u64,
    pub max_errors: u64,
    pub max_line_length: u64,
    pub command_timeout: String,
    pub data_timeout: String,
    pub data_max_time: String,
    pub shutdown_grace: String,
    pub tls_cert: String,
    pub tls_key: String,
    /// Longest a TLS handshake after STARTTLS may take.
    pub tls_handshake_timeout: String,
    /// New connections per minute from one address; beyond → 421 4.7.0.
    pub connections_per_minute_per_ip: u64,
    /// Failed RCPTs (unknown recipient, relaying) from one address before
    /// each further one is answered slowly.
    pub rcpt_failures_before_tarpit: u64,
    /// The n-th failure past that threshold waits n times this.
    pub tarpit_delay: String,
    /// Failed RCPTs from one address within `rcpt_failure_window` that cut
    /// the session (421) and block the address for `block_time`.
    pub max_rcpt_failures: u64,
    pub rcpt_failure_window: String,
    pub block_time: String,
    /// Messages accepted from one envelope sender within an hour; beyond,
    /// `451 4.7.1` until the hour has passed.
    pub max_messages_per_sender_per_hour: u64,
    /// Bytes accepted from one envelope sender within an hour; likewise.
    pub max_bytes_per_sender_per_hour: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
    pub max_connections: u64,
    /// Open connections from one address; beyond → 429 and close.
    pub max_connections_per_ip: u64,
    pub idle_timeout: String,
    pub public_url: String,
    /// Where `GET /metrics` is served (no auth, so not on `listen`); empty:
    /// nowhere.
    pub metrics_listen: String,
    pub max_body_bytes: u64,
    pub request_timeout: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawImap {
    pub listen: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub max_connections: u64,
    /// Open connections from one address; beyond → `* BYE [UNAVAILABLE]`.
    pub max_connections_per_ip: u64,
    pub idle_timeout: String,
    /// Largest command a client may send, literals included.
    pub max_line_bytes: u64,
    /// Largest literal (`{n}`) in a command; nothing here takes message
    /// data, so this is small.
    pub max_literal_bytes: u64,
    /// Before login, the longest wait for the next command.
    pub preauth_timeout: String,
    /// Before login, the longest the whole unauthenticated phase may last
    /// (a client sending NOOPs forever is still logged out).
    pub preauth_max_time: String,
    /// Longest a TLS handshake (implicit TLS listener) may take.
    pub tls_handshake_timeout: String,
    /// Pause before a failed LOGIN/AUTHENTICATE is answered.
    pub login_failure_delay: String,
    /// Consecutive invalid commands after which the connection is closed.
    pub max_bad_commands: u64,
    /// How long sessions get to end after shutdown was asked.
    pub shutdown_grace: String,
}

/// JMAP limits (RFC 8620 §2 names most of them; the session resource
/// reports them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJmap {
    /// Bytes of one API request (`maxSizeRequest`); never more than
    /// `http.max_body_bytes`.
    pub max_size_request: u64,
    /// Method calls in one request (`maxCallsInRequest`).
    pub max_calls_in_request: u64,
    /// Ids in one `/get` (`maxObjectsInGet`).
    pub max_objects_in_get: u64,
    /// Items in one `/set` (`maxObjectsInSet`).
    pub max_objects_in_set: u64,
    /// API requests one user may have in progress (`maxConcurrentRequests`).
    pub max_concurrent_requests: u64,
    /// EventSource connections one user may hold open.
    pub max_push_streams: u64,
    /// Distinct names in one `properties`/`bodyProperties` list.
    pub max_properties: u64,
    /// Conditions in one Email/query filter, all levels together.
    pub max_filter_conditions: u64,
    /// Nesting of filter operators.
    pub max_filter_depth: u64,
    /// Changes one `/changes` call returns at most.
    pub max_changes: u64,
    /// Ids one Email/query returns at most (and by default).
    pub max_query_results: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutbound {
    pub mode: String,
    pub relay_url: String,
    pub retry_schedule: Vec<String>,
    pub max_age: String,
    pub dkim_selector: String,
    pub spf: Vec<String>,
    pub send_timeout: String,
    pub mx_port: u64,
    pub per_host_concurrency: u64,
    /// Internal destinations (CIDRs or host names) mode `mx` may still
    /// deliver to; everything loopback, private or link-local is refused.
    pub allow_destinations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotifications {
    pub batch_window: String,
    pub max_replies_per_email: u64,
    pub excerpt_chars: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    pub nameservers: Vec<String>,
    pub timeout: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            domain: "localhost".into(),
            data_dir: "./backchannel-data".into(),
            log: RawLog::default(),
            smtp: RawSmtp::default(),
            http: RawHttp::default(),
            imap: RawImap::default(),
            jmap: RawJmap::default(),
            outbound: RawOutbound::default(),
            notifications: RawNotifications::default(),
            dns: RawDns::default(),
            ingest: RawIngest::default(),
            webhooks: RawWebhooks::default(),
            senders: RawSenders::default(),
            portal: RawPortal::default(),
            limits: RawLimits::default(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Default for RawSmtp {
    fn default() -> Self {
        RawSmtp {
            listen: "127.0.0.1:2525".into(),
            hostname: String::new(),
            max_message_bytes: 26_214_400,
            max_connections: 512,
            max_connections_per_ip: 64,
            max_recipients: 100,
            max_errors: 10,
            max_line_length: 4096,
            command_timeout: "5m".into(),
            data_timeout: "3m".into(),
            data_max_time: "30m".into(),
            shutdown_grace: "30s".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_handshake_timeout: "30s".into(),
            connections_per_minute_per_ip: 120,
            rcpt_failures_before_tarpit: 3,
            tarpit_delay: "1s".into(),
            max_rcpt_failures: 20,
            rcpt_failure_window: "1h".into(),
            block_time: "30m".into(),
            max_messages_per_sender_per_hour: 1000,
            max_bytes_per_sender_per_hour: 1 << 30,
        }
    }
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "127.0.0.1:8080".into(),
            max_connections: 1024,
            max_connections_per_ip: 64,
            idle_timeout: "60s".into(),
            public_url: "http://127.0.0.1:8080".into(),
            metrics_listen: "127.0.0.1:9090".into(),
            max_body_bytes: 40 * 1024 * 1024,
            request_timeout: "60s".into(),
        }
    }
}

impl Default for RawImap {
    fn default() -> Self {
        RawImap {
            listen: "127.0.0.1:1143".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_connections: 256,
            max_connections_per_ip: 16,
            idle_timeout: "30m".into(),
            max_line_bytes: 256 * 1024,
            max_literal_bytes: 64 * 1024,
            preauth_timeout: "60s".into(),
            preauth_max_time: "2m".into(),
            tls_handshake_timeout: "30s".into(),
            login_failure_delay: "1s".into(),
            max_bad_commands: 50,
            shutdown_grace: "10s".into(),
        }
    }
}

impl Default for RawJmap {
    fn default() -> Self {
        RawJmap {
            max_size_request: 40 * 1024 * 1024,
            max_calls_in_request: 32,
            max_objects_in_get: 500,
            max_objects_in_set: 500,
            max_concurrent_requests: 4,
            max_push_streams: 4,
            max_properties: 128,
            max_filter_conditions: 256,
            max_filter_depth: 16,
            max_changes: 5000,
            max_query_results: 1000,
        }
    }
}

impl Default for RawOutbound {
    fn default() -> Self {
        RawOutbound {
            mode: "maildir".into(),
            relay_url: String::new(),
            retry_schedule: ["1m", "5m", "15m", "1h", "4h"].map(String::from).to_vec(),
            max_age: "3d".into(),
            dkim_selector: "backchannel".into(),
            spf: Vec::new(),
            send_timeout: "2m".into(),
            mx_port: 25,
            per_host_concurrency: 4,
            allow_destinations: Vec::new(),
        }
    }
}

impl Default for RawNotifications {
    fn default() -> Self {
        RawNotifications {
            batch_window: "2m".into(),
            max_replies_per_email: 20,
            excerpt_chars: 2000,
        }
    }
}

impl Default for RawDns {
    fn default() -> Self {
        RawDns {
            nameservers: Vec::new(),
            timeout: "5s".into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Validated form.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundMode {
    Maildir,
    Relay,
    Mx,
}

#[derive(Clone)]
pub struct Config {
    pub domain: String,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub log_level: String,
    pub smtp: SmtpConfig,
    pub http: HttpConfig,
    pub imap: ImapConfig,
    pub jmap: JmapConfig,
    pub outbound: OutboundConfig,
    pub notifications: NotificationsConfig,
    pub dns: DnsConfig,
    /// Authenticate inbound mail (SPF/DKIM/DMARC/ARC).
    pub ingest_authenticate: bool,
    /// Per-thread quotas.
    pub ingest: IngestConfig,
    pub senders: SendersConfig,
    pub webhooks: WebhooksConfig,
    pub portal: PortalConfig,
    pub limits: LimitsConfig,
    /// The merged raw keys, kept for `backchannel config`.
    raw: RawConfig,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub listen: SocketAddr,
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_recipients: usize,
    pub max_errors: usize,
    pub max_line_length: usize,
    pub command_timeout: Duration,
    /// Per read while in DATA/BDAT.
    pub data_timeout: Duration,
    /// Longest a whole DATA or BDAT transfer may take (slow senders).
    pub data_max_time: Duration,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsFiles>,
    pub tls_handshake_timeout: Duration,
    pub connections_per_minute_per_ip: u32,
    pub rcpt_failures_before_tarpit: u32,
    pub tarpit_delay: Duration,
    pub max_rcpt_failures: u32,
    pub rcpt_failure_window: Duration,
    pub block_time: Duration,
    pub max_messages_per_sender_per_hour: u64,
    pub max_bytes_per_sender_per_hour: u64,
}

/// What one side conversation may take in (SPEC §10 limits).
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub max_thread_messages: u64,
    pub max_thread_bytes: u64,
}

/// Abuse limits shared by the listeners.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub exempt: Exempt,
    pub max_tracked_ips: usize,
    pub login_failures: u32,
    pub login_window: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout: Duration,
    pub public_url: String,
    /// The metrics listener; `None` when `http.metrics_listen` is empty.
    pub metrics_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout: Duration,
    /// Largest command, literals included (more than `max_literal_bytes`).
    pub max_line_bytes: u32,
    pub max_literal_bytes: u32,
    pub preauth_timeout: Duration,
    pub preauth_max_time: Duration,
    pub tls_handshake_timeout: Duration,
    pub login_failure_delay: Duration,
    pub max_bad_commands: u32,
    pub shutdown_grace: Duration,
}

/// JMAP limits; the session resource reports the RFC 8620 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JmapConfig {
    /// Already capped at `http.max_body_bytes`.
    pub max_size_request: usize,
    pub max_calls_in_request: usize,
    pub max_objects_in_get: usize,
    pub max_objects_in_set: usize,
    pub max_concurrent_requests: usize,
    pub max_push_streams: usize,
    pub max_properties: usize,
    pub max_filter_conditions: usize,
    pub max_filter_depth: usize,
    pub max_changes: usize,
    pub max_query_results: usize,
}

#[derive(Clone)]
pub struct OutboundConfig {
    pub mode: OutboundMode,
    /// Relay URL with credentials; never printed (see `Debug`).
    pub relay_url: String,
    pub retry_schedule: Vec<Duration>,
    pub max_age: Duration,
    pub dkim_selector: String,
    pub spf: Vec<String>,
    /// Bound on one SMTP session (relay, or one MX host), connect to QUIT.
    pub send_timeout: Duration,
    /// The smarthost, parsed from `relay_url` (mode relay only).
    pub relay: Option<RelayUrl>,
    /// Port of the MX hosts (25; tests point it at a local sink).
    pub mx_port: u16,
    /// Concurrent sessions to one MX host.
    pub per_host_concurrency: usize,
    /// Internal addresses or names mode `mx` may deliver to (SPEC §10).
    pub allow_destinations: AllowList,
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

#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub deliver: bool,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub max_age: Duration,
    pub concurrency: usize,
    pub per_endpoint: usize,
    /// Internal addresses or names endpoints may reach (SPEC §10).
    pub allow_destinations: AllowList,
}

#[derive(Debug, Clone)]
pub struct SendersConfig {
    pub recheck_interval: Duration,
    pub probe_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    pub batch_window: Duration,
    /// Replies listed in one email; more in the batch are counted, not shown.
    pub max_replies_per_email: usize,
    /// Characters of each reply's visible text an email carries.
    pub excerpt_chars: usize,
}

/// The vendor portal (SPEC §8).
#[derive(Debug, Clone)]
pub struct PortalConfig {
    pub max_upload_bytes: usize,
    pub replies_per_hour: usize,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("domain", &self.domain)
            .field("data_dir", &self.data_dir)
            .field("log_format", &self.log_format)
            .field("smtp", &self.smtp)
            .field("http", &self.http)
            .field("imap", &self.imap)
            .field("jmap", &self.jmap)
            .field("outbound", &self.outbound)
            .field("notifications", &self.notifications)
            .field("dns", &self.dns)
            .field("webhooks", &self.webhooks)
            .field("portal", &self.portal)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Config {
    /// Loads the config: `path` if given, embedded defaults otherwise, then
    /// the `BACKCHANNEL_*` variables of `env` on top.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file_table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: path.to_path_buf(),
                        message: e.message().to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        Self::from_table(file_table, env)
    }

    /// Loads from TOML text (tests and embedding).
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: PathBuf::from("<string>"),
                message: e.message().to_string(),
            })?;
        Self::from_table(table, env)
    }

    fn from_table(
        mut table: toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults = default_table()?;
        check_known_keys(&table, &defaults, "")?;
        apply_env(&mut table, &defaults, env)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                invalid(&key, e.into_inner().to_string())
            })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let domain = raw.domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if !is_domain(&domain) {
            return Err(invalid(
                "domain",
                format!("`{}` is not a domain name", raw.domain),
            ));
        }
        if raw.data_dir.trim().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let log_format = match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("`{other}`: expected text or json"),
                ));
            }
        };
        if raw
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(invalid(
                "log.level",
                format!("`{}` is not a log filter", raw.log.level),
            ));
        }

        let s = &raw.smtp;
        let smtp = SmtpConfig {
            listen: socket("smtp.listen", &s.listen)?,
            hostname: if s.hostname.is_empty() {
                domain.clone()
            } else if is_domain(&s.hostname) {
                s.hostname.to_ascii_lowercase()
            } else {
                return Err(invalid("smtp.hostname", "not a domain name"));
            },
            max_message_bytes: positive("smtp.max_message_bytes", s.max_message_bytes, 1024)?,
            max_connections: positive("smtp.max_connections", s.max_connections, 1)?,
            max_connections_per_ip: positive(
                "smtp.max_connections_per_ip",
                s.max_connections_per_ip,
                1,
            )?,
            // RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted.
            max_recipients: positive("smtp.max_recipients", s.max_recipients, 1)?,
            max_errors: positive("smtp.max_errors", s.max_errors, 1)?,
            // RFC 5321 §4.5.3.1.4: a command line is at least 512 octets.
            max_line_length: positive("smtp.max_line_length", s.max_line_length, 512)?,
            command_timeout: duration("smtp.command_timeout", &s.command_timeout)?,
            data_timeout: duration("smtp.data_timeout", &s.data_timeout)?,
            data_max_time: nonzero_duration("smtp.data_max_time", &s.data_max_time)?,
            shutdown_grace: duration("smtp.shutdown_grace", &s.shutdown_grace)?,
            tls: tls_files("smtp", &s.tls_cert, &s.tls_key)?,
            tls_handshake_timeout: nonzero_duration(
                "smtp.tls_handshake_timeout",
                &s.tls_handshake_timeout,
            )?,
            connections_per_minute_per_ip: count(
                "smtp.connections_per_minute_per_ip",
                s.connections_per_minute_per_ip,
                1,
            )?,
            rcpt_failures_before_tarpit: count(
                "smtp.rcpt_failures_before_tarpit",
                s.rcpt_failures_before_tarpit,
                0,
            )?,
            tarpit_delay: duration("smtp.tarpit_delay", &s.tarpit_delay)?,
            max_rcpt_failures: count("smtp.max_rcpt_failures", s.max_rcpt_failures, 1)?,
            rcpt_failure_window: nonzero_duration(
                "smtp.rcpt_failure_window",
                &s.rcpt_failure_window,
            )?,
            block_time: nonzero_duration("smtp.block_time", &s.block_time)?,
            max_messages_per_sender_per_hour: positive(
                "smtp.max_messages_per_sender_per_hour",
                s.max_messages_per_sender_per_hour,
                1,
            )? as u64,
            max_bytes_per_sender_per_hour: positive(
                "smtp.max_bytes_per_sender_per_hour",
                s.max_bytes_per_sender_per_hour,
                1,
            )? as u64,
        };
        if smtp.tarpit_delay > Duration::from_secs(60) {
            return Err(invalid(
                "smtp.tarpit_delay",
                "at most 60s (each further failure waits longer still)",
            ));
        }

        let h = &raw.http;
        let public_url = h.public_url.trim_end_matches('/').to_string();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid(
                "http.public_url",
                "must start with http:// or https://",
            ));
        }
        let http = HttpConfig {
            listen: socket("http.listen", &h.listen)?,
            max_connections: positive("http.max_connections", h.max_connections, 1)?,
            max_connections_per_ip: positive(
                "http.max_connections_per_ip",
                h.max_connections_per_ip,
                1,
            )?,
            idle_timeout: nonzero_duration("http.idle_timeout", &h.idle_timeout)?,
            public_url,
            metrics_listen: match h.metrics_listen.trim() {
                "" => None,
                addr => Some(socket("http.metrics_listen", addr)?),
            },
            max_body_bytes: positive("http.max_body_bytes", h.max_body_bytes, 1024)?,
            request_timeout: duration("http.request_timeout", &h.request_timeout)?,
        };

        let i = &raw.imap;
        let imap = ImapConfig {
            listen: socket("imap.listen", &i.listen)?,
            tls: tls_files("imap", &i.tls_cert, &i.tls_key)?,
            max_connections: positive("imap.max_connections", i.max_connections, 1)?,
            max_connections_per_ip: positive(
                "imap.max_connections_per_ip",
                i.max_connections_per_ip,
                1,
            )?,
            idle_timeout: nonzero_duration("imap.idle_timeout", &i.idle_timeout)?,
            // RFC 7162 §4: clients keep lines under 8192 octets, but the
            // largest literal plus its command must fit too.
            max_line_bytes: count("imap.max_line_bytes", i.max_line_bytes, 2048)?,
            // A literal is most often a LOGIN password.
            max_literal_bytes: count("imap.max_literal_bytes", i.max_literal_bytes, 1024)?,
            preauth_timeout: nonzero_duration("imap.preauth_timeout", &i.preauth_timeout)?,
            preauth_max_time: nonzero_duration("imap.preauth_max_time", &i.preauth_max_time)?,
            tls_handshake_timeout: nonzero_duration(
                "imap.tls_handshake_timeout",
                &i.tls_handshake_timeout,
            )?,
            login_failure_delay: duration("imap.login_failure_delay", &i.login_failure_delay)?,
            max_bad_commands: count("imap.max_bad_commands", i.max_bad_commands, 1)?,
            shutdown_grace: duration("imap.shutdown_grace", &i.shutdown_grace)?,
        };
        if u64::from(imap.max_literal_bytes) + 1024 > u64::from(imap.max_line_bytes) {
            return Err(invalid(
                "imap.max_literal_bytes",
                format!(
                    "at most imap.max_line_bytes - 1024 ({}): a literal travels inside its command",
                    imap.max_line_bytes.saturating_sub(1024)
                ),
            ));
        }
        if imap.login_failure_delay > Duration::from_secs(60) {
            return Err(invalid(
                "imap.login_failure_delay",
                "at most 60s (the session waits that long for every failed login)",
            ));
        }

        let j = &raw.jmap;
        let jmap = JmapConfig {
            // The HTTP layer refuses larger bodies before JMAP sees them.
            max_size_request: positive("jmap.max_size_request", j.max_size_request, 1024)?
                .min(http.max_body_bytes),
            max_calls_in_request: positive("jmap.max_calls_in_request", j.max_calls_in_request, 1)?,
            max_objects_in_get: positive("jmap.max_objects_in_get", j.max_objects_in_get, 1)?,
            max_objects_in_set: positive("jmap.max_objects_in_set", j.max_objects_in_set, 1)?,
            max_concurrent_requests: positive(
                "jmap.max_concurrent_requests",
                j.max_concurrent_requests,
                1,
            )?,
            max_push_streams: positive("jmap.max_push_streams", j.max_push_streams, 1)?,
            max_properties: positive("jmap.max_properties", j.max_properties, 1)?,
            // Each condition deepens the one SQL expression Email/query
            // builds; past 256 it could exceed SQLite's expression depth
            // (1000) and fail in the database instead of as a client error.
            max_filter_conditions: at_most(
                "jmap.max_filter_conditions",
                positive("jmap.max_filter_conditions", j.max_filter_conditions, 1)?,
                256,
            )?,
            max_filter_depth: at_most(
                "jmap.max_filter_depth",
                positive("jmap.max_filter_depth", j.max_filter_depth, 1)?,
                64,
            )?,
            max_changes: positive("jmap.max_changes", j.max_changes, 1)?,
            max_query_results: positive("jmap.max_query_results", j.max_query_results, 1)?,
        };

        let o = &raw.outbound;
        let mode = match o.mode.as_str() {
            "maildir" => OutboundMode::Maildir,
            "relay" => OutboundMode::Relay,
            "mx" => OutboundMode::Mx,
            other => {
                return Err(invalid(
                    "outbound.mode",
                    format!("`{other}`: expected maildir, relay or mx"),
                ));
            }
        };
        if mode == OutboundMode::Relay && o.relay_url.is_empty() {
            return Err(invalid(
                "outbound.relay_url",
                "required when outbound.mode is relay",
            ));
        }
        let relay = if o.relay_url.is_empty() {
            None
        } else {
            // The message never repeats the URL: it may hold a password.
            Some(RelayUrl::parse(&o.relay_url).map_err(|m| invalid("outbound.relay_url", m))?)
        };
        let send_timeout = duration("outbound.send_timeout", &o.send_timeout)?;
        if send_timeout.is_zero() {
            return Err(invalid("outbound.send_timeout", "must be above zero"));
        }
        let mx_port = u16::try_from(o.mx_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid("outbound.mx_port", format!("{} is not a port", o.mx_port)))?;
        if o.retry_schedule.is_empty() {
            return Err(invalid(
                "outbound.retry_schedule",
                "needs at least one step",
            ));
        }
        let retry_schedule = o
            .retry_schedule
            .iter()
            .map(|d| duration("outbound.retry_schedule", d))
            .collect::<Result<Vec<_>, _>>()?;
        for entry in &o.spf {
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
        if o.dkim_selector.is_empty()
            || !o
                .dkim_selector
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid("outbound.dkim_selector", "must be a DNS label"));
        }
        let outbound = OutboundConfig {
            mode,
            relay_url: o.relay_url.clone(),
            retry_schedule,
            max_age: duration("outbound.max_age", &o.max_age)?,
            dkim_selector: o.dkim_selector.clone(),
            spf: o.spf.clone(),
            send_timeout,
            relay,
            mx_port,
            per_host_concurrency: positive(
                "outbound.per_host_concurrency",
                o.per_host_concurrency,
                1,
            )?,
            allow_destinations: allow_list("outbound.allow_destinations", &o.allow_destinations)?,
        };

        let notifications = NotificationsConfig {
            batch_window: duration(
                "notifications.batch_window",
                &raw.notifications.batch_window,
            )?,
            max_replies_per_email: positive(
                "notifications.max_replies_per_email",
                raw.notifications.max_replies_per_email,
                1,
            )?,
            excerpt_chars: positive(
                "notifications.excerpt_chars",
                raw.notifications.excerpt_chars,
                1,
            )?,
        };
        let dns = DnsConfig {
            nameservers: raw
                .dns
                .nameservers
                .iter()
                .map(|s| socket("dns.nameservers", s))
                .collect::<Result<_, _>>()?,
            timeout: duration("dns.timeout", &raw.dns.timeout)?,
        };

        let w = &raw.webhooks;
        if w.retry_schedule.is_empty() {
            return Err(invalid(
                "webhooks.retry_schedule",
                "needs at least one step",
            ));
        }
        let webhooks = WebhooksConfig {
            deliver: w.deliver,
            timeout: nonzero_duration("webhooks.timeout", &w.timeout)?,
            retry_schedule: w
                .retry_schedule
                .iter()
                .map(|d| nonzero_duration("webhooks.retry_schedule", d))
                .collect::<Result<Vec<_>, _>>()?,
            max_age: nonzero_duration("webhooks.max_age", &w.max_age)?,
            concurrency: positive("webhooks.concurrency", w.concurrency, 1)?,
            per_endpoint: positive("webhooks.per_endpoint", w.per_endpoint, 1)?,
            allow_destinations: allow_list("webhooks.allow_destinations", &w.allow_destinations)?,
        };

        let portal = PortalConfig {
            max_upload_bytes: positive(
                "portal.max_upload_bytes",
                raw.portal.max_upload_bytes,
                1024,
            )?,
            replies_per_hour: positive("portal.replies_per_hour", raw.portal.replies_per_hour, 1)?,
        };

        let l = &raw.limits;
        let limits = LimitsConfig {
            exempt: Exempt::new(
                l.exempt
                    .iter()
                    .map(|c| c.parse().map_err(|m: String| invalid("limits.exempt", m)))
                    .collect::<Result<_, _>>()?,
            ),
            max_tracked_ips: positive("limits.max_tracked_ips", l.max_tracked_ips, 16)?,
            login_failures: count("limits.login_failures", l.login_failures, 1)?,
            login_window: nonzero_duration("limits.login_window", &l.login_window)?,
        };

        Ok(Config {
            domain,
            data_dir: PathBuf::from(&raw.data_dir),
            log_format,
            log_level: raw.log.level.clone(),
            smtp,
            http,
            imap,
            jmap,
            outbound,
            notifications,
            dns,
            ingest_authenticate: raw.ingest.authenticate,
            ingest: IngestConfig {
                max_thread_messages: positive(
                    "ingest.max_thread_messages",
                    raw.ingest.max_thread_messages,
                    1,
                )? as u64,
                max_thread_bytes: positive(
                    "ingest.max_thread_bytes",
                    raw.ingest.max_thread_bytes,
                    1,
                )? as u64,
            },
            portal,
            limits,
            senders: SendersConfig {
                recheck_interval: duration(
                    "senders.recheck_interval",
                    &raw.senders.recheck_interval,
                )
                .and_then(|d| {
                    if d.as_secs() < 60 {
                        Err(invalid("senders.recheck_interval", "at least 1m"))
                    } else {
                        Ok(d)
                    }
                })?,
                probe_wait: duration("senders.probe_wait", &raw.senders.probe_wait)?,
            },
            webhooks,
            raw,
        })
    }

    /// Path of the SQLite database inside `data_dir`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("backchannel.db")
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.outbound.relay_url = redact_url(&raw.outbound.relay_url);
        toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
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

fn default_table() -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(RawConfig::default()).map_err(|e| ConfigError::Invalid {
        key: "(defaults)".into(),
        message: format!("the built-in defaults do not serialise: {e}"),
    })
}

fn check_known_keys(
    table: &toml::Table,
    defaults: &toml::Table,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match defaults.get(key) {
            None => return Err(ConfigError::UnknownKey(full)),
            Some(toml::Value::Table(sub_defaults)) => match value {
                toml::Value::Table(sub) => check_known_keys(sub, sub_defaults, &full)?,
                _ => return Err(invalid(&full, "must be a table ([section])")),
            },
            Some(_) => {}
        }
    }
    Ok(())
}

/// Applies `BACKCHANNEL_<SECTION>_<KEY>` (or `BACKCHANNEL_<KEY>` for
/// top-level keys). The value is read with the type the key has.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let vars: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("BACKCHANNEL_") && k != "BACKCHANNEL_CONFIG")
        .collect();
    for (var, value) in vars {
        let name = var["BACKCHANNEL_".len()..].to_ascii_lowercase();
        let mut target: Option<(Option<String>, String)> = None;
        for (section, sub) in defaults {
            if let toml::Value::Table(sub) = sub
                && let Some(key) = name.strip_prefix(&format!("{section}_"))
                && sub.contains_key(key)
            {
                target = Some((Some(section.clone()), key.to_string()));
            }
        }
        if target.is_none() && defaults.get(&name).is_some_and(|v| !v.is_table()) {
            target = Some((None, name.clone()));
        }
        let Some((section, key)) = target else {
            return Err(ConfigError::UnknownEnv { var });
        };
        let (default_value, dest) = match &section {
            Some(section) => {
                let default_value = defaults
                    .get(section)
                    .and_then(|s| s.get(&key))
                    .cloned()
                    .ok_or_else(|| ConfigError::UnknownEnv { var: var.clone() })?;
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(dest) = entry else {
                    return Err(invalid(section, "must be a table ([section])"));
                };
                (default_value, dest)
            }
            None => (
                defaults
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| ConfigError::UnknownEnv { var: var.clone() })?,
                &mut *table,
            ),
        };
        let full_key = match &section {
            Some(s) => format!("{s}.{key}"),
            None => key.clone(),
        };
        let parsed = env_value(&default_value, &value)
            .map_err(|m| invalid(&full_key, format!("from {var}: {m}")))?;
        dest.insert(key, parsed);
    }
    Ok(())
}

fn env_value(like: &toml::Value, text: &str) -> Result<toml::Value, String> {
    Ok(match like {
        toml::Value::Integer(_) => toml::Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a whole number"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match text.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(format!("`{text}` is not true or false")),
        }),
        toml::Value::Array(_) => {
            let t = text.trim();
            if t.starts_with('[') {
                let wrapped = format!("v = {t}");
                let parsed: toml::Table = wrapped
                    .parse()
                    .map_err(|_| format!("`{text}` is not a TOML array"))?;
                parsed
                    .get("v")
                    .cloned()
                    .unwrap_or(toml::Value::Array(Vec::new()))
            } else {
                toml::Value::Array(
                    t.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
        _ => toml::Value::String(text.to_string()),
    })
}

fn socket(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, format!("`{value}` is not an ip:port address")))
}

fn positive(key: &str, value: u64, min: u64) -> Result<usize, ConfigError> {
    if value < min {
        return Err(invalid(key, format!("{value} is below the minimum {min}")));
    }
    usize::try_from(value).map_err(|_| invalid(key, "too large"))
}

fn at_most(key: &str, value: usize, max: usize) -> Result<usize, ConfigError> {
    if value > max {
        return Err(invalid(key, format!("{value} is above the maximum {max}")));
    }
    Ok(value)
}

/// A whole number of at least `min` that fits in a u32.
fn count(key: &str, value: u64, min: u64) -> Result<u32, ConfigError> {
    if value < min {
        return Err(invalid(key, format!("{value} is below the minimum {min}")));
    }
    u32::try_from(value).map_err(|_| invalid(key, "too large"))
}

fn allow_list(key: &str, entries: &[String]) -> Result<AllowList, ConfigError> {
    AllowList::parse(entries).map_err(|m| invalid(key, m))
}

fn tls_files(section: &str, cert: &str, key: &str) -> Result<Option<TlsFiles>, ConfigError> {
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

fn is_domain(s: &str) -> bool {
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

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| {
        invalid(
            key,
            format!("`{value}` is not a duration (e.g. 500ms, 30s, 5m, 1h, 3d)"),
        )
    })
}

/// A duration that must not be zero (a zero timeout or retry step would
/// make a loop spin).
fn nonzero_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn embedded_defaults_match_the_spec() {
        let c = Config::load(None, no_env()).expect("defaults load");
        assert_eq!(c.domain, "localhost");
        assert_eq!(
            c.db_path(),
            PathBuf::from("./backchannel-data/backchannel.db")
        );
        assert_eq!(c.smtp.listen.to_string(), "127.0.0.1:2525");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.imap.listen.to_string(), "127.0.0.1:1143");
        assert_eq!(
            c.http.metrics_listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9090")
        );
        assert_eq!(c.outbound.mode, OutboundMode::Maildir);
        assert_eq!(c.smtp.max_message_bytes, 26_214_400);
        assert_eq!(c.smtp.max_connections, 512);
        assert_eq!(c.outbound.retry_schedule.len(), 5);
        assert_eq!(c.outbound.max_age, Duration::from_secs(3 * 86400));
        assert_eq!(c.portal.max_upload_bytes, 10 * 1024 * 1024);
        assert_eq!(c.portal.replies_per_hour, 20);
        assert_eq!(c.webhooks.timeout, Duration::from_secs(10));
        assert_eq!(
            c.webhooks.retry_schedule,
            [10, 60, 300, 1800, 7200, 21600].map(Duration::from_secs)
        );
        assert_eq!(c.webhooks.max_age, Duration::from_secs(86400));
        assert_eq!((c.webhooks.concurrency, c.webhooks.per_endpoint), (8, 2));
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let c = Config::from_toml_str(
            "domain = \"gw.example.com\"\n[smtp]\nlisten = \"127.0.0.1:2526\"\n",
            vec![
                (
                    "BACKCHANNEL_SMTP_LISTEN".to_string(),
                    "0.0.0.0:25".to_string(),
                ),
                (
                    "BACKCHANNEL_SMTP_MAX_CONNECTIONS".to_string(),
                    "7".to_string(),
                ),
                (
                    "BACKCHANNEL_OUTBOUND_RETRY_SCHEDULE".to_string(),
                    "1s, 2s".to_string(),
                ),
                ("BACKCHANNEL_DATA_DIR".to_string(), "/tmp/x".to_string()),
                ("BACKCHANNEL_CONFIG".to_string(), "ignored".to_string()),
                ("UNRELATED".to_string(), "1".to_string()),
            ],
        )
        .expect("loads");
        assert_eq!(c.domain, "gw.example.com");
        assert_eq!(c.smtp.listen.to_string(), "0.0.0.0:25");
        assert_eq!(c.smtp.max_connections, 7);
        assert_eq!(
            c.outbound.retry_schedule,
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn the_metrics_listener_is_an_address_or_off() {
        let on = |env: &str| {
            Config::load(
                None,
                vec![("BACKCHANNEL_HTTP_METRICS_LISTEN".to_string(), env.into())],
            )
            .expect("loads")
            .http
            .metrics_listen
        };
        assert_eq!(
            on("127.0.0.1:0"),
            Some("127.0.0.1:0".parse().expect("addr"))
        );
        assert_eq!(on(""), None, "empty turns it off");
        let c = Config::from_toml_str("[http]\nmetrics_listen = \"\"\n", no_env()).expect("loads");
        assert_eq!(c.http.metrics_listen, None);
        assert!(c.to_redacted_toml().contains("metrics_listen = \"\""));
    }

    /// (TOML text, environment, key the error must name)
    type ErrorCase = (&'static str, Vec<(String, String)>, &'static str);

    #[test]
    fn errors_name_the_key() {
        let cases: &[ErrorCase] = &[
            ("[smtp]\nlisten = \"nope\"\n", no_env(), "smtp.listen"),
            ("[smtp]\nbogus = 1\n", no_env(), "smtp.bogus"),
            ("bogus = 1\n", no_env(), "bogus"),
            (
                "[smtp]\nmax_connections = \"many\"\n",
                no_env(),
                "smtp.max_connections",
            ),
            (
                "[outbound]\nmode = \"carrier-pigeon\"\n",
                no_env(),
                "outbound.mode",
            ),
            (
                "[outbound]\nmode = \"relay\"\n",
                no_env(),
                "outbound.relay_url",
            ),
            (
                "[outbound]\nretry_schedule = [\"1 fortnight\"]\n",
                no_env(),
                "outbound.retry_schedule",
            ),
            (
                "[outbound]\nspf = [\"ip4:nope\"]\n",
                no_env(),
                "outbound.spf",
            ),
            ("[smtp]\ntls_cert = \"a.pem\"\n", no_env(), "smtp.tls_key"),
            (
                "[webhooks]\ntimeout = \"0s\"\n",
                no_env(),
                "webhooks.timeout",
            ),
            (
                "[webhooks]\nretry_schedule = []\n",
                no_env(),
                "webhooks.retry_schedule",
            ),
            (
                "[webhooks]\nretry_schedule = [\"soon\"]\n",
                no_env(),
                "webhooks.retry_schedule",
            ),
            (
                "[webhooks]\nmax_age = \"forever\"\n",
                no_env(),
                "webhooks.max_age",
            ),
            (
                "[webhooks]\nper_endpoint = 0\n",
                no_env(),
                "webhooks.per_endpoint",
            ),
            (
                "",
                vec![("BACKCHANNEL_WEBHOOKS_CONCURRENCY".into(), "0".into())],
                "webhooks.concurrency",
            ),
            ("domain = \"not a domain\"\n", no_env(), "domain"),
            ("[log]\nformat = \"xml\"\n", no_env(), "log.format"),
            ("smtp = 3\n", no_env(), "smtp"),
            (
                "[portal]\nreplies_per_hour = 0\n",
                no_env(),
                "portal.replies_per_hour",
            ),
            (
                "",
                vec![("BACKCHANNEL_PORTAL_MAX_UPLOAD_BYTES".into(), "big".into())],
                "portal.max_upload_bytes",
            ),
            (
                "[outbound]\nmode = \"relay\"\nrelay_url = \"http://relay.example\"\n",
                no_env(),
                "outbound.relay_url",
            ),
            (
                "[outbound]\nrelay_url = \"smtp://relay.example?tls=yes\"\n",
                no_env(),
                "outbound.relay_url",
            ),
            ("[outbound]\nmx_port = 0\n", no_env(), "outbound.mx_port"),
            (
                "[outbound]\nmx_port = 70000\n",
                no_env(),
                "outbound.mx_port",
            ),
            (
                "[outbound]\nper_host_concurrency = 0\n",
                no_env(),
                "outbound.per_host_concurrency",
            ),
            (
                "[outbound]\nsend_timeout = \"0s\"\n",
                no_env(),
                "outbound.send_timeout",
            ),
            (
                "",
                vec![("BACKCHANNEL_SMTP_MAX_CONNECTIONS".into(), "lots".into())],
                "smtp.max_connections",
            ),
            (
                "",
                vec![("BACKCHANNEL_SMTP_NOPE".into(), "1".into())],
                "BACKCHANNEL_SMTP_NOPE",
            ),
            (
                "[limits]\nexempt = [\"10.0.0.0/40\"]\n",
                no_env(),
                "limits.exempt",
            ),
            (
                "",
                vec![("BACKCHANNEL_LIMITS_EXEMPT".into(), "localhost".into())],
                "limits.exempt",
            ),
            (
                "[limits]\nlogin_failures = 0\n",
                no_env(),
                "limits.login_failures",
            ),
            (
                "[limits]\nlogin_window = \"0s\"\n",
                no_env(),
                "limits.login_window",
            ),
            (
                "[smtp]\nmax_rcpt_failures = 0\n",
                no_env(),
                "smtp.max_rcpt_failures",
            ),
            (
                "[smtp]\ntarpit_delay = \"5m\"\n",
                no_env(),
                "smtp.tarpit_delay",
            ),
            (
                "",
                vec![(
                    "BACKCHANNEL_SMTP_CONNECTIONS_PER_MINUTE_PER_IP".into(),
                    "0".into(),
                )],
                "smtp.connections_per_minute_per_ip",
            ),
            (
                "[smtp]\nblock_time = \"a while\"\n",
                no_env(),
                "smtp.block_time",
            ),
            (
                "[smtp]\ntls_handshake_timeout = \"0s\"\n",
                no_env(),
                "smtp.tls_handshake_timeout",
            ),
            (
                "[imap]\nmax_line_bytes = 0\n",
                no_env(),
                "imap.max_line_bytes",
            ),
            (
                "",
                vec![("BACKCHANNEL_IMAP_MAX_LINE_BYTES".into(), "big".into())],
                "imap.max_line_bytes",
            ),
            (
                "[imap]\nmax_literal_bytes = 10\n",
                no_env(),
                "imap.max_literal_bytes",
            ),
            (
                "[imap]\nmax_line_bytes = 8192\nmax_literal_bytes = 65536\n",
                no_env(),
                "imap.max_literal_bytes",
            ),
            (
                "[imap]\nmax_literal_bytes = 5000000000\nmax_line_bytes = 6000000000\n",
                no_env(),
                "imap.max_l",
            ),
            (
                "[imap]\nshutdown_grace = \"soon\"\n",
                no_env(),
                "imap.shutdown_grace",
            ),
            (
                "[imap]\npreauth_timeout = \"0s\"\n",
                no_env(),
                "imap.preauth_timeout",
            ),
            (
                "[http]\nmetrics_listen = \"9090\"\n",
                no_env(),
                "http.metrics_listen",
            ),
            (
                "[imap]\npreauth_max_time = \"0s\"\n",
                no_env(),
                "imap.preauth_max_time",
            ),
            (
                "[imap]\nmax_connections_per_ip = 0\n",
                no_env(),
                "imap.max_connections_per_ip",
            ),
            (
                "",
                vec![("BACKCHANNEL_HTTP_MAX_CONNECTIONS_PER_IP".into(), "0".into())],
                "http.max_connections_per_ip",
            ),
            (
                "[imap]\ntls_handshake_timeout = \"0s\"\n",
                no_env(),
                "imap.tls_handshake_timeout",
            ),
            (
                "[imap]\nlogin_failure_delay = \"2m\"\n",
                no_env(),
                "imap.login_failure_delay",
            ),
            (
                "[imap]\nmax_bad_commands = 0\n",
                no_env(),
                "imap.max_bad_commands",
            ),
            (
                "[jmap]\nmax_calls_in_request = 0\n",
                no_env(),
                "jmap.max_calls_in_request",
            ),
            (
                "[jmap]\nmax_calls_in_request = \"many\"\n",
                no_env(),
                "jmap.max_calls_in_request",
            ),
            (
                "",
                vec![("BACKCHANNEL_JMAP_MAX_CHANGES".into(), "lots".into())],
                "jmap.max_changes",
            ),
            (
                "[jmap]\nmax_size_request = 10\n",
                no_env(),
                "jmap.max_size_request",
            ),
            (
                "[jmap]\nmax_objects_in_get = 0\n",
                no_env(),
                "jmap.max_objects_in_get",
            ),
            (
                "[jmap]\nmax_objects_in_set = 0\n",
                no_env(),
                "jmap.max_objects_in_set",
            ),
            (
                "[jmap]\nmax_concurrent_requests = 0\n",
                no_env(),
                "jmap.max_concurrent_requests",
            ),
            (
                "[jmap]\nmax_push_streams = 0\n",
                no_env(),
                "jmap.max_push_streams",
            ),
            (
                "[jmap]\nmax_properties = 0\n",
                no_env(),
                "jmap.max_properties",
            ),
            (
                "[jmap]\nmax_filter_conditions = 1000\n",
                no_env(),
                "jmap.max_filter_conditions",
            ),
            (
                "[jmap]\nmax_filter_depth = 0\n",
                no_env(),
                "jmap.max_filter_depth",
            ),
            (
                "[jmap]\nmax_filter_depth = 65\n",
                no_env(),
                "jmap.max_filter_depth",
            ),
            (
                "[jmap]\nmax_query_results = 0\n",
                no_env(),
                "jmap.max_query_results",
            ),
            ("[jmap]\nbogus = 1\n", no_env(), "jmap.bogus"),
            (
                "[webhooks]\nallow_destinations = [\"10.0.0.0/33\"]\n",
                no_env(),
                "webhooks.allow_destinations",
            ),
            (
                "",
                vec![(
                    "BACKCHANNEL_OUTBOUND_ALLOW_DESTINATIONS".into(),
                    "127.0.0.0/8, not a host".into(),
                )],
                "outbound.allow_destinations",
            ),
        ];
        for (text, env, key) in cases {
            let err = Config::from_toml_str(text, env.clone())
                .err()
                .unwrap_or_else(|| panic!("{text:?} should fail"));
            let msg = err.to_string();
            assert!(
                msg.contains(key),
                "error for {text:?} should name {key}: {msg}"
            );
        }
    }

    #[test]
    fn printed_config_redacts_the_relay_password() {
        let c = Config::from_toml_str(
            "[outbound]\nmode = \"relay\"\nrelay_url = \"smtp://bob:hunter2@relay.example:587\"\n",
            no_env(),
        )
        .expect("loads");
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("smtp://bob:***@relay.example:587"),
            "{printed}"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        // The printed form loads back to the same effective values.
        let again = Config::from_toml_str(&printed, no_env()).expect("round trip");
        assert_eq!(again.outbound.mode, OutboundMode::Relay);
    }

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

    #[test]
    fn outbound_delivery_keys_have_defaults() {
        let c = Config::load(None, no_env()).expect("defaults load");
        assert_eq!(c.outbound.mx_port, 25);
        assert_eq!(c.outbound.per_host_concurrency, 4);
        assert_eq!(c.outbound.send_timeout, Duration::from_secs(120));
        assert!(c.outbound.relay.is_none());
    }

    #[test]
    fn abuse_limits_have_defaults_and_env_overrides() {
        let c = Config::load(None, no_env()).expect("defaults load");
        assert_eq!(c.smtp.connections_per_minute_per_ip, 120);
        assert_eq!(c.smtp.rcpt_failures_before_tarpit, 3);
        assert_eq!(c.smtp.tarpit_delay, Duration::from_secs(1));
        assert_eq!(c.smtp.max_rcpt_failures, 20);
        assert_eq!(c.smtp.rcpt_failure_window, Duration::from_secs(3600));
        assert_eq!(c.smtp.block_time, Duration::from_secs(1800));
        assert_eq!(c.limits.login_failures, 10);
        assert_eq!(c.limits.login_window, Duration::from_secs(900));
        assert_eq!(c.limits.max_tracked_ips, 65_536);
        assert!(c.limits.exempt.contains("127.0.0.1".parse().expect("ip")));
        assert!(c.limits.exempt.contains("::1".parse().expect("ip")));
        assert!(!c.limits.exempt.contains("192.0.2.1".parse().expect("ip")));
        let c = Config::load(
            None,
            vec![
                ("BACKCHANNEL_LIMITS_EXEMPT".into(), "".into()),
                ("BACKCHANNEL_LIMITS_LOGIN_FAILURES".into(), "3".into()),
                ("BACKCHANNEL_SMTP_MAX_RCPT_FAILURES".into(), "5".into()),
                ("BACKCHANNEL_SMTP_TARPIT_DELAY".into(), "250ms".into()),
            ],
        )
        .expect("loads");
        assert!(!c.limits.exempt.contains("127.0.0.1".parse().expect("ip")));
        assert_eq!(c.limits.login_failures, 3);
        assert_eq!(c.smtp.max_rcpt_failures, 5);
        assert_eq!(c.smtp.tarpit_delay, Duration::from_millis(250));
    }

    #[test]
    fn imap_and_jmap_limits_have_defaults_and_env_overrides() {
        let c = Config::load(None, no_env()).expect("defaults load");
        let i = &c.imap;
        assert_eq!(
            (i.max_line_bytes, i.max_literal_bytes),
            (256 * 1024, 64 * 1024)
        );
        assert_eq!(i.shutdown_grace, Duration::from_secs(10));
        assert_eq!(i.preauth_timeout, Duration::from_secs(60));
        assert_eq!(i.preauth_max_time, Duration::from_secs(120));
        assert_eq!(i.max_connections_per_ip, 16);
        assert_eq!(c.http.max_connections_per_ip, 64);
        assert_eq!(i.tls_handshake_timeout, Duration::from_secs(30));
        assert_eq!(i.login_failure_delay, Duration::from_secs(1));
        assert_eq!(i.max_bad_commands, 50);
        assert_eq!(
            c.jmap,
            JmapConfig {
                max_size_request: 40 * 1024 * 1024,
                max_calls_in_request: 32,
                max_objects_in_get: 500,
                max_objects_in_set: 500,
                max_concurrent_requests: 4,
                max_push_streams: 4,
                max_properties: 128,
                max_filter_conditions: 256,
                max_filter_depth: 16,
                max_changes: 5000,
                max_query_results: 1000,
            }
        );
        let c = Config::from_toml_str(
            "[http]\nmax_body_bytes = 65536\n[jmap]\nmax_objects_in_get = 7\n",
            vec![
                ("BACKCHANNEL_JMAP_MAX_CALLS_IN_REQUEST".into(), "2".into()),
                ("BACKCHANNEL_IMAP_MAX_LINE_BYTES".into(), "8192".into()),
                ("BACKCHANNEL_IMAP_MAX_LITERAL_BYTES".into(), "4096".into()),
                ("BACKCHANNEL_IMAP_SHUTDOWN_GRACE".into(), "250ms".into()),
                ("BACKCHANNEL_IMAP_PREAUTH_MAX_TIME".into(), "30s".into()),
                ("BACKCHANNEL_IMAP_MAX_CONNECTIONS_PER_IP".into(), "3".into()),
                ("BACKCHANNEL_HTTP_MAX_CONNECTIONS_PER_IP".into(), "5".into()),
            ],
        )
        .expect("loads");
        assert_eq!(c.jmap.max_calls_in_request, 2);
        assert_eq!(c.jmap.max_objects_in_get, 7);
        // A JMAP request is never larger than the HTTP layer lets through.
        assert_eq!(c.jmap.max_size_request, 65536);
        assert_eq!(
            (c.imap.max_line_bytes, c.imap.max_literal_bytes),
            (8192, 4096)
        );
        assert_eq!(c.imap.shutdown_grace, Duration::from_millis(250));
        assert_eq!(c.imap.preauth_max_time, Duration::from_secs(30));
        assert_eq!(
            (c.imap.max_connections_per_ip, c.http.max_connections_per_ip),
            (3, 5)
        );
        let printed = c.to_redacted_toml();
        assert!(printed.contains("[jmap]"), "{printed}");
        assert!(printed.contains("max_calls_in_request = 2"), "{printed}");
        assert!(printed.contains("max_line_bytes = 8192"), "{printed}");
        assert!(printed.contains("preauth_max_time = \"30s\""), "{printed}");
    }

    #[test]
    fn allow_destinations_default_empty_and_come_from_file_or_env() {
        let c = Config::load(None, no_env()).expect("defaults load");
        assert!(c.webhooks.allow_destinations.is_empty());
        assert!(c.outbound.allow_destinations.is_empty());
        let c = Config::from_toml_str(
            "[webhooks]\nallow_destinations = [\"127.0.0.0/8\", \"hooks.corp.example\"]\n",
            vec![(
                "BACKCHANNEL_OUTBOUND_ALLOW_DESTINATIONS".into(),
                "10.0.0.0/8, mx.corp.example".into(),
            )],
        )
        .expect("loads");
        let ip = |s: &str| s.parse().expect("ip");
        assert!(c.webhooks.allow_destinations.allows_ip(ip("127.0.0.1")));
        assert!(
            c.webhooks
                .allow_destinations
                .allows_name("hooks.corp.example")
        );
        assert!(!c.webhooks.allow_destinations.allows_ip(ip("10.0.0.1")));
        assert!(c.outbound.allow_destinations.allows_ip(ip("10.1.2.3")));
        assert!(c.outbound.allow_destinations.allows_name("mx.corp.example"));
        let printed = c.to_redacted_toml();
        assert!(printed.contains("\"127.0.0.0/8\""), "{printed}");
        assert!(printed.contains("\"mx.corp.example\""), "{printed}");
        let again = Config::from_toml_str(&printed, no_env()).expect("round trip");
        assert!(
            again
                .outbound
                .allow_destinations
                .allows_name("mx.corp.example")
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("3d"), Some(Duration::from_secs(259_200)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }
}
