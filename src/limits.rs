//! Abuse limits keyed by the client's IP address (SPEC §10): a failure
//! limiter for anything that guesses secrets — reply tokens at SMTP RCPT,
//! API tokens, portal links, IMAP logins —, a rate limiter for SMTP
//! connections, and a cap on the connections one address holds open at
//! once on the HTTP and IMAP listeners. The first two keep bounded memory:
//! at most `limits.max_tracked_ips` addresses each, the stale ones
//! forgotten first; the cap remembers only addresses with open connections.
//!
//! Keys: an IPv4 address (an IPv4-mapped IPv6 address counts as IPv4), or
//! the /64 network of an IPv6 address, since one IPv6 client commonly holds
//! a whole /64. Addresses in `limits.exempt` (loopback by default: a local
//! MTA, proxy or monitor) are never limited.
//!
//! The API is small so every listener can share it:
//!
//! ```text
//! limiter.check(ip)?;            // Err(RetryAfter) while the address is blocked
//! match credentials {
//!     bad  => { limiter.failure(ip)?; /* answer the refusal */ }
//!     good => limiter.success(ip)?,  // forgets the address's failures
//! }
//! ```
//!
//! `failure` and `success` answer `Err` too when the address was blocked
//! meanwhile: concurrent attempts from one address all pass `check`, and
//! the limit must hold across them. Counting and deciding happen under one
//! lock, so exactly `max_failures` failures are counted and answered as
//! failures; every attempt that finishes after the block is answered as
//! refused, whatever its credentials were — a guesser learns nothing from
//! the attempts it had in flight.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{Cidr, Config, Exempt};
use crate::metrics;

/// How long the caller should wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up and at least 1 (for `Retry-After`).
    pub fn secs(&self) -> u64 {
        let d = self.0;
        let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        s.max(1)
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match Cidr::canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

// ---------------------------------------------------------------------------
// A bounded table of per-address entries.

trait Entry {
    /// The entry carries nothing worth keeping at `now`.
    fn stale(&self, now: Instant) -> bool;
    /// An active block: evicted last.
    fn blocked(&self, now: Instant) -> bool;
    fn last_seen(&self) -> Instant;
}

struct Table<E> {
    map: HashMap<IpAddr, E>,
    cap: usize,
}

impl<E: Entry> Table<E> {
    fn new(cap: usize) -> Table<E> {
        Table {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// The entry for `key`, made with `make` if absent. When the table is
    /// full, stale entries are dropped first, then the least recently seen
    /// eighth (active blocks last), so the cost is amortized and memory
    /// stays bounded whatever the number of addresses. Returns the entry
    /// and how many were evicted.
    fn entry(&mut self, key: IpAddr, now: Instant, make: impl FnOnce() -> E) -> (&mut E, usize) {
        let mut evicted = 0;
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            let before = self.map.len();
            self.map.retain(|_, e| !e.stale(now));
            if self.map.len() >= self.cap {
                let mut order: Vec<(bool, Instant, IpAddr)> = self
                    .map
                    .iter()
                    .map(|(k, e)| (e.blocked(now), e.last_seen(), *k))
                    .collect();
                let drop = (self.cap / 8).max(1).min(order.len());
                order.select_nth_unstable(drop - 1);
                for (_, _, k) in order.into_iter().take(drop) {
                    self.map.remove(&k);
                }
            }
            evicted = before - self.map.len();
        }
        (self.map.entry(key).or_insert_with(make), evicted)
    }
}

// ---------------------------------------------------------------------------
// Failures: guessing tokens, bad credentials.

struct FailEntry {
    failures: u32,
    /// Start of the current counting window.
    since: Instant,
    window: Duration,
    blocked_until: Option<Instant>,
    seen: Instant,
}

impl FailEntry {
    /// Brings the entry up to `now`: an ended block or window starts afresh.
    fn refresh(&mut self, now: Instant) {
        if let Some(until) = self.blocked_until {
            if until <= now {
                self.blocked_until = None;
                self.failures = 0;
                self.since = now;
            }
        } else if now.saturating_duration_since(self.since) >= self.window {
            self.failures = 0;
            self.since = now;
        }
    }
}

/// What [`FailureLimiter::failure`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Failures of this address in the current window, this one included
    /// (0 for an exempt address).
    pub count: u32,
    /// Set when this failure reached the limit: the address is now blocked.
    /// It is the last failure answered as such.
    pub blocked: Option<RetryAfter>,
}

/// Counts failures per address; `max_failures` within `window` blocks the
/// address for `block`.
pub struct FailureLimiter {
    name: &'static str,
    max_failures: u32,
    window: Duration,
    block: Duration,
    exempt: Arc<Exempt>,
    inner: Mutex<Table<FailEntry>>,
}

impl Entry for FailEntry {
    fn stale(&self, now: Instant) -> bool {
        match self.blocked_until {
            Some(until) => until <= now,
            // Outside the window the count would restart anyway.
            None => now.saturating_duration_since(self.since) >= self.window,
        }
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|u| u > now)
    }

    fn last_seen(&self) -> Instant {
        self.seen
    }
}

impl FailureLimiter {
    /// `name` labels the metrics (`limit_failures_total{limiter="…"}` …).
    pub fn new(
        name: &'static str,
        max_failures: u32,
        window: Duration,
        block: Duration,
        max_tracked: usize,
        exempt: Arc<Exempt>,
    ) -> FailureLimiter {
        FailureLimiter {
            name,
            max_failures: max_failures.max(1),
            window,
            block,
            exempt,
            inner: Mutex::new(Table::new(max_tracked)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table<FailEntry>> {
        // A panic while holding the lock leaves plain counters behind: keep
        // using them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `Err` while `ip` is blocked.
    pub fn check(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check_at(ip, Instant::now())
    }

    pub fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        if self.exempt.contains(ip) {
            return Ok(());
        }
        let inner = self.lock();
        match inner.map.get(&key(ip)).and_then(|e| e.blocked_until) {
            Some(until) if until > now => {
                metrics::inc("limit_refusals_total", &[("limiter", self.name)]);
                Err(RetryAfter(until - now))
            }
            _ => Ok(()),
        }
    }

    /// Records one failure of `ip`. `Err` when the address was blocked
    /// meanwhile (this attempt passed `check` before another one from the
    /// address reached the limit): the failure is not counted, and the
    /// caller answers it as refused, not as a failure.
    pub fn failure(&self, ip: IpAddr) -> Result<Failure, RetryAfter> {
        self.failure_at(ip, Instant::now())
    }

    pub fn failure_at(&self, ip: IpAddr, now: Instant) -> Result<Failure, RetryAfter> {
        if self.exempt.contains(ip) {
            return Ok(Failure {
                count: 0,
                blocked: None,
            });
        }
        let mut inner = self.lock();
        let window = self.window;
        let (entry, evicted) = inner.entry(key(ip), now, || FailEntry {
            failures: 0,
            since: now,
            window,
            blocked_until: None,
            seen: now,
        });
        entry.refresh(now);
        entry.seen = now;
        // Decided under the same lock as the count: of any number of
        // concurrent failures, exactly the `max_failures`-th blocks and
        // none after it is counted.
        if let Some(until) = entry.blocked_until {
            drop(inner);
            metrics::inc("limit_refusals_total", &[("limiter", self.name)]);
            return Err(RetryAfter(until.saturating_duration_since(now)));
        }
        entry.failures = entry.failures.saturating_add(1);
        let mut blocked = None;
        if entry.failures >= self.max_failures {
            let until = now + self.block;
            entry.blocked_until = Some(until);
            blocked = Some(RetryAfter(self.block));
        }
        let count = entry.failures;
        let tracked = inner.map.len();
        drop(inner);
        metrics::inc("limit_failures_total", &[("limiter", self.name)]);
        if evicted > 0 {
            metrics::add(
                "limit_evictions_total",
                &[("limiter", self.name)],
                evicted as u64,
            );
        }
        metrics::gauge_set(
            "limit_tracked_ips",
            &[("limiter", self.name)],
            tracked as i64,
        );
        if blocked.is_some() {
            metrics::inc("limit_blocks_total", &[("limiter", self.name)]);
            tracing::warn!(limiter = self.name, ip = %ip, failures = count, block_secs = self.block.as_secs(), "blocking an address after repeated failures");
        }
        Ok(Failure { count, blocked })
    }

    /// A success: the address's failures are forgotten. `Err` when the
    /// address was blocked meanwhile (as for [`FailureLimiter::failure`]):
    /// the block stays, and the caller answers as refused — a right guess
    /// that was in flight when the block began is not confirmed.
    pub fn success(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.success_at(ip, Instant::now())
    }

    pub fn success_at(&self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        if self.exempt.contains(ip) {
            return Ok(());
        }
        let mut inner = self.lock();
        let k = key(ip);
        match inner.map.get(&k).map(|e| e.blocked_until) {
            Some(Some(until)) if until > now => {
                drop(inner);
                metrics::inc("limit_refusals_total", &[("limiter", self.name)]);
                Err(RetryAfter(until - now))
            }
            Some(_) => {
                inner.map.remove(&k);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Failures of `ip` in the current window.
    pub fn failures(&self, ip: IpAddr) -> u32 {
        let now = Instant::now();
        let inner = self.lock();
        inner.map.get(&key(ip)).map_or(0, |e| {
            let blocked = e.blocked_until.is_some_and(|u| u > now);
            let in_window = now.saturating_duration_since(e.since) < self.window;
            if blocked || in_window { e.failures } else { 0 }
        })
    }

    /// (addresses tracked, addresses blocked now).
    pub fn stats(&self) -> (usize, usize) {
        let now = Instant::now();
        let inner = self.lock();
        let blocked = inner.map.values().filter(|e| e.blocked(now)).count();
        (inner.map.len(), blocked)
    }
}

// ---------------------------------------------------------------------------
// Rates: connections per minute.

struct Bucket {
    tokens: f64,
    at: Instant,
    cap: f64,
    per_sec: f64,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.cap);
        self.at = now;
    }
}

impl Entry for Bucket {
    fn stale(&self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + dt * self.per_sec >= self.cap
    }

    fn blocked(&self, _now: Instant) -> bool {
        false
    }

    fn last_seen(&self) -> Instant {
        self.at
    }
}

/// A token bucket per address: `per_minute` events a minute, in bursts of
/// up to `per_minute`.
pub struct RateLimiter {
    name: &'static str,
    per_minute: u32,
    exempt: Arc<Exempt>,
    inner: Mutex<Table<Bucket>>,
}

impl RateLimiter {
    pub fn new(
        name: &'static str,
        per_minute: u32,
        max_tracked: usize,
        exempt: Arc<Exempt>,
    ) -> RateLimiter {
        RateLimiter {
            name,
            per_minute: per_minute.max(1),
            exempt,
            inner: Mutex::new(Table::new(max_tracked)),
        }
    }

    /// Takes one event for `ip`; `Err` when over the rate (nothing taken).
    pub fn acquire(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.acquire_at(ip, Instant::now())
    }

    pub fn acquire_at(&self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        if self.exempt.contains(ip) {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let per_sec = cap / 60.0;
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (bucket, evicted) = table.entry(key(ip), now, || Bucket {
            tokens: cap,
            at: now,
            cap,
            per_sec,
        });
        bucket.refill(now);
        let result = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(RetryAfter(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / per_sec,
            )))
        };
        let tracked = table.map.len();
        drop(table);
        if evicted > 0 {
            metrics::add(
                "limit_evictions_total",
                &[("limiter", self.name)],
                evicted as u64,
            );
        }
        metrics::gauge_set(
            "limit_tracked_ips",
            &[("limiter", self.name)],
            tracked as i64,
        );
        if result.is_err() {
            metrics::inc("limit_refusals_total", &[("limiter", self.name)]);
        }
        result
    }

    pub fn tracked(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }
}

// ---------------------------------------------------------------------------
// Open connections per address.

/// At most `max_per_ip` open connections per address on one listener, so
/// one address cannot take every slot of the listener's global cap from
/// everyone else. An entry lives only while its address holds a
/// connection: memory is bounded by the open connections themselves.
pub struct ConnectionCap {
    name: &'static str,
    max_per_ip: usize,
    exempt: Arc<Exempt>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under a [`ConnectionCap`], given back when it is
/// dropped (however the connection ends).
pub struct ConnectionSlot {
    held: Option<(Arc<ConnectionCap>, IpAddr)>,
}

impl ConnectionCap {
    /// `name` labels the metrics (`limit_refusals_total{limiter="…"}`).
    pub fn new(name: &'static str, max_per_ip: usize, exempt: Arc<Exempt>) -> Arc<ConnectionCap> {
        Arc::new(ConnectionCap {
            name,
            max_per_ip: max_per_ip.max(1),
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one more connection from `ip`; `None` when the address
    /// already holds `max_per_ip` (nothing taken).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        if self.exempt.contains(ip) {
            return Some(ConnectionSlot { held: None });
        }
        let k = key(ip);
        let mut open = self.lock();
        let n = open.entry(k).or_insert(0);
        if *n >= self.max_per_ip {
            drop(open);
            metrics::inc("limit_refusals_total", &[("limiter", self.name)]);
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            held: Some((self.clone(), k)),
        })
    }

    /// Addresses holding at least one connection now.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some((cap, k)) = self.held.take() {
            let mut open = cap.lock();
            if let Some(n) = open.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&k);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Every limiter of one gateway.

/// The limiters of one gateway, built from the config and shared by the
/// listeners.
pub struct Limits {
    /// Failed RCPTs (unknown token or address, relaying) per address: the
    /// tarpit grows with the count; reaching `smtp.max_rcpt_failures`
    /// blocks the address for `smtp.block_time`.
    pub smtp_rcpt: FailureLimiter,
    /// SMTP connections per minute per address.
    pub smtp_connections: RateLimiter,
    /// Bad API bearer tokens.
    pub api_login: FailureLimiter,
    /// Unknown or revoked portal links and forged portal forms.
    pub portal: FailureLimiter,
    /// Failed IMAP LOGIN / AUTHENTICATE: for the IMAP listener.
    pub imap_login: FailureLimiter,
    /// Failed web console sign-ins (passwords, sign-in links) and sign-in
    /// link requests.
    pub console_login: FailureLimiter,
    /// Open HTTP connections per address (`http.max_connections_per_ip`).
    pub http_connections: Arc<ConnectionCap>,
    /// Open IMAP connections per address (`imap.max_connections_per_ip`).
    pub imap_connections: Arc<ConnectionCap>,
    /// Failed AUTH on the submission listener.
    pub submission_login: FailureLimiter,
    /// Submission connections per minute per address.
    pub submission_rate: RateLimiter,
    /// Open submission connections per address
    /// (`submission.max_connections_per_ip`).
    pub submission_connections: Arc<ConnectionCap>,
}

impl Limits {
    pub fn new(config: &Config) -> Arc<Limits> {
        describe_metrics();
        let l = &config.limits;
        let s = &config.smtp;
        let exempt = Arc::new(l.exempt.clone());
        let login = |name| {
            FailureLimiter::new(
                name,
                l.login_failures,
                l.login_window,
                l.login_window,
                l.max_tracked_ips,
                exempt.clone(),
            )
        };
        Arc::new(Limits {
            smtp_rcpt: FailureLimiter::new(
                "smtp_rcpt",
                s.max_rcpt_failures,
                s.rcpt_failure_window,
                s.block_time,
                l.max_tracked_ips,
                exempt.clone(),
            ),
            smtp_connections: RateLimiter::new(
                "smtp_connections",
                s.connections_per_minute_per_ip,
                l.max_tracked_ips,
                exempt.clone(),
            ),
            api_login: login("api_login"),
            portal: login("portal"),
            imap_login: login("imap_login"),
            console_login: login("console_login"),
            http_connections: ConnectionCap::new(
                "http_connections",
                config.http.max_connections_per_ip,
                exempt.clone(),
            ),
            imap_connections: ConnectionCap::new(
                "imap_connections",
                config.imap.max_connections_per_ip,
                exempt.clone(),
            ),
            submission_login: login("submission_login"),
            submission_rate: RateLimiter::new(
                "submission_rate",
                config.submission.connections_per_minute_per_ip,
                l.max_tracked_ips,
                exempt.clone(),
            ),
            submission_connections: ConnectionCap::new(
                "submission_connections",
                config.submission.max_connections_per_ip,
                exempt.clone(),
            ),
        })
    }

    /// Sets the gauges of tracked and blocked addresses (at scrape time).
    pub fn publish(&self) {
        for f in [
            &self.smtp_rcpt,
            &self.api_login,
            &self.portal,
            &self.imap_login,
            &self.submission_login,
        ] {
            let (tracked, blocked) = f.stats();
            metrics::gauge_set("limit_tracked_ips", &[("limiter", f.name)], tracked as i64);
            metrics::gauge_set("limit_blocked_ips", &[("limiter", f.name)], blocked as i64);
        }
        for rate in [&self.smtp_connections, &self.submission_rate] {
            metrics::gauge_set(
                "limit_tracked_ips",
                &[("limiter", rate.name)],
                rate.tracked() as i64,
            );
        }
        for cap in [
            &self.http_connections,
            &self.imap_connections,
            &self.submission_connections,
        ] {
            metrics::gauge_set(
                "limit_tracked_ips",
                &[("limiter", cap.name)],
                cap.tracked() as i64,
            );
        }
    }
}

fn describe_metrics() {
    metrics::describe(
        "limit_failures_total",
        "Failures counted by an abuse limiter (bad tokens, unknown recipients), by limiter",
    );
    metrics::describe(
        "limit_blocks_total",
        "Addresses blocked after repeated failures, by limiter",
    );
    metrics::describe(
        "limit_refusals_total",
        "Requests or connections refused by an abuse limiter, by limiter",
    );
    metrics::describe(
        "limit_evictions_total",
        "Addresses forgotten to keep a limiter's table bounded, by limiter",
    );
    metrics::describe("limit_tracked_ips", "Addresses a limiter tracks now");
    metrics::describe(
        "auth_failures_total",
        "Bad credentials by service: API tokens, portal links, IMAP logins",
    );
    metrics::describe("limit_blocked_ips", "Addresses a limiter blocks now");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn none() -> Arc<Exempt> {
        Arc::new(Exempt::default())
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let l = FailureLimiter::new(
            "t",
            2,
            Duration::from_secs(60),
            Duration::from_secs(60),
            100,
            none(),
        );
        let now = Instant::now();
        l.failure_at(ip("2001:db8:1:2::1"), now).expect("counted");
        let f = l
            .failure_at(ip("2001:db8:1:2::ffff"), now)
            .expect("counted");
        assert_eq!(f.count, 2);
        assert!(f.blocked.is_some());
        assert!(l.check_at(ip("2001:db8:1:2::77"), now).is_err());
        assert!(l.check_at(ip("2001:db8:1:3::1"), now).is_ok());
    }

    #[test]
    fn failures_block_then_the_block_ends() {
        let l = FailureLimiter::new(
            "t",
            3,
            Duration::from_secs(60),
            Duration::from_secs(600),
            100,
            none(),
        );
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        assert_eq!(l.failure_at(a, t0).expect("counted").count, 1);
        assert_eq!(l.failure_at(a, t0).expect("counted").count, 2);
        assert!(l.check_at(a, t0).is_ok());
        let third = l.failure_at(a, t0).expect("counted");
        assert_eq!(third.count, 3);
        assert_eq!(third.blocked, Some(RetryAfter(Duration::from_secs(600))));
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            l.check_at(a, later),
            Err(RetryAfter(Duration::from_secs(500)))
        );
        assert!(
            l.check_at(ip("192.0.2.2"), later).is_ok(),
            "others are not blocked"
        );
        // A success does not lift an active block, and is itself refused;
        // so is a further failure, which is not counted.
        assert_eq!(
            l.success_at(a, later),
            Err(RetryAfter(Duration::from_secs(500)))
        );
        assert!(l.check_at(a, later).is_err());
        assert_eq!(
            l.failure_at(a, later),
            Err(RetryAfter(Duration::from_secs(500)))
        );
        assert_eq!(l.failures(a), 3, "a refused failure is not counted");
        let after = t0 + Duration::from_secs(601);
        assert!(l.check_at(a, after).is_ok());
        assert_eq!(
            l.failure_at(a, after).expect("counted").count,
            1,
            "counting starts afresh"
        );
    }

    #[test]
    fn concurrent_failures_are_counted_exactly_to_the_limit() {
        let l = Arc::new(FailureLimiter::new(
            "t",
            20,
            Duration::from_secs(60),
            Duration::from_secs(600),
            100,
            none(),
        ));
        let a = ip("192.0.2.77");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let (mut counted, mut blocks, mut refused) = (0, 0, 0);
                    for _ in 0..10 {
                        match l.failure(a) {
                            Ok(f) => {
                                counted += 1;
                                blocks += usize::from(f.blocked.is_some());
                            }
                            Err(_) => refused += 1,
                        }
                    }
                    (counted, blocks, refused)
                })
            })
            .collect();
        let mut total = (0, 0, 0);
        for t in threads {
            let (c, b, r) = t.join().expect("thread");
            total = (total.0 + c, total.1 + b, total.2 + r);
        }
        assert_eq!(total, (20, 1, 60), "(counted, blocks, refused)");
        assert_eq!(l.failures(a), 20);
    }

    #[test]
    fn the_window_forgets_old_failures_and_success_resets() {
        let l = FailureLimiter::new(
            "t",
            3,
            Duration::from_secs(60),
            Duration::from_secs(60),
            100,
            none(),
        );
        let a = ip("198.51.100.9");
        let t0 = Instant::now();
        l.failure_at(a, t0).expect("counted");
        l.failure_at(a, t0).expect("counted");
        let f = l
            .failure_at(a, t0 + Duration::from_secs(61))
            .expect("counted");
        assert_eq!((f.count, f.blocked), (1, None));
        l.failure_at(a, t0 + Duration::from_secs(62))
            .expect("counted");
        l.success_at(a, t0 + Duration::from_secs(62))
            .expect("not blocked");
        assert_eq!(
            l.failure_at(a, t0 + Duration::from_secs(63))
                .expect("counted")
                .count,
            1
        );
    }

    #[test]
    fn exempt_addresses_are_never_limited() {
        let exempt = Arc::new(Exempt::new(vec!["127.0.0.0/8".parse().expect("cidr")]));
        let l = FailureLimiter::new(
            "t",
            1,
            Duration::from_secs(60),
            Duration::from_secs(60),
            10,
            exempt.clone(),
        );
        let f = l.failure(ip("127.0.0.1")).expect("exempt");
        assert_eq!((f.count, f.blocked), (0, None));
        assert!(l.check(ip("127.0.0.1")).is_ok());
        let r = RateLimiter::new("t", 1, 10, exempt);
        for _ in 0..10 {
            assert!(r.acquire(ip("127.0.0.1")).is_ok());
        }
    }

    #[test]
    fn memory_stays_bounded_and_blocks_are_kept_longest() {
        let l = FailureLimiter::new(
            "t",
            2,
            Duration::from_secs(60),
            Duration::from_secs(600),
            64,
            none(),
        );
        let r = RateLimiter::new("t", 10, 64, none());
        let t0 = Instant::now();
        let blocked = ip("203.0.113.1");
        l.failure_at(blocked, t0).expect("counted");
        assert!(
            l.failure_at(blocked, t0)
                .expect("counted")
                .blocked
                .is_some()
        );
        for n in 0..10_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let t = t0 + Duration::from_millis(u64::from(n));
            l.failure_at(a, t).expect("counted");
            assert!(r.acquire_at(a, t).is_ok());
            assert!(l.stats().0 <= 64 && r.tracked() <= 64);
        }
        // Unblocked addresses are forgotten first: the block holds.
        assert!(l.check_at(blocked, t0 + Duration::from_secs(11)).is_err());
        // The most recent address is tracked.
        let last = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + 9_999));
        assert_eq!(l.failures(last), 1);
    }

    #[test]
    fn the_rate_limiter_refills() {
        let r = RateLimiter::new("t", 3, 100, none());
        let a = ip("192.0.2.50");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.acquire_at(a, t0).is_ok());
        }
        let over = r.acquire_at(a, t0).expect_err("fourth in the same instant");
        assert_eq!(over.secs(), 20, "one token every 20 s at 3 a minute");
        assert!(r.acquire_at(ip("192.0.2.51"), t0).is_ok());
        assert!(r.acquire_at(a, t0 + Duration::from_secs(21)).is_ok());
        assert!(r.acquire_at(a, t0 + Duration::from_secs(21)).is_err());
    }

    #[test]
    fn the_connection_cap_counts_open_connections_per_address() {
        let exempt = Arc::new(Exempt::new(vec!["127.0.0.0/8".parse().expect("cidr")]));
        let cap = ConnectionCap::new("t", 2, exempt);
        let a = ip("192.0.2.9");
        let first = cap.acquire(a).expect("first");
        let second = cap.acquire(a).expect("second");
        assert!(cap.acquire(a).is_none(), "a third from the same address");
        assert!(cap.acquire(ip("192.0.2.10")).is_some(), "another address");
        // One IPv6 client holds its whole /64.
        let v6: Vec<_> = ["2001:db8::1", "2001:db8::2"]
            .iter()
            .map(|s| cap.acquire(ip(s)).expect("v6"))
            .collect();
        assert!(cap.acquire(ip("2001:db8::ffff")).is_none());
        drop(v6);
        drop(first);
        let again = cap.acquire(a).expect("a slot given back is free again");
        assert!(cap.acquire(a).is_none());
        drop((second, again));
        assert_eq!(cap.tracked(), 0, "nothing kept for closed connections");
        let local: Vec<_> = (0..10)
            .map(|_| cap.acquire(ip("127.0.0.1")).expect("exempt"))
            .collect();
        assert_eq!((local.len(), cap.tracked()), (10, 0));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).secs(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).secs(), 3);
        assert_eq!(RetryAfter(Duration::ZERO).secs(), 1);
    }
}
