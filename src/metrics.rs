//! Process-wide metrics: counters, gauges and latency histograms, rendered in
//! the Prometheus text exposition format by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Key, u64>,
    gauges: BTreeMap<Key, f64>,
    histograms: BTreeMap<Key, Histogram>,
    help: BTreeMap<&'static str, &'static str>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Registry::default()))
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    (
        name,
        labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
    )
}

/// The value stored under `name` and `labels`, created when new. The
/// lookup allocates nothing for a series that exists (every call after the
/// first): these are called several times for every SMTP message.
fn slot<'m, V: Default>(
    map: &'m mut BTreeMap<Key, V>,
    name: &'static str,
    labels: &[(&'static str, &str)],
) -> &'m mut V {
    let same = |(n, l): &Key| {
        *n == name
            && l.len() == labels.len()
            && l.iter()
                .zip(labels)
                .all(|((k1, v1), (k2, v2))| k1 == k2 && v1 == v2)
    };
    let start = (name, Vec::new());
    let exists = map
        .range(&start..)
        .take_while(|(k, _)| k.0 == name)
        .any(|(k, _)| same(k));
    if !exists {
        return map.entry(key(name, labels)).or_default();
    }
    map.range_mut(&start..)
        .take_while(|(k, _)| k.0 == name)
        .find(|(k, _)| same(k))
        .map(|(_, v)| v)
        .unwrap_or_else(|| unreachable!("the series was just found"))
}

/// Adds `n` to a counter.
pub fn add(name: &'static str, labels: &[(&'static str, &str)], n: u64) {
    if let Ok(mut r) = registry().lock() {
        *slot(&mut r.counters, name, labels) += n;
    }
}

/// Adds one to a counter.
pub fn inc(name: &'static str, labels: &[(&'static str, &str)]) {
    add(name, labels, 1);
}

/// Moves a gauge by `delta`.
pub fn gauge_add(name: &'static str, labels: &[(&'static str, &str)], delta: i64) {
    if let Ok(mut r) = registry().lock() {
        *slot(&mut r.gauges, name, labels) += delta as f64;
    }
}

/// Sets a gauge.
pub fn gauge_set(name: &'static str, labels: &[(&'static str, &str)], value: i64) {
    if let Ok(mut r) = registry().lock() {
        *slot(&mut r.gauges, name, labels) = value as f64;
    }
}

/// Sets a gauge to a fractional value (seconds).
pub fn gauge_set_f64(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    if let Ok(mut r) = registry().lock() {
        r.gauges.insert(key(name, labels), value);
    }
}

/// Publishes every configured limit as `config_limit{key="section.key"}`
/// (durations in seconds), so dashboards can show usage against the limit.
pub fn export_config_limits(c: &crate::config::Config) {
    describe(
        "config_limit",
        "Configured limits by config key (durations in seconds)",
    );
    let n = |key: &'static str, v: usize| gauge_set_f64("config_limit", &[("key", key)], v as f64);
    let d = |key: &'static str, v: std::time::Duration| {
        gauge_set_f64("config_limit", &[("key", key)], v.as_secs_f64())
    };
    let s = &c.smtp;
    n("smtp.max_message_bytes", s.max_message_bytes);
    n("smtp.max_connections", s.max_connections);
    n("smtp.max_connections_per_ip", s.max_connections_per_ip);
    n(
        "smtp.connections_per_minute_per_ip",
        s.connections_per_minute_per_ip as usize,
    );
    n("smtp.max_recipients", s.max_recipients);
    n("smtp.max_errors", s.max_errors);
    n("smtp.max_line_length", s.max_line_length);
    d("smtp.command_timeout", s.command_timeout);
    d("smtp.data_timeout", s.data_timeout);
    d("smtp.tls_handshake_timeout", s.tls_handshake_timeout);
    n(
        "smtp.rcpt_failures_before_tarpit",
        s.rcpt_failures_before_tarpit as usize,
    );
    d("smtp.tarpit_delay", s.tarpit_delay);
    n("smtp.max_rcpt_failures", s.max_rcpt_failures as usize);
    d("smtp.rcpt_failure_window", s.rcpt_failure_window);
    d("smtp.block_time", s.block_time);
    let h = &c.http;
    n("http.max_body_bytes", h.max_body_bytes);
    n("http.max_connections", h.max_connections);
    n("http.max_connections_per_ip", h.max_connections_per_ip);
    d("http.idle_timeout", h.idle_timeout);
    d("http.request_timeout", h.request_timeout);
    n("imap.max_connections", c.imap.max_connections);
    n("imap.max_connections_per_ip", c.imap.max_connections_per_ip);
    d("imap.idle_timeout", c.imap.idle_timeout);
    n("imap.max_line_bytes", c.imap.max_line_bytes as usize);
    n("imap.max_literal_bytes", c.imap.max_literal_bytes as usize);
    d("imap.preauth_timeout", c.imap.preauth_timeout);
    d("imap.preauth_max_time", c.imap.preauth_max_time);
    d("imap.tls_handshake_timeout", c.imap.tls_handshake_timeout);
    d("imap.login_failure_delay", c.imap.login_failure_delay);
    n("imap.max_bad_commands", c.imap.max_bad_commands as usize);
    d("imap.shutdown_grace", c.imap.shutdown_grace);
    let j = &c.jmap;
    n("jmap.max_size_request", j.max_size_request);
    n("jmap.max_calls_in_request", j.max_calls_in_request);
    n("jmap.max_objects_in_get", j.max_objects_in_get);
    n("jmap.max_objects_in_set", j.max_objects_in_set);
    n("jmap.max_concurrent_requests", j.max_concurrent_requests);
    n("jmap.max_push_streams", j.max_push_streams);
    n("jmap.max_properties", j.max_properties);
    n("jmap.max_filter_conditions", j.max_filter_conditions);
    n("jmap.max_filter_depth", j.max_filter_depth);
    n("jmap.max_changes", j.max_changes);
    n("jmap.max_query_results", j.max_query_results);
    n("portal.max_upload_bytes", c.portal.max_upload_bytes);
    n("portal.replies_per_hour", c.portal.replies_per_hour);
    n("limits.login_failures", c.limits.login_failures as usize);
    d("limits.login_window", c.limits.login_window);
    n("limits.max_tracked_ips", c.limits.max_tracked_ips);
    d("outbound.send_timeout", c.outbound.send_timeout);
    n(
        "outbound.per_host_concurrency",
        c.outbound.per_host_concurrency,
    );
    d("webhooks.timeout", c.webhooks.timeout);
    n("webhooks.concurrency", c.webhooks.concurrency);
    n("webhooks.per_endpoint", c.webhooks.per_endpoint);
}

/// Records one latency observation in seconds.
pub fn observe(name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
    if let Ok(mut r) = registry().lock() {
        let h = slot(&mut r.histograms, name, labels);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }
}

/// Registers the `# HELP` text of a metric.
pub fn describe(name: &'static str, help: &'static str) {
    if let Ok(mut r) = registry().lock() {
        r.help.insert(name, help);
    }
}

/// The current value of a counter (tests and diagnostics).
pub fn counter_value(name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
    registry()
        .lock()
        .ok()
        .and_then(|r| r.counters.get(&key(name, labels)).copied())
        .unwrap_or(0)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    let Ok(r) = registry().lock() else {
        return String::new();
    };
    let mut out = String::new();
    let mut last = "";
    let header = |out: &mut String, name: &'static str, kind: &str, last: &mut &'static str| {
        if *last != name {
            if let Some(help) = r.help.get(name) {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            *last = name;
        }
    };
    for ((name, labels), v) in &r.counters {
        header(&mut out, name, "counter", &mut last);
        let _ = writeln!(out, "{name}{} {v}", labels_text(labels, None));
    }
    for ((name, labels), v) in &r.gauges {
        header(&mut out, name, "gauge", &mut last);
        let _ = writeln!(out, "{name}{} {v}", labels_text(labels, None));
    }
    for ((name, labels), h) in &r.histograms {
        header(&mut out, name, "histogram", &mut last);
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                labels_text(labels, Some(("le", bound.to_string()))),
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            labels_text(labels, Some(("le", "+Inf".to_string()))),
            h.count
        );
        let _ = writeln!(out, "{name}_sum{} {}", labels_text(labels, None), h.sum);
        let _ = writeln!(out, "{name}_count{} {}", labels_text(labels, None), h.count);
    }
    out
}
