//! Parsing an inbound message with mail-parser into the fields SPEC §4
//! stores. Lenient by design: mail-parser never fails, undecodable text
//! comes back with U+FFFD, and a part that cannot be read is skipped, never
//! the message. The raw bytes stay the source of truth.

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

/// Longest header value kept per field; anything longer is cut.
const MAX_FIELD: usize = 16 * 1024;
/// At most this many References are kept (the first and the last ones).
const MAX_REFERENCES: usize = 100;
/// At most this many attachments are extracted from one message.
const MAX_ATTACHMENTS: usize = 1000;

pub use crate::model::Mailbox;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub content_id: Option<String>,
    pub data: Vec<u8>,
}

/// What the pipeline needs from one message.
#[derive(Debug, Clone, Default)]
pub struct ParsedMail {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// The author, when the message names exactly one (SPEC §10: a message
    /// with more than one From author is never attributed to any of them).
    pub from: Option<Mailbox>,
    /// How many author addresses the From header fields name, all of them
    /// counted (two From fields, or a list in one).
    pub from_authors: usize,
    pub reply_to: Option<String>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    /// Addresses from Delivered-To, X-Original-To, X-Forwarded-To, in that order.
    pub delivered_to: Vec<String>,
    pub original_to: Vec<String>,
    pub forwarded_to: Vec<String>,
    /// Date header as ms since the epoch.
    pub date: Option<i64>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Carries the header that marks the gateway's own notifications.
    pub notification_marker: bool,
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_string();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Normalises a Message-ID: no brackets, no surrounding space.
pub fn normalize_id(id: &str) -> Option<String> {
    let t = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    if t.is_empty() || t.len() > 998 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        None
    } else {
        Some(t.to_string())
    }
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => normalize_id(t).into_iter().collect(),
        HeaderValue::TextList(list) => list.iter().filter_map(|t| normalize_id(t)).collect(),
        _ => Vec::new(),
    }
}

fn mailboxes(addr: Option<&Address<'_>>) -> Vec<Mailbox> {
    let Some(addr) = addr else {
        return Vec::new();
    };
    addr.iter()
        .filter_map(|a| {
            let email = a.address()?.trim();
            if email.is_empty() || !email.contains('@') {
                return None;
            }
            Some(Mailbox {
                name: a.name().map(|n| cut(n.trim())).filter(|n| !n.is_empty()),
                email: cut(email),
            })
        })
        .collect()
}

/// Every author address of every From header field, in order. mail-parser's
/// `from()` answers with one field only, so a second From (the classic
/// forgery: one From for the reader, another for DMARC) would go unseen.
fn from_authors(msg: &mail_parser::Message<'_>) -> Vec<Mailbox> {
    let mut out = Vec::new();
    for h in msg.headers() {
        if !matches!(h.name, mail_parser::HeaderName::From) {
            continue;
        }
        match h.value() {
            HeaderValue::Address(a) => out.extend(mailboxes(Some(a))),
            // A From field with no parsable address still names an author.
            _ => out.push(Mailbox::default()),
        }
    }
    // Unparsable fields count, but are not attributed to.
    if out.len() == 1 && out[0].email.is_empty() {
        out.clear();
    }
    out
}

/// Addresses in a trace header such as Delivered-To (plain text values).
fn header_addresses(msg: &mail_parser::Message<'_>, name: &str) -> Vec<String> {
    msg.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| {
            let start = h.offset_start() as usize;
            let end = h.offset_end() as usize;
            msg.raw_message().get(start..end)
        })
        .flat_map(|raw| {
            String::from_utf8_lossy(raw)
                .split([',', ' ', '\t', '\r', '\n', '<', '>'])
                .filter(|s| s.contains('@'))
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Keeps the first id and the last `MAX_REFERENCES - 1`.
fn cap_references(mut refs: Vec<String>) -> Vec<String> {
    if refs.len() > MAX_REFERENCES {
        let tail = refs.split_off(refs.len() - (MAX_REFERENCES - 1));
        refs.truncate(1);
        refs.extend(tail);
    }
    refs
}

pub fn parse(raw: &[u8]) -> ParsedMail {
    let bounded = crate::mime_guard::for_parser(raw);
    let Some(msg) = MessageParser::default().parse(bounded.as_ref()) else {
        return ParsedMail::default();
    };
    let mut out = ParsedMail {
        message_id: msg.message_id().and_then(normalize_id),
        in_reply_to: ids(msg.in_reply_to()).into_iter().next(),
        references: cap_references(ids(msg.references())),
        from: None,
        reply_to: mailboxes(msg.reply_to())
            .into_iter()
            .next()
            .map(|m| m.email),
        to: mailboxes(msg.to()),
        cc: mailboxes(msg.cc()),
        delivered_to: header_addresses(&msg, "Delivered-To"),
        original_to: header_addresses(&msg, "X-Original-To"),
        forwarded_to: header_addresses(&msg, "X-Forwarded-To"),
        date: msg.date().map(|d| d.to_timestamp().saturating_mul(1000)),
        subject: msg.subject().map(|s| cut(s.trim())).unwrap_or_default(),
        ..ParsedMail::default()
    };
    out.notification_marker = msg.header_raw(crate::notifications::HEADER).is_some();
    let authors = from_authors(&msg);
    out.from_authors = authors.len();
    out.from = match authors.len() {
        // A Sender header stands in for a missing or unparsable From.
        0 => mailboxes(msg.sender()).into_iter().next(),
        1 => authors.into_iter().next(),
        // Several authors: attributed to none of them.
        _ => None,
    };

    // Bodies: the first text/plain and the first text/html that are real
    // body parts. mail-parser lists an HTML part among the text bodies (and
    // converts it) when there is no text/plain; we do the conversion
    // ourselves so the same rules apply everywhere.
    let text_part = msg
        .text_bodies()
        .find(|p| matches!(p.body, PartType::Text(_)));
    let html_part = msg
        .html_bodies()
        .find(|p| matches!(p.body, PartType::Html(_)));
    if let Some(PartType::Text(t)) = text_part.map(|p| &p.body) {
        out.text = Some(t.to_string());
    }
    if let Some(PartType::Html(h)) = html_part.map(|p| &p.body) {
        out.html = Some(h.to_string());
    }
    if out.text.is_none()
        && let Some(html) = &out.html
    {
        out.text = Some(crate::reply_text::html_to_text(html));
    }

    for part in msg.attachments().take(MAX_ATTACHMENTS) {
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".to_string())
            .to_ascii_lowercase();
        let data = match &part.body {
            PartType::Text(t) | PartType::Html(t) => t.as_bytes().to_vec(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
            PartType::Message(m) => m.raw_message().to_vec(),
            PartType::Multipart(_) => continue,
        };
        out.attachments.push(Attachment {
            filename: part
                .attachment_name()
                .map(|n| cut(n.trim()))
                .filter(|n| !n.is_empty()),
            content_type: cut(&content_type),
            content_id: part.content_id().and_then(normalize_id),
            data,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_plain_reply() {
        let raw = b"From: \"Vera Vendor\" <vera@carrier.example>\r\n\
To: reply+abcdefghijklmn23@gw.example.com, Other <o@x.example>\r\n\
Cc: boss@carrier.example\r\n\
Delivered-To: support@acme.com\r\n\
Subject: Re: Pallet 7\r\n\
Message-ID: <r1@carrier.example>\r\n\
In-Reply-To: <abcdefghijklmn23.1.xyz@gw.example.com>\r\n\
References: <a@x> <abcdefghijklmn23.1.xyz@gw.example.com>\r\n\
Date: Tue, 1 Sep 2026 10:00:00 +0000\r\n\
\r\n\
Monday.\r\n";
        let p = parse(raw);
        assert_eq!(p.message_id.as_deref(), Some("r1@carrier.example"));
        assert_eq!(
            p.in_reply_to.as_deref(),
            Some("abcdefghijklmn23.1.xyz@gw.example.com")
        );
        assert_eq!(
            p.references,
            vec!["a@x", "abcdefghijklmn23.1.xyz@gw.example.com"]
        );
        let from = p.from.expect("from");
        assert_eq!(from.email, "vera@carrier.example");
        assert_eq!(from.name.as_deref(), Some("Vera Vendor"));
        assert_eq!(p.to.len(), 2);
        assert_eq!(p.cc[0].email, "boss@carrier.example");
        assert_eq!(p.delivered_to, vec!["support@acme.com"]);
        assert_eq!(p.subject, "Re: Pallet 7");
        assert_eq!(p.text.as_deref().map(str::trim), Some("Monday."));
        assert_eq!(p.date, Some(1_788_256_800_000));
    }

    #[test]
    fn html_only_gets_a_text_body_and_attachments_are_listed() {
        let raw = b"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>there</b></p>\r\n\
--b1\r\nContent-Type: image/png\r\nContent-ID: <img1@x>\r\nContent-Disposition: inline; filename=\"a.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n\
--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n\
--b1--\r\n";
        let p = parse(raw);
        assert!(
            p.html
                .as_deref()
                .is_some_and(|h| h.contains("<b>there</b>"))
        );
        assert!(
            p.text
                .as_deref()
                .is_some_and(|t| t.contains("Hello") && !t.contains('<')),
            "{:?}",
            p.text
        );
        assert_eq!(p.attachments.len(), 2);
        assert_eq!(p.attachments[0].content_type, "image/png");
        assert_eq!(p.attachments[0].content_id.as_deref(), Some("img1@x"));
        assert_eq!(p.attachments[0].filename.as_deref(), Some("a.png"));
        assert_eq!(p.attachments[0].data, b"\x89PNG\r\n\x1a\n");
        assert_eq!(p.attachments[1].filename.as_deref(), Some("r.pdf"));
        assert_eq!(p.attachments[1].data, b"%PDF-");
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            &b""[..],
            b"\0\0\0",
            b"From:\r\n\r\n",
            b"Content-Type: multipart/mixed\r\n\r\n--\r\n",
            &[0xff; 100],
        ] {
            let _ = parse(raw);
        }
    }

    #[test]
    fn several_authors_are_attributed_to_none() {
        let two_fields = b"From: attacker@evil.test\r\nFrom: Boss <boss@strict.test>\r\nSubject: x\r\n\r\nhi\r\n";
        let p = parse(two_fields);
        assert_eq!((p.from_authors, p.from), (2, None));
        let list = b"From: Boss <boss@strict.test>, attacker@evil.test\r\nSubject: x\r\n\r\nhi\r\n";
        let p = parse(list);
        assert_eq!((p.from_authors, p.from), (2, None));
        let one = b"From: Boss <boss@strict.test>\r\nSubject: x\r\n\r\nhi\r\n";
        let p = parse(one);
        assert_eq!(p.from_authors, 1);
        assert_eq!(p.from.map(|m| m.email).as_deref(), Some("boss@strict.test"));
        let sender_only = b"Sender: s@vendor.example\r\nSubject: x\r\n\r\nhi\r\n";
        let p = parse(sender_only);
        assert_eq!(p.from_authors, 0);
        assert_eq!(p.from.map(|m| m.email).as_deref(), Some("s@vendor.example"));
    }

    #[test]
    fn references_are_capped_keeping_first_and_last() {
        let refs: Vec<String> = (0..500).map(|i| format!("id{i}@x")).collect();
        let capped = cap_references(refs);
        assert_eq!(capped.len(), MAX_REFERENCES);
        assert_eq!(capped[0], "id0@x");
        assert_eq!(capped.last().map(String::as_str), Some("id499@x"));
    }
}
