//! Webhook delivery (SPEC §7): the worker that POSTs queued events to their
//! endpoints, signed with HMAC-SHA256, and retries failures with backoff.
//!
//! Delivery is at least once. A claimed row is committed as `sending`, with
//! its attempt counted, before the request leaves; a row still `sending`
//! when the process starts was cut off mid-attempt and is sent again. Every
//! request carries `X-Backchannel-Delivery: <id>` so receivers can drop the
//! duplicates this allows.
//!
//! Attempts run concurrently, at most `webhooks.per_endpoint` to one
//! endpoint and `webhooks.concurrency` in all, each bounded by
//! `webhooks.timeout`. An endpoint with nothing in flight may always start
//! one attempt, even when hanging endpoints hold every slot, and a free
//! slot goes to the endpoint with the fewest attempts running
//! ([`webhooks::select`]): an endpoint that hangs or fails holds only its
//! own slots and never delays the others.
//!
//! The HTTP client is reqwest (over hyper) rather than hyper directly: it
//! brings connection pooling, rustls with web PKI roots for `https://`, and
//! a redirect policy, which hyper alone leaves to the caller.
//!
//! Endpoints never reach internal addresses (SPEC §10, [`crate::egress`])
//! unless `webhooks.allow_destinations` lists them: an address literal is
//! checked before the request is made (reqwest connects to one without
//! resolving it), a name is resolved by [`GuardedResolver`], which hands
//! reqwest only the permitted addresses, so the check holds for the address
//! actually connected to, at every attempt (DNS rebinding). Redirects are
//! not followed and no proxy is used, so nothing bypasses that resolver.
//! The delivery log keeps the status line of a failed answer, never its
//! body: an endpoint's answer is not ours to show.

use std::collections::HashMap;
use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::proto::rr::Name;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::{Config, WebhooksConfig};
use crate::egress::{AllowList, Refusal, remote_text};
use crate::metrics;
use crate::model::now_ms;
use crate::net::dns::Cache;
use crate::outbound::retry;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::webhooks::{self, Attempted, Claimed, check_url};

/// `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("backchannel/", env!("CARGO_PKG_VERSION"));
pub const SIGNATURE_HEADER: &str = "X-Backchannel-Signature";
pub const EVENT_HEADER: &str = "X-Backchannel-Event";
pub const DELIVERY_HEADER: &str = "X-Backchannel-Delivery";

/// Longest the worker sleeps without looking at the queue: events are
/// queued by other writers that do not wake it.
const POLL: Duration = Duration::from_secs(1);
/// Responses kept by the endpoint resolver's cache.
const DNS_CACHE_SIZE: u64 = 256;

/// `sha256=<lowercase hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one attempt came to, before the retry policy looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Success(u16),
    /// Worth trying again: any other answer, refused connection, timeout.
    Temporary { status: Option<u16>, error: String },
    /// Can never work as stored (a URL that is not http(s), a header value
    /// that cannot be sent, an internal destination).
    Permanent { error: String },
}

/// Classifies an HTTP answer by its status alone: only 2xx is delivered.
/// Redirects are not followed (the endpoint must be configured with its
/// final URL), so a 3xx is a failure like any other. The error is the
/// status line with the standard reason phrase, never the endpoint's body
/// or its own phrase (an internal service's answer must not be readable
/// in the delivery log).
pub fn classify_status(status: u16) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Success(status);
    }
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let line = format!("HTTP {status} {reason}");
    Outcome::Temporary {
        status: Some(status),
        error: if (300..400).contains(&status) {
            format!("{} (redirects are not followed)", line.trim_end())
        } else {
            line.trim_end().to_string()
        },
    }
}

/// When to try again after `attempts` failed attempts (all times in ms):
/// the same backoff as outbound delivery ([`retry::next_attempt`]: the
/// schedule's step for this attempt, its last step repeating, never past
/// `created_at + max_age`, where one last attempt is made; `None` once that
/// moment has passed, or with no schedule at all).
pub fn next_attempt(
    attempts: u32,
    created_at: i64,
    now: i64,
    schedule: &[Duration],
    max_age: Duration,
) -> Option<i64> {
    retry::next_attempt(i64::from(attempts), created_at, now, schedule, max_age)
}

/// The retry policy: what to record for an attempt that came to `outcome`.
pub fn decide(
    outcome: Outcome,
    attempts: u32,
    created_at: i64,
    now: i64,
    policy: &WebhooksConfig,
) -> Attempted {
    match outcome {
        Outcome::Success(status) => Attempted::Delivered { status },
        Outcome::Permanent { error } => Attempted::Failed {
            status: None,
            error,
        },
        Outcome::Temporary { status, error } => match next_attempt(
            attempts,
            created_at,
            now,
            &policy.retry_schedule,
            policy.max_age,
        ) {
            Some(at) => Attempted::Deferred {
                status,
                error,
                next_attempt_at: at,
            },
            None => Attempted::Failed {
                status,
                error: format!("{error} (gave up after {attempts} attempts)"),
            },
        },
    }
}

/// The error and its causes on one line ("error sending request: … :
/// Connection refused"), bounded: a cause may quote the endpoint (a
/// certificate's names).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    remote_text(&text)
}

/// The refusal of [`GuardedResolver`] behind a failed request, if that is
/// why it failed.
fn refusal(e: &reqwest::Error) -> Option<&Refusal> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refusal>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

/// Makes one attempt; never longer than `timeout`. `allow` is the
/// allow-list the client's resolver was built with, applied here to
/// address literals, which reqwest connects to without resolving.
pub async fn post(
    client: &reqwest::Client,
    d: &Claimed,
    timeout: Duration,
    allow: &AllowList,
) -> Outcome {
    let url = match check_url(&d.url) {
        Ok(url) => url,
        Err(e) => {
            return Outcome::Permanent {
                error: format!("endpoint URL: {e}"),
            };
        }
    };
    if let Err(r) = allow.check_url(&url) {
        return Outcome::Permanent {
            error: format!("destination refused: {r}"),
        };
    }
    let Ok(event) = HeaderValue::from_str(&d.event) else {
        return Outcome::Permanent {
            error: "the event name cannot be sent as a header".into(),
        };
    };
    // The parsed URL, so reqwest connects to exactly the host checked.
    let request = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(d.secret.as_bytes(), d.payload.as_bytes()),
        )
        .header(EVENT_HEADER, event)
        .header(DELIVERY_HEADER, d.id.to_string())
        .body(d.payload.clone());
    // The body is never read: dropping the response closes it.
    let attempt = async {
        let resp = request.send().await?;
        Ok::<_, reqwest::Error>(classify_status(resp.status().as_u16()))
    };
    let timed_out = || Outcome::Temporary {
        status: None,
        error: format!("timed out after {timeout:?}"),
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => timed_out(),
        Ok(Err(e)) if e.is_timeout() => timed_out(),
        Ok(Err(e)) => match refusal(&e) {
            // Refused as mode mx refuses it: for good, this delivery.
            Some(r) => Outcome::Permanent {
                error: format!("destination refused: {r}"),
            },
            None => Outcome::Temporary {
                status: e.status().map(|s| s.as_u16()),
                error: error_chain(&e.without_url()),
            },
        },
        Ok(Ok(outcome)) => outcome,
    }
}

/// reqwest's resolver for endpoint names: resolves through the configured
/// DNS and hands on only the addresses `webhooks.allow_destinations`
/// permits, failing with a [`Refusal`] when none is left. Used at every
/// connection, so what a name resolves to is judged when it is used.
#[derive(Clone)]
pub struct GuardedResolver {
    /// Shared: each resolution runs in a future of its own.
    inner: Arc<ResolverInner>,
}

struct ResolverInner {
    /// The configured name servers; `None` when `dns.nameservers` is
    /// empty: then the system resolver (getaddrinfo, so `/etc/hosts` and
    /// nsswitch apply as for any HTTP client).
    dns: Option<TokioResolver>,
    allow: AllowList,
}

impl GuardedResolver {
    pub fn new(config: &Config) -> anyhow::Result<GuardedResolver> {
        let dns = if config.dns.nameservers.is_empty() {
            None
        } else {
            Some(
                crate::net::dns::resolver(&config.dns, Cache::of(DNS_CACHE_SIZE))
                    .context("building the webhook DNS resolver")?,
            )
        };
        Ok(GuardedResolver {
            inner: Arc::new(ResolverInner {
                dns,
                allow: config.webhooks.allow_destinations.clone(),
            }),
        })
    }

    /// Every address of `host`.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        match &self.inner.dns {
            None => tokio::net::lookup_host((host, 0))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .map_err(|e| format!("cannot resolve {host}: {e}")),
            Some(resolver) => {
                let mut name = Name::from_utf8(host)
                    .map_err(|e| format!("{host:?} is not a host name: {e}"))?;
                name.set_fqdn(true);
                resolver
                    .lookup_ip(name)
                    .await
                    .map(|found| found.iter().collect())
                    .map_err(|e| format!("cannot resolve {host}: {e}"))
            }
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let allow = &this.inner.allow;
            allow.check_name(&host)?;
            let found = this.addresses(&host).await?;
            if found.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            let permitted = allow.check_resolved(&host, &found)?;
            if permitted.len() < found.len() {
                tracing::info!(
                    host,
                    refused = found.len() - permitted.len(),
                    "webhooks: internal addresses of the endpoint skipped"
                );
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(permitted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The delivery worker of one gateway.
pub struct Worker {
    config: Arc<Config>,
    store: Store,
    client: reqwest::Client,
    wake: Arc<Notify>,
}

impl Worker {
    /// `wake` makes the worker look at the queue at once (it also looks
    /// every second on its own).
    pub fn new(config: Arc<Config>, store: Store, wake: Arc<Notify>) -> anyhow::Result<Worker> {
        let w = &config.webhooks;
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            // Deliveries go straight to the endpoint: a proxy picked up from
            // the environment would be a surprise on a mail gateway.
            .no_proxy()
            .connect_timeout(w.timeout)
            .timeout(w.timeout)
            .pool_max_idle_per_host(w.per_endpoint)
            .dns_resolver(Arc::new(GuardedResolver::new(&config)?))
            .build()?;
        metrics::describe(
            "webhook_deliveries_total",
            "Webhook delivery attempts, by result (delivered, deferred, failed)",
        );
        metrics::describe(
            "webhook_queue_depth",
            "Webhook deliveries queued, deferred or in flight",
        );
        metrics::describe("webhook_attempt_seconds", "Duration of webhook attempts");
        Ok(Worker {
            config,
            store,
            client,
            wake,
        })
    }

    /// Delivers until shutdown. Attempts still in flight then are dropped;
    /// their rows stay `sending` and are sent again at the next start.
    #[tracing::instrument(name = "webhooks", skip_all)]
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        if !self.recover(&shutdown).await {
            return Ok(());
        }
        let mut in_flight: JoinSet<()> = JoinSet::new();
        // Task → endpoint, to count the slots each endpoint holds.
        let mut endpoints: HashMap<tokio::task::Id, i64> = HashMap::new();
        let mut last_takeover = Instant::now();
        loop {
            if shutdown.is_triggered() {
                break;
            }
            // With several nodes, attempts of a node that died are sent
            // again once their lease ran out.
            if self.store.is_shared()
                && last_takeover.elapsed() >= self.config.store.takeover_scan()
            {
                last_takeover = Instant::now();
                if let Err(e) = self
                    .store
                    .write(|c| webhooks::requeue_interrupted(c, now_ms()))
                    .await
                {
                    tracing::warn!(error = %e, "webhooks: cannot take over another node's attempts");
                }
            }
            let mut wait = POLL;
            match self
                .store
                .read(|c| Ok((webhooks::queue_depth(c)?, webhooks::next_due(c)?)))
                .await
            {
                Ok((depth, next_due)) => {
                    metrics::gauge_set("webhook_queue_depth", &[], depth);
                    let now = now_ms();
                    match next_due {
                        // Even with every slot taken: an endpoint with
                        // nothing in flight may still start one.
                        Some(due) if due <= now => {
                            match self.claim(&endpoints).await {
                                Ok(batch) if !batch.is_empty() => {
                                    for d in batch {
                                        let hook = d.webhook_id;
                                        let handle = in_flight.spawn(attempt(
                                            self.client.clone(),
                                            self.store.clone(),
                                            self.config.clone(),
                                            d,
                                        ));
                                        endpoints.insert(handle.id(), hook);
                                    }
                                    // Look again at once: more may be due.
                                    continue;
                                }
                                // Everything due waits for a busy endpoint's
                                // slot: a finishing attempt wakes the loop.
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::error!(error = %e, "webhooks: cannot claim deliveries")
                                }
                            }
                        }
                        Some(due) if due > now => {
                            let ms = u64::try_from(due - now).unwrap_or(0);
                            wait = wait.min(Duration::from_millis(ms));
                        }
                        _ => {}
                    }
                }
                Err(e) => tracing::error!(error = %e, "webhooks: cannot read the queue"),
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.wake.notified() => {}
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            tracing::error!(error = %e, "webhooks: attempt task failed");
                            e.id()
                        }
                    };
                    endpoints.remove(&id);
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        in_flight.shutdown().await;
        Ok(())
    }

    /// Puts attempts cut off by the last stop back in the queue; `false` if
    /// shutdown came first.
    async fn recover(&self, shutdown: &Shutdown) -> bool {
        loop {
            match self
                .store
                .write(|c| webhooks::requeue_interrupted(c, now_ms()))
                .await
            {
                Ok(0) => return true,
                Ok(n) => {
                    tracing::warn!(
                        deliveries = n,
                        "webhooks: attempts interrupted by the last stop will be sent again"
                    );
                    return true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "webhooks: cannot requeue interrupted attempts");
                    tokio::select! {
                        _ = shutdown.wait() => return false,
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
            }
        }
    }

    async fn claim(
        &self,
        endpoints: &HashMap<tokio::task::Id, i64>,
    ) -> crate::store::Result<Vec<Claimed>> {
        let mut busy: HashMap<i64, usize> = HashMap::new();
        for hook in endpoints.values() {
            *busy.entry(*hook).or_default() += 1;
        }
        let limits = &self.config.webhooks;
        let (concurrency, per_endpoint) = (limits.concurrency, limits.per_endpoint);
        // An attempt cannot outlast the timeout; `[store] takeover_after`
        // covers recording how it ended.
        let lease = i64::try_from((limits.timeout + self.config.store.takeover_after).as_millis())
            .unwrap_or(i64::MAX / 2);
        self.store
            .write(move |c| {
                let now = now_ms();
                webhooks::claim_due(c, now, now + lease, concurrency, per_endpoint, &busy)
            })
            .await
    }
}

/// Makes one attempt and records how it ended.
async fn attempt(client: reqwest::Client, store: Store, config: Arc<Config>, d: Claimed) {
    let started = Instant::now();
    let outcome = post(
        &client,
        &d,
        config.webhooks.timeout,
        &config.webhooks.allow_destinations,
    )
    .await;
    metrics::observe(
        "webhook_attempt_seconds",
        &[],
        started.elapsed().as_secs_f64(),
    );
    let now = now_ms();
    let attempted = decide(outcome, d.attempts, d.created_at, now, &config.webhooks);
    match &attempted {
        Attempted::Delivered { status } => {
            metrics::inc("webhook_deliveries_total", &[("result", "delivered")]);
            tracing::info!(
                delivery = d.id,
                webhook = d.webhook_id,
                event = %d.event,
                attempts = d.attempts,
                status,
                "webhook delivered"
            );
        }
        Attempted::Deferred {
            status,
            error,
            next_attempt_at,
        } => {
            metrics::inc("webhook_deliveries_total", &[("result", "deferred")]);
            tracing::warn!(
                delivery = d.id,
                webhook = d.webhook_id,
                event = %d.event,
                attempts = d.attempts,
                status,
                error = %error,
                retry_in_ms = next_attempt_at - now,
                "webhook attempt failed; will retry"
            );
        }
        Attempted::Failed { status, error } => {
            metrics::inc("webhook_deliveries_total", &[("result", "failed")]);
            tracing::error!(
                delivery = d.id,
                webhook = d.webhook_id,
                event = %d.event,
                attempts = d.attempts,
                status,
                error = %error,
                "webhook delivery failed for good"
            );
        }
    }
    // A store that refuses the record leaves the row `sending`, sent again
    // at the next start; a few tries first make that rare.
    for _ in 0..3 {
        let a = attempted.clone();
        match store
            .write(move |c| webhooks::record(c, d.id, &a, now))
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(delivery = d.id, error = %e, "webhooks: cannot record the attempt");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    fn policy() -> WebhooksConfig {
        WebhooksConfig {
            deliver: true,
            timeout: Duration::from_secs(10),
            retry_schedule: [10, 60, 300, 1800, 7200, 21600]
                .map(Duration::from_secs)
                .to_vec(),
            max_age: Duration::from_secs(24 * 3600),
            concurrency: 8,
            per_endpoint: 2,
            allow_destinations: Default::default(),
        }
    }

    #[test]
    fn next_attempt_follows_the_schedule_until_max_age() {
        let p = policy();
        let t0 = 1_700_000_000_000;
        // (attempts made, now − created_at, expected delay from now or None)
        let cases: &[(u32, i64, Option<i64>)] = &[
            (1, 0, Some(10 * S)),
            (2, 10 * S, Some(M)),
            (3, M, Some(5 * M)),
            (4, 7 * M, Some(30 * M)),
            (5, 40 * M, Some(2 * H)),
            (6, 3 * H, Some(6 * H)),
            // The last step repeats.
            (7, 9 * H, Some(6 * H)),
            (40, 12 * H, Some(6 * H)),
            // Never past the deadline: one last attempt right at it.
            (8, 20 * H, Some(4 * H)),
            (9, 24 * H - S, Some(S)),
            // At or past the deadline: give up.
            (10, 24 * H, None),
            (10, 30 * H, None),
            // A zero attempt count (never happens) reads as the first.
            (0, 0, Some(10 * S)),
        ];
        for &(attempts, age, expected) in cases {
            let now = t0 + age;
            let got = next_attempt(attempts, t0, now, &p.retry_schedule, p.max_age);
            assert_eq!(
                got.map(|at| at - now),
                expected,
                "attempts {attempts}, age {age} ms"
            );
        }
        assert_eq!(next_attempt(1, t0, t0, &[], p.max_age), None);
    }

    #[test]
    fn decide_maps_outcomes_to_states() {
        let p = policy();
        let t0 = 1_700_000_000_000;
        let cases: Vec<(Outcome, u32, i64, Attempted)> = vec![
            (
                Outcome::Success(204),
                3,
                t0 + H,
                Attempted::Delivered { status: 204 },
            ),
            (
                classify_status(500),
                1,
                t0,
                Attempted::Deferred {
                    status: Some(500),
                    error: "HTTP 500 Internal Server Error".into(),
                    next_attempt_at: t0 + 10 * S,
                },
            ),
            (
                Outcome::Temporary {
                    status: None,
                    error: "connection refused".into(),
                },
                12,
                t0 + 25 * H,
                Attempted::Failed {
                    status: None,
                    error: "connection refused (gave up after 12 attempts)".into(),
                },
            ),
            (
                Outcome::Permanent {
                    error: "endpoint URL: bad".into(),
                },
                1,
                t0,
                Attempted::Failed {
                    status: None,
                    error: "endpoint URL: bad".into(),
                },
            ),
        ];
        for (outcome, attempts, now, expected) in cases {
            let label = format!("{outcome:?}");
            assert_eq!(decide(outcome, attempts, t0, now, &p), expected, "{label}");
        }
    }

    #[test]
    fn only_2xx_is_success() {
        let cases: &[(u16, bool)] = &[
            (200, true),
            (201, true),
            (204, true),
            (299, true),
            (199, false),
            (301, false),
            (302, false),
            (400, false),
            (410, false),
            (500, false),
            (503, false),
        ];
        for &(status, ok) in cases {
            assert_eq!(
                matches!(classify_status(status), Outcome::Success(_)),
                ok,
                "{status}"
            );
        }
        // The status line, never a body.
        let cases: &[(u16, &str)] = &[
            (503, "HTTP 503 Service Unavailable"),
            (500, "HTTP 500 Internal Server Error"),
            (404, "HTTP 404 Not Found"),
            (302, "HTTP 302 Found (redirects are not followed)"),
            (599, "HTTP 599"),
        ];
        for &(status, want) in cases {
            assert_eq!(
                classify_status(status),
                Outcome::Temporary {
                    status: Some(status),
                    error: want.into()
                }
            );
        }
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2, and a well-known example.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
