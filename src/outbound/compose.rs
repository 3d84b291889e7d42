//! Composition of side-conversation mail (SPEC §5) with mail-builder: the
//! headers that make it thread in the vendor's client and bring the reply
//! back (Message-ID carrying the token, Reply-To per reply mode,
//! In-Reply-To/References, Outlook's Thread-Index), text and HTML bodies
//! with signature, context block and portal link, attachments, and a DKIM
//! signature when the sender's domain has a verified key.
//!
//! Everything that comes from an API caller is cleaned of CR/LF and control
//! characters before it reaches a header, so no field can add a header.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;

use crate::model::{Token, base32_lower, random_bytes};
use crate::reply_text::escape_html;

/// How replies find their way back (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    Gateway,
    Plus,
    None,
}

impl ReplyMode {
    pub fn parse(s: &str) -> Option<ReplyMode> {
        match s {
            "gateway" => Some(ReplyMode::Gateway),
            "plus" => Some(ReplyMode::Plus),
            "none" => Some(ReplyMode::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReplyMode::Gateway => "gateway",
            ReplyMode::Plus => "plus",
            ReplyMode::None => "none",
        }
    }
}

/// A person in a header: display name and address.
pub type Person = crate::model::Mailbox;

#[derive(Debug, Clone)]
pub struct OutAttachment {
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// The optional block about the parent ticket (`include_context`).
#[derive(Debug, Clone)]
pub struct Context {
    pub parent: String,
    pub requester_name: Option<String>,
    pub requester_email: Option<String>,
    pub status: String,
    pub excerpt: String,
}

pub use crate::model::DkimKey;

/// Everything one outbound message is made of.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub gateway_domain: &'a str,
    pub token: &'a Token,
    /// The `<n>` of the Message-ID: 1 for the first message of the thread.
    pub seq: i64,
    pub from: Person,
    pub reply_mode: ReplyMode,
    pub to: &'a [Person],
    pub cc: &'a [Person],
    /// The side conversation's subject (fixed at start).
    pub subject: &'a str,
    /// The earlier Message-IDs of the thread, oldest first (no brackets).
    pub thread_ids: &'a [String],
    /// Thread-Index of the previous message, if any (raw bytes).
    pub thread_index: Option<&'a [u8]>,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    /// Signature with placeholders already filled.
    pub signature_text: Option<&'a str>,
    pub signature_html: Option<&'a str>,
    pub context: Option<&'a Context>,
    pub portal_url: Option<&'a str>,
    pub attachments: &'a [OutAttachment],
    /// ms since the epoch.
    pub date: i64,
    pub dkim: Option<&'a DkimKey>,
}

#[derive(Debug, Clone)]
pub struct Composed {
    pub raw: Vec<u8>,
    /// Without brackets.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub thread_index: Vec<u8>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("cannot DKIM-sign: {0}")]
    Dkim(String),
}

/// At most this many References: the first id and the latest ones.
pub const MAX_REFERENCES: usize = 20;

/// Removes what must never reach a header: CR, LF and other controls.
pub fn clean_header(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `<token>.<n>.<random>@<domain>` (SPEC §3), without brackets.
pub fn message_id(token: &Token, seq: i64, domain: &str) -> String {
    format!(
        "{token}.{seq}.{}@{domain}",
        base32_lower(&random_bytes::<8>())
    )
}

/// The Reply-To address for a sender and reply mode, if any.
pub fn reply_to(
    mode: ReplyMode,
    sender: &str,
    token: &Token,
    gateway_domain: &str,
) -> Option<String> {
    match mode {
        ReplyMode::Gateway => Some(format!("reply+{token}@{gateway_domain}")),
        ReplyMode::Plus => {
            let (local, domain) = sender.rsplit_once('@')?;
            let base = local.split('+').next().unwrap_or(local);
            Some(format!("{base}+{token}@{domain}"))
        }
        ReplyMode::None => None,
    }
}

/// Subject of a message: the side conversation's subject, `Re: ` on
/// follow-ups (never doubled).
pub fn subject(base: &str, follow_up: bool) -> String {
    let base = clean_header(base);
    let already = base.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("re:"));
    if follow_up && !already {
        format!("Re: {base}")
    } else {
        base
    }
}

/// References for a reply: the first id and the last `MAX_REFERENCES - 1`.
pub fn references(thread_ids: &[String]) -> Vec<String> {
    if thread_ids.len() <= MAX_REFERENCES {
        return thread_ids.to_vec();
    }
    let mut out = vec![thread_ids[0].clone()];
    out.extend_from_slice(&thread_ids[thread_ids.len() - (MAX_REFERENCES - 1)..]);
    out
}

/// Child blocks kept in a Thread-Index (22 + 100 × 5 bytes → 696 base64
/// characters on the header line).
pub const MAX_CHILD_BLOCKS: usize = 100;

/// FILETIME (100 ns since 1601) from ms since the Unix epoch.
fn filetime(ms: i64) -> u64 {
    ((ms.max(0) as u64) + 11_644_473_600_000) * 10_000
}

/// Outlook's Thread-Index ([MS-OXOMSG] 2.2.1.3): a 22-byte header block
/// (0x01, the top 40 bits of the FILETIME, a random GUID) for the first
/// message; each reply appends a 5-byte child block holding the time since
/// the header block.
pub fn thread_index(previous: Option<&[u8]>, now_ms: i64) -> Vec<u8> {
    let now = filetime(now_ms);
    match previous.filter(|p| p.len() >= 22 && (p.len() - 22) % 5 == 0) {
        None => {
            let mut out = Vec::with_capacity(22);
            out.push(0x01);
            out.extend_from_slice(&now.to_be_bytes()[..5]);
            out.extend_from_slice(&random_bytes::<16>());
            out
        }
        Some(prev) => {
            let mut top = [0u8; 8];
            top[..5].copy_from_slice(&prev[1..6]);
            let header_time = u64::from_be_bytes(top);
            let delta = now.saturating_sub(header_time);
            let (code, bits) = if delta < (1u64 << 49) {
                (0u64, (delta >> 18) & 0x7FFF_FFFF)
            } else {
                (1u64, (delta >> 23) & 0x7FFF_FFFF)
            };
            let random = u64::from(random_bytes::<1>()[0] & 0x0F);
            let seq = ((prev.len() - 22) / 5) as u64 & 0x0F;
            let block = (code << 39) | (bits << 8) | (random << 4) | seq;
            // Keep the header line well under RFC 5322's 998 characters: past
            // MAX_CHILD_BLOCKS the oldest child blocks give way.
            let mut out = prev.to_vec();
            if (out.len() - 22) / 5 >= MAX_CHILD_BLOCKS {
                out.drain(22..27);
            }
            out.extend_from_slice(&block.to_be_bytes()[3..]);
            out
        }
    }
}

/// Plain text as HTML paragraphs (for an HTML alternative of a text-only draft).
pub fn text_to_html(text: &str) -> String {
    let mut out = String::new();
    for para in text.replace("\r\n", "\n").split("\n\n") {
        if para.trim().is_empty() {
            continue;
        }
        out.push_str("<p>");
        out.push_str(&escape_html(para).replace('\n', "<br>\n"));
        out.push_str("</p>\n");
    }
    out
}

fn context_text(c: &Context) -> String {
    let mut s = format!("Ticket #{}\n", c.parent);
    match (&c.requester_name, &c.requester_email) {
        (Some(n), Some(e)) => s.push_str(&format!("Requester: {n} <{e}>\n")),
        (None, Some(e)) => s.push_str(&format!("Requester: {e}\n")),
        (Some(n), None) => s.push_str(&format!("Requester: {n}\n")),
        (None, None) => {}
    }
    s.push_str(&format!("Status: {}\n", c.status));
    if !c.excerpt.trim().is_empty() {
        s.push_str(&format!("> {}\n", c.excerpt.trim().replace('\n', "\n> ")));
    }
    s
}

fn context_html(c: &Context) -> String {
    let requester = match (&c.requester_name, &c.requester_email) {
        (Some(n), Some(e)) => format!("{} &lt;{}&gt;", escape_html(n), escape_html(e)),
        (None, Some(e)) => escape_html(e),
        (Some(n), None) => escape_html(n),
        (None, None) => String::new(),
    };
    let mut s = format!(
        "<div class=\"backchannel-context\" style=\"border-top:1px solid #ccc;margin-top:16px;padding-top:8px;color:#555\">\n<div>Ticket #{}</div>\n",
        escape_html(&c.parent)
    );
    if !requester.is_empty() {
        s.push_str(&format!("<div>Requester: {requester}</div>\n"));
    }
    s.push_str(&format!("<div>Status: {}</div>\n", escape_html(&c.status)));
    if !c.excerpt.trim().is_empty() {
        s.push_str(&format!(
            "<blockquote>{}</blockquote>\n",
            escape_html(c.excerpt.trim())
        ));
    }
    s.push_str("</div>\n");
    s
}

/// Appends `extra` inside the HTML body (before `</body>` when present).
fn append_html(html: &str, extra: &str) -> String {
    let lower = html.to_ascii_lowercase();
    match lower.rfind("</body>") {
        Some(pos) => format!("{}{}{}", &html[..pos], extra, &html[pos..]),
        None => format!("{html}{extra}"),
    }
}

/// The bodies as sent: the agent's text, then signature, context block and
/// portal link, in both alternatives.
pub fn bodies(d: &Draft<'_>) -> (String, String) {
    let text = match (d.text, d.html) {
        (Some(t), _) => t.replace("\r\n", "\n"),
        (None, Some(h)) => crate::reply_text::html_to_text(h),
        (None, None) => String::new(),
    };
    let mut html = match (d.html, d.text) {
        (Some(h), _) => h.to_string(),
        (None, Some(t)) => text_to_html(t),
        (None, None) => String::new(),
    };
    let mut text = text.trim_end().to_string();
    if let Some(sig) = d.signature_text.filter(|s| !s.trim().is_empty()) {
        // RFC 3676 §4.3 signature separator: clients fold and strip it.
        // A signature written with its own separator line gets one, not two.
        let sig = sig.trim_start_matches(['\r', '\n']);
        let sig = match sig.split_once('\n') {
            Some((first, rest)) if first.trim() == "--" => rest,
            None if sig.trim() == "--" => "",
            _ => sig,
        };
        text.push_str("\n\n-- \n");
        text.push_str(sig.trim_end());
    }
    let sig_html = match (d.signature_html, d.signature_text) {
        (Some(h), _) if !h.trim().is_empty() => Some(h.to_string()),
        (_, Some(t)) if !t.trim().is_empty() => Some(text_to_html(t)),
        _ => None,
    };
    if let Some(sig) = sig_html {
        html = append_html(
            &html,
            &format!("<div class=\"backchannel-signature\">\n{sig}</div>\n"),
        );
    }
    if let Some(c) = d.context {
        text.push_str("\n\n---\n");
        text.push_str(&context_text(c));
        html = append_html(&html, &context_html(c));
    }
    if let Some(url) = d.portal_url {
        text.push_str(&format!("\n\nView conversation: {url}\n"));
        html = append_html(
            &html,
            &format!(
                "<p><a href=\"{}\">View conversation</a></p>\n",
                escape_html(url)
            ),
        );
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    (text, html)
}

fn address<'x>(p: &'x Person) -> Address<'x> {
    let email = clean_header(&p.email);
    match p
        .name
        .as_deref()
        .map(clean_header)
        .filter(|n| !n.is_empty())
    {
        Some(name) => Address::new_address(Some(name), email),
        None => Address::new_address(None::<Cow<'x, str>>, email),
    }
}

fn with_attachments<'x>(mut b: MessageBuilder<'x>, list: &[OutAttachment]) -> MessageBuilder<'x> {
    for a in list {
        let name = crate::model::file_name(&a.filename);
        let ct = clean_header(&a.content_type);
        let ct = if ct.contains('/') {
            ct
        } else {
            "application/octet-stream".to_string()
        };
        b = b.attachment(ct, name, a.data.clone());
    }
    b
}

/// Builds the message.
pub fn compose(d: &Draft<'_>) -> Result<Composed, ComposeError> {
    compose_as(d, message_id(d.token, d.seq, d.gateway_domain))
}

/// Builds the message under a given Message-ID: the copies of one message
/// that differ per recipient (their own portal link) are one message.
pub fn compose_as(d: &Draft<'_>, message_id: String) -> Result<Composed, ComposeError> {
    let follow_up = !d.thread_ids.is_empty();
    let subject = subject(d.subject, follow_up);
    let refs = references(d.thread_ids);
    let in_reply_to = d.thread_ids.last().cloned();
    let tindex = thread_index(d.thread_index, d.date);
    let (text, html) = bodies(d);

    let mut b = MessageBuilder::new()
        .from(address(&d.from))
        .subject(Text::new(subject.clone()))
        .message_id(MessageId::new(message_id.clone()))
        .date(d.date / 1000)
        .header("Thread-Topic", Text::new(clean_header(d.subject)))
        .header("Thread-Index", Raw::new(BASE64.encode(&tindex)));
    if !d.to.is_empty() {
        b = b.to(Address::new_list(d.to.iter().map(address).collect()));
    }
    if !d.cc.is_empty() {
        b = b.cc(Address::new_list(d.cc.iter().map(address).collect()));
    }
    if let Some(rt) = reply_to(d.reply_mode, &d.from.email, d.token, d.gateway_domain) {
        b = b.reply_to(Address::new_address(None::<Cow<'_, str>>, rt));
    }
    if let Some(irt) = &in_reply_to {
        b = b.in_reply_to(MessageId::new(irt.clone()));
    }
    if !refs.is_empty() {
        b = b.references(MessageId::new_list(refs.iter().map(|r| r.as_str())));
    }
    b = b.text_body(text.clone()).html_body(html.clone());
    b = with_attachments(b, d.attachments);
    let mut raw = b
        .write_to_vec()
        .map_err(|e| ComposeError::Build(e.to_string()))?;
    if let Some(key) = d.dkim {
        raw = dkim_sign(&raw, key)?;
    }
    Ok(Composed {
        raw,
        message_id,
        in_reply_to,
        references: refs,
        thread_index: tindex,
        subject,
        text,
        html,
    })
}

/// A vendor's reply made in the browser portal (SPEC §8), written down as
/// the mail it stands for so that the thread keeps raw bytes for every
/// message, whichever way it arrived.
#[derive(Debug, Clone)]
pub struct PortalDraft<'a> {
    pub gateway_domain: &'a str,
    /// The vendor.
    pub from: Person,
    /// Where the vendor's reply goes: the side conversation's reply address.
    pub to: Person,
    /// The side conversation's subject (`Re: ` is added).
    pub subject: &'a str,
    /// The earlier Message-IDs of the thread, oldest first (no brackets).
    pub thread_ids: &'a [String],
    pub text: &'a str,
    pub attachments: &'a [OutAttachment],
    /// ms since the epoch.
    pub date: i64,
}

/// `portal.<random>@<domain>`, without brackets: not in the gateway's
/// token format, because the gateway did not send it.
pub fn portal_message_id(domain: &str) -> String {
    format!("portal.{}@{domain}", base32_lower(&random_bytes::<12>()))
}

/// Builds the RFC 5322 message of a portal reply (text only, with its
/// attachments), threaded under the side conversation's messages.
pub fn portal_message(d: &PortalDraft<'_>) -> Result<Composed, ComposeError> {
    let message_id = portal_message_id(d.gateway_domain);
    let subject = subject(d.subject, true);
    let refs = references(d.thread_ids);
    let in_reply_to = d.thread_ids.last().cloned();
    let mut text = d.text.replace("\r\n", "\n");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let mut b = MessageBuilder::new()
        .from(address(&d.from))
        .to(address(&d.to))
        .subject(Text::new(subject.clone()))
        .message_id(MessageId::new(message_id.clone()))
        .date(d.date / 1000)
        .header("X-Backchannel-Source", Text::new("portal"));
    if let Some(irt) = &in_reply_to {
        b = b.in_reply_to(MessageId::new(irt.clone()));
    }
    if !refs.is_empty() {
        b = b.references(MessageId::new_list(refs.iter().map(|r| r.as_str())));
    }
    b = b.text_body(text.clone());
    b = with_attachments(b, d.attachments);
    let raw = b
        .write_to_vec()
        .map_err(|e| ComposeError::Build(e.to_string()))?;
    Ok(Composed {
        raw,
        message_id,
        in_reply_to,
        references: refs,
        thread_index: Vec::new(),
        subject,
        text,
        html: String::new(),
    })
}

/// The header that marks the gateway's notifications to agents.
pub const NOTIFICATION_HEADER: &str = "X-Backchannel-Notification";

/// A notification email to an agent (a reply notification, a delivery
/// failure): from the gateway's own address, text only.
#[derive(Debug, Clone)]
pub struct NotificationDraft<'a> {
    pub gateway_domain: &'a str,
    /// The agent's address.
    pub to: &'a str,
    /// Where the agent's answer goes: their agent-reply address (SPEC §12).
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub text: &'a str,
    /// ms since the epoch.
    pub date: i64,
}

/// A composed notification: its bytes and Message-ID (no brackets).
#[derive(Debug, Clone)]
pub struct Notification {
    pub raw: Vec<u8>,
    pub message_id: String,
    /// The sender address (`reply@<gateway domain>`).
    pub from: String,
}

/// Builds a notification email: Message-ID `notify.<random>@<domain>`,
/// `Auto-Submitted: auto-generated`, `X-Auto-Response-Suppress: All` and
/// [`NOTIFICATION_HEADER`], so a copy that comes back (an auto-reply, a
/// bounce, a forward) is recognised and never threaded.
pub fn notification(d: &NotificationDraft<'_>) -> Result<Notification, ComposeError> {
    let nonce = base32_lower(&random_bytes::<10>());
    let message_id = format!("notify.{nonce}@{}", d.gateway_domain);
    let from = format!("reply@{}", d.gateway_domain);
    let mut builder = MessageBuilder::new()
        .from(Address::new_address(Some("backchannel"), from.clone()))
        .to(d.to.to_string());
    if let Some(reply_to) = d.reply_to {
        builder = builder.reply_to(reply_to.to_string());
    }
    let raw = builder
        .subject(clean_header(d.subject))
        .message_id(message_id.clone())
        .date(d.date / 1000)
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("X-Auto-Response-Suppress", Raw::new("All"))
        .header(NOTIFICATION_HEADER, Raw::new(nonce))
        .text_body(d.text.to_string())
        .write_to_vec()
        .map_err(|e| ComposeError::Build(e.to_string()))?;
    Ok(Notification {
        raw,
        message_id,
        from,
    })
}

/// Prepends a DKIM-Signature (relaxed/relaxed, the headers that matter).
pub fn dkim_sign(raw: &[u8], key: &DkimKey) -> Result<Vec<u8>, ComposeError> {
    const HEADERS: [&str; 10] = [
        "From",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Reply-To",
        "MIME-Version",
    ];
    let signature = match key.algorithm.as_str() {
        "ed25519" => {
            let k = Ed25519Key::from_pkcs8_der(&key.private_key)
                .map_err(|e| ComposeError::Dkim(e.to_string()))?;
            DkimSigner::from_key(k)
                .domain(key.domain.clone())
                .selector(key.selector.clone())
                .headers(HEADERS)
                .sign(raw)
        }
        _ => {
            let der = rustls::pki_types::PrivateKeyDer::Pkcs8(
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.private_key.as_slice()),
            );
            let k = RsaKey::<Sha256>::from_key_der(der)
                .map_err(|e| ComposeError::Dkim(e.to_string()))?;
            DkimSigner::from_key(k)
                .domain(key.domain.clone())
                .selector(key.selector.clone())
                .headers(HEADERS)
                .sign(raw)
        }
    }
    .map_err(|e| ComposeError::Dkim(e.to_string()))?;
    let mut out = signature.to_header().into_bytes();
    out.extend_from_slice(raw);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(subject("Pallet 7", false), "Pallet 7");
        assert_eq!(subject("Pallet 7", true), "Re: Pallet 7");
        assert_eq!(subject("RE: Pallet 7", true), "RE: Pallet 7");
        assert_eq!(subject("a\r\nBcc: evil@x", false), "a  Bcc: evil@x");
        // Non-ASCII within the first three bytes must not split a character.
        assert_eq!(subject("Größe der Palette", true), "Re: Größe der Palette");
        assert_eq!(subject("a€", true), "Re: a€");
        assert_eq!(subject("📦 shipped", true), "Re: 📦 shipped");
    }

    #[test]
    fn reply_to_per_mode() {
        let t: Token = "abcdefghijklmn23".parse().expect("token");
        assert_eq!(
            reply_to(ReplyMode::Gateway, "support@acme.com", &t, "gw.example.com").as_deref(),
            Some("reply+abcdefghijklmn23@gw.example.com")
        );
        assert_eq!(
            reply_to(ReplyMode::Plus, "support@acme.com", &t, "gw.example.com").as_deref(),
            Some("support+abcdefghijklmn23@acme.com")
        );
        assert_eq!(
            reply_to(ReplyMode::None, "support@acme.com", &t, "gw.example.com"),
            None
        );
    }

    #[test]
    fn references_keep_first_and_last() {
        let ids: Vec<String> = (0..50).map(|i| format!("m{i}@x")).collect();
        let r = references(&ids);
        assert_eq!(r.len(), MAX_REFERENCES);
        assert_eq!(r[0], "m0@x");
        assert_eq!(r[1], "m31@x");
        assert_eq!(r.last().map(String::as_str), Some("m49@x"));
    }

    #[test]
    fn thread_index_grows_by_five_bytes_and_keeps_its_header() {
        let first = thread_index(None, 1_788_256_800_000);
        assert_eq!(first.len(), 22);
        assert_eq!(first[0], 0x01);
        let second = thread_index(Some(&first), 1_788_256_800_000 + 3_600_000);
        assert_eq!(second.len(), 27);
        assert_eq!(&second[..22], &first[..]);
        let third = thread_index(Some(&second), 1_788_256_800_000 + 7_200_000);
        assert_eq!(third.len(), 32);
        assert_eq!(&third[..27], &second[..]);
        // The child block's time delta grows with time.
        let delta = |b: &[u8]| {
            (u64::from_be_bytes([0, 0, 0, b[0], b[1], b[2], b[3], b[4]]) >> 8) & 0x7FFF_FFFF
        };
        assert!(delta(&third[27..]) > delta(&second[22..]));
        assert_eq!(
            BASE64.decode(BASE64.encode(&third)).ok(),
            Some(third.clone())
        );
        let mut long = third;
        for i in 0..300 {
            long = thread_index(Some(&long), 1_788_256_800_000 + i * 60_000);
        }
        assert_eq!(long.len(), 22 + 5 * MAX_CHILD_BLOCKS);
        assert!(BASE64.encode(&long).len() < 998 - "Thread-Index: ".len());
    }

    #[test]
    fn html_gets_the_signature_before_body_end() {
        let out = append_html("<html><body><p>Hi</p></body></html>", "<div>SIG</div>");
        assert_eq!(out, "<html><body><p>Hi</p><div>SIG</div></body></html>");
        assert_eq!(
            text_to_html("a < b\nc\n\nd"),
            "<p>a &lt; b<br>\nc</p>\n<p>d</p>\n"
        );
    }
}
