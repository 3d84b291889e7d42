//! Plain-text heuristics shared by the bounce detectors: status codes,
//! address scanning, the split between a bounce's own report and the copy of
//! the returned message, and per-recipient diagnostics of non-standard
//! bounces (qmail, Exim, Postfix without DSN, Exchange, Gmail, Yahoo …).
//!
//! Everything works on `&str` with ASCII-only byte scanning, so slicing stays
//! on character boundaries whatever the text contains.

use std::collections::{HashMap, HashSet};

/// Upper bound on the report lines examined per message: bounces put what
/// matters first, and a hostile message must not make this quadratic.
const MAX_REPORT_LINES: usize = 2_000;
/// Lines after a recipient line that may carry its diagnostic.
const MAX_BLOCK_LINES: usize = 8;
/// Diagnostics are informational; keep them to a sane size.
const MAX_DIAGNOSTIC_CHARS: usize = 1_000;
/// A bounce naming more recipients than this is treated as listing the first ones.
pub(super) const MAX_RECIPIENTS: usize = 100;

// ---------------------------------------------------------------------------
// Status codes
// ---------------------------------------------------------------------------

/// Every RFC 3463 enhanced status code (`class.subject.detail`) in `s`, in
/// order. The class must be 2, 4 or 5, the subject one digit 0–7 and the
/// detail one to three digits; the code must stand alone, so IP addresses and
/// version numbers (`192.0.2.153`, `14.01.0421.002`) do not match.
pub(super) fn enhanced_codes(s: &str) -> impl Iterator<Item = &str> {
    let b = s.as_bytes();
    (0..b.len()).filter_map(move |i| {
        let class = b[i];
        if !matches!(class, b'2' | b'4' | b'5') {
            return None;
        }
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.') {
            return None;
        }
        if b.get(i + 1) != Some(&b'.') {
            return None;
        }
        let subject = *b.get(i + 2)?;
        if !(b'0'..=b'7').contains(&subject) || b.get(i + 3) != Some(&b'.') {
            return None;
        }
        let detail_start = i + 4;
        let mut end = detail_start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == detail_start || end - detail_start > 3 {
            return None;
        }
        if let Some(&next) = b.get(end) {
            if next.is_ascii_alphanumeric() {
                return None;
            }
            if next == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
        s.get(i..end)
    })
}

/// The first enhanced status code of a failure or delay (class 4 or 5).
/// One that directly follows a basic SMTP reply code (`550 5.7.1`,
/// `550-'5.7.1`) is preferred: that is the remote server's own word, where
/// an earlier code may be the reporting MTA's paraphrase.
pub(super) fn failure_enhanced_code(s: &str) -> Option<String> {
    let is_failure = |c: &&str| c.starts_with('4') || c.starts_with('5');
    let attached = enhanced_codes(s).filter(is_failure).find(|c| {
        let start = c.as_ptr() as usize - s.as_ptr() as usize;
        let before = s[..start].trim_end_matches([' ', '-', '\'', '"', '#', '(', '[']);
        let b = before.as_bytes();
        b.len() >= 3
            && b[b.len() - 3..].iter().all(u8::is_ascii_digit)
            && matches!(b[b.len() - 3], b'4' | b'5')
            && (b.len() == 3 || !b[b.len() - 4].is_ascii_alphanumeric())
    });
    attached
        .or_else(|| enhanced_codes(s).find(is_failure))
        .map(str::to_string)
}

/// The first basic SMTP reply code of a failure (`4xx`/`5xx`, second digit
/// 0–5) standing alone as a token: `550 `, `550-`, `said: 552`.
pub(super) fn smtp_failure_code(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    (0..b.len()).find_map(|i| {
        if !matches!(b[i], b'4' | b'5') {
            return None;
        }
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'.' | b'-' | b',')) {
            return None;
        }
        let second = *b.get(i + 1)?;
        let third = *b.get(i + 2)?;
        if !(b'0'..=b'5').contains(&second) || !third.is_ascii_digit() {
            return None;
        }
        match b.get(i + 3) {
            None | Some(b' ' | b'\t' | b'-' | b':' | b'\n' | b'\r') => {}
            Some(_) => return None,
        }
        Some(u16::from(b[i] - b'0') * 100 + u16::from(second - b'0') * 10 + u16::from(third - b'0'))
    })
}

/// The enhanced status implied by a basic SMTP code: its class with
/// unspecified subject and detail (`550` → `5.0.0`). Basic codes are too
/// overloaded (552 is both "mailbox full" and "message too large") to guess more.
pub(super) fn status_from_basic(code: u16) -> String {
    format!("{}.0.0", code / 100)
}

/// A failure status from free text: an enhanced code if there is one, else a
/// mapped basic SMTP code.
pub(super) fn status_from_text(s: &str) -> Option<String> {
    failure_enhanced_code(s).or_else(|| smtp_failure_code(s).map(status_from_basic))
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

/// An address found in a line, with its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    pub start: usize,
    pub end: usize,
    pub addr: String,
}

fn is_local_char(c: u8) -> bool {
    // RFC 5322 atext without `/`, which in practice only shows up in URLs.
    c.is_ascii_alphanumeric() || b"!#$%&'*+=?^_`{|}~.-".contains(&c)
}

fn is_domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// Addresses (`local@domain.tld`, ASCII) appearing in `s`. Lenient on
/// purpose: bounce texts wrap addresses in `<>`, quotes, `rfc822;`,
/// `mailto:` and punctuation; the domain needs a dot and a top-level label
/// with a letter, which keeps Message-ID-like `123@456` noise out.
pub(super) fn addresses_in(s: &str) -> Vec<Found> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'@' {
            i += 1;
            continue;
        }
        let mut l = i;
        while l > 0 && is_local_char(b[l - 1]) {
            l -= 1;
        }
        while l < i && matches!(b[l], b'.' | b'=' | b'\'' | b'`' | b'{' | b'|') {
            l += 1;
        }
        let mut r = i + 1;
        while r < b.len() && is_domain_char(b[r]) {
            r += 1;
        }
        while r > i + 1 && matches!(b[r - 1], b'.' | b'-') {
            r -= 1;
        }
        let local = &s[l..i];
        let domain = &s[i + 1..r];
        let local = local.trim_end_matches('\'');
        if !local.is_empty()
            && local.len() <= 64
            && domain.len() <= 255
            && domain.contains('.')
            && !domain.starts_with(['.', '-'])
            && !domain.contains("..")
            && domain
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.bytes().any(|c| c.is_ascii_alphabetic()))
        {
            out.push(Found {
                start: l,
                end: r,
                addr: format!("{local}@{domain}"),
            });
        }
        i = r.max(i + 1);
    }
    out
}

/// Local parts of mail-system mailboxes: never a failed recipient.
const SYSTEM_LOCALS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "maildaemon",
    "postmaster",
    "post_master",
    "poostmaster",
    "mail.delivery.system",
    "mdaemon",
];

pub(super) fn is_system_local(local: &str) -> bool {
    SYSTEM_LOCALS.iter().any(|s| local.eq_ignore_ascii_case(s))
}

/// Addresses that cannot be the failed recipient of a bounce.
///
/// The gateway's own addresses and the envelope never can. The original
/// sender (the bounce's To, the returned copy's From) and mail-system
/// mailboxes (postmaster, MAILER-DAEMON) normally cannot either — unless the
/// returned copy shows the message was addressed to them.
#[derive(Debug, Default)]
pub(super) struct Exclusions {
    hard: HashSet<String>,
    soft: HashSet<String>,
    allowed: HashSet<String>,
    domain: String,
}

fn norm(addr: &str) -> Option<String> {
    let a = addr.trim().trim_matches(['<', '>']).to_ascii_lowercase();
    a.contains('@').then_some(a)
}

impl Exclusions {
    pub fn new(gateway_domain: &str) -> Self {
        Exclusions {
            domain: gateway_domain.trim().to_ascii_lowercase(),
            ..Exclusions::default()
        }
    }

    /// Never a failed recipient (envelope addresses).
    pub fn add_hard(&mut self, addr: &str) {
        self.hard.extend(norm(addr));
    }

    /// Not a failed recipient unless the original was addressed to it.
    pub fn add_soft(&mut self, addr: &str) {
        self.soft.extend(norm(addr));
    }

    /// An address the original message was sent to.
    pub fn allow(&mut self, addr: &str) {
        self.allowed.extend(norm(addr));
    }

    pub fn excludes(&self, addr: &str) -> bool {
        let a = addr.to_ascii_lowercase();
        let Some((local, domain)) = a.rsplit_once('@') else {
            return true;
        };
        if (!self.domain.is_empty() && domain == self.domain) || self.hard.contains(&a) {
            return true;
        }
        (is_system_local(local) || self.soft.contains(&a)) && !self.allowed.contains(&a)
    }
}

// ---------------------------------------------------------------------------
// Report versus returned message
// ---------------------------------------------------------------------------

/// Phrases of the line that separates a bounce's own text from the copy of
/// the returned message (Exim, qmail, Yahoo, Gmail, Sendmail, Postfix …).
const ORIGINAL_MARKERS: &[&str] = &[
    "this is a copy of the message",
    "below this line is a copy of the message",
    "original message follows",
    "original message",
    "unsent message follows",
    "returned message follows",
    "message header follows",
    "message headers follow",
    "original message header",
    "headers of the original message",
    "the original message headers",
    "content-type: message/rfc822",
    "undelivered message attached",
    "returned mail follows",
    "returned message",
    "header of the original message",
];

/// A marker is a separator line, not prose that happens to mention the
/// original message: it starts with punctuation or is short.
fn is_marker_line(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() {
        return false;
    }
    // Every marker says "message" or "mail": most lines say neither, and
    // are let go without a lowercase copy and sixteen substring searches
    // (this ran for every line of every ordinary reply).
    if !contains_ascii_ci(t.as_bytes(), b"message") && !contains_ascii_ci(t.as_bytes(), b"mail") {
        return false;
    }
    let lower = t.to_ascii_lowercase();
    if !ORIGINAL_MARKERS.iter().any(|m| lower.contains(m)) {
        return false;
    }
    let starts_with_punct = t.bytes().next().is_some_and(|c| !c.is_ascii_alphanumeric());
    starts_with_punct || t.len() <= 50
}

/// Whether `hay` contains `needle` (lowercase ASCII), ignoring ASCII case.
fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    let last_start = hay.len() - needle.len();
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), &hay[..=last_start])
        .any(|i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Header names that open a copy of the original message inside a bounce.
const ORIGINAL_HEADER_NAMES: &[&str] = &[
    "return-path",
    "received",
    "dkim-signature",
    "domainkey-signature",
    "arc-seal",
    "delivered-to",
    "x-original-to",
    "authentication-results",
];

fn header_name(line: &str) -> Option<&str> {
    let (name, _) = line.split_once(':')?;
    if name.is_empty()
        || name.len() > 76
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return None;
    }
    Some(name)
}

/// Splits a bounce body at the start of the returned message: the marker
/// line, or else a block of header lines that starts like a message
/// (`Return-Path:`, `Received:` …) at the start of a line.
/// Returns (report, returned copy).
pub(super) fn split_report(text: &str) -> (&str, Option<&str>) {
    let mut offset = 0;
    let mut prev_blank = true;
    for (n, line) in text.split('\n').enumerate() {
        let end = (offset + line.len() + 1).min(text.len());
        if n > MAX_REPORT_LINES {
            break;
        }
        if is_marker_line(line) {
            return (&text[..offset], Some(&text[end..]));
        }
        if prev_blank
            && header_name(line).is_some_and(|h| {
                ORIGINAL_HEADER_NAMES
                    .iter()
                    .any(|o| h.eq_ignore_ascii_case(o))
            })
        {
            return (&text[..offset], Some(&text[offset..]));
        }
        prev_blank = line.trim().is_empty();
        offset = end;
    }
    (text, None)
}

/// Header fields (lowercase name, unfolded value) of the first header block
/// in `text`: leading blank lines are skipped, the block ends at the first
/// blank line. Used on `text/rfc822-headers` parts and inline copies.
pub(super) fn header_block(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut started = false;
    let mut junk = 0;
    for line in text.split('\n').take(MAX_REPORT_LINES) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if started {
                break;
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        match header_name(line) {
            Some(name) => {
                started = true;
                let value = line[name.len() + 1..].trim().to_string();
                fields.push((name.to_ascii_lowercase(), value));
            }
            None if !started && junk < 3 => junk += 1,
            None => break,
        }
    }
    fields
}

// ---------------------------------------------------------------------------
// Recipients in a report
// ---------------------------------------------------------------------------

/// A failed recipient read from bounce text, with what was said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TextRecipient {
    pub addr: String,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    /// Named in a recipient position (alone on its line, after `RCPT TO:`,
    /// `<addr>:` …) rather than merely mentioned.
    pub strong: bool,
}

/// Line prefixes after which an address is the original sender, a
/// Message-ID or a host, not a recipient.
const SENDER_CONTEXTS: &[&str] = &[
    "mail from:",
    "mail from",
    "from:",
    "from",
    "sender:",
    "sender",
    "envelope-from",
    "envelope-from:",
    "return-path:",
    "reply-to:",
    "x-apparently-from:",
    "smtp.mailfrom=",
    "header.from=",
    "x-postfix-sender: rfc822;",
    "x-internet-inbound-sender: rfc822;",
    "x-sender:",
    "sent by",
    "id",
    "message-id:",
    "msgid",
    "message id",
];

/// Words that make a `...:` prefix introduce a failed recipient.
const RECIPIENT_PREFIX_WORDS: &[&str] = &[
    "recipient",
    "rcpt",
    "address",
    "deliver",
    "fail",
    "reject",
    "unknown",
    "user",
    "mailbox",
    "destinat",
    "error",
    "invalid",
    "bounce",
];

fn trimmed_prefix(prefix: &str) -> String {
    prefix
        .to_ascii_lowercase()
        .trim()
        .trim_end_matches(['<', '"', '(', '[', '\''])
        .trim()
        .to_string()
}

/// Whether `p` ends with `word` starting at a word boundary.
fn ends_with_word(p: &str, word: &str) -> bool {
    p.strip_suffix(word).is_some_and(|head| {
        head.bytes()
            .last()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != b'-')
    })
}

fn is_sender_context(prefix: &str) -> bool {
    let p = trimmed_prefix(prefix);
    SENDER_CONTEXTS.iter().any(|c| ends_with_word(&p, c)) || p.contains("message-id")
}

fn is_recipient_context(prefix: &str) -> bool {
    let p = trimmed_prefix(prefix);
    if p.is_empty() || p == "-" || p == "*" {
        return true;
    }
    // Sendmail's transcript: "554 <a@b>... Host unknown".
    if p.len() == 3 && smtp_failure_code(&p).is_some() {
        return true;
    }
    if p.ends_with(':') || p.ends_with(';') {
        return RECIPIENT_PREFIX_WORDS.iter().any(|w| p.contains(w));
    }
    // "… delivering your mail to <a@b>", "Your message to a@b …".
    ends_with_word(&p, "to")
        && ![
            "reply to",
            "reply-to",
            "return to",
            "send mail to",
            "write to",
            "go to",
        ]
        .iter()
        .any(|w| p.ends_with(w))
}

/// Strips the recipient address (and its wrapping) from the start of the
/// text that follows it on its line: `>: host x said` → `host x said`.
fn after_address(rest: &str) -> &str {
    rest.trim_start_matches(['>', '"', '\'', ')', ']'])
        .trim_start_matches([':', ',', ';'])
        .trim_start_matches("...")
        .trim()
}

fn clip(s: String) -> String {
    if s.chars().count() <= MAX_DIAGNOSTIC_CHARS {
        return s;
    }
    s.chars().take(MAX_DIAGNOSTIC_CHARS).collect()
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Recipients named in a bounce report, in order of appearance, with the
/// block of text that follows each as its diagnostic. Addresses in
/// recipient positions come first; mere mentions are kept (marked weak) for
/// callers that have nothing better.
pub(super) fn report_recipients(report: &str, exclusions: &Exclusions) -> Vec<TextRecipient> {
    let lines: Vec<&str> = report
        .split('\n')
        .take(MAX_REPORT_LINES)
        .map(|l| l.trim_end_matches('\r'))
        .collect();

    // First pass: where does each line name a recipient?
    let mut hits: Vec<(usize, Found, bool)> = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        for found in addresses_in(line) {
            if exclusions.excludes(&found.addr) {
                continue;
            }
            let prefix = &line[..found.start];
            if is_sender_context(prefix) {
                continue;
            }
            let strong = is_recipient_context(prefix);
            hits.push((n, found, strong));
        }
    }
    // Lines naming a recipient in recipient position, with whom they name.
    let mut strong_lines: HashMap<usize, Vec<String>> = HashMap::new();
    for (n, found, strong) in &hits {
        if *strong {
            strong_lines
                .entry(*n)
                .or_default()
                .push(found.addr.to_ascii_lowercase());
        }
    }

    let mut out: Vec<TextRecipient> = Vec::new();
    for (n, found, strong) in hits {
        let key = found.addr.to_ascii_lowercase();
        if let Some(existing) = out.iter_mut().find(|r| r.addr.eq_ignore_ascii_case(&key)) {
            // Mentioned first, named as a recipient later: the later block
            // is the one about its failure.
            if strong && !existing.strong {
                let (status, diagnostic) = block_diagnostic(&lines, n, &found, &strong_lines);
                existing.strong = true;
                existing.status = status;
                existing.diagnostic = diagnostic;
            }
            continue;
        }
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
        let (status, diagnostic) = if strong {
            block_diagnostic(&lines, n, &found, &strong_lines)
        } else {
            let d = collapse_ws(lines[n]);
            (
                status_from_text(&d),
                Some(d).filter(|d| !d.is_empty()).map(clip),
            )
        };
        out.push(TextRecipient {
            addr: found.addr,
            status,
            diagnostic,
            strong,
        });
    }
    out
}

/// The text block that follows a recipient line: the rest of its line and
/// the following lines up to a blank line or a line naming another
/// recipient (Exim and qmail repeat the same one: `RCPT TO:<a@b>`).
fn block_diagnostic(
    lines: &[&str],
    n: usize,
    found: &Found,
    strong_lines: &HashMap<usize, Vec<String>>,
) -> (Option<String>, Option<String>) {
    let me = found.addr.to_ascii_lowercase();
    let mut parts: Vec<String> = Vec::new();
    let first = after_address(lines[n].get(found.end..).unwrap_or(""));
    // Sendmail puts the reply code before the address: keep it.
    let code = lines[n]
        .get(..found.start)
        .map(|p| p.trim().trim_end_matches('<').trim())
        .filter(|p| p.len() == 3 && smtp_failure_code(p).is_some());
    match code {
        Some(code) => parts.push(format!("{code} {first}")),
        None if !first.is_empty() => parts.push(first.to_string()),
        None => {}
    }
    for (k, line) in lines.iter().enumerate().skip(n + 1).take(MAX_BLOCK_LINES) {
        let other = strong_lines
            .get(&k)
            .is_some_and(|named| named.iter().any(|a| *a != me));
        if line.trim().is_empty() || other {
            break;
        }
        parts.push(line.trim().to_string());
    }
    if parts.is_empty() {
        // Nothing after the address: the line itself may say why
        // ("Delivery failed 10 attempts: a@b").
        let line = lines[n].trim();
        if line.len() > found.addr.len() + 4 {
            parts.push(line.to_string());
        }
    }
    let text = collapse_ws(&parts.join(" "));
    let status = status_from_text(&text);
    let diagnostic = Some(text).filter(|t| !t.is_empty()).map(clip);
    (status, diagnostic)
}

/// `d` cut before the first delivery-status field name it runs into: a
/// broken DSN shows its fields as text, and they are not a diagnostic.
pub(super) fn without_status_fields(d: &str) -> Option<String> {
    const FIELDS: &[&str] = &[
        "action:",
        "status:",
        "final-recipient:",
        "original-recipient:",
        "x-actual-recipient:",
        "remote-mta:",
        "reporting-mta:",
        "last-attempt-date:",
        "diagnostic-code:",
    ];
    let lower = d.to_ascii_lowercase();
    let cut = FIELDS
        .iter()
        .filter_map(|f| lower.find(f))
        .min()
        .unwrap_or(d.len());
    let kept = d[..cut].trim();
    (!kept.is_empty()).then(|| kept.to_string())
}

/// Phrases that describe why delivery failed, used to pick a diagnostic line
/// when no recipient block carries one.
const FAILURE_DETAIL: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "does not exist",
    "doesn't exist",
    "not exist",
    "mailbox full",
    "mailbox is full",
    "over quota",
    "quota exceeded",
    "exceeded storage",
    "not found",
    "rejected",
    "refused",
    "denied",
    "invalid",
    "unavailable",
    "timed out",
    "unreachable",
    "host unknown",
    "domain name not found",
    "not listed",
    "disabled",
    "too large",
    "blocked",
    "blacklist",
    "spam",
    "not a member",
    "unrouteable",
    "unknown host",
    "no mx",
    "dns error",
    "exceeded",
    "exceeds",
    "not accepted",
    "did not accept",
    "no longer",
    "expired",
    "could not find",
    "socket error",
    "aborted",
];

/// Whether a diagnostic says something about the failure (a code or a reason).
pub(super) fn is_informative(d: &str) -> bool {
    if status_from_text(d).is_some() {
        return true;
    }
    let lower = d.to_lowercase();
    FAILURE_DETAIL.iter().any(|p| lower.contains(p))
}

/// The most telling diagnostic line of a report without per-recipient
/// blocks: the first line carrying an SMTP code, else the first naming a
/// failure reason.
pub(super) fn global_diagnostic(report: &str) -> Option<String> {
    let lines = || report.split('\n').take(MAX_REPORT_LINES).map(str::trim);
    let pick = lines()
        .find(|l| smtp_failure_code(l).is_some() || failure_enhanced_code(l).is_some())
        .or_else(|| {
            lines().find(|l| {
                let lower = l.to_lowercase();
                FAILURE_DETAIL.iter().any(|p| lower.contains(p))
            })
        })?;
    let d = collapse_ws(pick);
    (!d.is_empty()).then(|| clip(d))
}

// ---------------------------------------------------------------------------
// Phrase tables
// ---------------------------------------------------------------------------

/// Subject phrases (lowercase) of delivery-failure notices in the languages
/// seen in practice.
pub(super) const FAILURE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "not delivered",
    "delivery fail",
    "delivery status notification",
    "delivery notification",
    "delivery status",
    "delivery problem",
    "delivery report",
    "returned mail",
    "returned to sender",
    "returning message to sender",
    "mail delivery failed",
    "mail delivery failure",
    "email delivery failure",
    "message delivery has failed",
    "failure notice",
    "failure delivery",
    "delivery failure",
    "could not be delivered",
    "couldn't be delivered",
    "mail system error",
    "nondeliverable",
    "non-deliverable",
    "there was an error sending your mail",
    "delayed mail",
    "bounce",
    "rejected",
    "non remis",
    "non recapitabile",
    "unzustellbar",
    "nicht zustellbar",
    "no se puede entregar",
    "no entregado",
    "onbestelbaar",
    "não entregue",
    "olevererbart",
    "mailfehler",
    "メールエラー",
    "配信エラー",
    "エラー通知",
    "недостав",
    "не доставлено",
    "退信",
    "未送达",
];

/// Body phrases (lowercase) of delivery-failure notices.
pub(super) const FAILURE_BODY: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "could not deliver",
    "couldn't deliver",
    "unable to deliver",
    "was not delivered",
    "wasn't delivered",
    "not be delivered",
    "did not reach",
    "delivery has failed",
    "delivery failed",
    "delivery to the following recipient",
    "failed permanently",
    "permanent error",
    "permanent fatal error",
    "permanent failure",
    "the following address",
    "the following recipient",
    "following addresses had",
    "undeliverable",
    "undelivered",
    "user unknown",
    "unknown user",
    "no such user",
    "mailbox unavailable",
    "mailbox is full",
    "mailbox full",
    "recipient address rejected",
    "message was rejected",
    "message could not",
    "returned to you",
    "returning message to sender",
    "qmail-send",
    "mail delivery software",
    "the mail system",
    "transcript of session",
    "delivery status notification",
    "not yet been delivered",
    "has been delayed",
    "will be retried",
    "warning only",
    "failed recipient",
    "an email you sent was rejected",
    "error message below",
    "could not be sent",
    "no longer valid",
    "送信できませんでした",
    "配信できませんでした",
    "届きませんでした",
    "не может быть доставлено",
    "не удалось доставить",
];

/// Phrases of a mail system's own failure report, specific enough to decide
/// alone when they open the body (the sender may not look like a daemon).
pub(super) const BOUNCE_SIGNATURES: &[&str] = &[
    "this is the qmail-send program",
    "this message was created automatically by mail delivery software",
    "this is the mail system at host",
    "delivery to the following recipient failed permanently",
    "delivery to the following recipients failed permanently",
    "the following addresses had permanent fatal errors",
    "----- transcript of session follows -----",
    "your message did not reach some or all of the intended recipients",
    "delivery has failed to these recipients or groups",
    "sorry, we were unable to deliver your message to the following address",
    "i'm afraid i wasn't able to deliver your message",
    "i'm sorry to have to inform you that your message could not",
];

/// Subject phrases of delay warnings.
const DELAY_SUBJECTS: &[&str] = &[
    "delay",
    "warning:",
    "delivery status notification: warning",
    "still being retried",
    "not yet delivered",
];

/// Body phrases of delay warnings.
const DELAY_BODY: &[&str] = &[
    "this is a warning only",
    "this is a warning message only",
    "warning message only",
    "has not yet been delivered",
    "not yet been delivered",
    "has been delayed",
    "delivery has been delayed",
    "will continue to try",
    "will keep trying",
    "will retry",
    "will be retried",
    "still trying",
    "still being retried",
    "no action is required on your part",
    "you do not need to resend your message",
];

/// Phrases that make a notice final whatever else it says.
const FINAL_BODY: &[&str] = &[
    "failed permanently",
    "permanent error",
    "permanent fatal",
    "permanent failure",
    "giving up",
    "given up",
    "gave up",
    "will be deleted",
    "will not be retried",
    "no further attempts",
];

/// Whether a non-standard notice reports a delay rather than a failure.
/// A delay subject wins; a delay phrase in the body yields to an explicit
/// statement that delivery has been given up.
pub(super) fn looks_delayed(subject_lower: &str, report_lower: &str) -> bool {
    if DELAY_SUBJECTS.iter().any(|p| subject_lower.contains(p)) {
        return true;
    }
    DELAY_BODY.iter().any(|p| report_lower.contains(p))
        && !FINAL_BODY.iter().any(|p| report_lower.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_marker_line` lets a line go early unless it says "message" or
    /// "mail": every marker must say one of them.
    #[test]
    fn every_marker_passes_the_prefilter() {
        for m in ORIGINAL_MARKERS {
            assert!(
                contains_ascii_ci(m.as_bytes(), b"message")
                    || contains_ascii_ci(m.as_bytes(), b"mail"),
                "{m}"
            );
            assert!(is_marker_line(&m.to_ascii_uppercase()), "{m}");
        }
        assert!(contains_ascii_ci(b"xx MeSsAgE", b"message"));
        assert!(!contains_ascii_ci(b"messag", b"message"));
        assert!(!is_marker_line(
            "Thanks for your message about the shipment"
        ));
    }

    #[test]
    fn enhanced_codes_stand_alone() {
        let cases: &[(&str, Option<&str>)] = &[
            ("550 5.1.1 <a@b.c>... User unknown", Some("5.1.1")),
            ("550-5.1.1 The email account", Some("5.1.1")),
            ("<mx.example.co.jp #5.1.1>", Some("5.1.1")),
            ("Status: 4.4.7 (delivery time expired)", Some("4.4.7")),
            ("status 5.7.26 unauthenticated", Some("5.7.26")),
            ("192.0.2.153 does not like recipient.", None),
            ("Microsoft SMTP Server id 14.01.0421.002", None),
            ("Postfix 2.5.1x", None),
            ("version 5.10.1", None),
            ("ip 10.5.1.1", None),
            ("at 2.0.0.1", None),
            ("2.0.0 Ok", Some("2.0.0")),
        ];
        for (input, want) in cases {
            assert_eq!(enhanced_codes(input).next(), *want, "{input}");
        }
        assert_eq!(
            failure_enhanced_code("2.0.0 then 5.2.2"),
            Some("5.2.2".into())
        );
        assert_eq!(
            failure_enhanced_code("5.1.0 - Unknown address error 550-'5.7.1 <a@b.c>... denied"),
            Some("5.7.1".into())
        );
    }

    #[test]
    fn smtp_codes_stand_alone() {
        let cases: &[(&str, Option<u16>)] = &[
            ("Remote host said: 550 5.1.1 unknown", Some(550)),
            ("said: 552\n    5.2.2 full", Some(552)),
            ("550-Requested action", Some(550)),
            ("550 - Requested action", Some(550)),
            ("Sent 2013 port 465 at 22:47:39", None),
            ("192.0.2.450 x", None),
            ("250 OK", None),
            ("error 5500 x", None),
            ("450", Some(450)),
        ];
        for (input, want) in cases {
            assert_eq!(smtp_failure_code(input), *want, "{input}");
        }
        assert_eq!(
            status_from_text("host said: 554 rejected"),
            Some("5.0.0".into())
        );
        assert_eq!(status_from_text("550 5.7.1 nope"), Some("5.7.1".into()));
    }

    #[test]
    fn addresses_are_found_in_their_wrappings() {
        let cases: &[(&str, &[&str])] = &[
            ("<kijitora@example.jp>:", &["kijitora@example.jp"]),
            (
                "Final-Recipient: rfc822;neko@example.org",
                &["neko@example.org"],
            ),
            ("mailto:a.b+c@x.example.com.", &["a.b+c@x.example.com"]),
            (
                "RCPT TO:<u@h.example>, MAIL FROM:<s@h.example>",
                &["u@h.example", "s@h.example"],
            ),
            ("'quoted@example.net'", &["quoted@example.net"]),
            ("<123@456>", &[]),
            ("user@localhost", &[]),
            ("@example.com", &[]),
            (
                "http://example.com/path/x@y.example.org",
                &["x@y.example.org"],
            ),
        ];
        for (input, want) in cases {
            let got: Vec<String> = addresses_in(input).into_iter().map(|f| f.addr).collect();
            assert_eq!(got, *want, "{input}");
        }
    }

    #[test]
    fn split_report_at_markers_and_header_blocks() {
        let qmail = "Hi.\n<a@b.example>:\nsaid 550\n\n--- Below this line is a copy of the message.\n\nReturn-Path: <s@x.example>\n";
        let (report, rest) = split_report(qmail);
        assert!(report.ends_with("said 550\n\n"));
        assert!(rest.is_some_and(|r| r.contains("Return-Path")));

        let bare = "failed: a@b.example\n\nReceived: from x\nFrom: s@x.example\n";
        let (report, rest) = split_report(bare);
        assert_eq!(report, "failed: a@b.example\n\n");
        assert!(rest.is_some_and(|r| r.starts_with("Received:")));

        let prose = "The following lines contain the RFC822 header of the original email message, which is long enough to be prose.\n<a@b.example>: 550\n";
        assert_eq!(split_report(prose).1, None);
    }

    #[test]
    fn header_block_unfolds_and_stops_at_blank_line() {
        let text = "\n\nFrom: s@x.example\nTo: a@b.example,\n  c@d.example\nMessage-ID: <id@x>\n\nBody: no\n";
        let h = header_block(text);
        assert_eq!(
            h,
            vec![
                ("from".into(), "s@x.example".into()),
                ("to".into(), "a@b.example, c@d.example".into()),
                ("message-id".into(), "<id@x>".into()),
            ]
        );
    }

    #[test]
    fn recipients_and_blocks_from_common_formats() {
        let mut ex = Exclusions::new("gw.example.com");
        ex.add_soft("sender@example.jp");

        // qmail: two recipients, each with its own block.
        let qmail = "Hi. This is the qmail-send program at x.\n\n<u1@example.jp>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 <u1@example.jp>... User Unknown\n\n<u2@example.jp>:\nRemote host said: 552 mailbox full\n";
        let r = report_recipients(qmail, &ex);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].addr, "u1@example.jp");
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
        assert!(
            r[0].diagnostic
                .as_deref()
                .is_some_and(|d| d.contains("User Unknown"))
        );
        assert_eq!(r[1].status.as_deref(), Some("5.0.0"));

        // Exim: indented address, MAIL FROM sender excluded.
        let exim = "The following address(es) failed:\n\n  rcpt@example.ed.jp\n    SMTP error from remote mail server after MAIL FROM:<other@example.jp> SIZE=1543:\n    host mx [192.0.2.20]: 550 5.7.0 Please use your ISP\n";
        let r = report_recipients(exim, &ex);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].addr, "rcpt@example.ed.jp");
        assert_eq!(r[0].status.as_deref(), Some("5.7.0"));

        // Exim without blank lines: each block runs to the next recipient,
        // through the lines repeating its own address.
        let exim2 = "  a@example.jp\n    SMTP error after RCPT TO:<a@example.jp>:\n    host mx: 550 5.1.1 <a@example.jp>... Unknown\n  b@example.jp\n    SMTP error after RCPT TO:<b@example.jp>:\n    host mx: 550 5.2.1 <b@example.jp>... Disabled\n";
        let r = report_recipients(exim2, &ex);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(r[1].status.as_deref(), Some("5.2.1"));

        // Sendmail v5 transcripts: a reply code before each recipient.
        let v5 = "554 <a@example.edu>... Remote protocol error\n550 example.or.jp (smtp)... 550 Host unknown\n554 <b@example.or.jp>... 550 Host unknown\n";
        let r = report_recipients(v5, &ex);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|x| x.strong));
        assert_eq!(r[0].status.as_deref(), Some("5.0.0"));
        assert_eq!(r[1].diagnostic.as_deref(), Some("554 550 Host unknown"));

        // Verizon-style details: RCPT TO is the recipient, MAIL FROM and From are not.
        let vz = "Error: Invalid user address\n\nMessage details:\n  MAIL FROM: me@neko.example.org\n  RCPT TO: you@vtext.example.com\n  From: me2@neko.example.org\n";
        let r = report_recipients(vz, &ex);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].addr, "you@vtext.example.com");
        assert!(r[0].strong);

        // Gateway, daemon and sender addresses never count.
        let noise = "bounce+k@gw.example.com\nMAILER-DAEMON@x.example\npostmaster@x.example\nsender@example.jp\n";
        assert!(report_recipients(noise, &ex).is_empty());

        // ... unless the original was addressed to them.
        ex.allow("postmaster@x.example");
        let r = report_recipients(noise, &ex);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].addr, "postmaster@x.example");

        // Mentioned first, then named as the failed recipient.
        let ex2 = "To:      <k@nyaan.example.net>\n\nDid not reach the following recipient: k@nyaan.example.net\n  550 5.1.1 unknown\n";
        let r = report_recipients(ex2, &ex);
        assert_eq!(r.len(), 1);
        assert!(r[0].strong);
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));

        // Prose naming the recipient after "to".
        let df = "There was an error delivering your mail to <rcpt@cx.example.org>.\n";
        let r = report_recipients(df, &ex);
        assert!(r[0].strong);
    }

    #[test]
    fn status_fields_are_not_diagnostics() {
        assert_eq!(without_status_fields("Status: 4.2.2"), None);
        assert_eq!(
            without_status_fields("554 mailbox gone Action: failed Status: 5.0.0").as_deref(),
            Some("554 mailbox gone")
        );
        assert_eq!(without_status_fields("550 no").as_deref(), Some("550 no"));
    }

    #[test]
    fn delay_detection() {
        assert!(looks_delayed("warning: message 1x delayed 24 hours", ""));
        assert!(looks_delayed("delivery status notification (delay)", ""));
        assert!(looks_delayed(
            "x",
            "this is a warning only. you do not need to resend"
        ));
        assert!(!looks_delayed(
            "returned mail: cannot send message for 5 days",
            "message will be deleted from queue"
        ));
        assert!(!looks_delayed(
            "failure notice",
            "will retry ... i've given up"
        ));
    }

    #[test]
    fn global_diagnostic_prefers_smtp_lines() {
        let text = "Delivery failed.\nThe error that the other server returned was:\n550 5.1.0 Recipient rejected\n";
        assert_eq!(
            global_diagnostic(text).as_deref(),
            Some("550 5.1.0 Recipient rejected")
        );
        assert_eq!(
            global_diagnostic("DNS Error: Domain name not found\n").as_deref(),
            Some("DNS Error: Domain name not found")
        );
        assert_eq!(global_diagnostic("hello\n"), None);
    }
}
