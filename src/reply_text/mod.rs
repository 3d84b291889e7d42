//! Visible reply of a vendor's email (quoted history and signature stripped), and HTML to text.
//!
//! Everything here is pure: strings in, strings out, no I/O, no panics, and every pass is a
//! single forward scan (with look-ahead bounded by a small constant), so a 1 MB quote or a
//! regex-backtracking trap costs no more than reading it. There are deliberately no regexes:
//! the patterns are simple enough to match by hand and that keeps the linear-time guarantee
//! obvious.
//!
//! Plain text is scanned line by line. A line can *end* the reply (Outlook separators and
//! header blocks, an unquoted `On … wrote:` quote, the `-- ` signature delimiter), be *dropped*
//! (`>`-quoted lines and the attribution line that introduces them), or be kept. Dropping
//! instead of cutting at `>` lines is what keeps interleaved inline answers. Client footers
//! ("Sent from my iPhone") and a `-Name` sign-off are trimmed only where they end what is left.
//! A forwarded message is content the vendor chose to send, so from a forward marker on
//! everything is kept verbatim.
//!
//! HTML is rendered to text with `<blockquote>` content prefixed by `> `, the way mail clients
//! quote, after cutting the client-specific containers that always hold history (Outlook's
//! `#divRplyFwdMsg`, Outlook for Mac's `#OLK_SRC_BODY_SECTION`, Yahoo's `yahoo_quoted`, …) and
//! dropping signature containers. The plain-text rules then decide the rest, so both paths
//! share one notion of "quote".

use std::borrow::Cow;

use html::{Mode, render};

mod html;
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

/// The lines of the vendor's own text, in order. Blank-line runs left where a quote was dropped
/// are collapsed to one so inline answers read as paragraphs.
fn reply_lines<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&'a str> = Vec::new();
    // Set after dropping something; suppresses blank lines until the next kept text.
    let mut gap = false;
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
        if is_forward_marker(line) {
            push_kept(&mut out, &mut gap, line);
            out.extend_from_slice(&lines[i + 1..]);
            break;
        }
        if is_signature_delimiter(line) || is_original_message_marker(line) {
            break;
        }
        if is_underscore_rule(line) && rule_introduces_quote(lines, i + 1) {
            break;
        }
        if let Some(found) = attribution_at(lines, i) {
            let after = i + found.lines;
            match next_non_blank(lines, after) {
                None => break,
                Some(j) if is_quoted(lines[j]) => {
                    gap = true;
                    i = after;
                    continue;
                }
                // An unquoted quote (Outlook web, Yahoo classic): everything below is history.
                Some(_) if found.strong => break,
                Some(_) => {}
            }
        }
        if header_block_at(lines, i) {
            break;
        }
        push_kept(&mut out, &mut gap, line);
        i += 1;
    }
    out
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
/// separator lines, client footers and a `-Name` sign-off removed, then the whole trimmed.
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
        if has_text_above && is_blank(v[n - 2]) && is_dash_name_signature(v[n - 1]) {
            v.pop();
            continue;
        }
        break;
    }
    let start = v.iter().position(|l| !is_blank(l)).unwrap_or(v.len());
    v[start..].join("\n").trim().to_string()
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn next_non_blank(lines: &[&str], from: usize) -> Option<usize> {
    (from..lines.len()).find(|&j| !is_blank(lines[j]))
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

/// The text between the dashes of `-----Original Message-----` and the like, lowercased; None
/// for lines that are not dash-framed.
fn dash_framed_label(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with("---") || t.len() > 120 {
        return None;
    }
    Some(
        t.trim_matches(|c: char| c == '-' || c.is_whitespace())
            .to_lowercase(),
    )
}

fn is_original_message_marker(line: &str) -> bool {
    const LABELS: &[&str] = &[
        "original message",
        "ursprüngliche nachricht",
        "original-nachricht",
        "message d'origine",
        "message d\u{2019}origine",
        "mensaje original",
        "mensagem original",
        "messaggio originale",
        "oorspronkelijk bericht",
        "originalmeddelande",
        "oprindelig meddelelse",
        "opprinnelig melding",
        "oryginalna wiadomość",
        "původní zpráva",
        "alkuperäinen viesti",
        "исходное сообщение",
    ];
    dash_framed_label(line).is_some_and(|l| LABELS.contains(&l.as_str()))
}

fn is_forward_marker(line: &str) -> bool {
    const LABELS: &[&str] = &[
        "forwarded message",
        "weitergeleitete nachricht",
        "message transféré",
        "mensaje reenviado",
        "mensagem encaminhada",
        "messaggio inoltrato",
        "doorgestuurd bericht",
        "vidarebefordrat meddelande",
        "videresendt meddelelse",
        "przekazana wiadomość",
        "пересылаемое сообщение",
    ];
    if dash_framed_label(line).is_some_and(|l| LABELS.contains(&l.as_str())) {
        return true;
    }
    let t = line.trim();
    t.len() <= 60 && {
        let l = t.to_lowercase();
        l == "begin forwarded message:"
            || l == "début du message réexpédié :"
            || l == "anfang der weitergeleiteten nachricht:"
            || l == "inicio del mensaje reenviado:"
    }
}

/// The `-- ` signature delimiter (also without its space, as many clients strip trailing
/// blanks). By convention everything below it is signature, so it ends the reply outright.
fn is_signature_delimiter(line: &str) -> bool {
    line.trim() == "--"
}

/// A mobile or webmail client's footer ("Sent from my iPhone", "Get Outlook for iOS"). Only
/// removed when it ends the reply: a vendor's sentence that happens to start "Sent from my
/// office…" and goes on with more text must survive.
fn is_client_footer(line: &str) -> bool {
    let t = line.trim();
    if t.len() > 100 {
        return false;
    }
    let l = t.to_lowercase();
    if let Some(device) = l.strip_prefix("sent from my ") {
        // "Sent from my desk, which is easier than my phone." is a sentence, not a footer.
        return device.split_whitespace().count() <= 5 && !device.contains(',');
    }
    const PREFIXES: &[&str] = &[
        "sent from iphone",
        "sent from ipad",
        "sent from yahoo mail",
        "sent from mail for windows",
        "sent from outlook",
        "sent from samsung",
        "sent from gmail",
        "get outlook for ios",
        "get outlook for android",
        "envoyé de mon ",
        "envoyé depuis mon ",
        "enviado desde mi ",
        "enviado do meu ",
        "inviato dal mio ",
    ];
    if PREFIXES.iter().any(|p| l.starts_with(p)) {
        return true;
    }
    // German clients put the verb last: "Von meinem iPhone gesendet".
    l.starts_with("von meinem ") && l.ends_with("gesendet")
}

/// `-Abhishek Kona`: a bare dash glued to a capitalised name, alone on the last line. A space
/// after the dash is a list item, so it is not treated as a sign-off.
fn is_dash_name_signature(line: &str) -> bool {
    let t = line.trim();
    let rest = if let Some(r) = t.strip_prefix("--") {
        r
    } else if let Some(r) = t.strip_prefix('-') {
        r
    } else if let Some(r) = t
        .strip_prefix('\u{2014}')
        .or_else(|| t.strip_prefix('\u{2013}'))
    {
        r.trim_start()
    } else {
        return false;
    };
    rest.chars().next().is_some_and(char::is_uppercase)
        && rest.split_whitespace().count() <= 4
        && rest.len() <= 60
        && !rest.ends_with(['.', ':', '!', '?'])
}

// --- attribution lines ("On <date>, <name> wrote:") ----------------------------------------

struct Attribution {
    /// How many physical lines it spans (clients wrap long ones).
    lines: usize,
    /// Strong enough to cut even when the quote below is not `>`-prefixed.
    strong: bool,
}

/// Longest line considered part of an attribution; keeps the join work constant per line.
const MAX_ATTRIBUTION_LINE: usize = 400;

fn attribution_at(lines: &[&str], i: usize) -> Option<Attribution> {
    let first = lines[i];
    if first.len() > MAX_ATTRIBUTION_LINE {
        return None;
    }
    if ends_with_colon(first) {
        return classify_attribution(first).map(|strong| Attribution { lines: 1, strong });
    }
    // Only join wrapped lines when the first one opens like an attribution; otherwise a
    // vendor's sentence right above a real attribution would be swallowed with it.
    let first_trim = first.trim_end();
    if !opens_attribution(first) || first_trim.ends_with(['.', '!', '?']) {
        return None;
    }
    let mut joined = first_trim.to_string();
    for span in 2..=3 {
        let &next = lines.get(i + span - 1)?;
        if is_blank(next)
            || is_quoted(next)
            || next.len() > MAX_ATTRIBUTION_LINE
            || opens_attribution(next)
        {
            return None;
        }
        joined.push(' ');
        joined.push_str(next.trim());
        if ends_with_colon(next) {
            return classify_attribution(&joined).map(|strong| Attribution {
                lines: span,
                strong,
            });
        }
    }
    None
}

fn ends_with_colon(line: &str) -> bool {
    line.trim_end().ends_with([':', '\u{ff1a}'])
}

fn strip_attribution_lead(line: &str) -> &str {
    line.trim_start()
        .trim_start_matches(|c: char| c == '-' || c.is_whitespace())
}

/// Openers of the attribution sentence in the languages clients localise it into, or a date
/// first (`02.04.2012 14:20 …`, common on Android and in Russian and Asian clients).
fn opens_attribution(line: &str) -> bool {
    let t = strip_attribution_lead(line);
    const OPENERS: &[&str] = &[
        "On ", "Le ", "Am ", "El ", "Op ", "Il ", "Em ", "Den ", "Dne ", "W dniu ", "Pada ",
    ];
    OPENERS.iter().any(|o| t.starts_with(o)) || starts_with_date(t)
}

/// `02.04.2012`, `2012/4/2`, `26.06.2014,`: digits with at least two date separators, so a
/// sentence that merely starts with a number is not taken for an attribution.
fn starts_with_date(t: &str) -> bool {
    let token = t
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(',');
    token.starts_with(|c: char| c.is_ascii_digit())
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '/' | '-'))
        && token
            .chars()
            .filter(|c| matches!(c, '.' | '/' | '-'))
            .count()
            >= 2
}

const WROTE_WORDS: &[&str] = &[
    "wrote",
    "writes",
    "écrit",
    "schrieb",
    "escribió",
    "escribio",
    "escreveu",
    "scrisse",
    "ha scritto",
    "schreef",
    "skrev",
    "napisał",
    "napisała",
    "napisal",
    "napsal",
    "napsala",
    "kirjoitti",
    "написал",
    "написала",
    "пишет",
    "írta",
    "yazdı",
    "geschreven",
    "pisze",
    "napísal",
    "写道",
    "寫道",
    "작성",
];

/// `Some(strong)` when `text` (ending in a colon) reads like an attribution.
///
/// Strong: the "wrote" verb ends the sentence or the sentence opens like an attribution, and a
/// date or address is present; such a line cuts even unquoted text below it. Weak: a "wrote"
/// verb somewhere, or a date plus an address (mail.ru, Yandex: `26.06.2014, 14:41, "A" <a@b>:`);
/// those only count when `>` lines follow, so a vendor's "as I wrote:" never cuts prose.
fn classify_attribution(text: &str) -> Option<bool> {
    let t = strip_attribution_lead(text).trim_end();
    let body = t.strip_suffix([':', '\u{ff1a}'])?.trim_end();
    let lower = body.to_lowercase();
    let wrote_anywhere = WROTE_WORDS.iter().any(|w| contains_word(&lower, w));
    let wrote_at_end = WROTE_WORDS
        .iter()
        .any(|w| lower.ends_with(w) && word_boundary_before(&lower, lower.len() - w.len()));
    let has_digit = lower.bytes().any(|b| b.is_ascii_digit());
    let has_at = lower.contains('@');
    if wrote_anywhere {
        let strong = (wrote_at_end || opens_attribution(body)) && (has_digit || has_at);
        Some(strong)
    } else if has_at && has_digit {
        Some(false)
    } else {
        None
    }
}

fn contains_word(hay: &str, word: &str) -> bool {
    hay.match_indices(word).any(|(at, _)| {
        let end = at + word.len();
        word_boundary_before(hay, at)
            && hay[end..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
    })
}

fn word_boundary_before(hay: &str, at: usize) -> bool {
    hay[..at]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric())
}

// --- quoted header blocks (Outlook "From:/Sent:/To:/Subject:") --------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    From,
    Subject,
    Date,
    To,
    Other,
}

/// The field a `Key: value` line names, including bold `*From:*` and the localised names
/// Outlook, Thunderbird and webmails write.
fn header_kind(line: &str) -> Option<HeaderKind> {
    let t = line.trim_start().trim_start_matches('*').trim_start();
    let colon = t
        .char_indices()
        .take(32)
        .find(|&(_, c)| c == ':' || c == '\u{ff1a}')
        .map(|(at, _)| at)?;
    let key = t[..colon].trim_end().trim_end_matches('*').trim_end();
    if key.is_empty() {
        return None;
    }
    let key = key.to_lowercase();
    let kind = match key.as_str() {
        "from" | "von" | "de" | "da" | "van" | "från" | "fra" | "od" | "от" | "mittente" => {
            HeaderKind::From
        }
        "subject" | "betreff" | "objet" | "asunto" | "oggetto" | "onderwerp" | "ämne" | "emne"
        | "temat" | "тема" | "assunto" | "aihe" | "předmět" => HeaderKind::Subject,
        "sent"
        | "date"
        | "gesendet"
        | "datum"
        | "envoyé"
        | "enviado"
        | "enviada"
        | "fecha"
        | "inviato"
        | "data"
        | "verzonden"
        | "skickat"
        | "sendt"
        | "wysłano"
        | "odesláno"
        | "отправлено"
        | "дата"
        | "lähetetty" => HeaderKind::Date,
        "to" | "cc" | "bcc" | "an" | "à" | "a" | "para" | "aan" | "till" | "til" | "do"
        | "komu" | "кому" | "копия" | "kopie" | "cco" => HeaderKind::To,
        "reply-to" | "antwort an" | "répondre à" | "responder a" => HeaderKind::Other,
        _ => return None,
    };
    Some(kind)
}

/// A block of header lines that starts at `i` and names the sender, the subject and a date or
/// recipient: the header a client writes above unquoted history. Requiring all three keeps an
/// itinerary ("From: Berlin / To: Paris") from cutting the reply.
fn header_block_at(lines: &[&str], i: usize) -> bool {
    if header_kind(lines[i]).is_none() {
        return false;
    }
    let (mut from, mut subject, mut date_or_to) = (false, false, false);
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
                    HeaderKind::Date | HeaderKind::To => date_or_to = true,
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
        if from && subject && date_or_to {
            return true;
        }
    }
    false
}
