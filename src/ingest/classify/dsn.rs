//! RFC 3464 / RFC 6533 delivery-status fields: the per-message and
//! per-recipient groups of a `message/delivery-status` (or
//! `message/global-delivery-status`) part, read leniently — folded lines,
//! missing blank lines between groups, missing fields, `rfc822;` and
//! `utf-8;` address types, xtext.

use super::text;

/// Upper bound on field lines read from one status part.
const MAX_FIELD_LINES: usize = 20_000;

/// One per-recipient group as written; every field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct DsnRecipient {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    /// Lowercase first word of `Action:` (`failed`, `delayed`, `delivered` …).
    pub action: Option<String>,
    /// The enhanced status code of `Status:`, without comments.
    pub status: Option<String>,
    /// `Diagnostic-Code:` without its type (`smtp;`), whitespace collapsed.
    pub diagnostic: Option<String>,
}

impl DsnRecipient {
    /// The address that failed: Final-Recipient, else Original-Recipient.
    pub fn address(&self) -> Option<&str> {
        self.final_recipient
            .as_deref()
            .or(self.original_recipient.as_deref())
    }

    /// The group already has its recipient and its Status: a further
    /// recipient field starts the next group. (Action may come before the
    /// recipient fields, Status rarely does.)
    fn complete(&self) -> bool {
        (self.final_recipient.is_some() || self.original_recipient.is_some())
            && self.status.is_some()
    }

    fn is_empty(&self) -> bool {
        self.final_recipient.is_none()
            && self.original_recipient.is_none()
            && self.action.is_none()
            && self.status.is_none()
    }
}

/// The fields of one status part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct DsnReport {
    pub reporting_mta: Option<String>,
    pub recipients: Vec<DsnRecipient>,
}

/// Unfolded `(lowercase name, value)` fields, with `None` marking a blank
/// line (a group boundary).
fn fields(body: &str) -> Vec<Option<(String, String)>> {
    let mut out: Vec<Option<(String, String)>> = Vec::new();
    for line in body.split('\n').take(MAX_FIELD_LINES) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            out.push(None);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(Some((_, value))) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            continue;
        }
        out.push(Some((name.to_ascii_lowercase(), value.trim().to_string())));
    }
    out
}

/// Decodes RFC 3461 xtext (`+2B` → `+`) and RFC 6533 `\x{HH}` escapes.
fn decode_address_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '+'
            && let Some(hex) = rest.get(1..3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
            && v.is_ascii()
            && !v.is_ascii_control()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.push(char::from(v));
            rest = &rest[3..];
            continue;
        }
        if let Some(tail) = rest.strip_prefix("\\x{")
            && let Some(close) = tail.find('}')
            && let Ok(v) = u32::from_str_radix(&tail[..close], 16)
            && let Some(ch) = char::from_u32(v)
        {
            out.push(ch);
            rest = &tail[close + 1..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `rfc822; <User@Example.org>` → `User@Example.org`. An empty or `<>`
/// address gives `None`.
pub(super) fn address_value(value: &str) -> Option<String> {
    let (kind, addr) = match value.split_once(';') {
        Some((k, a)) => (k.trim().to_ascii_lowercase(), a),
        None => (String::new(), value),
    };
    // Some MTAs append a comment, or name a pipe or file with the address
    // among its arguments: keep the word holding an address, else the first.
    let addr = addr
        .split_whitespace()
        .find(|w| w.contains('@'))
        .or_else(|| addr.split_whitespace().next())
        .unwrap_or_default();
    let addr = addr
        .trim_matches(|c| matches!(c, '<' | '>' | '"' | '\'' | '(' | ')'))
        .trim();
    if addr.is_empty() {
        return None;
    }
    let decoded = if kind == "rfc822" || kind == "utf-8" || kind.is_empty() {
        decode_address_escapes(addr)
    } else {
        addr.to_string()
    };
    // A value like "rfc822;" or plain garbage without a mailbox is useless,
    // but an X.400 or other non-Internet address is kept as written.
    (!decoded.is_empty()).then_some(decoded)
}

/// `smtp; 550 5.1.1 …` → `550 5.1.1 …`: the diagnostic type is dropped when
/// it is a short token before the first `;`.
fn diagnostic_value(value: &str) -> Option<String> {
    let text = match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind.trim().len() <= 20
                && !kind.trim().contains(char::is_whitespace) =>
        {
            rest
        }
        _ => value,
    };
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!collapsed.is_empty()).then_some(collapsed)
}

/// Parses the fields of a delivery-status part. Groups are split at blank
/// lines and, for DSNs that omit them, wherever a recipient field repeats.
pub(super) fn parse(body: &str) -> DsnReport {
    fn push(rec: &mut DsnRecipient, report: &mut DsnReport) {
        let done = std::mem::take(rec);
        if !done.is_empty() && report.recipients.len() < text::MAX_RECIPIENTS {
            report.recipients.push(done);
        }
    }
    let mut report = DsnReport::default();
    let mut current = DsnRecipient::default();
    for field in fields(body) {
        let Some((name, value)) = field else {
            push(&mut current, &mut report);
            continue;
        };
        match name.as_str() {
            "reporting-mta" if report.reporting_mta.is_none() => {
                report.reporting_mta = diagnostic_value(&value);
            }
            // Final- and Original-Recipient come in either order, Action
            // sometimes first; a group has begun anew when a field repeats
            // or a recipient field follows a complete group.
            "final-recipient" => {
                if current.final_recipient.is_some() || current.complete() {
                    push(&mut current, &mut report);
                }
                current.final_recipient = address_value(&value);
            }
            "original-recipient" => {
                if current.original_recipient.is_some() || current.complete() {
                    push(&mut current, &mut report);
                }
                current.original_recipient = address_value(&value);
            }
            "action" => {
                if current.action.is_some() {
                    push(&mut current, &mut report);
                }
                current.action = value
                    .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
                    .find(|w| !w.is_empty())
                    .map(str::to_ascii_lowercase);
            }
            "status" => {
                if current.status.is_some() {
                    push(&mut current, &mut report);
                }
                current.status = text::enhanced_codes(&value).next().map(str::to_string);
            }
            "diagnostic-code" if current.diagnostic.is_none() => {
                current.diagnostic = diagnostic_value(&value);
            }
            _ => {}
        }
    }
    push(&mut current, &mut report);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_values() {
        let cases: &[(&str, Option<&str>)] = &[
            ("rfc822; user@example.com", Some("user@example.com")),
            ("RFC822;<User@Example.com>", Some("User@Example.com")),
            ("rfc822;a+2Bb@example.com", Some("a+b@example.com")),
            (
                "utf-8; j\\x{00FC}rgen@example.de",
                Some("jürgen@example.de"),
            ),
            (
                "rfc822; user@example.com (comment)",
                Some("user@example.com"),
            ),
            ("user@example.com", Some("user@example.com")),
            ("rfc822;", None),
            ("rfc822; <>", None),
            ("x400; /G=a/S=b/", Some("/G=a/S=b/")),
            (
                "rfc822;|/usr/bin/filter a@example.com /home/a",
                Some("a@example.com"),
            ),
            ("rfc822;/var/mail/spool/a", Some("/var/mail/spool/a")),
        ];
        for (input, want) in cases {
            assert_eq!(address_value(input).as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn parses_groups_with_folding() {
        let body = "Reporting-MTA: dns; mail.example.com\nArrival-Date: Tue, 7 Jul 2009\n\nFinal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does\n    not exist.\n\nOriginal-Recipient: rfc822;b@example.org\nFinal-Recipient: rfc822;b@example.net\nAction: delayed\nStatus: 4.4.1 (timeout)\n";
        let r = parse(body);
        assert_eq!(r.reporting_mta.as_deref(), Some("mail.example.com"));
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(r.recipients[0].address(), Some("a@example.org"));
        assert_eq!(r.recipients[0].action.as_deref(), Some("failed"));
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            r.recipients[0].diagnostic.as_deref(),
            Some("550-5.1.1 The email account that you tried to reach does not exist.")
        );
        assert_eq!(r.recipients[1].address(), Some("b@example.net"));
        assert_eq!(
            r.recipients[1].original_recipient.as_deref(),
            Some("b@example.org")
        );
        assert_eq!(r.recipients[1].action.as_deref(), Some("delayed"));
        assert_eq!(r.recipients[1].status.as_deref(), Some("4.4.1"));
    }

    #[test]
    fn final_then_original_is_one_group() {
        let body = "Final-Recipient: rfc822; a@x.example\nOriginal-Recipient: rfc822;A@x.example\nAction: failed\nStatus: 5.1.1\nFinal-Recipient: rfc822; b@x.example\nOriginal-Recipient: rfc822;B@x.example\nAction: failed\n";
        let r = parse(body);
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(
            r.recipients[0].original_recipient.as_deref(),
            Some("A@x.example")
        );
        assert_eq!(
            r.recipients[1].original_recipient.as_deref(),
            Some("B@x.example")
        );
    }

    #[test]
    fn action_before_recipient_stays_in_its_group() {
        let r = parse("Action: failed\nFinal-Recipient: rfc822;/var/mail/a\nStatus: 5.0.0\n");
        assert_eq!(r.recipients.len(), 1);
        assert_eq!(r.recipients[0].action.as_deref(), Some("failed"));
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.0.0"));

        let r = parse(
            "Action: failed\nFinal-Recipient: rfc822; a@x.example\nOriginal-Recipient: rfc822; a@x.example\nDiagnostic-Code: smtp; 451 4.3.0 later\nStatus: 4.3.0\n\nAction: failed\nFinal-Recipient: rfc822; b@x.example\nStatus: 5.0.0\n",
        );
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(r.recipients[0].status.as_deref(), Some("4.3.0"));
        assert_eq!(
            r.recipients[0].original_recipient.as_deref(),
            Some("a@x.example")
        );
        assert_eq!(r.recipients[1].address(), Some("b@x.example"));
    }

    #[test]
    fn splits_groups_without_blank_lines() {
        let body = "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.0.0\nFinal-Recipient: rfc822; b@x.example\nAction: failed\nStatus: 5.2.2\n";
        let r = parse(body);
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(r.recipients[1].address(), Some("b@x.example"));
        assert_eq!(r.recipients[1].status.as_deref(), Some("5.2.2"));
    }

    #[test]
    fn tolerates_junk_and_missing_fields() {
        let r = parse(
            "MIME-Version: 1.0\nContent-Type: text/plain\n\nFinal-Recipient: RFC822; <demo@example.com>\nAction: failed\nStatus: 4.2.2\ngarbage line without colon\n",
        );
        assert_eq!(r.recipients.len(), 1);
        assert_eq!(r.recipients[0].address(), Some("demo@example.com"));
        assert_eq!(r.recipients[0].diagnostic, None);
        assert_eq!(parse(""), DsnReport::default());
        assert_eq!(parse("\n\n:\n: x\n").recipients.len(), 0);
    }
}
