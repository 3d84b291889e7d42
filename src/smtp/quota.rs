//! Per-sender quota of the SMTP listener (SPEC §10 limits): how many
//! messages and bytes one envelope sender may have accepted within an hour
//! (`smtp.max_messages_per_sender_per_hour`, `smtp.max_bytes_per_sender_per_hour`).
//! Beyond, `451 4.7.1` at MAIL FROM (or after DATA, for the message that
//! would cross the byte quota) until the sender's hour has passed. Kept in
//! memory, bounded like the other per-address limiters; addresses in
//! `limits.exempt` are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Usage {
    since: Instant,
    messages: u64,
    bytes: u64,
}

/// Who counts as one sender: the envelope sender lowercased, or for the
/// null reverse-path (bounces) the client address.
pub fn sender_key(mail_from: &str, peer: IpAddr) -> String {
    if mail_from.is_empty() {
        format!("<>@{peer}")
    } else {
        mail_from.to_ascii_lowercase()
    }
}

pub struct SenderQuota {
    max_messages: u64,
    max_bytes: u64,
    max_tracked: usize,
    usage: Mutex<HashMap<String, Usage>>,
}

impl SenderQuota {
    pub fn new(max_messages: u64, max_bytes: u64, max_tracked: usize) -> SenderQuota {
        SenderQuota {
            max_messages,
            max_bytes,
            max_tracked: max_tracked.max(1),
            usage: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may send a message of `size` bytes now (0: not known
    /// yet, as at MAIL FROM).
    pub fn allows(&self, key: &str, size: u64, now: Instant) -> bool {
        let Ok(map) = self.usage.lock() else {
            return true;
        };
        match map.get(key) {
            Some(u) if now.duration_since(u.since) < WINDOW => {
                u.messages < self.max_messages && u.bytes.saturating_add(size) <= self.max_bytes
            }
            _ => size <= self.max_bytes,
        }
    }

    /// Counts an accepted message.
    pub fn record(&self, key: &str, size: u64, now: Instant) {
        let Ok(mut map) = self.usage.lock() else {
            return;
        };
        if map.len() >= self.max_tracked && !map.contains_key(key) {
            // Forget the senders whose hour is over; if that frees nothing,
            // the stalest one.
            map.retain(|_, u| now.duration_since(u.since) < WINDOW);
            if map.len() >= self.max_tracked
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, u)| u.since)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let u = map.entry(key.to_string()).or_insert(Usage {
            since: now,
            messages: 0,
            bytes: 0,
        });
        if now.duration_since(u.since) >= WINDOW {
            *u = Usage {
                since: now,
                messages: 0,
                bytes: 0,
            };
        }
        u.messages += 1;
        u.bytes = u.bytes.saturating_add(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_bytes_are_counted_per_sender_and_hour() {
        let q = SenderQuota::new(2, 100, 10);
        let t = Instant::now();
        assert!(q.allows("a@x", 0, t));
        q.record("a@x", 40, t);
        assert!(q.allows("a@x", 60, t));
        assert!(!q.allows("a@x", 61, t), "over the byte quota");
        q.record("a@x", 10, t);
        assert!(!q.allows("a@x", 0, t), "over the message quota");
        assert!(q.allows("b@x", 0, t), "another sender");
        let later = t + WINDOW;
        assert!(q.allows("a@x", 0, later), "a new hour");
        q.record("a@x", 10, later);
        assert!(q.allows("a@x", 0, later));
        assert!(!q.allows("c@x", 101, t), "one message above the quota");
    }

    #[test]
    fn memory_is_bounded() {
        let q = SenderQuota::new(5, 1000, 3);
        let t = Instant::now();
        for i in 0..100 {
            q.record(&format!("s{i}@x"), 1, t + Duration::from_millis(i));
        }
        assert!(q.usage.lock().map(|m| m.len()).unwrap_or(0) <= 3);
    }

    #[test]
    fn the_null_sender_counts_per_client_address() {
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(sender_key("", ip), "<>@192.0.2.1");
        assert_eq!(sender_key("Vera@X.example", ip), "vera@x.example");
    }
}
