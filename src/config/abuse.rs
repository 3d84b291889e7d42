//! `[limits]`: the abuse limits every listener shares (`src/limits.rs`) —
//! exempt addresses, how many addresses a limiter remembers, and the
//! failed-login limit and window.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::ranges::{self, Exempt};
use super::values::{self, at_least};

/// The keys and their defaults, in the order `backchannel config` prints.
pub(super) const DEFAULTS: &str = r#"
exempt = ["127.0.0.0/8", "::1/128"]
max_tracked_ips = 65_536
login_failures = 10
login_window = "15m"
"#;

/// Abuse limits shared by the listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Addresses (`ip` or `ip/prefix`) no abuse limit applies to.
    #[serde(deserialize_with = "ranges::exempt")]
    pub exempt: Exempt,
    /// Addresses each limiter remembers at most; the stalest are forgotten.
    #[serde(deserialize_with = "values::to_usize")]
    pub max_tracked_ips: usize,
    /// Bad API tokens, portal links or IMAP logins from one address within
    /// `login_window` before it is refused (429 / NO) for `login_window`.
    #[serde(deserialize_with = "values::to_u32")]
    pub login_failures: u32,
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub login_window: Duration,
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_least("limits.max_tracked_ips", self.max_tracked_ips, 16)?;
        at_least("limits.login_failures", self.login_failures, 1)
    }
}
