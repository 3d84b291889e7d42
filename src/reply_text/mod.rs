//! Visible reply of a vendor's email (quoted history and signature stripped), and HTML to text.
//!
//! Everything here is pure: strings in, strings out, no I/O, no panics, and every pass is a
//! single forward scan (with look-ahead bounded by a small constant), so a 1 MB quote or a
//! regex-backtracking trap costs no more than reading it. There are deliberately no regexes:
//! the patterns are simple enough to match by hand and that keeps the linear-time guarantee
//! obvious.
//!
//! Plain text is scanned line by line. A line can *end* the reply (Outlook separators and
//! header blocks, a quote header over unquoted history, the `-- ` signature delimiter, a
//! helpdesk marker), be *dropped* (`>`-quoted lines, the quote header that introduces them and,
//! below such a header, the tail of a hard-wrapped quoted line that lost its `>`), or be kept.
//! Dropping instead of cutting at `>` lines is what keeps interleaved inline answers. Client
//! footers ("Sent from my iPhone") and a dash sign-off are trimmed only where they end what is
//! left.
//!
//! What clients write differs per language; the strings are data, in `patterns.rs` (one table
//! entry per language, each string covered by a case in `fixtures/replies/`). The scan matches
//! every language at once, on text lowercased by `patterns::fold`.
//!
//! How much a quote header weighs: a *strong* one cuts everything below it even when that
//! history is not `>`-quoted. It has a clock time or an address, and either its "wrote" verb
//! ends it, it opens with `On`/`Am`/`Le`/…, or the sender's address comes before the verb; or
//! it is date-first with a time and ends in the sender's address (Gmail in Russian, Yandex);
//! or it is Zoho's dash-framed `---- On … wrote ----`. A *weak* one (a "wrote" verb with none
//! of that; a date and an address; a header without its colon) only counts when `>` lines
//! follow, so a vendor's "As I wrote:" or "Am 17.11. schrieb der Spediteur:" never cuts prose.
//!
//! Policy, the same on both paths (README "Visible reply"; each has a test):
//! - **A forward inside a reply** is content the vendor chose to send: from a forward marker
//!   (`---------- Forwarded message ---------`, "Begin forwarded message:", and their
//!   translations) on, everything is kept verbatim, quotes and signatures included. Outlook's
//!   forward header block looks exactly like its reply block, so that one is cut as history.
//! - **A reply written below the quote** is kept: quoted lines are dropped wherever they are,
//!   and so is the header introducing them, so text below them (or between them) stays.
//! - **A message that is all quote** comes back whole (minus a `-- ` signature), not empty:
//!   an empty visible reply would hide from the agent everything the vendor sent, and a
//!   message with nothing new is rare enough (a mis-sent reply, an answer typed inside the
//!   quote in a way we cannot tell apart) that showing it all is the honest answer.
//! - **Short sign-offs** go: `-- ` and everything below it (the signature convention), and a
//!   last line `-Name` / `—Name` / `– Name` (a hyphen only after a blank line or a closing
//!   ending in `,` or `!`, so a dash list is never taken for one).
//! - **Helpdesk markers** (`##- Please type your reply above this line -##` and their
//!   translations, `-- Reply above this line --`): the reply ends above the marker. A marker
//!   with nothing above it opens a helpdesk's own notification (the vendor answering from
//!   Zendesk): the marker line is dropped and the notification kept.
//!
//! HTML is rendered to text with `<blockquote>` content prefixed by `> `, the way mail clients
//! quote, after cutting the client-specific containers that always hold history (Outlook's
//! `#divRplyFwdMsg`, Outlook for Mac's `#OLK_SRC_BODY_SECTION`, Yahoo's `yahoo_quoted`, …) and
//! dropping signature containers and Thunderbird's quote header (`div.moz-cite-prefix`). The
//! plain-text rules then decide the rest, so both paths share one notion of "quote" and the
//! same language coverage.

use std::borrow::Cow;

use html::{Mode, render};
use patterns::{Footer, LANGUAGES, Language, fold};

mod html;
mod patterns;
#[cfg(test)]
mod tests;

/// Visible reply of a plain-text body: new text only, quotes/attribution/signature removed, trimmed.
#[must_use]
pub fn visible_text(body: &str) -> String {
    let text = normalize_newlines(body);
    let lines: Vec<&str> = text.split('\n').collect();
    let reply = finish(&reply_lines(&lines));
    if reply.is_empty() {
        fallback(&lines)
    } else {
        reply
    }
}

/// Visible reply of an HTML body, returned as plain text (strip quoted blocks such as
/// `<blockquote type="cite">`, Gmail's `div.gmail_quote` (its attribution and blockquote; a
/// forward in it is kept), Outlook's `#divRplyFwdMsg` / "From:" header blocks after `<hr>` or
/// border-top divs, Apple Mail blockquotes, Yahoo's `yahoo_quoted`, etc., then convert to text).
#[must_use]
pub fn visible_html(html: &str) -> String {
    let cut = render(html, Mode::Visible);
    let lines: Vec<&str> = cut.split('\n').collect();
    let reply = finish(&reply_lines(&lines));
    if !reply.is_empty() {
        return reply;
    }
    // The cut may have removed everything (a bare forward of a quote, say): fall back to the
    // whole document so the agent still sees something.
    let full = render(html, Mode::Plain);
    let lines: Vec<&str> = full.split('\n').collect();
    fallback(&lines)
}

/// HTML-escapes text for element content and quoted attribute values (the
/// one escaping every HTML the gateway writes goes through: composed mail,
/// the portal).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// HTML to readable plain text (block elements become line breaks, `<br>` newline, entities decoded,
/// script/style/head dropped, links keep their text). Used when a message has no text part.
#[must_use]
pub fn html_to_text(html: &str) -> String {
    render(html, Mode::Plain)
}

// ---------------------------------------------------------------------------------------------
// Plain text
// ---------------------------------------------------------------------------------------------

fn normalize_newlines(body: &str) -> Cow<'_, str> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    if body.contains('\r') {
        Cow::Owned(body.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(body)
    }
}

/// Used when stripping left nothing: the agent should still see what the vendor sent, so give
/// back the whole text, minus a signature if one is recognisable.
fn fallback(lines: &[&str]) -> String {
    let end = lines
        .iter()
        .position(|l| !is_quoted(l) && is_signature_delimiter(l))
        .unwrap_or(lines.len());
    let without_sig = finish(&lines[..end]);
    if without_sig.is_empty() {
        finish(lines)
    } else {
        without_sig
    }
}

/// Longest line the pattern checks look at: quote headers, markers, separators and footers are
/// short, and the cap keeps the work per line constant.
const MAX_PATTERN_LINE: usize = 400;

/// The lines of the vendor's own text, in order. Blank-line runs left where a quote was dropped
/// are collapsed to one so inline answers read as paragraphs.
fn reply_lines<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&'a str> = Vec::new();
    // Set after dropping something; suppresses blank lines until the next kept text.
    let mut gap = false;
    // Whether anything but blank lines was kept.
    let mut has_text = false;
    // Set once a quote header was dropped: below it, the tail of a hard-wrapped quoted line
    // that lost its `>` is quote too.
    let mut in_quote = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if is_blank(line) {
            if !gap {
                out.push("");
            }
            i += 1;
            continue;
        }
        if is_quoted(line) {
            gap = true;
            i += 1;
            continue;
        }
        if in_quote && i > 0 && continues_wrapped_quote(lines[i - 1], line) {
            gap = true;
            i += 1;
            continue;
        }
        let folded = (line.len() <= MAX_PATTERN_LINE).then(|| fold(line.trim()));
        if let Some(f) = folded.as_deref() {
            if is_forward_marker(f) {
                push_kept(&mut out, &mut gap, line);
                out.extend_from_slice(&lines[i + 1..]);
                break;
            }
            if is_helpdesk_marker(f) {
                if has_text {
                    break;
                }
                // A helpdesk's own notification starts with its marker: what follows is the
                // message.
                gap = true;
                i += 1;
                continue;
            }
            if is_original_message_marker(f) {
                break;
            }
        }
        if is_signature_delimiter(line) {
            break;
        }
        if is_underscore_rule(line) && rule_introduces_quote(lines, i + 1) {
            break;
        }
        if let Some(found) = quote_header_at(lines, i) {
            let after = i + found.lines;
            match next_non_blank(lines, after) {
                None => break,
                Some(j) if is_quoted(lines[j]) => {
                    gap = true;
                    in_quote = true;
                    i = after;
                    continue;
                }
                // An unquoted quote (Outlook web, Yahoo classic, Zoho): everything below is
                // history.
                Some(_) if found.strong => break,
                Some(_) => {}
            }
        }
        if header_block_at(lines, i) || header_intro_at(lines, i) {
            break;
        }
        if has_text
            && folded.as_deref().is_some_and(is_client_footer_folded)
            && footer_above_history(lines, i + 1)
        {
            break;
        }
        push_kept(&mut out, &mut gap, line);
        has_text = true;
        i += 1;
    }
    out
}

/// A mobile footer sits at the end of what was typed: a quote header right below it over
/// unquoted history starts that history, however weak the header is on its own.
fn footer_above_history(lines: &[&str], from: usize) -> bool {
    let Some(j) = next_non_blank(lines, from) else {
        return false;
    };
    if is_quoted(lines[j]) {
        return false;
    }
    quote_header_at(lines, j).is_some_and(|found| {
        next_non_blank(lines, j + found.lines).is_some_and(|k| !is_quoted(lines[k]))
    })
}

fn push_kept<'a>(out: &mut Vec<&'a str>, gap: &mut bool, line: &'a str) {
    if *gap {
        if out.last().is_some_and(|l| !is_blank(l)) {
            out.push("");
        }
        *gap = false;
    }
    out.push(line);
}

/// Trailing clean-up shared by every path: line ends trimmed, then trailing blank and
/// separator lines, client footers and a dash sign-off removed, then the whole trimmed.
fn finish(lines: &[&str]) -> String {
    let mut v: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    let first_text = v.iter().position(|l| !is_blank(l)).unwrap_or(v.len());
    loop {
        while v
            .last()
            .is_some_and(|l| is_blank(l) || is_separator_line(l))
        {
            v.pop();
        }
        let n = v.len();
        // Never strip the only text there is: a bare "Sent from my iPhone" is still a reply.
        let has_text_above = first_text + 1 < n;
        if has_text_above && is_client_footer(v[n - 1]) {
            v.pop();
            continue;
        }
        if has_text_above && is_sign_off(v[n - 1], v[n - 2]) {
            v.pop();
            continue;
        }
        break;
    }
    let start = v.iter().position(|l| !is_blank(l)).unwrap_or(v.len());
    v[start..].join("\n").trim().to_string()
}

/// Characters that carry no text: bidirectional marks (Windows Mail writes U+200E around
/// header values), zero-width spaces and joiners, the BOM.
fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}'
    )
}

fn trim_start_invisible(line: &str) -> &str {
    line.trim_start_matches(|c: char| c.is_whitespace() || is_format_char(c))
}

fn is_blank(line: &str) -> bool {
    line.chars().all(|c| c.is_whitespace() || is_format_char(c))
}

fn is_quoted(line: &str) -> bool {
    trim_start_invisible(line).starts_with('>')
}

fn next_non_blank(lines: &[&str], from: usize) -> Option<usize> {
    (from..lines.len()).find(|&j| !is_blank(lines[j]))
}

/// Picks one column (openers, wrote words, …) out of a table row.
type Column = fn(&'static Language) -> &'static [&'static str];

/// The strings of one table column across every language.
fn all(column: Column) -> impl Iterator<Item = &'static str> {
    LANGUAGES
        .iter()
        .flat_map(move |l| column(l).iter().copied())
}

/// A line made only of rule characters, left behind above a cut Outlook header block.
fn is_separator_line(line: &str) -> bool {
    let t = line.trim();
    t.chars().count() >= 3 && t.chars().all(|c| matches!(c, '-' | '_' | '=' | '~' | '*'))
}

fn is_underscore_rule(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 10 && t.bytes().all(|b| b == b'_')
}

/// An underscore rule is Outlook's reply separator when a header line follows it, and a
/// mailing-list footer when "… mailing list" does; anywhere else it may be the vendor's own.
fn rule_introduces_quote(lines: &[&str], from: usize) -> bool {
    next_non_blank(lines, from).is_some_and(|j| {
        let next = lines[j];
        header_kind(next).is_some() || contains_ignore_ascii_case(next, "mailing list")
    })
}

fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let n = needle.len();
    hay.len() >= n
        && hay
            .as_bytes()
            .windows(n)
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

// --- separators, forward markers, helpdesk markers, footers -----------------------------------

/// The text between the rules of `-----Original Message-----`, `*-------- Original Message
/// --------*`, `============ Forwarded message ============` and the like (`f` folded); None
/// for lines that are not framed.
fn framed_label(f: &str) -> Option<&str> {
    let t = f.trim_matches(|c: char| c == '*' || c.is_whitespace());
    if !(t.starts_with("---") || t.starts_with("===")) {
        return None;
    }
    Some(t.trim_matches(|c: char| c == '-' || c == '=' || c == '*' || c.is_whitespace()))
}

fn is_original_message_marker(f: &str) -> bool {
    framed_label(f).is_some_and(|label| all(|l| l.original).any(|o| o == label))
}

fn is_forward_marker(f: &str) -> bool {
    if framed_label(f).is_some_and(|label| all(|l| l.forwarded).any(|o| o == label)) {
        return true;
    }
    f.strip_suffix(':')
        .map(str::trim_end)
        .is_some_and(|label| all(|l| l.forward_lines).any(|o| o == label))
}

/// Rule characters a helpdesk decorates its marker line with.
fn is_decoration(c: char) -> bool {
    matches!(
        c,
        '-' | '='
            | '#'
            | '*'
            | '_'
            | '~'
            | '\u{2014}'
            | '\u{2013}'
            | '['
            | ']'
            | '<'
            | '>'
            | '('
            | ')'
    )
}

/// "Reply above this line" and its kin (`f` folded): Zendesk's `##- … -##` frame in any
/// language, a table phrase on a line decorated with rule characters, or one of the whole
/// lines helpdesks write undecorated.
fn is_helpdesk_marker(f: &str) -> bool {
    let t = f.trim();
    if is_zendesk_frame(t) {
        return true;
    }
    let core =
        t.trim_matches(|c: char| is_decoration(c) || c.is_whitespace() || c == '.' || c == '!');
    if core.is_empty() {
        return false;
    }
    let decorated = t.starts_with(is_decoration);
    (decorated && all(|l| l.markers).any(|m| core.contains(m)))
        || all(|l| l.marker_lines).any(|m| core == m)
}

/// `##- … -##` (also `## - … - ##`) around words: Zendesk's marker in every language. A banner
/// framed in plain `##` is not one.
fn is_zendesk_frame(t: &str) -> bool {
    let Some(inner) = t.strip_prefix("##").and_then(|r| r.strip_suffix("##")) else {
        return false;
    };
    let inner = inner.trim();
    inner.len() >= 2
        && inner.starts_with('-')
        && inner.ends_with('-')
        && inner.chars().any(char::is_alphabetic)
}

/// The `-- ` signature delimiter (also without its space, as many clients strip trailing
/// blanks). By convention everything below it is signature, so it ends the reply outright.
fn is_signature_delimiter(line: &str) -> bool {
    line.trim() == "--"
}

/// A mobile or webmail client's footer ("Sent from my iPhone", "Von meinem iPhone gesendet",
/// "Get Outlook for iOS<https://aka.ms/…>"). Only removed when it ends the reply: a vendor's
/// sentence that happens to start "Sent from my office…" and goes on with more text survives.
fn is_client_footer(line: &str) -> bool {
    let t = line.trim();
    t.len() <= MAX_PATTERN_LINE && is_client_footer_folded(&fold(t))
}

fn is_client_footer_folded(f: &str) -> bool {
    let mut t = f.trim();
    if t.len() > 160 {
        return false;
    }
    // The link some clients glue on: "Sent from TypeApp<http://…>".
    if let Some(at) = t.find("<http") {
        t = t[..at].trim_end();
    }
    let t = t.trim_end_matches(['.', '!']).trim_end();
    !t.is_empty()
        && LANGUAGES
            .iter()
            .flat_map(|l| l.footers.iter())
            .any(|footer| footer_matches(t, footer))
}

fn footer_matches(t: &str, footer: &Footer) -> bool {
    if !t.starts_with(footer.prefix) || !t.ends_with(footer.suffix) {
        return false;
    }
    let Some(middle) = t.get(footer.prefix.len()..t.len().saturating_sub(footer.suffix.len()))
    else {
        return false;
    };
    // "Sent from my desk, which is easier than my phone." is a sentence, not a footer; a
    // suffix closing the line makes a comma inside harmless.
    (!footer.suffix.is_empty() || !middle.contains(','))
        && middle.split_whitespace().count() <= footer.max_words
}

/// `-Abhishek Kona`, `—Ryan`, `– Ryan`: a dash and a capitalised name alone on the last line.
/// A hyphen also starts list items ("-Milk"), so it counts only after a blank line or a closing
/// ending in `,` or `!`; a space after a hyphen is always a list item.
fn is_sign_off(last: &str, above: &str) -> bool {
    let t = last.trim();
    let (rest, hyphen) = if let Some(r) = t.strip_prefix("--") {
        (r, true)
    } else if let Some(r) = t.strip_prefix('-') {
        (r, true)
    } else if let Some(r) = t
        .strip_prefix('\u{2014}')
        .or_else(|| t.strip_prefix('\u{2013}'))
    {
        (r.trim_start(), false)
    } else {
        return false;
    };
    let name = rest.chars().next().is_some_and(char::is_uppercase)
        && rest.split_whitespace().count() <= 4
        && rest.len() <= 60
        && !rest.ends_with(['.', ':', '!', '?']);
    let above = above.trim();
    let placed = above.is_empty()
        || above.ends_with([',', '!'])
        || (!hyphen && !above.starts_with(['-', '\u{2014}', '\u{2013}', '*', '\u{2022}']));
    name && placed
}

// --- quote headers ("On <date>, <name> wrote:") -----------------------------------------------

struct QuoteHeader {
    /// How many physical lines it spans (clients wrap long ones).
    lines: usize,
    /// Strong enough to cut even when the quote below is not `>`-prefixed.
    strong: bool,
}

/// A quote header starting at line `i`, on one line or wrapped over two or three.
fn quote_header_at(lines: &[&str], i: usize) -> Option<QuoteHeader> {
    let first = lines[i];
    if first.len() > MAX_PATTERN_LINE {
        return None;
    }
    let mut joined = fold(first.trim());
    if let Some(strong) = classify_quote_header(&joined) {
        return Some(QuoteHeader { lines: 1, strong });
    }
    // Only join wrapped lines when the first one opens like a header; otherwise a vendor's
    // sentence right above a real header would be swallowed with it. A first line ending in a
    // colon or a full stop is complete on its own.
    let opening = opens_quote_header(&joined)?;
    if joined.ends_with(['.', '!', '?', ':']) {
        return None;
    }
    for span in 2..=3 {
        let &next = lines.get(i + span - 1)?;
        if is_blank(next) || is_quoted(next) || next.len() > MAX_PATTERN_LINE {
            return None;
        }
        let f = fold(next.trim());
        // A line that opens a header itself means the one above was prose.
        if starts_with_opener(&f) || starts_with_date(&f) {
            return None;
        }
        joined.push(' ');
        joined.push_str(&f);
        // Opened by nothing but an address (name-first forms), it must have its verb: a bounce's
        // "<a@b>: host [192.0.2.1]:" is not a header.
        if opening == Opening::Address && last_wrote_word(&joined).is_none() {
            continue;
        }
        if let Some(strong) = classify_quote_header(&joined) {
            return Some(QuoteHeader {
                lines: span,
                strong,
            });
        }
    }
    None
}

/// `Some(strong)` when the folded `text` reads like a quote header (see the module docs).
fn classify_quote_header(text: &str) -> Option<bool> {
    // Zoho frames its header in dashes: "---- On … wrote ----".
    let framed = text.starts_with("--") && text.ends_with("--");
    let t = text.trim_matches(|c: char| c == '-' || c == '*' || c.is_whitespace());
    let (body, colon) = match t.strip_suffix(':') {
        Some(b) => (b.trim_end(), true),
        None => (t, false),
    };
    if body.is_empty() {
        return None;
    }
    let time = has_time(body);
    let address = has_address(body);
    match last_wrote_word(body) {
        Some((start, end)) => {
            let at_end = is_header_tail(body.get(end..).unwrap_or(""));
            if !colon {
                // Without its colon only the plain form counts: the verb ends it and a date or
                // address is there. Weak unless framed, so it needs `>` lines below.
                let opens = starts_with_opener(body) || starts_with_date(body) || address;
                return (at_end && (time || address) && opens).then_some(framed);
            }
            // "Name <a@b> kirjoitti 17.11.2021 kello 15.32:": the sender before the verb.
            let name_first = body.get(..start).is_some_and(has_address);
            Some((time || address) && (at_end || starts_with_opener(body) || name_first))
        }
        // Date first and the sender last, no verb: Gmail in Russian and Japanese, Yandex,
        // Mail.ru ("17.11.2021, 15:32, "A" <a@b>:"). Weak when only a date and an address.
        None if colon && address && body.bytes().any(|b| b.is_ascii_digit()) => {
            Some(time && starts_with_date(body) && ends_with_address(body))
        }
        // The same without its colon ("2014/11/17 Anna <a@b>"): only above `>` lines.
        None if address && starts_with_date(body) && ends_with_address(body) => Some(false),
        None => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// An opener word, or a date or weekday first.
    Lead,
    /// Only the sender's address (name-first forms: "Anna <a@b> schrieb am …").
    Address,
}

/// How a header could start on this folded line, so a wrapped one may be joined.
fn opens_quote_header(f: &str) -> Option<Opening> {
    if starts_with_opener(f)
        || starts_with_date(f)
        || (f.starts_with(|c: char| c.is_ascii_digit()) && has_time(f))
    {
        Some(Opening::Lead)
    } else if has_address(f) {
        Some(Opening::Address)
    } else {
        None
    }
}

fn starts_with_opener(f: &str) -> bool {
    all(|l| l.openers).any(|o| f.starts_with(o))
}

/// `17.11.2021`, `2021/11/17`, `2021-11-17,`, `2021年11月17日`, `2021년`, or a weekday followed
/// by a number (`ons. 17. nov.`, `ср, 17 нояб.`, `Wednesday, 17 November`): digits alone (a
/// sentence starting "3 people came") are not a date.
fn starts_with_date(f: &str) -> bool {
    let mut words = f.split_whitespace();
    let Some(first) = words.next() else {
        return false;
    };
    if first.starts_with(|c: char| c.is_ascii_digit()) {
        let token = first.trim_end_matches([',', '.']);
        let separators = token
            .chars()
            .filter(|c| matches!(c, '.' | '/' | '-'))
            .count();
        return separators >= 2 || token.contains(['年', '년']);
    }
    let word = first.trim_end_matches([',', '.']);
    all(|l| l.weekdays).any(|w| w == word)
        && words
            .next()
            .is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit()))
}

/// A clock time: `15:32`, `3:32`, `15.32` (Danish, Finnish), `15h32`; `17.11.` and the parts of
/// `17.11.2021` are dates, not times.
fn has_time(f: &str) -> bool {
    let b = f.as_bytes();
    let digit = |k: usize| b.get(k).is_some_and(u8::is_ascii_digit);
    (1..b.len()).any(|k| {
        let sep = b[k];
        if !matches!(sep, b':' | b'.' | b'h') || !digit(k - 1) || !digit(k + 1) || !digit(k + 2) {
            return false;
        }
        // One or two digits before, exactly two after.
        let start = if k >= 2 && digit(k - 2) { k - 2 } else { k - 1 };
        if (start >= 1 && digit(start - 1)) || digit(k + 3) {
            return false;
        }
        sep != b'.' || (b.get(k + 3) != Some(&b'.') && (start == 0 || b[start - 1] != b'.'))
    })
}

/// An `@` between two word characters.
fn has_address(f: &str) -> bool {
    f.char_indices().any(|(at, c)| {
        c == '@'
            && f[..at]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
            && f[at + 1..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric)
    })
}

/// The header ends in the sender's address: `… <a@b>`, `… (a@b)`, `… a@b`.
fn ends_with_address(f: &str) -> bool {
    f.trim_end_matches(['>', ')', ']', '"', ';'])
        .rsplit([' ', '<', '(', '[', '"'])
        .next()
        .is_some_and(|token| token.contains('@'))
}

/// What may follow the verb at the end of a header: nothing, or a parenthesised date
/// (Hungarian Gmail "… ezt írta (időpont: 2021. nov. 17., Sze, 15:32)").
fn is_header_tail(rest: &str) -> bool {
    let rest = rest.trim();
    rest.is_empty() || (rest.starts_with('(') && rest.ends_with(')'))
}

/// The byte range of the last "wrote" word in the folded `f`.
fn last_wrote_word(f: &str) -> Option<(usize, usize)> {
    all(|l| l.wrote)
        .filter_map(|w| {
            f.match_indices(w)
                .filter(|&(at, _)| is_word_at(f, at, w))
                .last()
                .map(|(at, _)| (at, at + w.len()))
        })
        .max_by_key(|&(start, end)| (end, usize::MAX - start))
}

/// Whether `w` found at `at` stands as a word. Scripts written without spaces (CJK, and
/// Korean endings glued to the name) have no word boundaries to check.
fn is_word_at(f: &str, at: usize, w: &str) -> bool {
    let spaced = |c: char| c.is_alphanumeric() && !is_unspaced_script(c);
    let first_spaced = w.chars().next().is_some_and(spaced);
    let last_spaced = w.chars().next_back().is_some_and(spaced);
    let before_ok = !first_spaced
        || f[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
    let after_ok = !last_spaced
        || f.get(at + w.len()..)
            .and_then(|r| r.chars().next())
            .is_none_or(|c| !c.is_alphanumeric());
    before_ok && after_ok
}

fn is_unspaced_script(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}' // kana
        | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{f900}'..='\u{faff}' // han
        | '\u{ac00}'..='\u{d7af}' | '\u{1100}'..='\u{11ff}' | '\u{3130}'..='\u{318f}' // hangul
    )
}

/// Below a quote header, a line that is the rest of a hard-wrapped quoted line whose `>` the
/// wrapping lost: right under a long quoted line that stops mid-sentence, and starting in
/// lower case. An inline answer starts its own sentence, in upper case, so it stays.
fn continues_wrapped_quote(above: &str, line: &str) -> bool {
    if !is_quoted(above) {
        return false;
    }
    let content = trim_start_invisible(above)
        .trim_start_matches(|c: char| c == '>' || c.is_whitespace())
        .trim_end();
    if above.trim_end().chars().count() < 60
        || content.ends_with(['.', '!', '?', ':', ';', '\u{3002}', '\u{ff1f}', '\u{ff01}'])
    {
        return false;
    }
    let t = line.trim();
    t.chars().count() <= 80
        && t.chars()
            .find(|c| c.is_alphabetic())
            .is_some_and(char::is_lowercase)
}

// --- quoted header blocks (Outlook "From:/Sent:/To:/Subject:") --------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    From,
    /// The mail-only send date ("Sent", "Gesendet").
    Sent,
    Date,
    To,
    Subject,
    /// A field that only continues a block (Reply-To).
    Other,
}

/// The field kind of a folded field name, in any language.
fn field_kind(key: &str) -> Option<HeaderKind> {
    let columns: [(HeaderKind, Column); 6] = [
        (HeaderKind::From, |l| l.from),
        (HeaderKind::Sent, |l| l.sent),
        (HeaderKind::Date, |l| l.date),
        (HeaderKind::To, |l| l.to),
        (HeaderKind::Subject, |l| l.subject),
        (HeaderKind::Other, |l| l.other_fields),
    ];
    columns
        .into_iter()
        .find(|&(_, column)| all(column).any(|k| k == key))
        .map(|(kind, _)| kind)
}

/// The field a `Key: value` line names, including bold `*From:*`, Windows Mail's invisible
/// marks and the localised names Outlook, Thunderbird and webmails write.
fn header_kind(line: &str) -> Option<HeaderKind> {
    let t = line.trim_start_matches(|c: char| c.is_whitespace() || is_format_char(c) || c == '*');
    let colon = t
        .char_indices()
        .take(40)
        .find(|&(_, c)| c == ':' || c == '\u{ff1a}')
        .map(|(at, _)| at)?;
    let key = t[..colon].trim_end().trim_end_matches('*').trim_end();
    if key.is_empty() {
        return None;
    }
    field_kind(fold(key).trim())
}

/// A block of header lines that starts at `i` and names the sender and the subject with a date
/// or recipient, or the sender, the send date and a recipient (Windows Mail leaves out an empty
/// Subject): the header a client writes above unquoted history. Requiring that much keeps an
/// itinerary ("From: Berlin / To: Paris / Date: 3 May") from cutting the reply.
fn header_block_at(lines: &[&str], i: usize) -> bool {
    let Some(first) = header_kind(lines[i]) else {
        return false;
    };
    if first == HeaderKind::From && is_one_line_header_block(lines[i]) {
        return true;
    }
    let (mut from, mut subject, mut sent, mut date_or_to, mut to) =
        (false, false, false, false, false);
    let mut blanks = 0;
    let mut continuation = 0;
    for line in lines.iter().skip(i).take(14) {
        if is_blank(line) {
            blanks += 1;
            if blanks > 1 {
                break;
            }
            continue;
        }
        if is_quoted(line) {
            break;
        }
        blanks = 0;
        match header_kind(line) {
            Some(kind) => {
                continuation = 0;
                match kind {
                    HeaderKind::From => from = true,
                    HeaderKind::Subject => subject = true,
                    HeaderKind::Sent => {
                        sent = true;
                        date_or_to = true;
                    }
                    HeaderKind::Date => date_or_to = true,
                    HeaderKind::To => {
                        to = true;
                        date_or_to = true;
                    }
                    HeaderKind::Other => {}
                }
            }
            // Long To:/Cc: lists wrap onto following lines.
            None => {
                continuation += 1;
                if continuation > 2 {
                    break;
                }
            }
        }
        if from && ((subject && date_or_to) || (sent && to)) {
            return true;
        }
    }
    false
}

/// A whole header block flattened onto one line, as rich-text replies rendered to text give it:
/// `From: A Sent: Monday To: B Subject: C`, `De : A Envoyé : lundi À : B Objet : C`.
fn is_one_line_header_block(line: &str) -> bool {
    if line.len() > 2 * MAX_PATTERN_LINE {
        return false;
    }
    let f = fold(line);
    let has_field = |column: Column| {
        all(column).any(|key| {
            f.match_indices(key).any(|(at, _)| {
                let before = f[..at].ends_with(' ');
                let after = f[at + key.len()..].trim_start_matches(' ');
                before && after.starts_with(':')
            })
        })
    };
    has_field(|l| l.subject)
        && (has_field(|l| l.sent) || has_field(|l| l.date) || has_field(|l| l.to))
}

/// A line that introduces a header block right below it ("Message du 17/11/21 15:32").
fn header_intro_at(lines: &[&str], i: usize) -> bool {
    let line = lines[i];
    line.len() <= MAX_PATTERN_LINE
        && i + 1 < lines.len()
        && {
            let f = fold(trim_start_invisible(line));
            all(|l| l.header_intros).any(|p| f.starts_with(p))
        }
        && header_block_at(lines, i + 1)
}
