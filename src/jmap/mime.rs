//! The parsed side of an Email (RFC 8621 §4.1.2–4.1.4): header fields in
//! their parsed forms, the MIME tree as EmailBodyPart objects, body values,
//! preview and the bytes of each part's blob. Everything is computed from
//! the stored raw message with mail-parser; parts are numbered by
//! mail-parser's part index (`partId`), and a `message/rfc822` part is a
//! leaf whose blob is the attached message.

use std::borrow::Cow;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::parsers::MessageStream;
use mail_parser::{Address, Encoding, Header, HeaderValue, Message, MimeHeaders, PartType};
use serde_json::{Map, Value, json};

use super::{MethodError, ids};
use crate::reply_text::html_to_text;

/// The parsed forms of RFC 8621 §4.1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Raw,
    Text,
    Addresses,
    GroupedAddresses,
    MessageIds,
    Date,
    Urls,
}

/// A `header:Name[:asForm][:all]` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderProp {
    pub name: String,
    pub form: Form,
    pub all: bool,
}

const ADDRESS_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
];
const ID_HEADERS: &[&str] = &[
    "message-id",
    "in-reply-to",
    "references",
    "resent-message-id",
];
const DATE_HEADERS: &[&str] = &["date", "resent-date"];
const URL_HEADERS: &[&str] = &[
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
];
const TEXT_HEADERS: &[&str] = &["subject", "comments", "keywords", "list-id"];
/// Fields RFC 5322/2369 define with no parsed form but Raw.
const RAW_ONLY: &[&str] = &["return-path", "received"];

fn allowed(name: &str, form: Form) -> bool {
    let n = name.to_ascii_lowercase();
    let n = n.as_str();
    let known = ADDRESS_HEADERS.contains(&n)
        || ID_HEADERS.contains(&n)
        || DATE_HEADERS.contains(&n)
        || URL_HEADERS.contains(&n)
        || TEXT_HEADERS.contains(&n)
        || RAW_ONLY.contains(&n);
    if !known {
        return true;
    }
    match form {
        Form::Raw => true,
        Form::Text => TEXT_HEADERS.contains(&n),
        Form::Addresses | Form::GroupedAddresses => ADDRESS_HEADERS.contains(&n),
        Form::MessageIds => ID_HEADERS.contains(&n),
        Form::Date => DATE_HEADERS.contains(&n),
        Form::Urls => URL_HEADERS.contains(&n),
    }
}

/// Parses a `header:…` property name; `Ok(None)` when it is not one.
pub fn header_prop(prop: &str) -> Result<Option<HeaderProp>, MethodError> {
    let Some(rest) = prop.strip_prefix("header:") else {
        return Ok(None);
    };
    let bad = || MethodError::invalid(format!("malformed header property {prop}"));
    let mut parts = rest.split(':');
    let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
    if !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(bad());
    }
    let mut form = Form::Raw;
    let mut all = false;
    for (i, p) in parts.enumerate() {
        match p {
            "all" => all = true,
            _ if i == 0 && !all => {
                form = match p {
                    "asRaw" => Form::Raw,
                    "asText" => Form::Text,
                    "asAddresses" => Form::Addresses,
                    "asGroupedAddresses" => Form::GroupedAddresses,
                    "asMessageIds" => Form::MessageIds,
                    "asDate" => Form::Date,
                    "asURLs" => Form::Urls,
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        }
    }
    if !allowed(name, form) {
        return Err(MethodError::invalid(format!(
            "{prop}: that form is not allowed for this header field"
        )));
    }
    Ok(Some(HeaderProp {
        name: name.to_string(),
        form,
        all,
    }))
}

/// The raw bytes of one header field's value (after the colon, folding
/// kept, final line break dropped).
fn raw_value<'a>(raw: &'a [u8], h: &Header<'_>) -> &'a [u8] {
    let v = raw
        .get(h.offset_start as usize..h.offset_end as usize)
        .unwrap_or_default();
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// The field name as written in the message.
fn raw_name<'a>(raw: &'a [u8], h: &'a Header<'_>) -> Cow<'a, str> {
    raw.get(h.offset_field as usize..h.offset_start as usize)
        .map(|b| {
            let b = b.strip_suffix(b":").unwrap_or(b);
            String::from_utf8_lossy(b).trim().to_string()
        })
        .filter(|n| !n.is_empty())
        .map(Cow::Owned)
        .unwrap_or_else(|| Cow::Borrowed(h.name()))
}

fn addr_json(a: &mail_parser::Addr<'_>) -> Value {
    json!({
        "name": a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()),
        "email": a.address.as_deref().unwrap_or(""),
    })
}

fn addresses(v: &HeaderValue<'_>) -> Value {
    match v {
        HeaderValue::Address(Address::List(list)) => {
            Value::Array(list.iter().map(addr_json).collect())
        }
        HeaderValue::Address(Address::Group(groups)) => Value::Array(
            groups
                .iter()
                .flat_map(|g| g.addresses.iter().map(addr_json))
                .collect(),
        ),
        _ => json!([]),
    }
}

fn grouped(v: &HeaderValue<'_>) -> Value {
    match v {
        HeaderValue::Address(Address::List(list)) => {
            json!([{"name": null, "addresses": list.iter().map(addr_json).collect::<Vec<_>>()}])
        }
        HeaderValue::Address(Address::Group(groups)) => Value::Array(
            groups
                .iter()
                .map(|g| {
                    json!({"name": g.name, "addresses": g.addresses.iter().map(addr_json).collect::<Vec<_>>()})
                })
                .collect(),
        ),
        _ => json!([]),
    }
}

/// One header field's value in one form. `bytes` is the field value as
/// stored (with its line break, which the parsers expect).
fn in_form(raw: &[u8], h: &Header<'_>, form: Form) -> Value {
    let full = raw
        .get(h.offset_start as usize..h.offset_end as usize)
        .unwrap_or_default();
    match form {
        Form::Raw => json!(String::from_utf8_lossy(raw_value(raw, h))),
        Form::Text => match MessageStream::new(full).parse_unstructured() {
            HeaderValue::Text(t) => json!(t.trim()),
            HeaderValue::TextList(l) => json!(l.join(", ").trim()),
            _ => json!(""),
        },
        Form::Addresses => addresses(&MessageStream::new(full).parse_address()),
        Form::GroupedAddresses => grouped(&MessageStream::new(full).parse_address()),
        Form::MessageIds => match MessageStream::new(full).parse_id() {
            HeaderValue::Text(t) => json!([t]),
            HeaderValue::TextList(l) => json!(l),
            _ => Value::Null,
        },
        Form::Date => match MessageStream::new(full).parse_date() {
            HeaderValue::DateTime(d) if d.is_valid() => json!(d.to_rfc3339()),
            _ => Value::Null,
        },
        Form::Urls => match MessageStream::new(full).parse_address() {
            HeaderValue::Address(a) => Value::Array(
                a.iter()
                    .filter_map(|x| x.address.as_deref())
                    .map(|u| json!(u))
                    .collect(),
            ),
            _ => Value::Null,
        },
    }
}

/// The value of a `header:` property over one header list.
pub fn header_value(raw: &[u8], headers: &[Header<'_>], p: &HeaderProp) -> Value {
    let matching: Vec<&Header<'_>> = headers
        .iter()
        .filter(|h| raw_name(raw, h).eq_ignore_ascii_case(&p.name))
        .collect();
    if p.all {
        Value::Array(matching.iter().map(|h| in_form(raw, h, p.form)).collect())
    } else {
        matching
            .last()
            .map(|h| in_form(raw, h, p.form))
            .unwrap_or(Value::Null)
    }
}

/// `headers`: every field, in order, raw.
pub fn all_headers(raw: &[u8], headers: &[Header<'_>]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|h| {
                json!({
                    "name": raw_name(raw, h),
                    "value": String::from_utf8_lossy(raw_value(raw, h)),
                })
            })
            .collect(),
    )
}

/// A convenience property of the Email (`from`, `subject` …) by its
/// header and form.
pub fn convenience(msg: &Message<'_>, name: &str, form: Form) -> Value {
    header_value(
        &msg.raw_message,
        msg.headers(),
        &HeaderProp {
            name: name.to_string(),
            form,
            all: false,
        },
    )
}

/// Parses stored bytes. Bytes that are no message at all (no header
/// section) are read as a message with no header fields whose body is
/// those bytes, so every stored message has a body structure.
pub fn parse(raw: &[u8]) -> Message<'_> {
    let parser = mail_parser::MessageParser::default();
    if let Cow::Owned(bounded) = crate::mime_guard::for_parser(raw) {
        // Header fields over the bound: the copy is parsed (and owned).
        if let Some(m) = parser.parse(&bounded[..]) {
            return m.into_owned();
        }
    }
    if let Some(m) = parser.parse(raw) {
        return m;
    }
    let mut buf = b"\r\n".to_vec();
    buf.extend_from_slice(raw);
    parser
        .parse(&buf[..])
        .map(Message::into_owned)
        .unwrap_or_default()
}

/// The decoded bytes of a leaf part (its blob).
pub fn part_bytes<'a>(msg: &'a Message<'a>, idx: usize) -> Cow<'a, [u8]> {
    let Some(part) = msg.parts.get(idx) else {
        return Cow::Borrowed(&[]);
    };
    match &part.body {
        PartType::Binary(b) | PartType::InlineBinary(b) => Cow::Borrowed(b.as_ref()),
        PartType::Multipart(_) => Cow::Borrowed(&[]),
        PartType::Text(_) | PartType::Html(_) | PartType::Message(_) => {
            let raw = msg
                .raw_message
                .get(part.offset_body as usize..part.offset_end as usize)
                .unwrap_or_default();
            let decoded = match part.encoding {
                Encoding::Base64 => base64_decode(raw),
                Encoding::QuotedPrintable => quoted_printable_decode(raw),
                Encoding::None => None,
            };
            match decoded {
                Some(d) => Cow::Owned(d),
                None => Cow::Borrowed(raw),
            }
        }
    }
}

/// What the client asked of body parts.
#[derive(Debug, Clone)]
pub struct BodyProps {
    pub props: Vec<String>,
    pub headers: Vec<(String, HeaderProp)>,
}

pub const DEFAULT_BODY_PROPERTIES: &[&str] = &[
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
];

const BODY_PROPERTIES: &[&str] = &[
    "partId",
    "blobId",
    "size",
    "headers",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
    "subParts",
];

impl BodyProps {
    pub fn parse(list: Option<Vec<String>>) -> Result<BodyProps, MethodError> {
        let list = list.unwrap_or_else(|| {
            DEFAULT_BODY_PROPERTIES
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let mut out = BodyProps {
            props: Vec::new(),
            headers: Vec::new(),
        };
        for p in list {
            if let Some(h) = header_prop(&p)? {
                out.headers.push((p, h));
            } else if BODY_PROPERTIES.contains(&p.as_str()) {
                out.props.push(p);
            } else {
                return Err(MethodError::invalid(format!("unknown body property {p}")));
            }
        }
        Ok(out)
    }

    fn wants(&self, p: &str) -> bool {
        self.props.iter().any(|x| x == p)
    }
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".into(),
    }
}

/// One EmailBodyPart; multiparts carry `subParts` (always inside
/// `bodyStructure`, where `tree` is true).
pub fn body_part(
    msg: &Message<'_>,
    message_id: i64,
    idx: usize,
    props: &BodyProps,
    tree: bool,
    depth: usize,
) -> Value {
    let Some(part) = msg.parts.get(idx) else {
        return Value::Null;
    };
    let raw: &[u8] = &msg.raw_message;
    let mut o = Map::new();
    let children = match &part.body {
        PartType::Multipart(c) => Some(c),
        _ => None,
    };
    let ctype = content_type(part);
    if props.wants("partId") {
        o.insert(
            "partId".into(),
            match children {
                Some(_) => Value::Null,
                None => json!(idx.to_string()),
            },
        );
    }
    if props.wants("blobId") {
        o.insert(
            "blobId".into(),
            match children {
                Some(_) => Value::Null,
                None => json!(ids::part_blob(message_id, idx)),
            },
        );
    }
    if props.wants("size") {
        let size = match children {
            Some(_) => 0,
            None => part_bytes(msg, idx).len(),
        };
        o.insert("size".into(), json!(size));
    }
    if props.wants("headers") {
        o.insert("headers".into(), all_headers(raw, &part.headers));
    }
    if props.wants("name") {
        o.insert("name".into(), json!(part.attachment_name()));
    }
    if props.wants("type") {
        o.insert("type".into(), json!(ctype));
    }
    if props.wants("charset") {
        let cs = part
            .content_type()
            .and_then(|ct| ct.attribute("charset"))
            .map(|c| c.to_string())
            .or_else(|| ctype.starts_with("text/").then(|| "us-ascii".to_string()));
        o.insert("charset".into(), json!(cs));
    }
    if props.wants("disposition") {
        o.insert(
            "disposition".into(),
            json!(
                part.content_disposition()
                    .map(|d| d.ctype().to_ascii_lowercase())
            ),
        );
    }
    if props.wants("cid") {
        o.insert(
            "cid".into(),
            json!(part.content_id().map(|c| {
                c.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })),
        );
    }
    if props.wants("language") {
        let lang = match part.content_language() {
            HeaderValue::Text(t) => json!([t]),
            HeaderValue::TextList(l) => json!(l),
            _ => Value::Null,
        };
        o.insert("language".into(), lang);
    }
    if props.wants("location") {
        o.insert("location".into(), json!(part.content_location()));
    }
    for (key, h) in &props.headers {
        o.insert(key.clone(), header_value(raw, &part.headers, h));
    }
    if tree || props.wants("subParts") {
        let sub = match children {
            // The parser bounds nesting; this bounds the recursion too.
            Some(c) if depth < 64 => Value::Array(
                c.iter()
                    .map(|&i| body_part(msg, message_id, i as usize, props, tree, depth + 1))
                    .collect(),
            ),
            Some(_) => json!([]),
            None => Value::Null,
        };
        o.insert("subParts".into(), sub);
    }
    Value::Object(o)
}

/// The text of a text/* part (charset-decoded by the parser).
pub fn part_text<'a>(msg: &'a Message<'a>, idx: usize) -> Option<(&'a str, bool)> {
    let part = msg.parts.get(idx)?;
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => Some((t.as_ref(), part.is_encoding_problem)),
        _ => None,
    }
}

/// A body value, cut to at most `max` bytes on a character boundary.
pub fn body_value(text: &str, problem: bool, max: usize) -> Value {
    let truncated = max > 0 && text.len() > max;
    let value = if truncated {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    } else {
        text
    };
    json!({"value": value, "isEncodingProblem": problem, "isTruncated": truncated})
}

/// Up to 256 characters of the body text, whitespace collapsed. HTML is turned into text by
/// [`crate::reply_text::html_to_text`], the gateway's one conversion, so the preview reads as the
/// text ingest stores and the portal and classifier see.
pub fn preview(msg: &Message<'_>) -> String {
    let mut text = String::new();
    for &i in &msg.text_body {
        if let Some(p) = msg.parts.get(i as usize) {
            match &p.body {
                PartType::Text(t) => text.push_str(t),
                PartType::Html(h) => text.push_str(&html_to_text(h)),
                _ => {}
            }
        }
        if text.len() > 4096 {
            break;
        }
    }
    if text.trim().is_empty() {
        for &i in &msg.html_body {
            if let Some(PartType::Html(h)) = msg.parts.get(i as usize).map(|p| &p.body) {
                text.push_str(&html_to_text(h));
            }
        }
    }
    text.split_whitespace()
        .flat_map(|w| std::iter::once(' ').chain(w.chars()))
        .skip(1)
        .take(256)
        .collect()
}

/// The JMAP attachments list: parts the parser set aside that are not in
/// the text or HTML body (inline images shown in the body are in both).
pub fn attachment_parts(msg: &Message<'_>) -> Vec<usize> {
    msg.attachments.iter().map(|&i| i as usize).collect()
}

/// True when a part a client should offer as a download exists.
pub fn has_attachment(msg: &Message<'_>) -> bool {
    msg.attachments.iter().any(|&i| {
        msg.parts.get(i as usize).is_some_and(|p| {
            !p.content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &[u8] = b"From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.com>\r\n\
To: a@example.com, \"B, C\" <b@example.com>\r\n\
Subject: =?UTF-8?B?w5xiZXIgZGFz?=\r\n\x20Paket\r\n\
Message-ID: <one@example.com>\r\n\
References: <a@x> <b@x>\r\n\
Date: Tue, 1 Sep 2026 10:00:00 +0200\r\n\
X-Custom: hello\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Gr=FC=DFe\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"a.pdf\"\r\n\
Content-Disposition: attachment; filename=\"a.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--b1--\r\n";

    #[test]
    fn headers_in_every_form() {
        let msg = mail_parser::MessageParser::default()
            .parse(MAIL)
            .expect("parses");
        assert_eq!(msg.subject(), Some("Über das Paket"));
        assert_eq!(
            convenience(&msg, "Subject", Form::Text),
            json!("Über das Paket")
        );
        assert_eq!(
            convenience(&msg, "From", Form::Addresses),
            json!([{"name": "Jürgen", "email": "j@example.com"}])
        );
        assert_eq!(
            convenience(&msg, "To", Form::Addresses),
            json!([{"name": null, "email": "a@example.com"}, {"name": "B, C", "email": "b@example.com"}])
        );
        assert_eq!(
            convenience(&msg, "References", Form::MessageIds),
            json!(["a@x", "b@x"])
        );
        assert_eq!(
            convenience(&msg, "Date", Form::Date),
            json!("2026-09-01T10:00:00+02:00")
        );
        assert_eq!(convenience(&msg, "X-Custom", Form::Raw), json!(" hello"));
        assert_eq!(convenience(&msg, "X-Missing", Form::Raw), Value::Null);
        assert_eq!(
            convenience(&msg, "Subject", Form::Raw),
            json!(" =?UTF-8?B?w5xiZXIgZGFz?=\r\n Paket")
        );
        assert!(header_prop("header:From:asDate").is_err());
        assert!(header_prop("header:X-Any:asDate:all").is_ok());
        assert!(header_prop("header:Subject:asText:all:x").is_err());
    }

    #[test]
    fn bytes_without_headers_are_a_body() {
        let msg = parse(b"john@example.com\n");
        assert_eq!(msg.text_body.len(), 1);
        let i = msg.text_body[0] as usize;
        assert_eq!(
            part_text(&msg, i).map(|t| t.0.trim()),
            Some("john@example.com")
        );
        assert!(part_bytes(&msg, i).starts_with(b"john@example.com"));
    }

    #[test]
    fn html_previews_use_the_gateways_html_to_text() {
        let html = "<div>Pallet 7</div><div>ships</div><ul><li>one</li><li>two</li></ul>\
                    <blockquote>quoted</blockquote>";
        let raw = format!(
            "From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n{html}\r\n"
        );
        let msg = parse(raw.as_bytes());
        let text = crate::reply_text::html_to_text(html);
        let want = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(preview(&msg), want);
        assert_eq!(preview(&msg), "Pallet 7 ships - one - two > quoted");
    }

    #[test]
    fn parts_and_blobs() {
        let msg = mail_parser::MessageParser::default()
            .parse(MAIL)
            .expect("parses");
        assert_eq!(msg.text_body, vec![1]);
        assert_eq!(attachment_parts(&msg), vec![2]);
        assert!(has_attachment(&msg));
        assert_eq!(part_bytes(&msg, 2).as_ref(), b"%PDF-1.4\n");
        // The text part's blob keeps its charset; its value is decoded.
        assert_eq!(part_bytes(&msg, 1).as_ref(), b"Gr\xfc\xdfe");
        assert_eq!(part_text(&msg, 1), Some(("Grüße", false)));
        let props = BodyProps::parse(None).expect("defaults");
        let tree = body_part(&msg, 9, 0, &props, true, 0);
        assert_eq!(tree["type"], "multipart/mixed");
        assert_eq!(tree["subParts"][1]["name"], "a.pdf");
        assert_eq!(tree["subParts"][1]["blobId"], "p9-2");
        assert_eq!(tree["subParts"][0]["charset"], "iso-8859-1");
        assert_eq!(preview(&msg), "Grüße");
        assert_eq!(
            body_value("Grüße", false, 3),
            json!({"value": "Gr", "isEncodingProblem": false, "isTruncated": true})
        );
    }
}
