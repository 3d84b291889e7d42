//! `[webhooks]`: webhook delivery — on or off, the per-attempt timeout,
//! the retry schedule and give-up age, concurrency overall and per
//! endpoint, and the internal destinations endpoints may still reach.

use std::time::Duration;

use serde::Deserialize;

use super::ranges::{self, AllowList};
use super::values::{self, at_least};
use super::{ConfigError, invalid};

/// The keys and their defaults, in the order `backchannel config` prints.
pub(super) const DEFAULTS: &str = r#"
deliver = true
timeout = "10s"
retry_schedule = ["10s", "1m", "5m", "30m", "2h", "6h"]
max_age = "24h"
concurrency = 8
per_endpoint = 2
allow_destinations = []
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliver queued events. Off: events are still queued and logged but
    /// nothing is sent (a staging copy, or a fuzzing run).
    pub deliver: bool,
    /// Hard limit on one delivery attempt (connect, send, response).
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub timeout: Duration,
    /// Delays between attempts; the last step repeats.
    #[serde(deserialize_with = "values::nonzero_durations")]
    pub retry_schedule: Vec<Duration>,
    /// Age after which a delivery that keeps failing is given up.
    #[serde(deserialize_with = "values::nonzero_duration")]
    pub max_age: Duration,
    /// Attempts in flight at once, over all endpoints; an endpoint with
    /// nothing in flight may start one beyond it (`store::webhooks::select`).
    #[serde(deserialize_with = "values::to_usize")]
    pub concurrency: usize,
    /// Attempts in flight at once to one endpoint.
    #[serde(deserialize_with = "values::to_usize")]
    pub per_endpoint: usize,
    /// Internal destinations (CIDRs or host names) endpoints may still
    /// reach; everything loopback, private or link-local is refused
    /// (SPEC §10).
    #[serde(deserialize_with = "ranges::allow_list")]
    pub allow_destinations: AllowList,
}

impl WebhooksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.retry_schedule.is_empty() {
            return Err(invalid(
                "webhooks.retry_schedule",
                "needs at least one step",
            ));
        }
        at_least("webhooks.concurrency", self.concurrency, 1)?;
        at_least("webhooks.per_endpoint", self.per_endpoint, 1)
    }
}
