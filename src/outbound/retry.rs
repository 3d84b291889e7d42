//! Retry policy of outbound delivery, pure: the one classifier of delivery
//! errors (temporary or permanent) and the backoff schedule.
//!
//! The rules, in the spirit of RFC 5321 §4.2.1 and §4.5.4.1:
//! - an SMTP reply decides by its basic code: 5xx is permanent, 4xx (and
//!   anything unexpected) temporary; the enhanced code only decides when the
//!   basic code is missing;
//! - a connection, TLS or protocol problem and a timeout are temporary;
//! - DNS: the recipient domain does not exist (NXDOMAIN), publishes a null
//!   MX (RFC 7505), or has neither MX nor address records (RFC 5321 §5.1:
//!   not a mail domain) is permanent; every other DNS failure (SERVFAIL, no
//!   answer, an MX host without addresses) is temporary;
//! - an address the SMTP client cannot even express is permanent; a local
//!   failure (disk, configuration) is temporary;
//! - a recipient whose mail hosts are all internal addresses (SPEC §10,
//!   `crate::egress`) is permanent: no retry makes them permitted.

use std::fmt;
use std::time::Duration;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Try again later (`deferred`, then `failed` past `max_age`).
    Temporary,
    /// Give up now (`failed`).
    Permanent,
}

/// Why the recipient domain could not be resolved to mail hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFailure {
    /// The domain does not exist.
    NxDomain,
    /// RFC 7505: the domain declares it accepts no mail (`MX 0 .`).
    NullMx,
    /// The domain exists but has neither MX nor A/AAAA records.
    NoMailHosts,
    /// SERVFAIL, refused, no answer in time, or an MX host without addresses.
    Temporary,
}

/// One failed delivery attempt, as the deliverers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The server answered with a negative reply.
    Reply {
        /// Basic reply code (`451`), 0 when the reply could not be parsed.
        code: u16,
        /// Enhanced status code (`4.7.1`) when the reply carried one.
        enhanced: Option<String>,
        /// The reply text (all lines, joined), as [`DeliveryError::reply`]
        /// bounds it.
        text: String,
    },
    /// TCP connect, reset, unexpected close.
    Connection(String),
    /// TLS handshake or certificate.
    Tls(String),
    /// No answer within the send timeout.
    Timeout(Duration),
    /// DNS resolution of the recipient domain or its MX hosts.
    Dns { failure: DnsFailure, detail: String },
    /// The server said something we cannot understand.
    Protocol(String),
    /// An address or message the SMTP client refuses to send.
    Unsendable(String),
    /// A failure on our side (disk, configuration).
    Local(String),
    /// Every address of the recipient's mail hosts is internal and not in
    /// `outbound.allow_destinations` (mode `mx`): what was refused.
    Refused(String),
    /// One remote host's failure, with the host named (mode `mx`).
    Remote {
        host: String,
        error: Box<DeliveryError>,
    },
}

impl DeliveryError {
    /// A reply, with the enhanced code taken from the front of the text when
    /// present (`"5.1.1 unknown user"`). The text is the remote server's to
    /// choose: it is kept bounded and without control characters
    /// ([`crate::egress::remote_text`]), as it ends up in `last_error`.
    pub fn reply(code: u16, text: &str) -> DeliveryError {
        let text = crate::egress::remote_text(text);
        let text = text.as_str();
        let (enhanced, rest) = match text.split_once(char::is_whitespace) {
            Some((first, rest)) if is_enhanced_code(first) => {
                (Some(first.to_string()), rest.trim_start())
            }
            None if is_enhanced_code(text) => (Some(text.to_string()), ""),
            _ => (None, text),
        };
        DeliveryError::Reply {
            code,
            enhanced,
            text: rest.to_string(),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Reply {
                code,
                enhanced,
                text,
            } => {
                write!(f, "{code}")?;
                if let Some(e) = enhanced {
                    write!(f, " {e}")?;
                }
                if !text.is_empty() {
                    write!(f, " {text}")?;
                }
                Ok(())
            }
            DeliveryError::Connection(d) => write!(f, "connection failed: {d}"),
            DeliveryError::Tls(d) => write!(f, "TLS failed: {d}"),
            DeliveryError::Timeout(t) => write!(f, "timed out after {} ms", t.as_millis()),
            DeliveryError::Dns { failure, detail } => {
                let what = match failure {
                    DnsFailure::NxDomain => "domain does not exist",
                    DnsFailure::NullMx => "domain accepts no mail (null MX)",
                    DnsFailure::NoMailHosts => "domain has no MX or address records",
                    DnsFailure::Temporary => "DNS lookup failed",
                };
                if detail.is_empty() {
                    write!(f, "{what}")
                } else {
                    write!(f, "{what}: {detail}")
                }
            }
            DeliveryError::Protocol(d) => write!(f, "protocol error: {d}"),
            DeliveryError::Unsendable(d) => write!(f, "cannot be sent: {d}"),
            DeliveryError::Local(d) => write!(f, "local error: {d}"),
            DeliveryError::Refused(d) => write!(f, "destination refused: {d}"),
            DeliveryError::Remote { host, error } => write!(f, "{host}: {error}"),
        }
    }
}

/// `class.subject.detail`, RFC 3463: class 2, 4 or 5, then 1–3 and 1–3 digits.
fn is_enhanced_code(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(class, "2" | "4" | "5")
        && (1..=3).contains(&subject.len())
        && (1..=3).contains(&detail.len())
        && subject
            .bytes()
            .chain(detail.bytes())
            .all(|b| b.is_ascii_digit())
}

/// The one classifier: temporary or permanent.
pub fn classify(error: &DeliveryError) -> Class {
    match error {
        DeliveryError::Reply { code, enhanced, .. } => match code / 100 {
            5 => Class::Permanent,
            4 => Class::Temporary,
            _ if enhanced.as_deref().is_some_and(|e| e.starts_with("5.")) => Class::Permanent,
            _ => Class::Temporary,
        },
        DeliveryError::Dns { failure, .. } => match failure {
            DnsFailure::NxDomain | DnsFailure::NullMx | DnsFailure::NoMailHosts => Class::Permanent,
            DnsFailure::Temporary => Class::Temporary,
        },
        DeliveryError::Unsendable(_) | DeliveryError::Refused(_) => Class::Permanent,
        DeliveryError::Remote { error, .. } => classify(error),
        DeliveryError::Connection(_)
        | DeliveryError::Tls(_)
        | DeliveryError::Timeout(_)
        | DeliveryError::Protocol(_)
        | DeliveryError::Local(_) => Class::Temporary,
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When to try again after `attempts` failed attempts (1 after the first),
/// or `None` to give up.
///
/// The wait is `schedule[attempts - 1]`, the last step repeating. Retries
/// go on until `max_age` after `first_queued_at`: a retry that would fall
/// past that deadline happens at the deadline, and once `now` has reached
/// it the answer is `None`. An empty schedule never retries. Times are ms.
pub fn next_attempt(
    attempts: i64,
    first_queued_at: i64,
    now: i64,
    schedule: &[Duration],
    max_age: Duration,
) -> Option<i64> {
    let last = schedule.len().checked_sub(1)?;
    let deadline = first_queued_at.saturating_add(millis(max_age));
    if now >= deadline {
        return None;
    }
    let step = usize::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(last);
    let wait = millis(schedule[step]);
    Some(now.saturating_add(wait).min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    fn default_schedule() -> Vec<Duration> {
        [60, 300, 900, 3600, 4 * 3600]
            .into_iter()
            .map(Duration::from_secs)
            .collect()
    }

    #[test]
    fn classification_table() {
        use Class::*;
        let t = |s: &str| s.to_string();
        let cases: Vec<(DeliveryError, Class)> = vec![
            (DeliveryError::reply(550, "5.1.1 no such user"), Permanent),
            (DeliveryError::reply(554, "transaction failed"), Permanent),
            (DeliveryError::reply(552, "5.3.4 too big"), Permanent),
            (DeliveryError::reply(451, "4.7.1 greylisted"), Temporary),
            (DeliveryError::reply(421, "4.3.2 shutting down"), Temporary),
            (
                DeliveryError::reply(452, "4.5.3 too many recipients"),
                Temporary,
            ),
            // The basic code decides over a disagreeing enhanced code.
            (DeliveryError::reply(450, "5.7.1 odd"), Temporary),
            (DeliveryError::reply(550, "4.2.0 odd"), Permanent),
            // A reply we could not parse: the enhanced code decides.
            (DeliveryError::reply(0, "5.1.1 no such user"), Permanent),
            (DeliveryError::reply(0, "garbage"), Temporary),
            (DeliveryError::reply(354, "go ahead"), Temporary),
            (DeliveryError::Connection(t("refused")), Temporary),
            (DeliveryError::Tls(t("bad certificate")), Temporary),
            (DeliveryError::Timeout(Duration::from_secs(120)), Temporary),
            (DeliveryError::Protocol(t("bad reply")), Temporary),
            (DeliveryError::Local(t("disk full")), Temporary),
            (DeliveryError::Unsendable(t("bad address")), Permanent),
            (
                DeliveryError::Refused(t("mx.example resolves to 127.0.0.1 (internal address)")),
                Permanent,
            ),
            (
                DeliveryError::Dns {
                    failure: DnsFailure::NxDomain,
                    detail: t("vendor.invalid"),
                },
                Permanent,
            ),
            (
                DeliveryError::Dns {
                    failure: DnsFailure::NullMx,
                    detail: String::new(),
                },
                Permanent,
            ),
            (
                DeliveryError::Dns {
                    failure: DnsFailure::NoMailHosts,
                    detail: String::new(),
                },
                Permanent,
            ),
            (
                DeliveryError::Dns {
                    failure: DnsFailure::Temporary,
                    detail: t("SERVFAIL"),
                },
                Temporary,
            ),
            (
                DeliveryError::Remote {
                    host: t("mx1.vendor.example [192.0.2.1]"),
                    error: Box::new(DeliveryError::reply(550, "5.1.1 unknown")),
                },
                Permanent,
            ),
            (
                DeliveryError::Remote {
                    host: t("mx1.vendor.example [192.0.2.1]"),
                    error: Box::new(DeliveryError::reply(421, "4.3.2 busy")),
                },
                Temporary,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(classify(&error), want, "{error:?}");
        }
    }

    #[test]
    fn replies_split_the_enhanced_code() {
        let cases: &[(u16, &str, Option<&str>, &str, &str)] = &[
            (
                550,
                "5.1.1 <bob@vendor.example>: unknown",
                Some("5.1.1"),
                "<bob@vendor.example>: unknown",
                "550 5.1.1 <bob@vendor.example>: unknown",
            ),
            (451, "try later", None, "try later", "451 try later"),
            (451, "4.7.1", Some("4.7.1"), "", "451 4.7.1"),
            (
                550,
                "5.1 not enhanced",
                None,
                "5.1 not enhanced",
                "550 5.1 not enhanced",
            ),
            (
                550,
                "6.1.1 bad class",
                None,
                "6.1.1 bad class",
                "550 6.1.1 bad class",
            ),
            (550, "", None, "", "550"),
            // The remote's words: one line, controls gone, bounded.
            (
                550,
                "5.1.1 no\r\nsuch\u{1b}[2J user",
                Some("5.1.1"),
                "no  such [2J user",
                "550 5.1.1 no  such [2J user",
            ),
        ];
        for (code, text, enhanced, rest, shown) in cases {
            let e = DeliveryError::reply(*code, text);
            assert_eq!(
                e,
                DeliveryError::Reply {
                    code: *code,
                    enhanced: enhanced.map(str::to_string),
                    text: rest.to_string()
                },
                "{text}"
            );
            assert_eq!(e.to_string(), *shown);
        }
        let long = DeliveryError::reply(550, &format!("5.1.1 {}SECRET", "x".repeat(1000)));
        let shown = long.to_string();
        assert!(shown.starts_with("550 5.1.1 xxx"), "{shown}");
        assert!(shown.len() <= 4 + crate::egress::REMOTE_TEXT_MAX, "{shown}");
        assert!(!shown.contains("SECRET"));
    }

    #[test]
    fn schedule_table() {
        let schedule = default_schedule();
        let max_age = Duration::from_secs(3 * 24 * 3600);
        let q = 1_000_000; // first queued
        // (attempts so far, now, expected)
        let cases: &[(i64, i64, Option<i64>)] = &[
            (1, q, Some(q + M)),
            (2, q + M, Some(q + M + 5 * M)),
            (3, q + 6 * M, Some(q + 6 * M + 15 * M)),
            (4, q + 21 * M, Some(q + 21 * M + H)),
            (5, q + 2 * H, Some(q + 2 * H + 4 * H)),
            // the last step repeats
            (6, q + 6 * H, Some(q + 10 * H)),
            (40, q + 30 * H, Some(q + 34 * H)),
            // attempts 0 (never tried) is treated as the first step
            (0, q, Some(q + M)),
            // a retry past the deadline is pulled back to the deadline …
            (20, q + 72 * H - M, Some(q + 72 * H)),
            // … and at or past the deadline we give up
            (21, q + 72 * H, None),
            (21, q + 100 * H, None),
        ];
        for (attempts, now, want) in cases {
            assert_eq!(
                next_attempt(*attempts, q, *now, &schedule, max_age),
                *want,
                "attempts {attempts} at +{} ms",
                now - q
            );
        }
    }

    #[test]
    fn schedule_edges() {
        let one = [Duration::from_secs(1)];
        assert_eq!(
            next_attempt(1, 0, 0, &one, Duration::from_secs(60)),
            Some(S)
        );
        assert_eq!(
            next_attempt(9, 0, 10 * S, &one, Duration::from_secs(60)),
            Some(11 * S)
        );
        // no schedule, no retry
        assert_eq!(next_attempt(1, 0, 0, &[], Duration::from_secs(60)), None);
        // zero max age: give up at once
        assert_eq!(next_attempt(1, 0, 0, &one, Duration::ZERO), None);
        // huge values saturate instead of overflowing
        assert_eq!(
            next_attempt(
                1,
                i64::MAX - 5,
                i64::MAX - 5,
                &[Duration::MAX],
                Duration::MAX
            ),
            Some(i64::MAX)
        );
    }
}
