//! `[http]`, `[jmap]`, `[portal]`: the HTTP listener (API, portal, JMAP)
//! and its metrics listener, the JMAP limits (RFC 8620 §2) and the vendor
//! portal's upload and reply limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{self, at_least, at_most};
use super::{ConfigError, invalid};

/// `[http]` keys and defaults, in the order `backchannel config` prints.
pub(super) const HTTP_DEFAULTS: &str = r#"
listen = "127.0.0.1:8080"
max_connections = 1024
max_connections_per_ip = 64
idle_timeout = "60s"
public_url = "http://127.0.0.1:8080"
metrics_listen = "127.0.0.1:9090"
max_body_bytes = 41_943_040
request_timeout = "60s"
"#;

/// `[jmap]` keys and defaults.
pub(super) const JMAP_DEFAULTS: &str = r#"
max_size_request = 41_943_040
max_calls_in_request = 32
max_objects_in_get = 500
max_objects_in_set = 500
max_concurrent_requests = 4
max_push_streams = 4
max_properties = 128
max_filter_conditions = 256
max_filter_depth = 16
max_changes = 5000
max_query_results = 1000
"#;

/// `[portal]` keys and defaults.
pub(super) const PORTAL_DEFAULTS: &str = r#"
max_upload_bytes = 10_485_760
replies_per_hour = 20
"#;

/// `[console]` keys and defaults.
pub(super) const CONSOLE_DEFAULTS: &str = r#"
session_idle_timeout = "12h"
session_max_age = "30d"
login_link_ttl = "15m"
max_upload_bytes = 26_214_400
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(deserialize_with = "values::socket_addr")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections: usize,
    /// Open connections from one address; beyond → 429 and close.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_connections_per_ip: usize,
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub idle_timeout: Duration,
    /// Base of the links in mail and pages, without a final `/`.
    pub public_url: String,
    /// Where `GET /metrics` is served (no auth, so not on `listen`); `None`
    /// when `http.metrics_listen` is empty.
    #[serde(deserialize_with = "values::optional_socket_addr")]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(deserialize_with = "values::to_usize")]
    pub max_body_bytes: usize,
    #[serde(deserialize_with = "values::duration")]
    pub request_timeout: Duration,
}

impl HttpConfig {
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        self.public_url = self.public_url.trim_end_matches('/').to_string();
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(invalid(
                "http.public_url",
                "must start with http:// or https://",
            ));
        }
        at_least("http.max_connections", self.max_connections, 1)?;
        at_least(
            "http.max_connections_per_ip",
            self.max_connections_per_ip,
            1,
        )?;
        at_least("http.max_body_bytes", self.max_body_bytes, 1024)?;
        Ok(())
    }
}

/// JMAP limits (RFC 8620 §2 names most of them); the session resource
/// reports the RFC 8620 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JmapConfig {
    /// Bytes of one API request (`maxSizeRequest`); already capped at
    /// `http.max_body_bytes`.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_size_request: usize,
    /// Method calls in one request (`maxCallsInRequest`).
    #[serde(deserialize_with = "values::to_usize")]
    pub max_calls_in_request: usize,
    /// Ids in one `/get` (`maxObjectsInGet`).
    #[serde(deserialize_with = "values::to_usize")]
    pub max_objects_in_get: usize,
    /// Items in one `/set` (`maxObjectsInSet`).
    #[serde(deserialize_with = "values::to_usize")]
    pub max_objects_in_set: usize,
    /// API requests one user may have in progress (`maxConcurrentRequests`).
    #[serde(deserialize_with = "values::to_usize")]
    pub max_concurrent_requests: usize,
    /// EventSource connections one user may hold open.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_push_streams: usize,
    /// Distinct names in one `properties`/`bodyProperties` list.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_properties: usize,
    /// Conditions in one Email/query filter, all levels together.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_filter_conditions: usize,
    /// Nesting of filter operators.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_filter_depth: usize,
    /// Changes one `/changes` call returns at most.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_changes: usize,
    /// Ids one Email/query returns at most (and by default).
    #[serde(deserialize_with = "values::to_usize")]
    pub max_query_results: usize,
}

impl JmapConfig {
    /// Ranges; `max_size_request` is capped at `http.max_body_bytes`.
    pub(super) fn validate(&mut self, http: &HttpConfig) -> Result<(), ConfigError> {
        at_least("jmap.max_size_request", self.max_size_request, 1024)?;
        // The HTTP layer refuses larger bodies before JMAP sees them.
        self.max_size_request = self.max_size_request.min(http.max_body_bytes);
        at_least("jmap.max_calls_in_request", self.max_calls_in_request, 1)?;
        at_least("jmap.max_objects_in_get", self.max_objects_in_get, 1)?;
        at_least("jmap.max_objects_in_set", self.max_objects_in_set, 1)?;
        at_least(
            "jmap.max_concurrent_requests",
            self.max_concurrent_requests,
            1,
        )?;
        at_least("jmap.max_push_streams", self.max_push_streams, 1)?;
        at_least("jmap.max_properties", self.max_properties, 1)?;
        // Each condition deepens the one SQL expression Email/query
        // builds; past 256 it could exceed SQLite's expression depth
        // (1000) and fail in the database instead of as a client error.
        at_least("jmap.max_filter_conditions", self.max_filter_conditions, 1)?;
        at_most(
            "jmap.max_filter_conditions",
            self.max_filter_conditions,
            256,
        )?;
        at_least("jmap.max_filter_depth", self.max_filter_depth, 1)?;
        at_most("jmap.max_filter_depth", self.max_filter_depth, 64)?;
        at_least("jmap.max_changes", self.max_changes, 1)?;
        at_least("jmap.max_query_results", self.max_query_results, 1)?;
        Ok(())
    }
}

/// The vendor portal (SPEC §8).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Most bytes of attachments one portal reply may carry.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_upload_bytes: usize,
    /// Portal replies accepted per side conversation and hour.
    #[serde(deserialize_with = "values::to_usize")]
    pub replies_per_hour: usize,
}

/// The web console (SPEC §11): its sessions and sign-in links.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session unused this long is over (sign in again).
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub session_idle_timeout: Duration,
    /// A session is over this long after sign-in, used or not.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub session_max_age: Duration,
    /// How long a one-time sign-in link works.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub login_link_ttl: Duration,
    /// Most bytes of attachments one message started or sent from the
    /// console may carry.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_upload_bytes: usize,
}

impl ConsoleConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.session_idle_timeout > self.session_max_age {
            return Err(invalid(
                "console.session_idle_timeout",
                "must not be longer than console.session_max_age",
            ));
        }
        at_least("console.max_upload_bytes", self.max_upload_bytes, 1024)
    }
}

impl PortalConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_least("portal.max_upload_bytes", self.max_upload_bytes, 1024)?;
        at_least("portal.replies_per_hour", self.replies_per_hour, 1)
    }
}
